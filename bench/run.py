"""overnet bench: overnet against the underlay, the reference CNI plugins and Docker's overlay.

    sudo .venv/bin/python -m bench all [--quick]        # everything, ~12 minutes on 2 cores (--quick: under 3)
    sudo .venv/bin/python -m bench throughput|convergence|setup|scale [--quick]
    .venv/bin/python -m bench report     # redraw tables, chart, README section from latest.json

`all` writes bench/results/latest.{json,md,png} and README-section.md; one benchmark alone
writes bench/results/<name>.{json,md,png}. Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import subprocess
import sys
import time

if __package__ in (None, ""):        # `python bench/run.py`: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from bench import (control, convergence, runtimes_bench, scale, setup_time,  # noqa: E402
                   throughput, tuning)
from bench.labs import Config, Context, Progress, Skip  # noqa: E402
from bench.report import Results, readme_section, summary_text  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(os.path.dirname(HERE), "README.md")
BENCHES = {"throughput": throughput.run, "convergence": convergence.run,
           "setup": setup_time.run, "runtimes": runtimes_bench.run, "scale": scale.run}
# Experiments, run by name only (not part of `all`).
EXTRA = {"tuning": tuning.run, "control": control.run}


def _machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0
    return f"{os.cpu_count()} CPU ({cpu}), {mem:.0f} GB, Linux {platform.release()}"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for key, argv in (("iperf3", ["iperf3", "--version"]), ("docker", ["dockerd", "--version"]),
                      ("etcd", ["etcd", "--version"])):
        try:
            out[key] = subprocess.run(argv, capture_output=True, text=True,
                                      timeout=10).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            out[key] = "not installed"
    return out


def _commit() -> str:
    """The commit the run measured, `+dirty` when the work tree had changes."""
    git = ["git", "-C", os.path.dirname(HERE)]
    try:
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if head and dirty else "")


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return ""


def preflight() -> list[str]:
    """Things on this machine that skew or break the figures, said up front."""
    out = []
    try:
        nets = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                              timeout=10).stdout.split("\n")
        foreign = sorted({n.split()[0] for n in nets if n.strip()
                          and not n.startswith("bn-")})
        if foreign:
            out.append(f"{len(foreign)} network namespace(s) of other workloads exist "
                       f"({', '.join(foreign[:4])}{'…' if len(foreign) > 4 else ''}): whatever "
                       "runs there competes for the CPUs and adds noise")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            nf = f.read().strip() == "1"
        policy = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True,
                                timeout=10).stdout
        if nf and "-P FORWARD DROP" in policy:
            out.append("this namespace's FORWARD policy is DROP (a system dockerd?) and "
                       "br_netfilter is loaded: the sandbox underlay bridges are filtered "
                       "too; `iptables -P FORWARD ACCEPT` or stop the system Docker service")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", choices=["all", *BENCHES, *EXTRA], nargs="?", default="all")
    ap.add_argument("--quick", action="store_true",
                    help="reduced sizes: fewer rounds and trials, a 4-host scale lab")
    ap.add_argument("--out", default=RESULTS, help="results directory (default bench/results)")
    ap.add_argument("--no-docker", action="store_true", help="skip the Docker references")
    ap.add_argument("--reps", type=int, help="throughput rounds (default 8, quick 3)")
    ap.add_argument("--duration", type=int,
                    help="iperf3 seconds per 1-stream test (default 2, quick 1)")
    ap.add_argument("--duration-multi", type=int, dest="duration_multi",
                    help="iperf3 seconds per test of several streams (default 5, quick 1)")
    ap.add_argument("--trials", type=int, dest="conv_trials",
                    help="convergence trials per system (default 30, quick 8)")
    ap.add_argument("--containers", type=int, dest="setup_n",
                    help="set-up benchmark containers (default 100, quick 20)")
    ap.add_argument("--docker-runs", type=int, help="docker run samples (default 20, quick 5)")
    ap.add_argument("--hosts", type=int, dest="scale_hosts",
                    help="scale lab hosts (default 50, quick 4)")
    ap.add_argument("--per-host", type=int, dest="scale_per_host",
                    help="scale containers per host (default 20, quick 4)")
    ap.add_argument("--scale-rounds", type=int, help="scale rounds (default 1, quick 1)")
    ap.add_argument("--ctl-hosts", type=lambda v: tuple(int(x) for x in v.split(",") if x),
                    help="simulated control plane: host counts, e.g. 100,1000,5000 ('': none)")
    ap.add_argument("--ctl-per-host", type=int, help="background endpoints per host (2)")
    ap.add_argument("--ctl-starts", type=int, help="measured starts per step, at least (40; "
                    "they go on for one lease cycle, 40 s)")
    ap.add_argument("--ctl-workers", type=int, help="worker processes (2)")
    ap.add_argument("--ctl-watchers", type=lambda v: tuple(int(x) for x in v.split(",") if x),
                    help="etcd alone: plain watcher steps (1000,2000,5000; '' for none)")
    ap.add_argument("--ctl-net-size", type=int, help="hosts per overlay network (50)")
    ap.add_argument("--ctl-channel", choices=["agent", "worker"],
                    help="one etcd client per simulated agent or per worker (worker)")
    ap.add_argument("--ctl-big", type=int, metavar="HOSTS",
                    help="simulated control plane: then HOSTS hosts with 20 endpoints each, "
                         "an agent on every host (0)")
    ap.add_argument("--ctl-budget", type=float, metavar="MINUTES",
                    help="simulated control plane: stop growing past this (40)")
    ap.add_argument("--budget", type=float, default=20.0, metavar="MINUTES",
                    help="time budget of the whole run; later scale rounds are left out "
                         "(and said so) when they would not fit (default 14, 0: none)")
    return ap.parse_args(argv)


def _control(out: str) -> tuple[Results | None, str | None]:
    """The last simulated control plane run (control.json), for the README section."""
    import json
    try:
        with open(os.path.join(out, "control.json")) as f:
            ctl = Results.from_dict(json.load(f))
    except (OSError, ValueError):
        return None, None
    png = os.path.join(out, "control-scale.png")
    return ctl, ("bench/results/control-scale.png" if os.path.exists(png) else None)


def splice_readme(path: str, section: str) -> bool:
    """Replace README.md's "## Performance" section (up to the next "## ") with `section`;
    False (file unchanged) if the file or the heading is missing."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return False
    start = text.find("\n## Performance\n")
    if start < 0:
        return False
    end = text.find("\n## ", start + 1)
    new = text[:start + 1] + section.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)
    return True


def rerender(out: str) -> int:
    """`report`: draw latest.md, latest.png and README-section.md again from latest.json
    (no measurement; the numbers are the ones that run recorded)."""
    import json
    path = os.path.join(out, "latest.json")
    try:
        with open(path) as f:
            res = Results.from_dict(json.load(f))
    except (OSError, ValueError) as e:
        print(f"Error: cannot read {path}: {e}", file=sys.stderr)
        return 1
    paths = res.write(out, "latest")
    section = readme_section(res, "bench/results/latest.png" if "png" in paths else None,
                             *_control(out))
    with open(os.path.join(out, "README-section.md"), "w") as f:
        f.write(section)
    if os.path.abspath(out) == RESULTS:
        splice_readme(README, section)
    print(summary_text(res))
    return 0


def _lock() -> object | None:
    """One bench run at a time on this machine: a second one would tear down the first one's
    labs (the leftover clean-up) and both would measure each other. None if one is running."""
    import fcntl
    from bench.labs import ROOT
    os.makedirs(ROOT, exist_ok=True)
    f = open(os.path.join(ROOT, "run.lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return rerender(parse_args(argv[1:]).out)
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("Error: the benchmarks need root (namespaces, netlink, dockerd)", file=sys.stderr)
        return 1
    # The simulated control plane builds no lab (its own etcd on loopback, worker processes):
    # it may run beside another bench run, and must not tear down that run's labs.
    labless = args.bench == "control"
    lock = True if labless else _lock()
    if lock is None:
        print("Error: another bench run is in progress on this machine "
              "(/var/lib/overnet/bench/run.lock); wait for it to finish", file=sys.stderr)
        return 1
    cfg = Config.make(args.quick, reps=args.reps, duration=args.duration,
                      duration_multi=args.duration_multi,
                      conv_trials=args.conv_trials, setup_n=args.setup_n,
                      docker_runs=args.docker_runs, scale_hosts=args.scale_hosts,
                      scale_per_host=args.scale_per_host, scale_rounds=args.scale_rounds,
                      ctl_hosts=args.ctl_hosts, ctl_per_host=args.ctl_per_host,
                      ctl_starts=args.ctl_starts, ctl_workers=args.ctl_workers,
                      ctl_watchers=args.ctl_watchers, ctl_net_size=args.ctl_net_size,
                      ctl_channel=args.ctl_channel, ctl_big=args.ctl_big,
                      ctl_budget_s=args.ctl_budget * 60 if args.ctl_budget else None)
    cfg.docker = not args.no_docker
    cfg.budget_s = args.budget * 60 if args.budget else None
    progress = Progress()
    res = Results(command="sudo .venv/bin/python -m bench " + shlex.join(argv or ["all"]))
    started = time.monotonic()
    res.meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": _machine(),
                "versions": _versions(), "config": vars(cfg),
                "commit": _commit()}

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    todo = list(BENCHES) if args.bench == "all" else [args.bench]
    for line in preflight():
        progress("bench", line)
        res.note("bench", line)
    res.meta["loadavg_start"] = _loadavg()
    if not labless:
        Context.clean_leftovers(lambda m: progress("cleanup", m))
    ctx = Context(cfg, progress)
    ctx.out = args.out
    code = 0
    try:
        for name in todo:
            if name == "scale":
                ctx.close()      # the scale lab gets the machine to itself
            progress(name, "starting")
            t = time.monotonic()
            try:
                {**BENCHES, **EXTRA}[name](ctx, res)
                res.ran.append(name)
            except Skip as e:
                res.skip(name, "whole benchmark", str(e))
                progress(name, f"skipped: {e}")
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one benchmark failing does not lose the others
                code = 1
                res.skip(name, "whole benchmark", f"failed: {type(e).__name__}: {e}")
                progress(name, f"FAILED: {type(e).__name__}: {e}")
                import traceback
                traceback.print_exc()
            progress(name, f"done in {time.monotonic() - t:.0f}s")
    except KeyboardInterrupt:
        progress("bench", "interrupted: cleaning up")
        code = 130
    finally:
        ctx.close()
    res.meta["duration_s"] = time.monotonic() - started
    res.meta["loadavg_end"] = _loadavg()
    # A quick run is a developer's loop: it never replaces the full run's figures.
    full = args.bench == "all" and not args.quick
    stem = "latest" if full else "quick" if args.bench == "all" else args.bench
    paths = res.write(args.out, stem)
    if full and code == 0:
        chart = "bench/results/latest.png" if "png" in paths else None
        section = readme_section(res, chart, *_control(args.out))
        with open(os.path.join(args.out, "README-section.md"), "w") as f:
            f.write(section)
        paths["readme"] = os.path.join(args.out, "README-section.md")
        if os.path.abspath(args.out) == RESULTS and splice_readme(README, section):
            paths["README"] = README
    print(summary_text(res))
    for kind, path in paths.items():
        progress("bench", f"wrote {os.path.relpath(path)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
