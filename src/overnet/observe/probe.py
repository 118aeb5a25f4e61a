"""The doctor's live probes: ICMP from this host to another host's tunnel address, and ping
from a container's namespace. A class, so unit tests can pass one that answers as told."""

from __future__ import annotations

import asyncio

VXLAN_OVERHEAD = 50      # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
ICMP_HEADERS = 28        # IP 20 + ICMP 8


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
