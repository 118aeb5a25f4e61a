"""bench/control_stats.py: the simulated control plane's topology and sample arithmetic
(pure; no etcd, no timing asserted)."""

from __future__ import annotations

import pytest

from bench import control_stats as cs


def test_hosts_fill_networks_of_the_given_size_in_order():
    assert [cs.network_of(i, 50) for i in (0, 49, 50, 4999)] == ["ctl0", "ctl0", "ctl1",
                                                                   "ctl99"]
    assert cs.networks(120, 50) == ["ctl0", "ctl1", "ctl2"]
    assert list(cs.members(2, 120, 50)) == list(range(100, 120))   # the last one is partial
    assert list(cs.members(3, 120, 50)) == []
    assert sum(len(cs.members(k, 5000, 50)) for k in range(100)) == 5000


def test_network_size_must_be_positive():
    with pytest.raises(ValueError, match="network size 0"):
        cs.network_of(3, 0)


def test_hosts_go_to_worker_by_number():
    items = [(i, f"h{i}") for i in range(5)]
    assert cs.by_worker(items, 2) == [[(0, "h0"), (2, "h2"), (4, "h4")], [(1, "h1"), (3, "h3")]]
    assert cs.by_worker([], 3) == [[], [], []]


def _report(all_, sub, prog, nsub):
    return {"seen": {"k": {"all": all_, "sub": sub, "prog": prog, "nsub": nsub}}}


def test_reports_of_workers_are_merged_per_key():
    seen = cs.merge_seen([_report([1.0, 2.0], [1.0], [1.5], 1), _report([3.0], [], [], 2)],
                         ["k"])
    assert seen == {"k": {"all": [1.0, 2.0, 3.0], "sub": [1.0], "prog": [1.5], "nsub": 3}}
    assert not cs.complete(seen)                    # two subscribed hosts not programmed
    done = cs.merge_seen([_report([1.0, 2.0], [1.0], [1.5], 1), _report([3.0], [3.0], [3.5], 1)],
                         ["k"])
    assert cs.complete(done)
    unseen = cs.merge_seen([_report([1.0], [1.0], [1.5], 1), _report([], [], [3.5], 1)], ["k"])
    assert not cs.complete(unseen)                  # one subscribed mirror never had it


def test_propagation_is_to_the_last_host_of_each_kind_and_counts_what_is_missing():
    done = [{"key": "a", "t0": 10.0}, {"key": "b", "t0": 20.0}]
    seen = {"a": {"all": [10.001, 10.004, 10.002], "sub": [10.001, 10.002],
                  "prog": [10.003, 10.005], "nsub": 2},
            "b": {"all": [20.010], "sub": [], "prog": [], "nsub": 1}}
    p = cs.propagation(done, seen)
    assert p["last_host_ms"] == pytest.approx([4.0, 10.0])
    assert p["last_sub_ms"] == pytest.approx([2.0])
    assert p["programmed_ms"] == pytest.approx([5.0])
    assert (p["missing"], p["missing_sub"], p["missing_programmed"]) == (0, 1, 1)
    assert p["subscribed"] == [2, 1]
    assert p["every_host_ms"]["n"] == 4


def test_etcd_cpu_per_start_is_net_of_its_idle_load():
    c0 = {"keys_written": 10, "write_requests": 5, "db_bytes": 0, "keys": 1, "watchers": 2}
    c1 = {"keys_written": 30, "write_requests": 15, "db_bytes": 2**21, "keys": 9, "watchers": 2}
    s = cs.per_start(c0, c1, starts=10, cpu_s=0.5, idle_cpu_per_s=0.02, seconds=5.0)
    assert s["writes_per_start"] == 2 and s["write_requests_per_start"] == 1
    assert s["etcd_cpu_ms_per_start"] == pytest.approx(40.0)       # (0.5 - 0.1) s / 10
    assert s["etcd_cpu_ms_per_start_gross"] == pytest.approx(50.0)
    assert s["etcd_idle_cpu_pct"] == pytest.approx(2.0)
    assert s["db_mb"] == 2.0
    busy = cs.per_start(c0, c1, starts=10, cpu_s=0.05, idle_cpu_per_s=0.02, seconds=5.0)
    assert busy["etcd_cpu_ms_per_start"] == 0.0                     # never negative


def test_a_net_cpu_below_the_idle_loads_variation_is_not_resolved():
    from bench.control_report import _net_cpu
    # a steady idle load resolves any net figure; a bursty one (thousands of leases) does
    # not resolve what is smaller than its variation over the window
    assert cs.idle_error([0.10] * 8, part_s=5.0, seconds=40.0) == 0.0
    assert cs.idle_error([0.10], part_s=5.0, seconds=40.0) == 0.0       # no spread to take
    bursty = [0.05, 0.30, 0.08, 0.25, 0.06, 0.28, 0.07, 0.27]
    err = cs.idle_error(bursty, part_s=5.0, seconds=40.0)
    # sd 0.1134 CPU-s/s; the mean's error and the window's own: sqrt(5/40 + 5/40) = 0.5
    assert err == pytest.approx(2 * 0.1134 * 0.5 * 40.0, rel=0.01)
    assert cs.idle_error(bursty, 5.0, 400.0) > err                     # grows with the window
    c = {"keys_written": 0, "write_requests": 0, "db_bytes": 0, "keys": 0, "watchers": 0}
    s = cs.per_start(c, c, starts=50, cpu_s=6.0, idle_cpu_per_s=0.14, seconds=40.0,
                     idle_error_cpu_s=err)
    assert s["etcd_cpu_ms_per_start"] == pytest.approx(8.0)           # (6.0 - 5.6) s / 50
    assert s["etcd_cpu_ms_per_start_resolution"] == pytest.approx(err * 1e3 / 50)
    assert _net_cpu(s) == f"< {err * 1e3 / 50:.1f}"
    assert _net_cpu({**s, "etcd_cpu_ms_per_start_resolution": 0.5}) == "8.0"
    assert _net_cpu({"etcd_cpu_ms_per_start": 3.62}) == "3.6"        # runs before it


def test_starts_per_core():
    assert cs.starts_per_core(4.0) == 250.0
    assert cs.starts_per_core(0.0) is None


def test_memory_need_grows_with_the_agents():
    # 100 agents in 200 MB: 2 MB each, at any cluster size (each copy holds its networks')
    step = {"hosts": 100, "worker_rss_mb": 200.0, "keys": 1000}
    assert cs.memory_need_mb(step, 1000) == pytest.approx(2_000.0)
    assert cs.memory_need_mb(step, 100) == pytest.approx(200.0)


def test_busy_cpu_is_beyond_each_workers_idle_rate():
    idle0 = [{"cpu": 1.0, "t": 0.0}, {"cpu": 5.0, "t": 0.0}]
    idle1 = [{"cpu": 1.5, "t": 5.0}, {"cpu": 5.0, "t": 5.0}]     # 0.1 and 0 CPU-s per s
    end = [{"cpu": 3.5, "t": 15.0}, {"cpu": 6.0, "t": 15.0}]
    assert cs.busy_cpu(idle0, idle1, end) == pytest.approx((2.0 - 1.0) + 1.0)
    quiet = [{"cpu": 1.6, "t": 15.0}, {"cpu": 5.0, "t": 15.0}]
    assert cs.busy_cpu(idle0, idle1, quiet) == 0.0
