"""The append-only link log: every piece of evidence the graph was built from.

Each link is kept with its identifiers (as node ids), source system, observed
time, request id and outcome, keyed by a growing sequence number, and indexed
by node so that one person's evidence can be read without scanning the log.
That is what makes every merge explainable and undoable.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from identity.store import Txn, WriteTxn

__all__ = ["LinkLog", "LinkRecord", "LogBatch", "Outcome"]

_HEAD = struct.Struct("<qBH")  # observed ms, outcome, node count
_U64 = struct.Struct(">Q")
_LEN = struct.Struct("<H")
_SEQ_KEY = b"next_link_seq"
_EMPTY = _LEN.pack(0)  # an empty string, packed
_HEADS: dict[int, struct.Struct] = {}  # head plus that many nodes, by node count
_SOURCES: dict[str, bytes] = {}  # packed source names


class Outcome(IntEnum):
    """What a link did; numbers shared with ``identity.v1.LinkOutcome``."""

    CREATED = 1
    ADDED = 2
    MERGED = 3
    ALREADY_LINKED = 4
    REFUSED_CONFLICT = 5
    REFUSED_LIMIT = 6
    IGNORED = 7

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class LinkRecord:
    seq: int
    observed_ms: int
    outcome: Outcome
    nodes: tuple[int, ...]
    source: str
    request_id: str
    detail: str
    ignored: tuple[str, ...]


def _pack_str(text: str) -> bytes:
    data = text.encode()[:65535]
    return _LEN.pack(len(data)) + data


def encode(rec: LinkRecord) -> bytes:
    return _encode(rec.observed_ms, rec.outcome, rec.nodes, rec.source, rec.request_id,
                   rec.detail, rec.ignored)


def _encode(observed_ms: int, outcome: int, nodes: Sequence[int], source: str,
            request_id: str, detail: str, ignored: Sequence[str]) -> bytes:
    """The record's bytes: head and nodes in one pack, the four strings length-prefixed."""
    count = len(nodes)
    head = _HEADS.get(count)
    if head is None:
        head = _HEADS[count] = struct.Struct(f"<qBH{count}Q")  # _HEAD, then the nodes
    packed_source = _SOURCES.get(source)
    if packed_source is None:
        packed_source = _pack_str(source)
        if len(_SOURCES) < 4096:  # sources are few (a shop's systems); keep them packed
            _SOURCES[source] = packed_source
    return b"".join((head.pack(observed_ms, outcome, count, *nodes), packed_source,
                     _pack_str(request_id) if request_id else _EMPTY,
                     _pack_str(detail) if detail else _EMPTY,
                     _pack_str("\n".join(ignored)) if ignored else _EMPTY))


def decode(seq: int, data: bytes) -> LinkRecord:
    observed_ms, outcome, count = _HEAD.unpack_from(data)
    pos = _HEAD.size
    nodes = struct.unpack_from(f"<{count}Q", data, pos)
    pos += 8 * count
    texts = []
    for _ in range(4):
        (length,) = _LEN.unpack_from(data, pos)
        pos += 2
        texts.append(bytes(data[pos : pos + length]).decode())
        pos += length
    source, request_id, detail, ignored = texts
    return LinkRecord(seq, observed_ms, Outcome(outcome), nodes, source, request_id, detail,
                      tuple(ignored.split("\n")) if ignored else ())


class LogBatch:
    """Link records of one transaction, written together: a bulk batch's log in a few calls.

    Sequence numbers are handed out as links are recorded; ``flush`` (before the
    transaction ends) writes the records, the node index and the counter, byte for byte
    what appending them one by one would have written.
    """

    __slots__ = ("_next", "_records", "_index")

    def __init__(self, tx: Txn):
        raw = tx.get("meta", _SEQ_KEY)
        self._next = _U64.unpack(raw)[0] if raw else 1
        self._records: list[tuple[bytes, bytes]] = []
        self._index: list[tuple[bytes, bytes]] = []

    def append(self, rec: LinkRecord) -> int:
        return self.add(rec.observed_ms, rec.outcome, rec.nodes, rec.source, rec.request_id,
                        rec.detail, rec.ignored)

    def add(self, observed_ms: int, outcome: Outcome, nodes: Sequence[int], source: str,
            request_id: str, detail: str, ignored: Sequence[str]) -> int:
        """``append`` of a record with these fields, without building it: the bulk path."""
        seq = self._next
        self._next = seq + 1
        key = _U64.pack(seq)
        self._records.append((key, _encode(observed_ms, outcome, nodes, source, request_id,
                                           detail, ignored)))
        # Every link is indexed, single-identifier sightings too: forget must find them all.
        index = self._index
        if len(nodes) == 1:
            index.append((_U64.pack(nodes[0]), key))
        else:
            for node in set(nodes):
                index.append((_U64.pack(node), key))
        return seq

    def flush(self, tx: WriteTxn) -> None:
        if not self._records:
            return
        tx.put("meta", _SEQ_KEY, _U64.pack(self._next))
        tx.put_many("links", self._records)
        if self._index:
            self._index.sort()
            tx.put_many("node_links", self._index)
        self._records = []
        self._index = []


class LinkLog:
    """Append and read link records inside the caller's transaction."""

    def batch(self, tx: Txn) -> LogBatch:
        """Collect appends in memory; the caller flushes before the transaction ends."""
        return LogBatch(tx)

    def get(self, tx: Txn, seq: int) -> LinkRecord | None:
        data = tx.get("links", _U64.pack(seq))
        return decode(seq, data) if data is not None else None

    def of_node(self, tx: Txn, node: int) -> list[LinkRecord]:
        """Every link that carried ``node`` (alone or with others), oldest first."""
        records = []
        for key in tx.duplicates("node_links", _U64.pack(node)):
            (seq,) = _U64.unpack(key)
            rec = self.get(tx, seq)
            if rec is not None:
                records.append(rec)
        return records

    def since(self, tx: Txn, first_seq: int = 1):
        for key, data in tx.items("links", start=_U64.pack(first_seq)):
            yield decode(_U64.unpack(key)[0], data)

    def outcome_column(self, tx: Txn) -> tuple[bytes, bytes]:
        """Every link's seq (big-endian u64s) and outcome (one byte each), for numpy reports."""
        keys: list[bytes] = []
        outcomes: list[bytes] = []
        at = _HEAD.size - 3  # the outcome byte follows the observed time
        for key, data in tx.items("links"):
            keys.append(key)
            outcomes.append(data[at : at + 1])
        return b"".join(keys), b"".join(outcomes)

    def redact(self, tx: WriteTxn, nodes: set[int]) -> list[int]:
        """Erase ``nodes`` from every link that joined them: a tombstone stays in the log.

        The tombstone keeps only the seq, time, outcome, source and the nodes of other
        persons; request id, detail and ignored values go, as they may name the person.
        Returns the seqs rewritten.
        """
        seqs: set[int] = set()
        for node in nodes:
            key = _U64.pack(node)
            seqs.update(_U64.unpack(k)[0] for k in tx.duplicates("node_links", key))
            tx.delete("node_links", key)
        for seq in sorted(seqs):
            rec = self.get(tx, seq)
            if rec is None:
                continue
            kept = tuple(n for n in rec.nodes if n not in nodes)
            tombstone = LinkRecord(seq, rec.observed_ms, rec.outcome, kept, rec.source, "",
                                   "erased on request", ())
            tx.put("links", _U64.pack(seq), encode(tombstone))
        return sorted(seqs)
