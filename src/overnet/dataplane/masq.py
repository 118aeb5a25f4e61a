"""Masquerade for host subnets, as flanneld's --ip-masq sets it up, in nftables.

The agent owns one table, `ip overnet` (chain `postrouting`, nat hook), and nothing else:
    ip saddr NET ip daddr NET return                       cluster traffic keeps its source
    ip saddr NET ip daddr != 224.0.0.0/4 masquerade        containers going outside
    ip saddr != NET ip daddr SUBNET return                 the host reaching its own subnet
    ip saddr != NET ip daddr NET masquerade                the host reaching remote subnets
Every rule carries a comment with a digest of the rule set, so `check()` can tell the table
holds exactly what we want; `ensure()` rewrites the whole table in one nft transaction.
nft runs as `nft ARGS` (argument lists, no shell); the ruleset goes on its standard input.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

log = logging.getLogger(__name__)

TABLE = "overnet"
CHAIN = "postrouting"


class MasqError(Exception):
    pass


def rules(network: str, subnet: str) -> list[str]:
    # counters show what matched (the first packet of each flow: this is the nat hook)
    return [f"ip saddr {network} ip daddr {network} counter return",
            f"ip saddr {network} ip daddr != 224.0.0.0/4 counter masquerade fully-random",
            f"ip saddr != {network} ip daddr {subnet} counter return",
            f"ip saddr != {network} ip daddr {network} counter masquerade fully-random"]


def _tags(network: str, subnet: str, table: str) -> list[str]:
    digest = hashlib.sha256("\n".join(rules(network, subnet) + [table]).encode()).hexdigest()
    return [f"overnet-masq {i} {digest[:12]}" for i in range(len(rules(network, subnet)))]


def ruleset(network: str, subnet: str, table: str = TABLE) -> str:
    """One nft transaction: create the table if missing, drop it, write it anew."""
    body = "".join(f'    {rule} comment "{tag}"\n'
                   for rule, tag in zip(rules(network, subnet), _tags(network, subnet, table)))
    return (f"table ip {table}\n"
            f"delete table ip {table}\n"
            f"table ip {table} {{\n"
            f"  chain {CHAIN} {{\n"
            f"    type nat hook postrouting priority srcnat; policy accept;\n"
            f"{body}"
            f"  }}\n"
            f"}}\n")


async def _nft(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            "nft", *args, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise MasqError("nft is not installed (Debian package nftables): needed for "
                        "--ip-masq") from None
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    return proc.returncode or 0, out.decode(), err.decode().strip()


class Masquerade:
    def __init__(self, network: str, subnet: str, table: str = TABLE) -> None:
        self.network = network
        self.subnet = subnet
        self.table = table
        self.restores = 0     # times check() found the rules changed and wrote them again

    async def present(self) -> bool:
        """True if our table holds exactly our rules, in order."""
        code, out, _ = await _nft("-j", "list", "table", "ip", self.table)
        if code != 0:
            return False
        try:
            items = json.loads(out).get("nftables", [])
        except ValueError:
            return False
        chains = [i["chain"] for i in items if "chain" in i]
        found = [i["rule"].get("comment") for i in items
                 if "rule" in i and i["rule"].get("chain") == CHAIN]
        hooked = any(c.get("name") == CHAIN and c.get("hook") == "postrouting"
                     and c.get("type") == "nat" for c in chains)
        return hooked and len(chains) == 1 and found == _tags(self.network, self.subnet,
                                                              self.table)

    async def ensure(self) -> bool:
        """Write the rules if they are not exactly there. True if it wrote them."""
        if await self.present():
            return False
        code, _, err = await _nft("-f", "-", stdin=ruleset(self.network, self.subnet,
                                                           self.table))
        if code != 0:
            raise MasqError(f"cannot install masquerade rules in table ip {self.table}: {err}")
        return True

    async def check(self) -> None:
        """The periodic re-check: restore rules someone removed or changed."""
        if await self.ensure():
            self.restores += 1
            log.warning("masquerade rules (table ip %s) were missing or changed: restored",
                        self.table)

    async def remove(self) -> None:
        code, _, err = await _nft("delete", "table", "ip", self.table)
        if code != 0 and "No such file" not in err:
            raise MasqError(f"cannot remove table ip {self.table}: {err}")
