"""What metrics cost a container's network set-up: `overnet run -d` on two hosts of one lab,
interleaved, net-1's agent with --metrics-addr (and scraped every 0.2 s, 25 times as often as
a usual 5 s Prometheus interval), net-2's without.

    sudo .venv/bin/python -m bench.metrics_cost [-n 40] [--out FILE]

Reports, per host, the agent-side set-up time (NetworkSetupSeconds) and the wall time of
`overnet run -d`: median, p90 and mean, and the difference metrics make.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time

from overnet.observe import SANDBOX_ADDR
from overnet.sandbox.lab import Lab

ROOT = "/var/lib/overnet/bench"
PORT = SANDBOX_ADDR.rsplit(":", 1)[1]
SCRAPER = ("import sys, time, urllib.request\n"
           "n = 0\n"
           "while True:\n"
           "    urllib.request.urlopen(sys.argv[1], timeout=5).read(); n += 1\n"
           "    print(n, flush=True); time.sleep(0.2)\n")


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": statistics.median(xs) * 1e3,
            "p90_ms": xs[int(0.9 * (len(xs) - 1))] * 1e3,
            "mean_ms": statistics.fmean(xs) * 1e3, "n": len(xs)}


def run_one(lab: Lab, host: str, name: str) -> tuple[float, float]:
    argv, env = lab.ssh_argv(host, ["overnet", "run", "-d", "--name", name, "sleep", "1000"])
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"run on {host}: {proc.stderr.strip()}")
    c = lab.client(host).get(f"/containers/{name}")
    return c["NetworkSettings"].get("NetworkSetupSeconds") or 0.0, wall


def measure(lab: Lab, n: int) -> dict[str, dict[str, dict[str, float]]]:
    times: dict[str, dict[str, list[float]]] = {h: {"agent": [], "wall": []}
                                                for h in ("net-1", "net-2")}
    for i in range(n):
        order = ("net-1", "net-2") if i % 2 == 0 else ("net-2", "net-1")
        for host in order:
            agent, wall = run_one(lab, host, f"m{host[-1]}x{i}")
            times[host]["agent"].append(agent)
            times[host]["wall"].append(wall)
        print(f"\r{i + 1}/{n} containers per host", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {h: {k: summary(v) for k, v in t.items()} for h, t in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=40, help="containers per host")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "metrics_cost.json"))
    p.add_argument("--baseline", action="store_true",
                   help="metrics off on both hosts: the difference is the noise floor")
    args = p.parse_args()
    lab = Lab(f"bm{secrets.token_hex(2)}", root=ROOT, say=lambda m: print(m, file=sys.stderr))
    scraper = None
    try:
        lab.up(hosts=2, underlay=f"192.168.{160 + secrets.randbelow(40)}.0/24")
        if not args.baseline:      # net-1's agent only: restarted with metrics on
            lab.state.agent_args = ["--metrics-addr", SANDBOX_ADDR]
        lab.restart_agent("net-1", signal.SIGTERM)
        lab.state.agent_args = []
        h1 = lab.host("net-1")
        argv, env = lab.ssh_argv("net-1", [sys.executable, "-c", SCRAPER,
                                           f"http://{h1.address}:{PORT}/metrics"])
        scraper = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True,
                                   stderr=subprocess.DEVNULL)
        result = measure(lab, args.n)
        scraper.terminate()
        scrapes = len(scraper.communicate(timeout=10)[0].split())
    finally:
        if scraper is not None and scraper.poll() is None:
            scraper.kill()
            scraper.wait()
        lab.down(quiet=True)
    on, off = result["net-1"], result["net-2"]
    report = {"with_metrics": on, "without_metrics": off, "scrapes": scrapes,
              "baseline": args.baseline,
              "agent_median_delta_ms": on["agent"]["median_ms"] - off["agent"]["median_ms"],
              "wall_median_delta_ms": on["wall"]["median_ms"] - off["wall"]["median_ms"]}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    first = "net-1 (no metrics either)" if args.baseline else "with --metrics-addr (scraped)"
    for label, r in ((first, on), ("without", off)):
        print(f"{label:<30} agent median {r['agent']['median_ms']:6.1f} ms p90 "
              f"{r['agent']['p90_ms']:6.1f} | run -d median {r['wall']['median_ms']:6.1f} ms "
              f"p90 {r['wall']['p90_ms']:6.1f}")
    print(f"metrics cost: {report['agent_median_delta_ms']:+.1f} ms agent-side, "
          f"{report['wall_median_delta_ms']:+.1f} ms end to end (median; {scrapes} scrapes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
