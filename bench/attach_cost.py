"""Cost of one Kernel.attach_macvlan / re-attach / detach, in a throwaway one-host lab.

    sudo .venv/bin/python -m bench.attach_cost [--n 50] [--rounds 3]

Prints milliseconds per call (wall and CPU) averaged over N containers, per round, and the
netlink requests per call (counted by wrapping pyroute2's request methods). Everything it makes lives in a
lab of uniquely named namespaces (tests/integration/netns_fixtures.py), removed at the end.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, Self

from pyroute2.iproute.linux import AsyncIPRoute

from overnet.dataplane.kernel import Kernel
from tests.integration.netns_fixtures import destroy_lab, make_lab

GW, MTU, VNI = "10.0.0.1/16", 1450, 4242


def _timed(n: int, fn: Callable[[int], None]) -> tuple[float, float]:
    """(wall, CPU) milliseconds per call. CPU time of this thread includes the kernel's work
    for our netlink requests (done in our context) and is much less disturbed by other load
    on the machine than wall time."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1000, (time.thread_time() - c0) / n * 1000


class _Counter:
    """Counts netlink requests (link/addr/route/neigh/fdb calls) while active."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> Self:
        for name in ("link", "addr", "route", "neigh", "fdb"):
            # The sync IPRoute forwards to its AsyncIPRoute core, looked up at each call.
            orig = getattr(AsyncIPRoute, name)
            self._saved[name] = orig

            def wrapped(ipr: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
                self.count += 1
                return _orig(ipr, *a, **kw)
            setattr(AsyncIPRoute, name, wrapped)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._saved.items():
            setattr(AsyncIPRoute, name, orig)


def round_(n: int, rnd: int) -> None:
    lab = make_lab(1)
    try:
        host = lab.hosts[0]
        with Kernel(host_ns=host.ns) as k:
            net = lab.net_ns(host, "net1")
            k.ensure_overlay(net, VNI, GW, MTU, host.underlay_ip)
            cs = [lab.container(f"c{i}") for i in range(n + 1)]

            def mac(i: int) -> str:
                return f"02:42:0a:00:{i // 256:02x}:{i % 256:02x}"

            def attach(i: int) -> None:
                k.attach_macvlan(net, cs[i], f"10.0.{1 + i // 250}.{1 + i % 250}/16", mac(i),
                                 MTU, gateway="10.0.0.1")

            def detach(i: int) -> None:
                k.detach_macvlan(cs[i], "eth0", mac(i))
            attach_ms = _timed(n, attach)
            reattach_ms = _timed(n, attach)
            detach_ms = _timed(n, detach)
            counts = []
            for step in (attach, attach, detach):
                with _Counter() as c:
                    step(n)
                counts.append(c.count)
            print(f"round {rnd} (ms per call over {n}, wall/cpu): "
                  f"attach {attach_ms[0]:.2f}/{attach_ms[1]:.2f}, "
                  f"re-attach {reattach_ms[0]:.2f}/{reattach_ms[1]:.2f}, "
                  f"detach {detach_ms[0]:.2f}/{detach_ms[1]:.2f}; netlink requests: "
                  f"attach {counts[0]}, re-attach {counts[1]}, detach {counts[2]}", flush=True)
    finally:
        destroy_lab(lab)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for r in range(args.rounds):
        round_(args.n, r + 1)


if __name__ == "__main__":
    main()
