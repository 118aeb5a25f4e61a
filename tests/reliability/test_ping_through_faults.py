"""Traffic between containers does not notice the control plane's troubles: a steady ping
across hosts loses nothing while an agent is killed and restarted, or the store is killed
and comes back."""

from __future__ import annotations

import re
import subprocess
import time

AGENT_ARGS = ["--resync-every", "1"]
INTERVAL = 0.05


def _pinger(lab, host: str, container: str, target: str, seconds: float) -> subprocess.Popen:
    count = int(seconds / INTERVAL)
    argv, env = lab.ssh_argv(host, ["overnet", "exec", container, "ping", "-i", str(INTERVAL),
                                    "-c", str(count), "-W", "1", target])
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _lost(proc: subprocess.Popen) -> tuple[int, int]:
    out, _ = proc.communicate(timeout=120)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(1)) - int(m.group(2))


def test_no_ping_lost_across_agent_and_store_faults(lab):
    a = lab.out("net-1", "run", "-d", "sleep", "infinity")
    b = lab.out("net-2", "run", "-d", "sleep", "infinity")
    ip_b = lab.inspect("net-2", b)["NetworkSettings"]["IPAddress"]
    assert lab.ping("net-1", a, ip_b, count=1)
    figures = {}
    for fault in ("agent kill -9 and restart, both hosts", "store killed for 5 s"):
        proc = _pinger(lab, "net-1", a, ip_b, seconds=12)
        time.sleep(2)
        if fault.startswith("agent"):
            lab.restart_agent("net-1")
            lab.restart_agent("net-2")
        else:
            lab._sigkill(lab.state.etcd_pid)
            time.sleep(5)
            lab._start_etcd()
        figures[fault] = _lost(proc)
    print("[faults] pings sent, lost: " + "; ".join(f"{k}: {v[0]}, {v[1]}"
                                                    for k, v in figures.items()))
    assert all(lost == 0 for _, lost in figures.values()), figures
    lab.ov("net-1", "rm", "-f", a)
    lab.ov("net-2", "rm", "-f", b)
