"""Nothing from the store or the API is taken on faith: garbage in the store never reaches a
kernel or a hosts file; the API refuses wrong types, strangers' PIDs and bad HTTP with a 4xx."""

from __future__ import annotations

import json
import socket
import subprocess
import time

from tests.labfixture import wait_until
from tests.reliability.census import census, etcdctl

AGENT_ARGS = ["--resync-every", "1"]


def _kernel_view(lab, host: str, net_ns: str) -> tuple[str, str]:
    neigh = lab.sh(host, "nsenter", f"--net={net_ns}", "ip", "neigh", "show", "dev", "vxlan0",
                   "nud", "permanent").stdout
    fdb = lab.sh(host, "nsenter", f"--net={net_ns}", "bridge", "fdb", "show", "dev",
                 "vxlan0").stdout
    return neigh, "\n".join(sorted(fdb.splitlines()))


def test_store_garbage_never_reaches_a_kernel_or_a_hosts_file(lab):
    a = lab.out("net-1", "run", "-d", "--name", "ga", "sleep", "infinity")
    b = lab.out("net-2", "run", "-d", "--name", "gb", "sleep", "infinity")
    net = json.loads(lab.out("net-1", "network", "inspect", "multihost"))[0]
    ip_b = lab.inspect("net-2", b)["NetworkSettings"]["IPAddress"]
    ns = net["namespace"]
    wait_until(lambda: ip_b in _kernel_view(lab, "net-1", ns)[0], timeout=5)
    before = _kernel_view(lab, "net-1", ns)
    hosts_before = lab.out("net-1", "exec", a, "cat", "/etc/hosts")
    base = dict(id="e" * 64, network=net["id"], container="f" * 64, name="evil", host="net-2",
                host_address=lab.host("net-2").address, mac="02:42:0a:99:00:01")
    prefix = f"/overnet/v1/endpoints/{net['id']}/"
    sub = net["subnet"].rsplit(".", 2)[0]          # e.g. 10.128
    garbage = {}
    for i, vtep in enumerate(["0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.1",
                              lab.host("net-1").address]):
        ip = f"{sub}.250.{i + 10}"
        garbage[prefix + ip] = {**base, "ip": ip, "host_address": vtep,
                                "mac": f"02:42:0a:99:00:{i + 10:02x}"}
    garbage[prefix + "10.99.0.1"] = {**base, "ip": "10.99.0.1"}            # outside subnet
    garbage[prefix + f"{sub}.250.30"] = {**base, "ip": ip_b,               # b's address
                                         "mac": "02:42:0a:99:00:30"}
    garbage[prefix + f"{sub}.250.31"] = {**base, "ip": f"{sub}.250.31",
                                         "name": "x" * 100_000}   # (argv's limit)
    garbage["/overnet/v1/vnis/not-a-number"] = {}
    garbage["/overnet/v1/pools/bad-key"] = {}
    try:
        for key, value in garbage.items():
            assert etcdctl(lab, "put", key, json.dumps(value)).returncode == 0
        time.sleep(2.5)   # two resync periods
        assert _kernel_view(lab, "net-1", ns) == before
        assert lab.out("net-1", "exec", a, "cat", "/etc/hosts") == hosts_before
        made = lab.out("net-1", "network", "create", "after-garbage")   # still works
        assert made
        lab.ov("net-1", "network", "rm", "after-garbage")
    finally:
        for key in garbage:
            etcdctl(lab, "del", key)
    lab.ov("net-1", "rm", "-f", a)
    lab.ov("net-2", "rm", "-f", b)
    assert wait_until(lambda: census(lab) == [], timeout=5), census(lab)


def _raw(lab, host: str, request: bytes) -> tuple[int, dict]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(lab.host(host).socket)
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _post(path: str, body) -> bytes:
    raw = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nContent-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
            .encode() + raw)


def test_the_api_refuses_wrong_types_and_bad_http(lab):
    for body, field in [({"name": 123}, "name"), ({"net": 5}, "net"),
                        ({"publish_service": 1}, "publish_service"), ({"env": "A=B"}, "env"),
                        ({"detach": "no"}, "detach"), ({"name": "/s3"}, "/s3")]:
        status, answer = _raw(lab, "net-1", _post("/containers", body))
        assert status == 400 and field in answer["message"], (body, answer)
    status, answer = _raw(lab, "net-1", b"POST /containers/x/stop?t=abc HTTP/1.1\r\n"
                                        b"Connection: close\r\n\r\n")
    assert status == 400 and "t" in answer["message"]
    status, answer = _raw(lab, "net-1", b"POST /containers HTTP/1.1\r\nContent-Length: -1\r\n"
                                        b"Connection: close\r\n\r\n")
    assert status == 400 and "-1" in answer["message"]
    assert "/s3" not in etcdctl(lab, "get", "--prefix", "--keys-only", "/overnet/").stdout


def test_a_strangers_pid_is_refused_and_left_alone(lab):
    status, c = _raw(lab, "net-1", _post("/containers", {"name": "fg", "cmd": ["true"]}))
    assert status == 201
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        status, answer = _raw(lab, "net-1", _post(f"/containers/{c['Id']}/started",
                                                  {"pid": stranger.pid}))
        assert status == 400 and str(stranger.pid) in answer["message"]
        lab.ov("net-1", "rm", "-f", "fg")
        assert stranger.poll() is None                 # not killed
        assert subprocess.run(["findmnt", "-rn", "/etc/hosts"], capture_output=True
                              ).stdout == b""          # the machine's file untouched
    finally:
        stranger.kill()
        stranger.wait()


def test_bad_subnets_are_refused(lab):
    underlay = lab.state.underlay
    for subnet in ("0.0.0.0/0", "10.0.0.0/7", underlay):
        proc = lab.ov("net-1", "network", "create", "--subnet", subnet, "badnet", check=False)
        assert proc.returncode == 1 and subnet in proc.stderr, proc.stderr
    assert "badnet" not in lab.out("net-1", "network", "ls")


def test_resync_puts_back_a_deleted_neighbour_entry(lab):
    a = lab.out("net-1", "run", "-d", "sleep", "infinity")
    b = lab.out("net-2", "run", "-d", "sleep", "infinity")
    ip_b = lab.inspect("net-2", b)["NetworkSettings"]["IPAddress"]
    ns = json.loads(lab.out("net-1", "network", "inspect", "multihost"))[0]["namespace"]
    assert wait_until(lambda: ip_b in _kernel_view(lab, "net-1", ns)[0], timeout=5)
    lab.sh("net-1", "nsenter", f"--net={ns}", "ip", "neigh", "del", ip_b, "dev", "vxlan0")
    assert ip_b not in _kernel_view(lab, "net-1", ns)[0]
    t0 = time.monotonic()
    assert wait_until(lambda: ip_b in _kernel_view(lab, "net-1", ns)[0], timeout=5)
    print(f"[resync] neighbour entry back after {time.monotonic() - t0:.2f}s")
    assert lab.ping("net-1", a, ip_b, count=1)
    lab.ov("net-1", "rm", "-f", a)
    lab.ov("net-2", "rm", "-f", b)
