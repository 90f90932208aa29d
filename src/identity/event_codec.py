"""The compact binary form of an event record (the value under an ``events`` key).

The key already holds who did it and when, so the record keeps only the rest:
type and channel bytes, then varints. Strings that repeat across events (source,
product, category, brand, currency, store, campaign, property names...) are stored
as interned ids (``identity.strings``); strings unique to an event (order id,
search phrase, free text) are length-prefixed UTF-8. Money is a varint of cents
when the amount has no finer part, else a float64. A canonical lower-case UUID
event id takes 16 bytes instead of 36.

    record  = type u8, channel u8, source sid, event id, payload
    event id: 0xFF + 16 UUID bytes, or varint length + UTF-8
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from identity.events import (
    Ad, Attributes, Custom, EventType, Message, Order, OrderCancelled, Payload, Product, Search,
)

__all__ = ["encode", "encode_product", "decode", "decode_head", "event_id_field", "money_field",
           "text_field", "varint"]

Intern = Callable[[str], int]
TextOf = Callable[[int], str]
_F64 = struct.Struct("<d")
_UUID_MARK = 0xFF
_EVENT_TYPES = {int(t): t for t in EventType}
_HEX = frozenset("0123456789abcdef")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [_varint(i) for i in range(1 << 14)]  # two-byte varints, precomputed
_MONEY: dict[float, bytes] = {}  # prices repeat: amount -> its encoding


def _v(value: int) -> bytes:
    return _SMALL[value] if value < 16384 else _varint(value)


def _money(value: float) -> bytes:
    code = _MONEY.get(value)
    if code is None:
        cents = round(value * 100)
        code = _varint(cents << 1) if cents / 100 == value else b"\x01" + _F64.pack(value)
        if len(_MONEY) > 100_000:
            _MONEY.clear()
        _MONEY[value] = code
    return code


def _text(text: str) -> bytes:
    data = text.encode()
    return _v(len(data)) + data


class _Writer:
    """Encoder for the rarer payloads; products and orders take the inlined fast path."""

    __slots__ = ("out", "intern")

    def __init__(self, out: bytearray, intern: Intern):
        self.out = out
        self.intern = intern

    def uint(self, value: int) -> None:
        self.out += _v(value)

    def sid(self, text: str) -> None:
        self.out += _v(self.intern(text))

    def text(self, text: str) -> None:
        self.out += _text(text)


class _Reader:
    __slots__ = ("data", "pos", "text_of")

    def __init__(self, data: bytes, pos: int, text_of: TextOf):
        self.data = data
        self.pos = pos
        self.text_of = text_of

    def uint(self) -> int:
        data, pos = self.data, self.pos
        byte = data[pos]
        pos += 1
        if byte < 0x80:  # one byte: most string ids, counts and flags
            self.pos = pos
            return byte
        value, shift = byte & 0x7F, 7
        while byte & 0x80:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
        self.pos = pos
        return value

    def sid(self) -> str:
        byte = self.data[self.pos]
        if byte < 0x80:  # uint's one-byte case, inlined: a record holds many string ids
            self.pos += 1
            return self.text_of(byte) if byte else ""
        sid = self.uint()
        return self.text_of(sid) if sid else ""

    def text(self) -> str:
        length = self.uint()
        start = self.pos
        self.pos += length
        return bytes(self.data[start : self.pos]).decode()

    def money(self) -> float:
        tag = self.uint()
        if tag != 1:
            return (tag >> 1) / 100
        (value,) = _F64.unpack_from(self.data, self.pos)
        self.pos += 8
        return value

    def product(self) -> Product:
        return Product(self.sid(), self.sid(), self.sid(), self.money(), self.uint())


def _uuid_bytes(event_id: str) -> bytes | None:
    if len(event_id) != 36 or event_id.count("-") != 4:
        return None
    if event_id[8] != "-" or event_id[13] != "-" or event_id[18] != "-" or event_id[23] != "-":
        return None
    digits = event_id.replace("-", "")
    return bytes.fromhex(digits) if set(digits) <= _HEX else None


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def varint(value: int) -> bytes:
    """An unsigned varint, as every integer field of a record is written."""
    return _SMALL[value] if value < 16384 else _varint(value)


money_field = _money  # an amount as a record holds it (varint cents, or a tagged float64)


def text_field(text: str) -> bytes:
    """A length-prefixed UTF-8 text field (search phrases, order ids...)."""
    return _text(text)


def event_id_field(event_id: str) -> bytes:
    """The event id as a record holds it: 16 bytes for a canonical UUID, else text."""
    raw = _uuid_bytes(event_id) if len(event_id) == 36 else None
    return b"\xff" + raw if raw is not None else _text(event_id)


def _product(p: Product, intern: Intern) -> bytes:
    return b"".join((_v(intern(p.product_id)), _v(intern(p.category)), _v(intern(p.brand)),
                     _money(p.price), _v(p.quantity)))


_HEADS: dict[tuple[int, int, int], bytes] = {}  # (type, channel, source id) -> record head


def encode_product(event_id: str, kind: int, channel: int, source_id: int, product_id: int,
                   category_id: int, brand_id: int, price: float, quantity: int) -> bytes:
    """``encode`` of a view, cart or wishlist event whose strings are already interned."""
    head = _HEADS.get((kind, channel, source_id))
    if head is None:
        if len(_HEADS) > 10_000:
            _HEADS.clear()
        head = _HEADS[(kind, channel, source_id)] = bytes((kind, channel)) + _v(source_id)
    raw = _uuid_bytes(event_id) if len(event_id) == 36 else None
    return b"".join((head, b"\xff" + raw if raw is not None else _text(event_id),
                     _v(product_id), _v(category_id), _v(brand_id), _money(price), _v(quantity)))


def encode(event_id: str, kind: EventType, channel: int, source: str, payload: Payload,
           intern: Intern) -> bytes:
    """The record of one event; ``intern`` maps repeated strings to ids ("" to 0)."""
    out = bytearray((kind, channel))
    out += _v(intern(source))
    raw = _uuid_bytes(event_id)
    if raw is not None:
        out.append(_UUID_MARK)
        out += raw
    else:
        out += _text(event_id)  # ids are at most 128 bytes, so the first byte is < 0xFF
    p = payload
    if type(p) is Product:
        out += _product(p, intern)
        return bytes(out)
    if type(p) is Order:
        out += _text(p.order_id)
        out += _v(len(p.lines))
        for line in p.lines:
            out += _product(line, intern)
        out += _money(p.total)
        for text in (p.currency, p.store, p.cuisine, p.restaurant, p.meal_type, p.delivery_city):
            out += _v(intern(text))
        return bytes(out)
    w = _Writer(out, intern)
    if type(p) is OrderCancelled:
        w.text(p.order_id)
        w.text(p.reason)
    elif type(p) is Search:
        w.text(p.phrase)
        w.uint(p.results_count)
    elif type(p) is Ad:
        w.uint(p.action)
        for text in (p.advertiser, p.campaign, p.ad_id, p.product_id):
            w.sid(text)
    elif type(p) is Message:
        w.uint(p.action)
        w.sid(p.campaign)
    elif type(p) is Custom:
        w.sid(p.name)
        w.uint(len(p.properties))
        for key, value in p.properties:
            w.sid(key)
            if isinstance(value, bool):
                out.append(3)
                out.append(int(value))
            elif isinstance(value, int):
                out.append(2)
                w.uint((value << 1) ^ (value >> 63))  # zigzag
            elif isinstance(value, float):
                out.append(1)
                out += _F64.pack(value)
            else:
                out.append(0)
                w.text(value)
    else:
        a: Attributes = p  # type: ignore[assignment]
        values = (a.name, a.birth_date, a.city, a.time_zone, a.language)
        w.uint(sum(1 << i for i, v in enumerate(values) if v is not None))
        for value in values:
            if value is not None:
                w.text(value)
        w.uint(a.gender)
        w.uint(len(a.consents))
        for channel_number, granted in a.consents:
            w.uint(channel_number << 1 | int(granted))
    return bytes(out)


def decode_head(data: bytes) -> tuple[int, int]:
    """(type, channel) without decoding the rest."""
    return data[0], data[1]


def decode(data: bytes, text_of: TextOf) -> tuple[str, EventType, int, str, Payload]:
    """(event id, type, channel, source, payload) of a record."""
    kind = _EVENT_TYPES.get(data[0]) or EventType(data[0])  # (a dict: calling an enum is slow)
    channel = data[1]
    r = _Reader(data, 2, text_of)
    source = r.sid()
    if data[r.pos] == _UUID_MARK:
        event_id = _uuid_text(bytes(data[r.pos + 1 : r.pos + 17]))
        r.pos += 17
    else:
        event_id = r.text()
    payload: Payload
    if kind <= EventType.WISHLIST:
        payload = r.product()
    elif kind is EventType.ORDER:
        order_id = r.text()
        lines = tuple([r.product() for _ in range(r.uint())])
        total = r.money()  # then currency, store, cuisine, restaurant, meal type, city
        payload = Order(order_id, lines, total, r.sid(), r.sid(), r.sid(), r.sid(), r.sid(),
                        r.sid())
    elif kind is EventType.ORDER_CANCELLED:
        payload = OrderCancelled(r.text(), r.text())
    elif kind is EventType.SEARCH:
        payload = Search(r.text(), r.uint())
    elif kind is EventType.AD:
        payload = Ad(r.uint(), r.sid(), r.sid(), r.sid(), r.sid())
    elif kind is EventType.MESSAGE:
        payload = Message(r.uint(), r.sid())
    elif kind is EventType.CUSTOM:
        name = r.sid()
        properties = []
        for _ in range(r.uint()):
            key = r.sid()
            tag = r.data[r.pos]
            r.pos += 1
            value: str | float | int | bool
            if tag == 3:
                value = bool(r.data[r.pos])
                r.pos += 1
            elif tag == 2:
                z = r.uint()
                value = (z >> 1) ^ -(z & 1)
            elif tag == 1:
                (value,) = _F64.unpack_from(r.data, r.pos)
                r.pos += 8
            else:
                value = r.text()
            properties.append((key, value))
        payload = Custom(name, tuple(properties))
    else:
        mask = r.uint()
        values = [r.text() if mask & (1 << i) else None for i in range(5)]
        gender = r.uint()
        consents = []
        for _ in range(r.uint()):
            packed = r.uint()
            consents.append((packed >> 1, bool(packed & 1)))
        payload = Attributes(values[0], gender, values[1], values[2], values[3], values[4],
                             tuple(consents))
    return event_id, kind, channel, source, payload
