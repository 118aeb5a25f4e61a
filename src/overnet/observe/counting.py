"""The store request counter behind `overnet_store_requests`: kept apart from metrics.py so
the agent counts from its start without loading prometheus_client, which only a scrape of
/metrics needs (~2 MB of the agent's resident memory)."""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

COUNTED = ("get", "list", "put", "delete", "txn", "grant", "refresh", "revoke")


class CountingStore:
    """A Store that counts its requests by operation and result ("ok" or the error's class
    name); anything else is the wrapped store's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: Counter[tuple[str, str]] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in COUNTED and inspect.iscoroutinefunction(attr):
            return self._counted(name, attr)
        return attr

    def _counted(self, name: str, call: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                out = await call(*args, **kwargs)
            except Exception as e:
                self.requests[name, type(e).__name__] += 1
                raise
            self.requests[name, "ok"] += 1
            return out
        return counted


def counting(store: Any) -> Any:
    return store if isinstance(store, CountingStore) else CountingStore(store)
