"""The container runner for real: namespaces, bind mounts, terminals, /etc/hosts swaps.

Each test gets its own temp directory holding a private bind-mounted netns directory with a
fresh network namespace pinned in it, and the container's state files; everything (processes,
mounts, files) is removed afterwards, even on failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pty
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from overnet.dataplane import syscalls as sc
from overnet.runtime.process import (
    ContainerSpec,
    ContainerStartError,
    alive,
    exec_in,
    exec_popen,
    open_pidfd,
    prepare_files,
    proc_start_time,
    replace_files,
    replace_hosts,
    replace_hosts_many,
    run_foreground,
    spawn,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(120),
]

PY = sys.executable


class Box:
    """One container's worth of host-side setup."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.netns_dir = os.path.join(root, "netns")
        self.state = os.path.join(root, "state")
        self.mounts: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.id = secrets.token_hex(32)
        self.short = self.id[:12]
        self.netns = os.path.join(self.netns_dir, self.short)
        self.hosts_content = f"127.0.0.1\tlocalhost\n10.99.0.2\t{self.short} test-{self.id[:6]}\n"

    def setup(self) -> None:
        os.mkdir(self.netns_dir)
        os.mkdir(self.state)
        # Like the agent: a private bind mount of itself, so nsfs mounts can live there.
        sc.mount(self.netns_dir, self.netns_dir, None, sc.MS_BIND)
        self.mounts.append(self.netns_dir)
        sc.mount(None, self.netns_dir, None, sc.MS_PRIVATE)
        open(self.netns, "w").close()
        subprocess.run(["unshare", f"--net={self.netns}", "true"], check=True)
        self.mounts.append(self.netns)
        prepare_files(self.spec([]), self.hosts_content)

    def spec(self, cmd: list[str], **changes: object) -> ContainerSpec:
        base = ContainerSpec(
            id=self.id, hostname=self.short, netns=self.netns, netns_dir=self.netns_dir,
            hosts_file=os.path.join(self.state, "hosts"),
            hostname_file=os.path.join(self.state, "hostname"),
            resolv_file=os.path.join(self.state, "resolv.conf"), cmd=cmd)
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def spawn(self, cmd: list[str], stdout: int | None = subprocess.PIPE,
              **changes: object) -> subprocess.Popen:
        proc = spawn(self.spec(cmd, **changes), subprocess.DEVNULL, stdout, None)
        self.procs.append(proc)
        return proc

    def output(self, cmd: list[str], **changes: object) -> str:
        proc = self.spawn(cmd, **changes)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        return out.decode()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdout, proc.stdin):
                if f:
                    f.close()
        for path in reversed(self.mounts):
            try:
                sc.umount2(path, sc.MNT_DETACH)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def box() -> Iterator[Box]:
    b = Box(tempfile.mkdtemp(prefix="overnet-rt-"))
    try:
        b.setup()
        yield b
    finally:
        b.cleanup()


def mountpoints(pid: int | str) -> list[tuple[str, str]]:
    """(mount point, fs type) of each mount in the mount namespace of `pid`."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            out.append((fields[4], fields[fields.index("-") + 1]))
    return out


def hosts_mounts(pid: int) -> int:
    return sum(1 for mp, _ in mountpoints(pid) if mp == "/etc/hosts")


# ---------------------------------------------------------------------------------------------


def test_prepare_files_drops_loopback_nameservers(box: Box) -> None:
    source = os.path.join(box.root, "resolv.src")
    with open(source, "w") as f:
        f.write("# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\n"
                "nameserver fd00::53\nsearch example.com corp\noptions edns0 trust-ad\n")
    spec = box.spec([])
    prepare_files(spec, "hosts here\n", resolv_source=source)
    with open(spec.resolv_file) as f:
        assert f.read() == ("# generated\nnameserver 10.0.0.2\nnameserver fd00::53\n"
                            "search example.com corp\noptions edns0 trust-ad\n")
    with open(spec.hostname_file) as f:
        assert f.read() == f"{box.short}\n"
    with open(spec.hosts_file) as f:
        assert f.read() == "hosts here\n"
    assert os.stat(spec.hosts_file).st_mode & 0o777 == 0o644
    assert sorted(os.listdir(box.state)) == ["hostname", "hosts", "resolv.conf"]  # no temp files


def test_container_identity(box: Box) -> None:
    out = box.output(["sh", "-c", ("hostname; echo ---; cat /etc/hosts; echo ---; cat /etc/hostname;"
                      " echo ---; cat /etc/resolv.conf; echo ---; readlink /proc/self/ns/net")])
    hostname, hosts, hostname_file, resolv, netns = out.split("---\n")
    assert hostname == f"{box.short}\n"
    assert hosts == box.hosts_content
    assert hostname_file == f"{box.short}\n"
    with open(box.spec([]).resolv_file) as f:
        assert resolv == f.read()
    assert netns.strip() == f"net:[{os.stat(box.netns).st_ino}]"
    assert os.uname().nodename != box.short  # the host's hostname is untouched
    with open("/etc/hosts") as f:
        assert f.read() != box.hosts_content  # and so is its /etc/hosts


def test_environment_cwd_and_session(box: Box) -> None:
    out = box.output(["sh", "-c", 'echo "$HOSTNAME|$HOME|$PATH|$FOO|$(pwd)"'],
                     env={"FOO": "bar"}, cwd="/tmp")
    assert out.split("|") == [box.short, "/root", ("/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                              "/usr/bin:/sbin:/bin"), "bar", "/tmp\n"]
    proc = box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    assert os.getsid(proc.pid) == proc.pid  # detached from the caller's session


def test_netns_dir_is_detached_inside(box: Box) -> None:
    proc = box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    inside = mountpoints(proc.pid)
    assert not [mp for mp, _ in inside if mp.startswith(box.netns_dir)]
    assert {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} <= {mp for mp, _ in inside}
    # The host still has them, and none of the container's mounts leaked back.
    host = mountpoints("self")
    assert (box.netns, "nsfs") in host
    assert "/etc/hostname" not in {mp for mp, _ in host}


def test_start_errors_name_the_step(box: Box) -> None:
    with pytest.raises(ContainerStartError, match="cannot join network namespace .*/nope"):
        box.spawn(["true"], netns=os.path.join(box.root, "nope"))
    missing = os.path.join(box.state, "missing")
    with pytest.raises(ContainerStartError,
                       match=f"cannot bind-mount {missing} on /etc/hosts: No such file"):
        box.spawn(["true"], hosts_file=missing)
    with pytest.raises(FileNotFoundError):
        box.spawn(["/nonexistent/binary"])


def test_exec_joins_the_container(box: Box) -> None:
    proc = box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL, env={"FOO": "bar"})
    ex = exec_popen(proc.pid, ["sh", "-c", ("readlink /proc/self/ns/net /proc/self/ns/uts "
                               "/proc/self/ns/mnt; hostname; pwd; echo $FOO $X; cat /etc/hosts")],
                    subprocess.DEVNULL, subprocess.PIPE, None, env={"X": "y"})
    out, _ = ex.communicate(timeout=30)
    lines = out.decode().split("\n", 6)
    want = [os.readlink(f"/proc/{proc.pid}/ns/{ns}") for ns in ("net", "uts", "mnt")]
    assert lines[:3] == want
    assert want[2] != os.readlink("/proc/self/ns/mnt")
    assert lines[3:6] == [box.short, "/", "bar y"]
    assert lines[6] == box.hosts_content
    script = f'test "$(hostname)" = {box.short} && test "$FOO" = bar && exit 7'
    assert exec_in(proc.pid, ["sh", "-c", script], interactive=False) == 7


def test_exec_errors(box: Box) -> None:
    proc = box.spawn(["true"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        exec_in(proc.pid, ["true"])
    with pytest.raises(ProcessLookupError):
        replace_hosts(proc.pid, box.spec([]).hosts_file)


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 128 + 9)])
def test_run_foreground_exit_codes(box: Box, script: str, code: int) -> None:
    before = signal.getsignal(signal.SIGINT)
    assert run_foreground(box.spec(["sh", "-c", script])) == code
    assert signal.getsignal(signal.SIGINT) is before  # restored


# A fresh interpreter on a pseudo-terminal, like `overnet run -it` typed in a shell.
DRIVER = """
import json, sys
from overnet.runtime.process import ContainerSpec, exec_in, run_foreground
arg = json.loads(sys.argv[1])
if "pid" in arg:
    rc = exec_in(arg["pid"], arg["cmd"], tty=True)
else:
    rc = run_foreground(ContainerSpec(**arg))
print(f"RC={rc}", flush=True)
"""


def on_pty(arg: dict, send: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]] = (),
           timeout: float = 30) -> str:
    """Run DRIVER on a new pty; for each (wait_for, data), type data once wait_for is seen."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.execv(PY, [PY, "-c", DRIVER, json.dumps(arg)])
        finally:
            os._exit(127)
    out = b""
    todo = list(send)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if todo and todo[0][0] in out:
                os.write(master, todo.pop(0)[1])
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(master)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.killpg(pid, signal.SIGKILL)   # with the container's waiter and init
            os.waitpid(pid, 0)
    return out.decode(errors="replace").replace("\r\n", "\n")


def test_run_foreground_gets_the_terminal(box: Box) -> None:
    probe = "import os; print('fg', os.tcgetpgrp(0) == os.getpgrp(), os.environ.get('TERM'))"
    out = on_pty(dataclasses.asdict(box.spec(["sh", "-c", f'tty; {PY} -c "{probe}"'])))
    assert "/dev/pts/" in out and "fg True" in out and "RC=0" in out
    assert "fg True None" not in out  # TERM comes from the caller when on a terminal


def test_run_foreground_interactive_shell(box: Box) -> None:
    out = on_pty(dataclasses.asdict(box.spec(["sh"])),
                 [(b"", b"echo host=$(hostname) $((2+3)); exit 5\n")])
    # (the terminal echoes the typed line: only the shell prints the evaluated one)
    assert f"host={box.short} 5\n" in out and "RC=5" in out


def test_ctrl_c_kills_the_container_not_the_runner(box: Box) -> None:
    out = on_pty(dataclasses.asdict(box.spec(["sh", "-c", "echo ready; sleep 30"])),
                 [(b"ready", b"\x03")])
    assert "RC=130" in out


def test_ctrl_z_on_a_terminal_does_not_hang_it(box: Box) -> None:
    # The command is alone in the terminal's foreground group (the runner's group is not
    # visible in its PID namespace): ^Z must not leave it stopped under a running runner,
    # even half-way through a vfork (dash's), which no SIGCONT from its init could catch.
    out = on_pty(dataclasses.asdict(box.spec(["sh", "-c", "echo ready; sleep 1; echo done"])),
                 [(b"ready", b"\x1a")])
    assert "done" in out and "RC=0" in out, out


def test_exec_interactive_shell_on_a_terminal(box: Box) -> None:
    proc = box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    out = on_pty({"pid": proc.pid, "cmd": ["sh"]}, [(b"", b"echo pid=$$; exit 4\n")])
    assert "pid=" in out and "RC=4" in out and "Cannot set tty process group" not in out
    assert "pid=1\n" not in out and "pid=2\n" not in out   # not the init, not the command


def test_exec_with_tty(box: Box) -> None:
    proc = box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    out = on_pty({"pid": proc.pid, "cmd": ["sh", "-c", "tty; hostname"]})
    assert "/dev/pts/" in out and f"\n{box.short}\n" in out and "RC=0" in out


# Runs inside the container: reads /etc/hosts in a tight loop and prints each new digest
# (and errors), then the number of reads on SIGTERM.
READER = """
import hashlib, signal, sys
n = 0
def stop(*_):
    print(f"reads {n}", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
last = None
print("start", flush=True)
while True:
    try:
        with open("/etc/hosts", "rb") as f:
            h = hashlib.md5(f.read()).hexdigest()
    except OSError as e:
        h = f"error {e}"
    n += 1
    if h != last:
        print(h, flush=True)
        last = h
"""


def hosts_version(box: Box, i: int) -> bytes:
    # Big enough (~40 KB) that a torn read would be likely if the swap were not atomic.
    lines = [f"10.{i % 256}.{j // 256}.{j % 256}\thost-{i}-{j}.example\n" for j in range(1200)]
    return (box.hosts_content + "".join(lines)).encode()


def test_replace_hosts_is_atomic_and_does_not_pile_up(box: Box) -> None:
    reader = box.spawn([PY, "-c", READER])
    assert reader.stdout is not None
    assert reader.stdout.readline() == b"start\n"
    hosts = box.spec([]).hosts_file
    new = f"{hosts}.new"
    valid = {hashlib.md5(box.hosts_content.encode()).hexdigest()}
    elapsed = []
    for i in range(200):
        data = hosts_version(box, i)
        valid.add(hashlib.md5(data).hexdigest())
        with open(new, "wb") as f:
            f.write(data)
        t0 = time.perf_counter()
        replace_hosts(reader.pid, new)
        elapsed.append(time.perf_counter() - t0)
        os.replace(new, hosts)  # keep the stable name, as the agent would
        if i == 19:
            assert hosts_mounts(reader.pid) == 1
    assert hosts_mounts(reader.pid) == 1
    with open(f"/proc/{reader.pid}/root/etc/hosts", "rb") as f:
        assert f.read() == hosts_version(box, 199)

    reader.send_signal(signal.SIGTERM)
    out, _ = reader.communicate(timeout=30)
    *seen, count = out.decode().splitlines()
    assert count.startswith("reads ")
    bad = [h for h in seen if h not in valid]
    assert not bad, f"reader saw {len(bad)} bad versions, e.g. {bad[:3]}"
    assert len(seen) > 20, "the reader did not run concurrently with the swaps"
    avg = sum(elapsed) / len(elapsed)
    print(f"\nreplace_hosts: avg {avg * 1e3:.2f} ms, max {max(elapsed) * 1e3:.2f} ms over 200; "
          f"reader: {count}, {len(seen)} versions seen")
    assert avg < 0.1


def umount_inside(pid: int, path: str) -> None:
    """Unmount `path` in the mount namespace of `pid`, from a forked child of ours."""
    child = os.fork()
    if child == 0:  # pragma: no cover - child
        code = 1
        try:
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
            sc.setns(fd, sc.CLONE_NEWNS)
            sc.umount2(path, sc.MNT_DETACH)
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0


def test_replace_hosts_heals_a_lost_mount(box: Box) -> None:
    # If the host replaces /etc/hosts by rename, the kernel detaches mounts on it.
    proc = box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    umount_inside(proc.pid, "/etc/hosts")   # (the container itself may not umount)
    assert hosts_mounts(proc.pid) == 0
    new = os.path.join(box.state, "hosts.new")
    with open(new, "w") as f:
        f.write("healed\n")
    replace_hosts(proc.pid, new)
    assert hosts_mounts(proc.pid) == 1
    with open(f"/proc/{proc.pid}/root/etc/hosts") as f:
        assert f.read() == "healed\n"


def test_replace_many_in_one_go(box: Box) -> None:
    procs = [box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL) for _ in range(20)]
    dead = box.spawn(["true"])
    dead.wait()
    paths = {}
    for i, proc in enumerate(procs):
        paths[proc.pid] = os.path.join(box.state, f"hosts.{i}")
        with open(paths[proc.pid], "w") as f:
            f.write(f"version {i}\n")
    t0 = time.perf_counter()
    assert replace_hosts_many(paths) == {}
    elapsed = time.perf_counter() - t0
    for i, proc in enumerate(procs):
        with open(f"/proc/{proc.pid}/root/etc/hosts") as f:
            assert f.read() == f"version {i}\n"
        assert hosts_mounts(proc.pid) == 1
    print(f"\nreplace_hosts_many: {elapsed * 1e3:.2f} ms for 20 containers")

    # One failure does not stop the others.
    good = procs[0].pid
    errors = replace_files([(dead.pid, "/etc/hosts", paths[good]),
                            (good, "/etc/hosts", os.path.join(box.state, "missing")),
                            (good, "/etc/nonexistent", paths[good]),
                            (good, "/etc/hostname", paths[procs[1].pid])])
    assert isinstance(errors[0], ProcessLookupError)
    assert isinstance(errors[1], FileNotFoundError)
    assert "cannot replace /etc/nonexistent" in str(errors[2])
    assert errors[3] is None
    with open(f"/proc/{good}/root/etc/hostname") as f:
        assert f.read() == "version 1\n"


def test_alive_and_pidfd(box: Box) -> None:
    proc = box.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    start = proc_start_time(proc.pid)
    assert start is not None
    assert alive(proc.pid, start) and not alive(proc.pid, start + 1)
    fd = open_pidfd(proc.pid, start)
    try:
        with pytest.raises(ProcessLookupError):
            open_pidfd(proc.pid, start + 1)
        assert select.select([fd], [], [], 0)[0] == []
        proc.kill()
        assert select.select([fd], [], [], 10)[0] == [fd]
        assert not alive(proc.pid, start)  # a zombie is dead
        proc.wait()
        assert not alive(proc.pid, start)
    finally:
        os.close(fd)


def test_spawn_time(box: Box) -> None:
    elapsed = []
    for _ in range(20):
        t0 = time.perf_counter()
        proc = box.spawn(["true"], stdout=subprocess.DEVNULL)
        elapsed.append(time.perf_counter() - t0)
        proc.wait()
    avg = sum(elapsed) / len(elapsed)
    print(f"\nspawn: avg {avg * 1e3:.2f} ms, max {max(elapsed) * 1e3:.2f} ms over 20")
    assert avg < 0.5
