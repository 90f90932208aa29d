"""The send log: every message reserved or sent, kept against the node it went to.

Caps and dedupe windows count what a person received through *any* identifier,
so a send is stored under the node of its address (like an event) and a person's
sends are read at decision time from the graph's member list: a merge or a split
moves nothing here. Reservations are sends too (a reserving ``CheckTrigger`` writes
one in the transaction that decided SEND); ``RecordSend`` confirms or releases them.

    sends      node u64 | time ms u64 | seq u64  ->  status, channel, trigger, flags,
                                                     subject u64, campaign (UTF-8)
    send_keys  blake2b-128(idempotency key)      ->  send key length u8, send key,
                                                     the first decision (JSON) or nothing

The subject is a 64-bit hash of (trigger kind, scenario, products, categories):
"the same trigger for the same products" is one integer comparison.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from identity.store import Txn, WriteTxn

__all__ = ["Send", "SendLog", "Remembered", "subject_of", "RESERVED", "SENT"]

_KEY = struct.Struct(">QQQ")  # node, time ms, seq
_PREFIX = struct.Struct(">Q")
_RECORD = struct.Struct("<BBBBQ")  # status, channel, trigger, flags, subject
_NEXT_SEQ = b"next_send_seq"
_LAST_NODE = (1 << 64) - 1
_TRANSACTIONAL = 1
RESERVED = 1
SENT = 2


class Send(NamedTuple):  # a tuple: one per send a decision reads
    key: bytes
    node: int
    time_ms: int
    status: int
    channel: int
    trigger: int
    transactional: bool
    subject: int
    campaign: str


@dataclass(frozen=True, slots=True)
class Remembered:
    """What an idempotency key already did: the send it made and the decision it gave."""

    send_key: bytes
    decision: bytes  # JSON of the first decision; empty when the key came from RecordSend


@lru_cache(maxsize=4096)  # a campaign asks about the same few subjects over and over
def _subject(trigger: int, scenario: str, products: tuple[str, ...],
             categories: tuple[str, ...]) -> int:
    text = "\x1f".join([str(trigger), scenario, "\x1e".join(sorted(set(products))),
                        "\x1e".join(sorted(set(categories)))])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def subject_of(trigger: int, scenario: str, products: Iterable[str], categories: Iterable[str]
               ) -> int:
    """A stable 64-bit hash of what a message is about (order-insensitive)."""
    return _subject(trigger, scenario, tuple(products), tuple(categories))


def _digest(idempotency_key: str) -> bytes:
    return hashlib.blake2b(idempotency_key.encode(), digest_size=16).digest()


def _unpack(key: bytes, value: bytes) -> Send:
    node, time_ms, _ = _KEY.unpack(key)
    status, channel, trigger, flags, subject = _RECORD.unpack_from(value)
    return Send(key, node, time_ms, status, channel, trigger, bool(flags & _TRANSACTIONAL),
                subject, value[_RECORD.size :].decode())


class SendLog:
    """Reads and writes inside the caller's transaction; remembers which nodes have sends.

    Most persons have never been sent anything on most of their identifiers, yet
    finding that out costs a cursor per node per decision. So the log keeps one byte
    per node id, set when a send to that node is first written, before its
    transaction commits: a snapshot that can see a send always finds its node marked.
    Marks are never cleared (a released send leaves its node marked, and it is simply
    read), so they can only cost a read, never hide a send."""

    def __init__(self) -> None:
        self._sent_to = bytearray()  # grown in place; one byte per node id up to the highest

    def load(self, tx: Txn) -> None:
        """Mark every node the stored log has a send for (one cursor per such node)."""
        node = 0
        while node < _LAST_NODE:
            first = next(tx.items("sends", start=_PREFIX.pack(node)), None)
            if first is None:
                return
            node = _PREFIX.unpack_from(first[0])[0]
            self._mark(node)
            node += 1

    def _mark(self, node: int) -> None:
        sent_to = self._sent_to
        if node >= len(sent_to):
            sent_to.extend(bytes(max(node + 1 - len(sent_to), len(sent_to))))
        sent_to[node] = 1

    def recent(self, tx: Txn, nodes: Iterable[int], since_ms: int) -> list[Send]:
        """Sends to any of ``nodes`` at or after ``since_ms``, oldest first per node."""
        return [_unpack(k, v) for k, v in self._since(tx, nodes, since_ms)]

    def keys_since(self, tx: Txn, nodes: Iterable[int], since_ms: int) -> tuple[bytes, ...]:
        """Keys of the sends ``recent`` would return, without decoding them."""
        return tuple([k for k, _ in self._since(tx, nodes, since_ms)])

    def _since(self, tx: Txn, nodes: Iterable[int], since_ms: int
               ) -> list[tuple[bytes, bytes]]:
        sent_to, marked, found = self._sent_to, len(self._sent_to), []
        for node in nodes:
            if node < marked and sent_to[node]:  # else it was never sent anything
                found += tx.items("sends", start=_KEY.pack(node, max(since_ms, 0), 0),
                                  prefix=_PREFIX.pack(node))
        return found

    def append(self, tx: WriteTxn, node: int, time_ms: int, *, status: int, channel: int,
               trigger: int, transactional: bool, subject: int, campaign: str) -> bytes:
        """Record a send; returns its key."""
        raw = tx.get("meta", _NEXT_SEQ)
        seq = _PREFIX.unpack(raw)[0] if raw else 1
        tx.put("meta", _NEXT_SEQ, _PREFIX.pack(seq + 1))
        key = _KEY.pack(node, max(time_ms, 0), seq)
        self._mark(node)  # before the commit: no snapshot sees this send unmarked
        flags = _TRANSACTIONAL if transactional else 0
        tx.put("sends", key, _RECORD.pack(status, channel, trigger, flags, subject)
               + campaign.encode())
        return key

    def confirm(self, tx: WriteTxn, send_key: bytes) -> bool:
        """Mark a reservation sent; False when there is no such send."""
        raw = tx.get("sends", send_key)
        if raw is None:
            return False
        if raw[0] == RESERVED:
            tx.put("sends", send_key, bytes((SENT,)) + bytes(raw[1:]))
        return True

    def release(self, tx: WriteTxn, send_key: bytes) -> bool:
        """Delete a send that did not happen; False when there is no such send."""
        return tx.delete("sends", send_key)

    # -- idempotency keys --------------------------------------------------

    def remembered(self, tx: Txn, idempotency_key: str) -> Remembered | None:
        raw = tx.get("send_keys", _digest(idempotency_key))
        if raw is None:
            return None
        length = raw[0]
        return Remembered(bytes(raw[1 : 1 + length]), bytes(raw[1 + length :]))

    def remember(self, tx: WriteTxn, idempotency_key: str, send_key: bytes, decision: bytes
                 ) -> None:
        tx.put("send_keys", _digest(idempotency_key),
               bytes((len(send_key),)) + send_key + decision)

    def forget_key(self, tx: WriteTxn, idempotency_key: str) -> None:
        tx.delete("send_keys", _digest(idempotency_key))
