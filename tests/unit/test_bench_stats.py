"""bench/: statistics and report formatting (pure; no root, no labs, no timing asserted)."""

from __future__ import annotations

import json
import math

import pytest

from bench import stats
from bench.control_plot import record
from bench.report import (Results, fmt, fmt_target, markdown, missed_lines, readme_section,
                          summary_text, table)


# --- statistics --------------------------------------------------------------------------------

def test_percentile_linear_interpolation_like_numpy():
    xs = [1, 2, 3, 4]
    assert stats.percentile(xs, 0) == 1
    assert stats.percentile(xs, 100) == 4
    assert stats.percentile(xs, 50) == 2.5
    assert stats.percentile(xs, 95) == pytest.approx(3.85)       # numpy: 3.85
    assert stats.percentile([10, 1, 5], 50) == 5                 # order does not matter
    assert stats.percentile([7], 95) == 7


def test_percentile_rejects_nothing_and_bad_q():
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([None, None], 50)
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_summarize_skips_failed_samples():
    s = stats.summarize([3.0, None, 1.0, 2.0, float("nan")])
    assert s["n"] == 3 and s["failed"] == 2
    assert (s["median"], s["min"], s["max"]) == (2.0, 1.0, 3.0)
    assert s["p95"] == pytest.approx(2.9)
    assert s["mean"] == pytest.approx(2.0)


def test_summarize_empty():
    s = stats.summarize([None])
    assert s["n"] == 0 and s["failed"] == 1 and s["median"] is None and s["p95"] is None


def test_paired_ratio_is_per_round():
    num, den = [10, 20, 30], [10, 10, 10]
    samples, paired = stats.ratio_samples(num, den)
    assert paired and samples == [1.0, 2.0, 3.0]
    s = stats.ratio_summary(num, den)
    assert s["median"] == 2.0 and s["min"] == 1.0 and s["paired"]
    assert s["of_medians"] == 2.0


def test_paired_ratio_drops_failed_rounds_and_zero_denominators():
    samples, _ = stats.ratio_samples([1, None, 3, 4], [1, 2, 0, 2])
    assert samples == [1.0, 2.0]


def test_unpaired_ratio_uses_every_cross_pair():
    samples, paired = stats.ratio_samples([2, 4], [1, 2, 4])
    assert not paired
    assert sorted(samples) == [0.5, 1.0, 1.0, 2.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        stats.ratio_samples([1], [1, 2], paired=True)


def test_check_operators():
    assert stats.check(0.9, ">=", 0.85) is True
    assert stats.check(0.8, ">=", 0.85) is False
    assert stats.check(4, "<=", 4) is True
    assert stats.check(None, "<=", 4) is None


PROM = """\
# HELP etcd_mvcc_put_total Total number of puts seen by this member.
# TYPE etcd_mvcc_put_total counter
etcd_mvcc_put_total 12
etcd_mvcc_delete_total 3
etcd_debugging_mvcc_current_revision 40
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1
process_resident_memory_bytes 2.5e+07
"""


def test_parse_prometheus_and_sum_by_label():
    m = stats.parse_prometheus(PROM)
    assert m["etcd_mvcc_put_total"] == 12
    assert m["process_resident_memory_bytes"] == 2.5e7
    assert stats.metric_sum(m, "grpc_server_handled_total", grpc_method="Txn") == 8
    assert stats.metric_sum(m, "grpc_server_handled_total", grpc_method="Txn",
                            grpc_code="OK") == 7
    assert stats.metric_sum(m, "grpc_server_handled_total") == 13
    assert stats.metric_sum(m, "no_such_metric") == 0
    after = stats.parse_prometheus(PROM.replace("etcd_mvcc_put_total 12", "etcd_mvcc_put_total 32"))
    assert stats.metric_delta(m, after, "etcd_mvcc_put_total") == 20


# --- report ----------------------------------------------------------------------------------

def _results() -> Results:
    r = Results(command="python -m bench all", meta={"date": "2025-01-01 00:00 UTC",
                                                   "machine": "2 CPU", "duration_s": 12.0})
    r.add_figure("t.u", "throughput", "underlay", "Gbit/s", [10, 12, 11])
    r.add_figure("t.o", "throughput", "overlay", "Gbit/s", [9, 9.6, 8.8])
    r.add_figure("c.e", "convergence", "ping e2e", "ms", [100, 120, None])
    r.add_ratio("t.r", "throughput", "overlay / underlay", "t.o", "t.u", ">=", 0.85)
    r.add_absolute("c.p50", "convergence", "ping e2e p50", "c.e", "median", "<=", 150)
    r.skip("throughput", "flannel host-gw", "not available")
    return r


def test_ratio_and_target_evaluation():
    r = _results()
    ratio = r.ratios[0]
    assert ratio["summary"]["median"] == pytest.approx(0.8)
    assert ratio["summary"]["min"] == pytest.approx(0.8)
    assert ratio["met"] is False
    a = r.absolute[0]
    assert a["value"] == 110 and a["met"] is True and a["unit"] == "ms"


def test_ratio_of_missing_figure_is_not_added():
    r = _results()
    assert r.add_ratio("x", "throughput", "x", "t.o", "t.docker") is None
    r.add_figure("empty", "throughput", "failed", "Gbit/s", [None, None])
    assert r.add_ratio("y", "throughput", "y", "t.o", "empty") is None
    assert [x["id"] for x in r.ratios] == ["t.r"]


def test_fmt():
    assert fmt(None) == "–"
    assert fmt(0.8) == "0.800"
    assert fmt(12.345, "ms") == "12.3"
    assert fmt(123.4, "ms") == "123"
    assert fmt(9.876, "Gbit/s") == "9.88"
    assert fmt(2.0, "count") == "2"
    assert fmt(2.25, "count") == "2.25"
    assert fmt_target({"op": "<=", "value": 150}, "ms") == "<= 150 ms"
    assert fmt_target(None) == ""


def test_table_shape_and_escaping():
    t = table(["a", "b"], [["x|y", "1"]]).splitlines()
    assert t[0] == "| a | b |"
    assert t[1] == "|---|---:|"
    assert t[2] == "| x\\|y | 1 |"


def test_markdown_lists_every_figure_ratio_target_and_skip():
    md = markdown(_results())
    assert "| throughput | overlay / underlay | 0.800× | 0.800 |" in md
    assert "| convergence | ping e2e p50 | 110 ms | <= 150 ms | yes |" in md
    assert "| convergence | ping e2e | ms | 110 | 100 |" in md
    assert "2 (1 failed)" in md
    assert "flannel host-gw: skipped: not available" in md
    assert "**no**" in md


def test_summary_and_readme_section_carry_the_same_numbers():
    r = _results()
    s = summary_text(r)
    sec = readme_section(r, "bench/results/latest.png")
    assert sec.startswith("## Performance")
    assert "![ratios](bench/results/latest.png)" in sec
    assert "python -m bench all" in sec
    for line in s.splitlines():
        if line.startswith("| throughput") or line.startswith("| convergence"):
            assert line in sec


def test_json_round_trip(tmp_path):
    r = _results()
    paths = r.write(str(tmp_path), "latest", chart=False)
    data = json.loads(open(paths["json"]).read())
    assert data["command"] == "python -m bench all"
    assert {f["id"] for f in data["figures"]} == {"t.u", "t.o", "c.e"}
    assert data["figures"][2]["samples"][2] is None
    back = Results.from_dict(data)
    assert markdown(back) == markdown(r)
    assert open(paths["md"]).read() == markdown(r)


def test_chart_is_written_when_matplotlib_is_there(tmp_path):
    pytest.importorskip("matplotlib")
    paths = _results().write(str(tmp_path), "latest")
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_constants_sneak_in():
    """Figures are exactly the samples given: nothing rounded or invented on the way."""
    r = Results()
    r.add_figure("f", "b", "f", "ms", [1.23456789, 2])
    assert r.figures["f"]["samples"] == [1.23456789, 2.0]
    assert math.isclose(r.figures["f"]["summary"]["median"], 1.617283945)


# --- confidence intervals --------------------------------------------------------------------

def test_t_quantile_table_and_expansion():
    assert stats.t975(1) == 12.706
    assert stats.t975(9) == 2.262
    assert stats.t975(30) == 2.042
    assert stats.t975(60) == pytest.approx(2.000, abs=1e-3)     # tables: 2.000
    assert stats.t975(120) == pytest.approx(1.980, abs=1e-3)    # tables: 1.980
    with pytest.raises(ValueError):
        stats.t975(0)


def test_t_interval_of_known_samples():
    mean, lo, hi = stats.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = 1.5811, se = 0.7071, t(4) = 2.776
    assert mean == 3.0
    assert hi - mean == pytest.approx(2.776 * 0.70711, rel=1e-4)
    assert mean - lo == pytest.approx(hi - mean)
    assert stats.t_interval([1.0]) is None
    assert stats.t_interval([1.0, None]) is None


def test_ratio_ci_is_geometric_and_symmetric_in_log():
    ci = stats.ratio_ci([0.5, 2.0, 0.5, 2.0])
    assert ci["geomean"] == pytest.approx(1.0)
    assert ci["low"] * ci["high"] == pytest.approx(1.0)     # symmetric around 1 in log
    assert ci["n"] == 4
    tight = stats.ratio_ci([0.95, 0.96, 0.95, 0.96, 0.955, 0.955])
    assert tight["low"] < 0.955 < tight["high"]
    assert tight["half_width"] < 0.01
    assert stats.resolves(tight, 0.05) and not stats.resolves(ci, 0.05)
    assert stats.ratio_ci([1.0]) is None and not stats.resolves(None)


def test_ratio_ci_narrows_with_more_rounds():
    few = stats.ratio_ci([0.9, 1.0, 0.95])
    many = stats.ratio_ci([0.9, 1.0, 0.95] * 6)
    assert many["high"] - many["low"] < few["high"] - few["low"]
    assert many["geomean"] == pytest.approx(few["geomean"])


def test_paired_ratio_summary_carries_a_ci_and_unpaired_does_not():
    s = stats.ratio_summary([9, 9.6, 8.8], [10, 12, 11])
    assert s["ci"]["low"] < s["ci"]["geomean"] < s["ci"]["high"]
    assert stats.ratio_summary([1, 2], [1, 2, 3])["ci"] is None


def test_bootstrap_is_deterministic_and_brackets_the_median():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    a = stats.bootstrap_ci(xs)
    assert a == stats.bootstrap_ci(xs)
    assert a[0] <= stats.median(xs) <= a[1]
    assert 1.0 <= a[0] and a[1] <= 9.0
    assert stats.bootstrap_ci([None]) is None
    assert stats.bootstrap_ci([2.0, 2.0]) == (2.0, 2.0)


def test_ratio_table_shows_the_interval():
    md = markdown(_results())
    row = next(ln for ln in md.splitlines() if ln.startswith("| throughput | overlay / underlay"))
    assert "[0." in row and "±" in row


def test_a_missed_target_says_whether_the_run_resolves_it_and_names_its_ceiling():
    r = Results()
    r.add_figure("bare", "throughput", "bare", "Gbit/s", [10.4, 10.6, 10.5, 10.5])
    r.add_figure("ours", "throughput", "ours", "Gbit/s", [10.3, 10.5, 10.4, 10.4])
    r.add_figure("theirs", "throughput", "theirs", "Gbit/s", [9.9, 10.0, 10.0, 9.9])
    r.add_ratio("ceil", "throughput", "bare / theirs", "bare", "theirs")
    r.add_ratio("near", "throughput", "ours / theirs", "ours", "theirs", ">=", 1.05,
                ceiling="ceil")
    r.add_ratio("far", "throughput", "ours / bare", "ours", "bare", ">=", 1.5)
    r.add_ratio("met", "throughput", "ours / bare, low bar", "ours", "bare", ">=", 0.5)
    near, far = missed_lines(r)
    assert near.startswith("- ours / theirs: 1.045×, target >= 1.050")
    assert "includes the target" in near
    assert "the ceiling, bare / theirs, was 1.055×" in near
    assert "excludes the target: missed" in far and "ceiling" not in far
    assert "Ratio targets missed:" in markdown(r) and "Ratio targets missed:" in readme_section(
        r, None)
    assert missed_lines(Results()) == []


# --- simulated control plane -----------------------------------------------------------------

def test_control_etcd_counts_add_puts_and_deletes():
    from bench.control_procs import etcd_counts
    m = stats.parse_prometheus(PROM)
    assert etcd_counts(m)["keys_written"] == 15 and etcd_counts(m)["write_requests"] == 8


def test_control_host_addresses_are_unique_and_in_the_underlay():
    import ipaddress

    from bench.control_worker import UNDERLAY, address
    addrs = {address(i) for i in range(5000)}
    assert len(addrs) == 5000
    assert all(ipaddress.IPv4Address(a) in UNDERLAY for a in addrs)


def _control_step(hosts: int) -> dict:
    return {"hosts": hosts, "endpoints": 2 * hosts + 40, "writes_per_start": 1.0,
            "events_per_host_per_start": 1.02, "last_sub_ms": [10.0, 20.0, 30.0],
            "programmed_ms": [15.0, 25.0], "last_host_ms": [10.0, 40.0], "attach_ms": [9.0],
            "etcd_cpu_ms_per_start": 12.5, "db_mb": 3.2, "worker_rss_mb": 0.8 * hosts,
            "agent_cpu_us_per_start": 500.0, "keys": 5 * hosts, "gc_ms": 2.0, "net_size": 50,
            "lag_max_ms": 120.0, "loadavg": 3.2, "join_s": hosts / 100, "fill_s": hosts / 50}


def _fan(mode: str, watchers: int, cpu: float) -> dict:
    return {"mode": mode, "watchers": watchers, "last_ms": [5.0, 9.0], "bulk": 100_000,
            "etcd_cpu_ms_per_start": cpu, "db_mb": 50.0,
            "events_per_watcher_per_write": 1.0 if mode == "whole" else 0.01}


def test_readme_section_carries_the_control_plane_run_with_its_commit():
    steps = [_control_step(100), _control_step(1000)]
    fan = [_fan("whole", 5000, 40.0), _fan("scoped", 5000, 2.0)]
    ctl = Results(command="python -m bench control", meta={"commit": "abc1234",
                                                           "control": {"steps": steps,
                                                                       "fanout": fan}})
    ctl.note("control", "stopped before 5000 hosts: memory")
    sec = readme_section(_results(), None, ctl, "bench/results/control-scale.png")
    assert "### Control plane, simulated" in sec and "at commit abc1234" in sec
    assert ("| 1,000 | 2,040 | 1.00 | 1.02 | 20.0 / 29.8 | 20.0 / 24.9 | 10 | 20 | 12.5 | "
            "3.2 | 500 | 0.8 | 120 | 3 |") in sec
    assert ("| 5,000 | its network's endpoints (50 hosts; agents now) | 0.010 | 7.0 / 9.0 | "
            "2.00 | 50 | 0 |") in sec
    assert "(about 500 starts per second per etcd core)" in sec        # scoped, as agents now
    assert "a write would cost 40.0 ms (about 25 starts per second per core)" in sec
    assert "all 1,000 hosts joining took 10 s here against 1 s for 100" in sec
    # the 5,000 hosts, read off the curves: 0.8 MB an agent, joins growing with hosts
    assert "they would hold ~0.8 MB each (~4 GB together)" in sec
    assert "their join would take ~1 min" in sec
    assert "stopped before 5000 hosts" in sec
    assert readme_section(_results(), None) == readme_section(_results(), None, None)


def test_splice_readme_replaces_only_the_performance_section(tmp_path):
    from bench.run import splice_readme
    p = tmp_path / "README.md"
    p.write_text("# x\n\nintro\n\n## Performance\n\nold 1\nold 2\n\n## Tests\n\nkeep\n")
    assert splice_readme(str(p), "## Performance\n\nnew\n")
    assert p.read_text() == "# x\n\nintro\n\n## Performance\n\nnew\n\n## Tests\n\nkeep\n"
    q = tmp_path / "OTHER.md"
    q.write_text("# y\n")
    assert not splice_readme(str(q), "## Performance\n") and q.read_text() == "# y\n"
    assert not splice_readme(str(tmp_path / "missing.md"), "x")


def test_control_section_shows_the_big_cluster_apart_from_the_curve():
    big = {**_control_step(5000), "big": True, "per_host": 20, "worker_rss_mb": 9000.0,
           "endpoints": 100_040}
    ctl = Results(command="python -m bench control",
                  meta={"control": {"steps": [_control_step(1000), big],
                                    "fanout": [_fan("whole", 5000, 40.0)]}})
    sec = readme_section(_results(), None, ctl, None)
    row = next(ln for ln in sec.splitlines() if ln.startswith("| 5,000 (20 endpoints each)"))
    assert "| 1.8 |" in row                             # 9,000 MB over 5,000 agents
    assert "At 5,000 hosts and 100,040 endpoints (an agent on every host, 20 endpoints" in sec
    assert "each agent took 1.8 MB" in sec
    assert "at 1,000 hosts a start reached" in sec      # the curve's biggest step
    res = Results(command="x")
    record(res, [_control_step(5000), big], "", [])
    labels = {f["label"] for f in res.figures.values()}
    assert {"5000 hosts: start to every subscribed host's mirror",
            "5000 hosts × 20 endpoints: start to every subscribed host's mirror"} <= labels
