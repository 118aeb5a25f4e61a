import os

import pytest

pytest_plugins = ["tests.labfixture"]   # the lab2 fixture: a two-host lab per module


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (network namespaces)")
        for item in items:
            if "integration" in str(item.fspath) or "e2e" in str(item.fspath):
                item.add_marker(skip)
