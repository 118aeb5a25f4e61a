"""The kernel seam: namespaces, veths, bridges, vxlan devices, routes (see api.py).

pyroute2's package __init__ imports all of pyroute2 (NDB with sqlite, ipset, plan9, nl80211,
multiprocessing…): 13 MB of an agent's ~60 MB for nothing the agent uses. The data plane needs
only `pyroute2.iproute.linux` and `pyroute2.netlink`, so unless pyroute2 is already loaded its
package is registered here without running its __init__; the first access to a top-level
name (`pyroute2.IPRoute`, say, by other code in the same process) runs it then.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _lazy_pyroute2() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        return                           # not installed: the import error comes where used
    module = types.ModuleType("pyroute2")
    module.__spec__, module.__file__ = spec, spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = "pyroute2"

    def __getattr__(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:   # `from pyroute2
            return importlib.import_module(f"pyroute2.{name}")         # import config`
        del module.__getattr__            # run the real __init__ once, in this module
        with open(spec.origin, "rb") as f:
            exec(compile(f.read(), spec.origin, "exec"), module.__dict__)  # noqa: S102
        return getattr(module, name)

    module.__getattr__ = __getattr__      # type: ignore[method-assign]
    sys.modules["pyroute2"] = module


_lazy_pyroute2()
