"""Orders: one record per shop order id, however many times and by whom it was reported.

A site and a till may both report order ``A-17``; both sightings are kept as events
(each in the history of the identifier that reported it), but ``order_ids`` maps the
order id to one *order ref*, so aggregates count it once. The record keeps what the
first sighting said (time, total, currency, cuisine, categories bought) and whether
the order was cancelled; a cancellation that arrives before its order is kept, and
the order is born cancelled. ``node_orders`` lists the refs each node reported, so a
person's orders are found from its identifiers without scanning its events.

Per-person aggregates are computed at read time from these records (see
``identity.profiles``): a link therefore changes them in the very next request.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from identity.events import Order
from identity.store import Txn, WriteTxn
from identity.strings import StringDictionary

__all__ = ["OrderBook", "OrderRecord"]

_REF = struct.Struct(">I")
_NODE = struct.Struct(">Q")
_HEAD = struct.Struct("<BqdIIH")  # flags, first time ms, total, currency sid, cuisine sid, lines
_LINE = struct.Struct("<II")  # category sid, quantity
_NEXT_REF = b"next_order_ref"
_CANCELLED = 1
_PLACED = 2


@dataclass(frozen=True, slots=True)
class OrderRecord:
    ref: int
    order_id: str
    placed: bool  # False: only a cancellation was seen so far
    cancelled: bool
    time_ms: int
    total: float
    currency: int  # string ids
    cuisine: int
    categories: tuple[tuple[int, int], ...]  # (category sid, quantity) per line

    @property
    def counts(self) -> bool:
        """Whether the order belongs in aggregates: placed and not cancelled."""
        return self.placed and not self.cancelled


def _pack(rec: OrderRecord) -> bytes:
    flags = (_PLACED if rec.placed else 0) | (_CANCELLED if rec.cancelled else 0)
    head = _HEAD.pack(flags, rec.time_ms, rec.total, rec.currency, rec.cuisine,
                      len(rec.categories))
    lines = b"".join(_LINE.pack(c, q) for c, q in rec.categories)
    return head + lines + rec.order_id.encode()


def _unpack(ref: int, data: bytes) -> OrderRecord:
    flags, time_ms, total, currency, cuisine, count = _HEAD.unpack_from(data)
    pos = _HEAD.size
    lines = tuple(_LINE.unpack_from(data, pos + i * _LINE.size) for i in range(count))
    order_id = bytes(data[pos + count * _LINE.size :]).decode()
    return OrderRecord(ref, order_id, bool(flags & _PLACED), bool(flags & _CANCELLED), time_ms,
                       total, currency, cuisine, lines)


class OrderBook:
    """Order records inside the caller's transaction."""

    def __init__(self, strings: StringDictionary):
        self.strings = strings

    def ref_of(self, tx: Txn, order_id: str) -> int | None:
        raw = tx.get("order_ids", order_id.encode())
        return _REF.unpack(raw)[0] if raw is not None else None

    def get(self, tx: Txn, ref: int) -> OrderRecord | None:
        raw = tx.get("orders", _REF.pack(ref))
        return _unpack(ref, raw) if raw is not None else None

    def is_cancelled(self, tx: Txn, order_id: str) -> bool:
        """Whether the shop cancelled ``order_id``: its record's flag, nothing else decoded
        (a trigger check asks this of every order that would suppress it)."""
        ref = self.ref_of(tx, order_id)
        raw = tx.get("orders", _REF.pack(ref)) if ref is not None else None
        return raw is not None and bool(raw[0] & _CANCELLED)  # flags lead the record

    def placed(self, tx: WriteTxn, node: int, order: Order, time_ms: int) -> int:
        """Record a sighting of ``order`` by ``node``; its ref, the same on every sighting."""
        ref, existing = self._ref(tx, order.order_id)
        tx.put("node_orders", _NODE.pack(node), _REF.pack(ref))
        if existing is not None and existing.placed:
            return ref  # a second sighting (site and till): counted once
        intern = self.strings.intern
        categories: dict[int, int] = {}
        for line in order.lines:
            sid = intern(tx, line.category) if line.category else 0
            categories[sid] = categories.get(sid, 0) + line.quantity
        rec = OrderRecord(
            ref, order.order_id, True, existing is not None and existing.cancelled, time_ms,
            order.amount, intern(tx, order.currency) if order.currency else 0,
            intern(tx, order.cuisine) if order.cuisine else 0, tuple(categories.items()))
        tx.put("orders", _REF.pack(ref), _pack(rec))
        return ref

    def cancelled(self, tx: WriteTxn, order_id: str, time_ms: int) -> int:
        """Mark the order cancelled (creating a placeholder if it was not seen yet); its ref."""
        ref, existing = self._ref(tx, order_id)
        if existing is None:
            existing = OrderRecord(ref, order_id, False, True, time_ms, 0.0, 0, 0, ())
        elif existing.cancelled:
            return ref
        tx.put("orders", _REF.pack(ref), _pack(_replace_cancelled(existing)))
        return ref

    def refs_of(self, tx: Txn, nodes: Iterable[int]) -> set[int]:
        """Every order ref reported by any of ``nodes``."""
        refs: set[int] = set()
        for node in nodes:
            raws = tx.duplicates("node_orders", _NODE.pack(node))
            refs.update(_REF.unpack(raw)[0] for raw in raws)
        return refs

    def _ref(self, tx: WriteTxn, order_id: str) -> tuple[int, OrderRecord | None]:
        key = order_id.encode()
        raw = tx.get("order_ids", key)
        if raw is not None:
            ref = _REF.unpack(raw)[0]
            return ref, self.get(tx, ref)
        raw = tx.get("meta", _NEXT_REF)
        ref = _REF.unpack(raw)[0] if raw else 1
        tx.put("meta", _NEXT_REF, _REF.pack(ref + 1))
        tx.put("order_ids", key, _REF.pack(ref))
        return ref, None


def _replace_cancelled(rec: OrderRecord) -> OrderRecord:
    return OrderRecord(rec.ref, rec.order_id, rec.placed, True, rec.time_ms, rec.total,
                       rec.currency, rec.cuisine, rec.categories)
