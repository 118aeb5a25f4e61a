"""Periodic work spread out in time.

Agents that started together (a cluster brought up at once, a restart of every host after a
power cut) would otherwise refresh their leases, re-check their kernels and collect garbage in
step, every period, in bursts that etcd and the hosts feel at once. Each wait is drawn afresh,
so agents that start in step drift apart within a few periods."""

from __future__ import annotations

import random

SPREAD = 0.2    # a wait is 80-100 % of the period


def jittered(period: float, spread: float = SPREAD) -> float:
    """A wait for work due every `period` seconds: never longer than the period (a lease
    refreshed every ttl/3 must still be refreshed in time), at most `spread` of it shorter."""
    return period * (1.0 - spread * random.random())
