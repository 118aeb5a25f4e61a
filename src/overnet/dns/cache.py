"""Local answers remembered by the bytes of their query, for as long as the table is the same.

Parsing a query and rendering its answer with dnspython costs ~100 µs; most queries a network
sees are repeats (the same names, asked by the same C library in the same way), so their
reply is kept keyed by the query's bytes after its ID, and sent back under the new ID. A
different table object (the agent rebuilt it) empties the cache, so no answer outlives a
change of names. Only queries that parsed and were answered locally are ever stored, so a hit
is a well-formed query by construction.
"""

from __future__ import annotations

from overnet.dns.table import NameTable


class ReplyCache:
    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._table: NameTable | None = None
        self._replies: dict[tuple[bytes, int], tuple[str, bytes]] = {}

    def get(self, table: NameTable, wire: bytes, max_size: int) -> tuple[str, bytes] | None:
        """(result, reply under the query's ID), or None if not known for this table."""
        if table is not self._table:
            self._table = table
            self._replies.clear()
            return None
        hit = self._replies.get((wire[2:], max_size))
        if hit is None:
            return None
        result, body = hit
        return result, wire[:2] + body

    def put(self, table: NameTable, wire: bytes, max_size: int, result: str,
            reply: bytes) -> None:
        if table is not self._table:
            return  # the table changed while this answer was made
        if len(self._replies) >= self._size:
            self._replies.clear()  # crude, but bounded; a full rebuild costs one miss per name
        self._replies[(wire[2:], max_size)] = (result, reply[2:])

    def __len__(self) -> int:
        return len(self._replies)
