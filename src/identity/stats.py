"""What a server holds and how big its storage is, for operators (``identity stats``).

Counts come from one read snapshot, so they agree with each other: persons, links and
events are entry counts of their sub-databases (LMDB keeps those, reading them costs
nothing), while identifiers per kind add up the per-kind counts every person record
keeps, one record read per person (about a second per million persons): an admin
call, not something to poll every few seconds (the metrics endpoint is for that).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from identity.graph import IdentityGraph
from identity.identifiers import Kind
from identity.store import Store

__all__ = ["ServerStats", "Stats"]


@dataclass(frozen=True)
class Stats:
    persons: int
    identifiers: dict[Kind, int]  # every kind, zero included
    links: int  # records in the link log, refused links included
    events: int
    used_bytes: int  # pages in use in the LMDB file
    file_bytes: int  # the LMDB file's size on disk
    map_size: int  # the LMDB map: how far the file may grow before the map is doubled
    entries: dict[str, int]  # entries per sub-database
    started_at: float  # Unix time the server started
    uptime_seconds: float


class ServerStats:
    """Reads ``Stats``; uptime counts from when this object was made (the server's start)."""

    def __init__(self, store: Store, graph: IdentityGraph):
        self.store = store
        self.graph = graph
        self.started_at = time.time()
        self._started = time.monotonic()

    def read(self) -> Stats:
        with self.store.read() as tx:
            _roots, table = self.graph.person_table(tx)
            usage = self.store.usage(tx)
        per_kind = table["counts"].sum(axis=0) if len(table) else [0] * len(Kind)
        return Stats(
            persons=len(table),
            identifiers={kind: int(per_kind[kind - 1]) for kind in Kind},
            links=usage.entries["links"],
            events=usage.entries["events"],
            used_bytes=usage.used_bytes,
            file_bytes=usage.file_bytes,
            map_size=usage.map_size,
            entries=usage.entries,
            started_at=self.started_at,
            uptime_seconds=time.monotonic() - self._started,
        )
