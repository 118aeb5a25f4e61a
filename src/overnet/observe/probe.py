"""The doctor's live probes: ICMP from this host to another host's tunnel address, ping from
a container's namespace, and VXLAN probe frames. A class, so unit tests can pass one that
answers as told.

A VXLAN probe is what proves UDP 4789 carries traffic from one host to another: the sender
puts frames of the network's VNI on the wire from its host namespace (a plain UDP socket to the
other VTEP's port), and the receiver listens on its network's vxlan0 for frames carrying the
nonce. Heard means the port is open in that direction and the other kernel decapsulates our
VNI; the frames use the IEEE local experimental EtherType, which nothing on the overlay reads.
"""

from __future__ import annotations

import asyncio
import socket
import struct

VXLAN_OVERHEAD = 50      # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
ICMP_HEADERS = 28        # IP 20 + ICMP 8
ETHERTYPE = 0x88B5       # IEEE 802 local experimental
ETH_P_ALL = 0x0003
PROBE_DST = bytes.fromhex("02006f76726e")     # locally administered, on no interface


def vxlan_frame(vni: int, nonce: bytes) -> bytes:
    """A VXLAN packet's UDP payload: header (flags I, VNI) and an Ethernet frame."""
    header = struct.pack("!II", 0x08000000, vni << 8)
    src = b"\x02" + nonce[:5]
    payload = (b"overnet-doctor:" + nonce).ljust(46, b"\0")
    return header + PROBE_DST + src + struct.pack("!H", ETHERTYPE) + payload


class Probes:
    async def ping_host(self, address: str, size: int | None = None) -> tuple[bool, str]:
        """ICMP echo from this host's namespace; with `size`, a packet of that many bytes on
        the wire with Don't Fragment set (a path MTU probe)."""
        argv = ["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1"]
        if size is not None:
            argv += ["-M", "do", "-s", str(size - ICMP_HEADERS)]
        return await _run(argv + [address])

    async def ping_from(self, netns: str, address: str) -> tuple[bool, str]:
        """ICMP echo from inside a container's network namespace."""
        return await _run(["nsenter", f"--net={netns}", "ping", "-n", "-q", "-c", "3", "-i",
                           "0.2", "-W", "1", address])


    async def vxlan_send(self, vtep: str, port: int, vni: int, nonce: bytes,
                         seconds: float) -> None:
        """Send probe frames to `vtep`:`port` every 0.1 s for `seconds` (or until cancelled)."""
        frame = vxlan_frame(vni, nonce)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            deadline = loop.time() + seconds
            while loop.time() < deadline:
                try:
                    sock.sendto(frame, (vtep, port))
                except OSError:
                    pass       # unreachable for now: the listener reports what did not come
                await asyncio.sleep(0.1)

    async def vxlan_heard(self, ns_path: str, nonce: bytes, seconds: float) -> bool | str:
        """True once a probe frame with `nonce` arrives on vxlan0 of the namespace at
        `ns_path`; False if none came in `seconds`; a reason (str) if it cannot listen."""
        try:
            sock = await asyncio.to_thread(_listener, ns_path)
        except OSError as e:
            return f"cannot listen on vxlan0 in {ns_path}: {e.strerror or e}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), left)
                except TimeoutError:
                    return False
                if data[12:14] == struct.pack("!H", ETHERTYPE) and nonce in data:
                    return True
            return False
        finally:
            sock.close()


def _listener(ns_path: str) -> socket.socket:
    """A packet socket on vxlan0 inside `ns_path` (made there, it stays there)."""
    from ..dataplane.netns import entered
    # ETH_P_ALL, not our EtherType: vxlan0 is the lower device of macvlans, whose receive
    # handler sees its frames before protocol handlers do; only the all-protocol taps (as
    # tcpdump's) come first.
    with entered(ns_path):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.bind(("vxlan0", ETH_P_ALL))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
    return sock


async def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        return False, f"cannot run {argv[0]}: {e.strerror}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, "no answer in 10s"
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    summary = next((ln for ln in lines if "packet loss" in ln or "rror" in ln),
                   lines[-1] if lines else "")
    return proc.returncode == 0, summary.strip()
