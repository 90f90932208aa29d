"""The event store: events kept against the node that did them, idempotent by event id.

    events      node u32 | ~time ms u64 | ~seq u32  ->  compact record (identity.event_codec)
    event_ids   blake2b-96(event id)                ->  event seq u32
    attributes  node u32                            ->  latest stated value per attribute

Time and sequence are stored inverted (``~x``: all bits flipped), so a forward scan
of one node's keys reads its events newest first, and a person's history is a merge
of one such scan per identifier. A link moves no event: which events make a person
is decided when reading, from the graph's member list. An event by an identifier
never seen before creates its node through ``IdentityGraph.link`` (the one place
nodes are made). Each batch also appends its segment columns (``identity.columns``)
and updates order records (``identity.orders``) in the same transaction.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence

from identity.columns import ORDER_LINE, PROPERTY, EventColumns, property_text
from identity.errors import InvalidArgument
from identity.event_codec import decode, encode, encode_product
from identity.events import Event, EventType, Order, StoredEvent
from identity.graph import IdentityGraph, Outcome
from identity.identifiers import Identifier
from identity.orders import OrderBook
from identity.store import Txn, WriteTxn
from identity.strings import StringDictionary

__all__ = ["EventStore", "ValidEvent", "ATTRIBUTE_SLOTS", "CONSENT_SLOT"]

_KEY = struct.Struct(">IQI")
_NODE = struct.Struct(">I")
_SUFFIX = struct.Struct(">QI")
_SEQ = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_ATTR = struct.Struct("<BqIH")  # slot, time ms, seq, value length; value follows
_INV64 = (1 << 64) - 1
_INV32 = (1 << 32) - 1
_NEXT_SEQ = b"next_event_seq"
NODE_CACHE_SIZE = 1 << 20  # identifiers whose node the writer remembers between batches
ATTRIBUTE_SLOTS = ("name", "birth_date", "city", "time_zone", "language", "gender")
CONSENT_SLOT = 16  # + channel number

# (event, normalised identifier, time ms): an event that passed validation.
ValidEvent = tuple[Event, Identifier, int]


DIGEST_SIZE = 12  # 96 bits: a collision among 10^9 event ids has odds below 10^-10


def event_digest(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST_SIZE).digest()


class EventStore:
    """Write and read events inside the caller's transactions; knows nothing of gRPC."""

    def __init__(self, graph: IdentityGraph, strings: StringDictionary, columns: EventColumns,
                 orders: OrderBook):
        self.graph = graph
        self.strings = strings
        self.columns = columns
        self.orders = orders
        # identifier -> node of committed nodes; only the writer thread reads or writes it.
        self._nodes: dict[Identifier, int] = {}

    def load(self, tx: Txn) -> None:
        """Bring the in-memory views (strings, columns) up to the stored state."""
        self.strings.load(tx)
        self.columns.load(tx)

    def seen(self, tx: Txn, event_id: str) -> bool:
        return tx.get("event_ids", event_digest(event_id)) is not None

    # -- writing -----------------------------------------------------------

    def record(self, tx: WriteTxn, batch: Sequence[ValidEvent], path: str = "events"
               ) -> tuple[int, int]:
        """Store every event not stored before; returns (stored, duplicates)."""
        raw = tx.get("meta", _NEXT_SEQ)
        first = _SEQ.unpack(raw)[0] if raw else 1
        strings = self.strings
        known = strings.ids.get
        key_of = _KEY.pack
        side_effects = self._side_effects

        def sid(text: str) -> int:
            found = known(text)
            return found if found is not None else strings.intern(tx, text)

        nodes: dict[Identifier, int] = {}
        committed = self._nodes
        fresh = self._claim_ids(tx, batch, first)
        records: list[tuple[bytes, bytes]] = []
        rows: list[tuple] = []
        for seq, index in fresh:
            event, identifier, time_ms = batch[index]
            node = nodes.get(identifier) or committed.get(identifier)
            if node is None:
                node = nodes[identifier] = self._node(tx, identifier, event.source, time_ms,
                                                      f"{path}[{index}].identifier")
            key = key_of(node, _INV64 - time_ms, _INV32 - (seq & _INV32))
            kind, p = event.type, event.payload
            if kind <= 4:  # view, cart, wishlist: the bulk of traffic, strings interned once
                product, category, brand = known(p.product_id), known(p.category), known(p.brand)
                source = known(event.source)
                if product is None or category is None or brand is None or source is None:
                    product, category, brand = sid(p.product_id), sid(p.category), sid(p.brand)
                    source = sid(event.source)
                records.append((key, encode_product(
                    event.event_id, kind, event.channel, source, product, category, brand,
                    p.price, p.quantity)))
                rows.append((node, time_ms // 1000, kind, event.channel, 0, product, category,
                             brand, p.price * p.quantity, min(p.quantity, 65535), 0, 0, 0,
                             0, 0, 0))
            else:
                records.append((key, encode(event.event_id, kind, event.channel, event.source,
                                            p, sid)))
                side_effects(tx, node, time_ms, seq, event, sid, rows)
        if records:
            records.sort()
            tx.put_many("events", records)
            tx.put("meta", _NEXT_SEQ, _SEQ.pack(fresh[-1][0] + 1))
            self.columns.append(tx, rows)
        if nodes:
            tx.on_commit(lambda: self._remember(nodes))
        return len(records), len(batch) - len(records)

    def _claim_ids(self, tx: WriteTxn, batch: Sequence[ValidEvent], first: int
                   ) -> list[tuple[int, int]]:
        """Index the event ids not stored before; (seq, batch index) of each new event.

        One ``putmulti`` that never overwrites both checks and claims: each digest is put
        with the event's seq, so when some already existed, those whose stored value is
        not ours are the duplicates. Seqs of duplicates stay unused (gaps are harmless).
        """
        blake2b = hashlib.blake2b
        return self.claim_digests(tx, [blake2b(event.event_id.encode(), digest_size=DIGEST_SIZE)
                                       .digest() for event, _, _ in batch], first)

    # -- steps shared with the columnar form (identity.event_packs) -------------

    def next_seq(self, tx: Txn) -> int:
        """The seq the next stored event takes."""
        raw = tx.get("meta", _NEXT_SEQ)
        return _SEQ.unpack(raw)[0] if raw else 1

    def set_next_seq(self, tx: WriteTxn, seq: int) -> None:
        tx.put("meta", _NEXT_SEQ, _SEQ.pack(seq))

    def claim_digests(self, tx: WriteTxn, digests: Sequence[bytes], first: int
                      ) -> list[tuple[int, int]]:
        """``_claim_ids`` of events whose digests (``event_digest``) are already made."""
        if len(set(digests)) == len(digests):  # no repeat inside the batch: the usual case
            claims = dict(zip(digests, zip(range(first, first + len(digests)),
                                           range(len(digests)))))
        else:
            claims = {}
            for index, digest in enumerate(digests):
                if digest not in claims:  # a repeat inside the batch is a duplicate too
                    claims[digest] = (first + len(claims), index)
        pack = _U32.pack
        if len(claims) == len(digests) and first + len(digests) <= _INV32:
            items = sorted(zip(digests, map(pack, range(first, first + len(digests)))))
        else:
            items = sorted((digest, pack(seq & _INV32)) for digest, (seq, _) in claims.items())
        if tx.put_many("event_ids", items, overwrite=False) == len(items):
            return list(claims.values())
        get = tx.get
        return [claim for digest, claim in claims.items()
                if get("event_ids", digest) == pack(claim[0] & _INV32)]

    @property
    def committed_nodes(self) -> Mapping[Identifier, int]:
        """Committed identifier -> node lookups the writer remembers (a partial cache). The
        writer's hot path reads it directly; do not modify."""
        return self._nodes

    def node_for(self, tx: WriteTxn, identifier: Identifier, source: str, time_ms: int,
                 path: str, batch_nodes: dict[Identifier, int]) -> int:
        """The node of ``identifier``, made (linked alone) if new; new lookups go into
        ``batch_nodes``, which ``remember_nodes`` keeps once the batch commits."""
        node = batch_nodes.get(identifier) or self._nodes.get(identifier)
        if node is None:
            node = batch_nodes[identifier] = self._node(tx, identifier, source, time_ms, path)
        return node

    def remember_nodes(self, tx: WriteTxn, batch_nodes: dict[Identifier, int]) -> None:
        if batch_nodes:
            tx.on_commit(lambda: self._remember(batch_nodes))

    def _remember(self, nodes: dict[Identifier, int]) -> None:
        if len(self._nodes) > NODE_CACHE_SIZE:
            self._nodes.clear()
        self._nodes.update(nodes)

    def _node(self, tx: WriteTxn, identifier: Identifier, source: str, time_ms: int,
              path: str) -> int:
        node = self.graph.node_of(tx, identifier)
        if node is None:
            result = self.graph.link(tx, [identifier], source=source, observed_ms=time_ms)
            node = self.graph.node_of(tx, identifier)
            if node is None or result.outcome is Outcome.IGNORED:
                reason = result.ignored[0][1] if result.ignored else "cannot be stored"
                raise InvalidArgument.field(path, reason)
        return node

    def _side_effects(self, tx: WriteTxn, node: int, time_ms: int, seq: int, event: Event,
                      sid, rows: list[tuple]) -> None:
        """Column rows, order records and attribute state of one stored non-product event."""
        kind, p, channel = event.type, event.payload, event.channel
        t = time_ms // 1000
        if kind is EventType.ORDER:
            order: Order = p
            ref = self.orders.placed(tx, node, order, time_ms)
            cuisine, store, meal = sid(order.cuisine), sid(order.store), sid(order.meal_type)
            city, venue = sid(order.delivery_city), sid(order.restaurant)
            rows.append((node, t, kind, channel, 0, 0, 0, 0, order.amount, 0, ref, cuisine, store,
                         meal, city, venue))
            for line in order.lines:
                rows.append((node, t, ORDER_LINE, channel, 0, sid(line.product_id),
                             sid(line.category), sid(line.brand), line.price * line.quantity,
                             min(line.quantity, 65535), ref, cuisine, store, meal, city, venue))
        elif kind is EventType.ORDER_CANCELLED:
            ref = self.orders.cancelled(tx, p.order_id, time_ms)
            rows.append((node, t, kind, channel, 0, 0, 0, 0, 0.0, 0, ref, 0, 0, 0, 0, 0))
        elif kind is EventType.SEARCH:
            rows.append((node, t, kind, channel, 0, 0, 0, 0, 0.0, 0, 0,
                         sid(p.phrase.strip().lower()), 0, 0, 0, 0))
        elif kind is EventType.AD:
            rows.append((node, t, kind, channel, p.action, sid(p.product_id), 0, 0, 0.0, 0, 0,
                         sid(p.campaign), sid(p.advertiser), sid(p.ad_id), 0, 0))
        elif kind is EventType.MESSAGE:
            rows.append((node, t, kind, channel, p.action, 0, 0, 0, 0.0, 0, 0,
                         sid(p.campaign), 0, 0, 0, 0))
        elif kind is EventType.CUSTOM:
            name, tie = sid(p.name), seq & 0xFFFFFFFF  # tie: PROPERTY rows -> their event
            rows.append((node, t, kind, channel, 0, 0, 0, 0, 0.0, 0, tie, name, 0, 0, 0, 0))
            for key, value in p.properties:  # one PROPERTY row each, for equality filters
                rows.append((node, t, PROPERTY, channel, 0, 0, 0, 0, 0.0, 0, tie, name, sid(key),
                             sid(property_text(value)), 0, 0))
        else:
            self._update_attributes(tx, node, time_ms, seq, p)
            rows.append((node, t, kind, channel, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, 0, 0, 0))

    def _update_attributes(self, tx: WriteTxn, node: int, time_ms: int, seq: int, a) -> None:
        state = self.node_attributes(tx, node)
        changes: dict[int, str] = {}
        for slot, name in enumerate(ATTRIBUTE_SLOTS[:5]):
            value = getattr(a, name)
            if value is not None:
                changes[slot] = value
        if a.gender:
            changes[5] = str(a.gender)
        for channel, granted in a.consents:
            changes[CONSENT_SLOT + channel] = "1" if granted else "0"
        for slot, value in changes.items():
            current = state.get(slot)
            if current is None or (time_ms, seq) >= current[:2]:
                state[slot] = (time_ms, seq, value)
        tx.put("attributes", _NODE.pack(node), b"".join(
            _ATTR.pack(slot, t, s, len(v.encode())) + v.encode()
            for slot, (t, s, v) in sorted(state.items())))

    def erase(self, tx: WriteTxn, nodes: list[int]) -> int:
        """Delete every event, attribute and order sighting of ``nodes`` (forget); the count.

        Event id digests stay (they name nobody), so a replay of an erased event is
        still a duplicate; the nodes' column rows are blanked to their times alone.
        """
        self._nodes.clear()  # now, not on commit: later jobs of this group must not see them
        erased = 0
        for node in nodes:
            prefix = _NODE.pack(node)
            keys = [key for key, _ in tx.items("events", prefix=prefix)]
            for key in keys:
                tx.delete("events", key)
            erased += len(keys)
            tx.delete("attributes", prefix)
            tx.delete("node_orders", _SEQ.pack(node))
        self.columns.erase(tx, nodes)
        return erased

    # -- reading -----------------------------------------------------------

    def node_attributes(self, tx: Txn, node: int) -> dict[int, tuple[int, int, str]]:
        """slot -> (time ms, seq, value) of the latest value ``node`` stated."""
        raw = tx.get("attributes", _NODE.pack(node))
        state: dict[int, tuple[int, int, str]] = {}
        pos = 0
        while raw is not None and pos < len(raw):
            slot, t, s, length = _ATTR.unpack_from(raw, pos)
            pos += _ATTR.size
            state[slot] = (t, s, bytes(raw[pos : pos + length]).decode())
            pos += length
        return state

    def last_activity(self, tx: Txn, nodes: Iterable[int]) -> int | None:
        """Time (ms) of the newest event of any of ``nodes``."""
        newest = None
        for node in nodes:
            prefix = _NODE.pack(node)
            for key, _ in tx.items("events", prefix=prefix):
                t = _INV64 - _KEY.unpack(key)[1]
                newest = t if newest is None or t > newest else newest
                break
        return newest

    def history(self, tx: Txn, nodes: dict[int, Identifier], *,
                types: frozenset[int] = frozenset(), since_ms: int | None = None,
                until_ms: int | None = None, after: bytes = b"", limit: int = 50
                ) -> tuple[list[StoredEvent], bytes]:
        """Up to ``limit`` events of ``nodes``, newest first, strictly after the position
        ``after`` (the suffix returned by the previous page); returns them and the
        position to continue from (empty when nothing is left)."""
        start = after
        if until_ms is not None:
            bound = _SUFFIX.pack(_INV64 - (until_ms - 1), 0) if until_ms > 0 else b"\xff" * 12
            start = max(start, bound)
        stop = _INV64 - since_ms if since_ms is not None else None
        scans = [self._scan(tx, node, start, after, stop) for node in nodes]
        merged = scans[0] if len(scans) == 1 else heapq.merge(*scans)  # one node: in order
        page: list[StoredEvent] = []
        text_of = self._text_of(tx)
        for suffix, node, value in merged:
            if types and value[0] not in types:
                continue
            if len(page) == limit:
                return page, page_position(page[-1])
            inv_time, inv_seq = _SUFFIX.unpack(suffix)
            event_id, kind, channel, source, payload = decode(value, text_of)
            page.append(StoredEvent(event_id, nodes[node], _INV64 - inv_time, kind, payload,
                                    channel, source, _INV32 - inv_seq))
        return page, b""

    def _scan(self, tx: Txn, node: int, start: bytes, after: bytes, stop: int | None
              ) -> Iterator[tuple[bytes, int, bytes]]:
        prefix = _NODE.pack(node)
        for key, value in tx.items("events", start=prefix + start, prefix=prefix):
            suffix = key[4:]
            if suffix == after:
                continue
            if stop is not None and _SUFFIX.unpack(suffix)[0] > stop:
                return
            yield suffix, node, value

    def _text_of(self, tx: Txn):
        text = self.strings.text
        return lambda sid: text(sid, tx)


def page_position(event: StoredEvent) -> bytes:
    """The position just after ``event`` in a newest-first history."""
    return _SUFFIX.pack(_INV64 - event.time_ms, _INV32 - (event.seq & _INV32))
