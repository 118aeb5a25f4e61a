"""Periodic waits are spread: agents started together must not stay in step."""

from overnet.periodic import SPREAD, jittered


def test_a_wait_is_never_longer_than_its_period():
    # a lease refreshed every ttl/3 must still be refreshed in time
    waits = [jittered(40.0) for _ in range(10_000)]
    assert max(waits) <= 40.0
    assert min(waits) >= 40.0 * (1 - SPREAD)


def test_agents_started_together_drift_apart():
    # two agents' resync loops, started in the same instant: after ten periods of 10 s
    # their passes are seconds apart, not in step
    spreads = []
    for _ in range(200):
        a = sum(jittered(10.0) for _ in range(10))
        b = sum(jittered(10.0) for _ in range(10))
        spreads.append(abs(a - b))
    assert sorted(spreads)[100] > 1.0     # the median gap: over a second
