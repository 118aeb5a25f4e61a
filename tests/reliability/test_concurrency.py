"""Many starts at once across hosts: every address distinct, nothing left after removal."""

from __future__ import annotations

import concurrent.futures

from overnet.api.client import Client
from tests.labfixture import wait_until
from tests.reliability.census import census

HOSTS = 3
PER_HOST = 100


def test_300_concurrent_starts_get_distinct_addresses(lab):
    hosts = [h.name for h in lab.state.hosts]

    def start(host: str) -> tuple[str, str, str]:
        c = Client("unix://" + lab.host(host).socket, timeout=120).post(
            "/containers", {"cmd": ["sleep", "infinity"], "detach": True})
        return host, c["Id"], c["NetworkSettings"]["IPAddress"]

    jobs = [h for h in hosts for _ in range(PER_HOST)]
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        made = list(pool.map(start, jobs))
    try:
        ips = [ip for _, _, ip in made]
        assert len(ips) == len(set(ips)) == HOSTS * PER_HOST
        assert wait_until(lambda: census(lab) == [], timeout=20), census(lab)[:10]
    finally:
        def remove(item: tuple[str, str, str]) -> None:
            host, cid, _ = item
            Client("unix://" + lab.host(host).socket, timeout=120).delete(
                f"/containers/{cid}", force="1")
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            list(pool.map(remove, made))
    assert wait_until(lambda: census(lab) == [], timeout=20), census(lab)[:10]
