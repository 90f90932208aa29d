"""The columnar form of a batch: high-volume events as parallel arrays, checked and
stored per column.

A ``Pack`` holds view, cart, wishlist, search and message events as numpy arrays (one
entry per event) with the texts and identifiers they repeat sent once and referred to
by index, as ``identity.v1.PackedEvents`` carries them. Checking and storing work a
column at a time, so the Python work left per event is hashing its id and joining its
record's bytes. What is stored is exactly what the same events sent one by one
(``identity.events.Event``) store: the same records, keys, id digests and segment
column rows, under the same guarantees (whole batch or nothing, idempotence by event
id, events kept against the node that did them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from identity.columns import ROW_DTYPE
from identity.errors import FieldViolation, InvalidArgument
from identity.event_codec import event_id_field, money_field, text_field, varint
from identity.event_store import DIGEST_SIZE, EventStore
from identity.events import MAX_EVENT_ID_LENGTH, MAX_TEXT_LENGTH, MAX_TIME_MS, EventType
from identity.identifiers import Identifier
from identity.store import WriteTxn

__all__ = ["PACKED_TYPES", "Pack", "ValidPack", "check_pack", "write_pack"]

Identify = Callable[[int, str, str], Identifier]  # kind, raw value, field path

PACKED_TYPES = frozenset({EventType.VIEW, EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART,
                          EventType.WISHLIST, EventType.SEARCH, EventType.MESSAGE})
_SEARCH, _MESSAGE = int(EventType.SEARCH), int(EventType.MESSAGE)
_MAX_SOURCE = 128
_MAX_QUANTITY = 1_000_000
_INV64 = np.uint64((1 << 64) - 1)
_INV32 = (1 << 32) - 1
_LENGTHS = [varint(n) for n in range(MAX_EVENT_ID_LENGTH + 1)]  # length prefixes of ids
_KEY = np.dtype([("node", ">u4"), ("time", ">u8"), ("seq", ">u4")])  # the ``events`` key


class Pack(NamedTuple):
    """A columnar batch as sent. Optional arrays may be empty (0 for every event)."""

    texts: list[str]
    identifier_kinds: list[int]
    identifier_values: list[str]  # raw, as sent
    event_ids: list[str]
    identifier: np.ndarray
    type: np.ndarray
    time_ms: np.ndarray
    channel: np.ndarray
    source: np.ndarray
    product_id: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    quantity: np.ndarray
    phrase: np.ndarray
    results_count: np.ndarray
    action: np.ndarray
    campaign: np.ndarray


_REQUIRED = ("identifier", "type")
_OPTIONAL = ("time_ms", "channel", "source", "product_id", "category", "brand", "price",
             "quantity", "phrase", "results_count", "action", "campaign")
_TEXT_INDEXES = ("source", "product_id", "category", "brand", "phrase", "campaign")
_ONLY_FOR = (  # fields that must stay 0 outside their event types
    ("product_id", "product"), ("category", "product"), ("brand", "product"),
    ("price", "product"), ("quantity", "product"), ("phrase", "search"),
    ("results_count", "search"), ("action", "message"), ("campaign", "message"))
_TYPE_WORDS = {"product": "view, cart and wishlist", "search": "search", "message": "message"}


class ValidPack(NamedTuple):
    """A checked pack: every array full length, times resolved, ids hashed."""

    pack: Pack
    identifiers: list[Identifier | None]  # normalised, by index (None: not referred to)
    times: np.ndarray  # int64 ms, the server's clock where none was sent
    quantity: np.ndarray  # 0 read as 1
    digests: list[bytes]
    id_fields: list[bytes]  # the event id as its record holds it

    def __len__(self) -> int:
        return len(self.digests)


class Rows(Sequence[tuple]):
    """Column rows held as one structured array (``ROW_DTYPE``) behind the row-sequence
    interface ``EventColumns.append`` takes; numpy reads the array whole (``__array__``)."""

    def __init__(self, table: np.ndarray):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index):  # type: ignore[override]
        return self.table[index].tolist()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.table if dtype is None else self.table.astype(dtype, copy=False)


def _bad(path: str, reason: str) -> InvalidArgument:
    return InvalidArgument.field(path, reason)


def _full(array: np.ndarray, n: int, dtype: type) -> np.ndarray:
    return array if len(array) else np.zeros(n, dtype)


def check_pack(pack: Pack, identify: Identify, now_ms: int, path: str = "packed",
               known: Mapping[tuple[int, str], Identifier] | None = None) -> ValidPack:
    """Check a whole pack, column by column; raise ``InvalidArgument`` naming the bad
    field of the first bad event (``packed.price[17]``) or table entry. ``known``: raw
    ``(kind, value)`` -> normal form already worked out, read before calling ``identify``."""
    n = len(pack.event_ids)
    for name in _REQUIRED + _OPTIONAL:
        size = len(getattr(pack, name))
        if size != n and (size or name in _REQUIRED):
            raise _bad(f"{path}.{name}", f"has {size} values for {n} events")
    texts = pack.texts or [""]
    people = len(pack.identifier_kinds)
    if len(pack.identifier_values) != people:
        raise _bad(f"{path}.identifier_values",
                   f"has {len(pack.identifier_values)} values for {people} kinds")
    if texts[0]:
        raise _bad(f"{path}.texts[0]", 'must be "" (index 0 means not set)')
    for i, text in enumerate(texts):
        if len(text) > MAX_TEXT_LENGTH:
            raise _bad(f"{path}.texts[{i}]", f"longer than {MAX_TEXT_LENGTH} characters")
    encoded = [event_id.encode() for event_id in pack.event_ids]
    if not n:
        return ValidPack(pack, [], np.zeros(0, np.int64), np.zeros(0, np.int64), [], [])

    columns = {name: _full(getattr(pack, name), n, np.float64 if name == "price" else np.int64)
               for name in _REQUIRED + _OPTIONAL}
    kind = columns["type"]
    groups = {"product": (kind >= 1) & (kind <= 4), "search": kind == _SEARCH,
              "message": kind == _MESSAGE}
    problems: list[tuple[np.ndarray, str, str]] = []  # (bad mask, field, reason)

    def flag(mask: np.ndarray, name: str, reason: str) -> None:
        if mask.any():
            problems.append((mask, name, reason))

    lengths = np.fromiter(map(len, encoded), np.int64, n)
    flag((lengths == 0) | (lengths > MAX_EVENT_ID_LENGTH), "event_ids",
         f"must be 1 to {MAX_EVENT_ID_LENGTH} bytes")
    flag(columns["identifier"] >= people, "identifier", "refers to no identifier")
    flag(~(groups["product"] | groups["search"] | groups["message"]), "type",
         "must be view, add_to_cart, remove_from_cart, wishlist, search or message "
         "(send other types as events)")
    times = columns["time_ms"]
    flag((times < 0) | (times >= MAX_TIME_MS), "time_ms", "must be between 1970 and 2100")
    channel = columns["channel"]
    flag((channel < 0) | (channel > 6), "channel", "unknown channel")
    for name in _TEXT_INDEXES:
        flag(columns[name] >= len(texts), name, "refers to no entry of texts")
    for name, group in _ONLY_FOR:
        flag(~groups[group] & (columns[name] != 0), name,
             f"set only for {_TYPE_WORDS[group]} events")
    last = len(texts) - 1  # (an index out of range was flagged above)
    blank = np.array([not text.strip() for text in texts])
    flag(groups["product"] & blank[np.minimum(columns["product_id"], last)], "product_id",
         "is empty")
    too_long = np.array([len(text) > _MAX_SOURCE for text in texts])
    flag(too_long[np.minimum(columns["source"], last)], "source",
         f"longer than {_MAX_SOURCE} characters")
    price = columns["price"]
    flag(~np.isfinite(price) | (price < 0), "price", "must be a finite amount, not negative")
    quantity = columns["quantity"]
    flag(quantity > _MAX_QUANTITY, "quantity", f"must be between 1 and {_MAX_QUANTITY}")
    action = columns["action"]
    flag(groups["message"] & ((action < 1) | (action > 5)), "action",
         "must be sent, delivered, opened, clicked or unsubscribed")
    if problems:
        at, name, reason = min(((int(np.argmax(mask)), name, reason)
                                for mask, name, reason in problems), key=lambda p: p[0])
        raise _bad(f"{path}.{name}[{at}]", reason)

    identifiers = _normalised(pack, np.unique(columns["identifier"]).tolist(), identify, path,
                              known or {})
    blake2b = hashlib.blake2b
    digests = [blake2b(raw, digest_size=DIGEST_SIZE).digest() for raw in encoded]
    if (lengths == 36).any():  # perhaps UUIDs, which records keep in 16 bytes
        id_fields = [event_id_field(event_id) for event_id in pack.event_ids]
    else:
        length = _LENGTHS  # every id is at most MAX_EVENT_ID_LENGTH bytes by now
        id_fields = [length[len(raw)] + raw for raw in encoded]
    resolved = np.where(times == 0, now_ms, times)
    return ValidPack(pack._replace(**columns, texts=texts), identifiers, resolved,
                     np.where(quantity == 0, 1, quantity), digests, id_fields)


def _normalised(pack: Pack, used: list[int], identify: Identify, path: str,
                known: Mapping[tuple[int, str], Identifier]) -> list[Identifier | None]:
    """Normal forms of the identifiers events refer to, by index (None: not referred to)."""
    kinds, values = pack.identifier_kinds, pack.identifier_values
    out: list[Identifier | None] = [None] * len(kinds)
    raw = zip(map(kinds.__getitem__, used), map(values.__getitem__, used))
    for index, found in zip(used, map(known.get, raw)):
        out[index] = found
    for index in used:
        if out[index] is not None:
            continue
        try:
            out[index] = identify(kinds[index], values[index], "identifier")
        except InvalidArgument as exc:  # name the array entry: identifier_values[3]
            raise InvalidArgument([FieldViolation(
                f"{path}.identifier_{'kinds' if v.field.endswith('kind') else 'values'}"
                f"[{index}]", v.reason) for v in exc.violations]) from None
    return out


def write_pack(store: EventStore, tx: WriteTxn, valid: ValidPack, path: str = "packed"
               ) -> tuple[int, int]:
    """Store every event of ``valid`` not stored before; returns (stored, duplicates)."""
    n = len(valid)
    if not n:
        return 0, 0
    fresh = store.claim_digests(tx, valid.digests, store.next_seq(tx))
    if not fresh:
        return 0, n
    if len(fresh) == n:  # nothing repeated: every event, in order
        seqs = np.arange(fresh[0][0], fresh[0][0] + n, dtype=np.int64)
        pick = np.arange(n, dtype=np.int64)
    else:
        seqs = np.fromiter((seq for seq, _ in fresh), np.int64, len(fresh))
        pick = np.fromiter((index for _, index in fresh), np.int64, len(fresh))
    p = valid.pack
    texts = p.texts
    kind, channel, source = p.type[pick], p.channel[pick], p.source[pick]
    times, who = valid.times[pick], p.identifier[pick]

    # Nodes: one lookup per identifier; a new one is made by its first fresh event.
    batch_nodes: dict[Identifier, int] = {}
    used, first_use = np.unique(who, return_index=True)
    identifiers = valid.identifiers
    known = store.committed_nodes.get
    found = [known(identifiers[index]) for index in used.tolist()]  # type: ignore[arg-type]
    if None in found:
        for j, (index, at) in enumerate(zip(used.tolist(), first_use.tolist())):
            if found[j] is None:
                found[j] = store.node_for(
                    tx, identifiers[index], texts[source[at]], int(times[at]),  # type: ignore
                    f"{path}.identifier_values[{index}]", batch_nodes)
    node_of_index = np.zeros(len(identifiers), np.int64)
    node_of_index[used] = found
    nodes = node_of_index[who]

    # Interned ids of the texts the columns refer to, one intern per distinct text.
    strings = store.strings
    known = strings.ids.get

    def sid(text: str) -> int:
        found = known(text)
        return found if found is not None else strings.intern(tx, text)

    product, category, brand = p.product_id[pick], p.category[pick], p.brand[pick]
    campaign, phrase = p.campaign[pick], p.phrase[pick]
    sid_of = np.zeros(len(texts), np.int64)
    for index in np.unique(np.concatenate((source, product, category, brand, campaign))
                           ).tolist():
        sid_of[index] = sid(texts[index])
    searching = kind == _SEARCH
    label_of = np.zeros(len(texts), np.int64)  # search label: the phrase trimmed, lower-cased
    for index in np.unique(phrase[searching]).tolist():
        label_of[index] = sid(texts[index].strip().lower())

    # Records: a head per (type, channel, source), then the event id, then the payload.
    v = varint
    field_of_sid = [v(s) for s in sid_of.tolist()]
    heads: dict[int, bytes] = {}
    head_codes = (sid_of[source] << 8 | kind << 3 | channel).tolist()
    for code in set(head_codes):
        heads[code] = bytes((code >> 3 & 31, code & 7)) + v(code >> 8)
    price = p.price[pick]
    quantity = valid.quantity[pick]
    id_fields = valid.id_fields
    money = money_field
    records = []
    append = records.append
    join = b"".join
    for code, at, k, a, b, c, d, e in zip(
            head_codes, pick.tolist(), kind.tolist(), product.tolist(), category.tolist(),
            brand.tolist(), price.tolist(), quantity.tolist()):
        if k <= 4:
            append(join((heads[code], id_fields[at], field_of_sid[a], field_of_sid[b],
                         field_of_sid[c], money(d), v(e))))
        elif k == _SEARCH:
            append(join((heads[code], id_fields[at], text_field(texts[p.phrase[at]]),
                         v(int(p.results_count[at])))))
        else:
            append(join((heads[code], id_fields[at], v(int(p.action[at])),
                         field_of_sid[p.campaign[at]])))

    keys = np.empty(len(fresh), _KEY)
    keys["node"] = nodes
    keys["time"] = _INV64 - times.astype(np.uint64)
    keys["seq"] = _INV32 - (seqs & _INV32)
    order = np.lexsort((keys["seq"], keys["time"], keys["node"]))
    tx.put_many("events", list(zip(keys[order].view(f"V{_KEY.itemsize}").tolist(),
                                   [records[i] for i in order.tolist()])))
    store.set_next_seq(tx, int(seqs[-1]) + 1)

    # Segment columns: one row per event, as the per-event form makes them.
    rows = np.zeros(len(fresh), ROW_DTYPE)
    rows["node"] = nodes
    rows["time"] = times // 1000
    rows["type"] = kind
    rows["channel"] = channel
    products = kind <= 4
    rows["product"] = np.where(products, sid_of[product], 0)
    rows["category"] = np.where(products, sid_of[category], 0)
    rows["brand"] = np.where(products, sid_of[brand], 0)
    rows["amount"] = np.where(products, price * quantity, 0.0)
    rows["quantity"] = np.where(products, np.minimum(quantity, 65535), 0)
    messages = kind == _MESSAGE
    rows["action"] = np.where(messages, p.action[pick], 0)
    rows["label"] = np.where(searching, label_of[phrase], np.where(messages, sid_of[campaign], 0))
    store.columns.append(tx, Rows(rows))
    store.remember_nodes(tx, batch_nodes)
    return len(fresh), n - len(fresh)
