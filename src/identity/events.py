"""The event model: what an identifier did, as plain values, and the rules for valid events.

Values are NamedTuples: the bulk path builds hundreds of thousands per second.

An event carries an id (the idempotence key), the identifier that did it, a time, a
channel, a source system and one payload; the payload's class and the event type say
what happened. Enum numbers equal those of ``identity.v1`` so conversion is a cast.

``check`` validates one event and raises ``InvalidArgument`` naming the exact field
(``events[3].order.lines[0].price``); callers check a whole batch before writing.
"""

from __future__ import annotations

import math
import re
from enum import IntEnum
from typing import NamedTuple, Union

from identity.errors import InvalidArgument
from identity.identifiers import Identifier

__all__ = [
    "AdAction", "Ad", "Attributes", "Channel", "Custom", "Event", "EventType", "Gender",
    "Message", "MessageAction", "Order", "OrderCancelled", "Payload", "Product", "Search",
    "StoredEvent", "check", "plainly_valid", "MAX_EVENT_ID_LENGTH", "MAX_TEXT_LENGTH",
    "MAX_TIME_MS",
]

MAX_EVENT_ID_LENGTH = 128
MAX_TEXT_LENGTH = 256
MAX_LINES = 1000
MAX_PROPERTIES = 64
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01: event columns keep u32 seconds
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_TIME_ZONE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+\-]+)*$")


class EventType(IntEnum):
    VIEW = 1
    ADD_TO_CART = 2
    REMOVE_FROM_CART = 3
    WISHLIST = 4
    ORDER = 5
    ORDER_CANCELLED = 6
    SEARCH = 7
    AD = 8
    MESSAGE = 9
    CUSTOM = 10
    ATTRIBUTES = 11


class Channel(IntEnum):
    UNSPECIFIED = 0
    APP = 1
    WEB = 2
    POS = 3
    EMAIL = 4
    PUSH = 5
    SMS = 6


class AdAction(IntEnum):
    VIEW = 1
    CLICK = 2
    ORDER = 3


class MessageAction(IntEnum):
    SENT = 1
    DELIVERED = 2
    OPENED = 3
    CLICKED = 4
    UNSUBSCRIBED = 5


class Gender(IntEnum):
    UNSPECIFIED = 0
    FEMALE = 1
    MALE = 2
    OTHER = 3


class Product(NamedTuple):
    """A product in a view, cart or wishlist event, or one line of an order."""

    product_id: str
    category: str = ""
    brand: str = ""
    price: float = 0.0
    quantity: int = 1


class Order(NamedTuple):
    order_id: str
    lines: tuple[Product, ...] = ()
    total: float = 0.0  # 0: the sum of the lines
    currency: str = ""
    store: str = ""
    cuisine: str = ""
    restaurant: str = ""
    meal_type: str = ""
    delivery_city: str = ""

    @property
    def amount(self) -> float:
        """The total, or the sum of the lines when no total was given."""
        return self.total or sum(line.price * line.quantity for line in self.lines)


class OrderCancelled(NamedTuple):
    order_id: str
    reason: str = ""


class Search(NamedTuple):
    phrase: str
    results_count: int = 0


class Ad(NamedTuple):
    action: int  # AdAction
    advertiser: str = ""
    campaign: str = ""
    ad_id: str = ""
    product_id: str = ""


class Message(NamedTuple):
    action: int  # MessageAction; the event's channel carried the message
    campaign: str = ""


class Custom(NamedTuple):
    name: str
    properties: tuple[tuple[str, str | float | int | bool], ...] = ()


class Attributes(NamedTuple):
    """Stated profile attributes; None (or UNSPECIFIED gender) leaves a value unchanged."""

    name: str | None = None
    gender: int = 0
    birth_date: str | None = None
    city: str | None = None
    time_zone: str | None = None
    language: str | None = None
    consents: tuple[tuple[int, bool], ...] = ()


Payload = Union[Product, Order, OrderCancelled, Search, Ad, Message, Custom, Attributes]

_PAYLOAD_OF_TYPE: dict[EventType, type] = {
    EventType.VIEW: Product, EventType.ADD_TO_CART: Product,
    EventType.REMOVE_FROM_CART: Product, EventType.WISHLIST: Product,
    EventType.ORDER: Order, EventType.ORDER_CANCELLED: OrderCancelled,
    EventType.SEARCH: Search, EventType.AD: Ad, EventType.MESSAGE: Message,
    EventType.CUSTOM: Custom, EventType.ATTRIBUTES: Attributes,
}
FIELD_OF_TYPE: dict[EventType, str] = {t: t.name.lower() for t in EventType}


class Event(NamedTuple):
    """One event as a client sent it; ``who`` is the raw ``(kind, value)`` until normalised."""

    event_id: str
    who: tuple[int, str]
    time_ms: int | None
    type: EventType
    payload: Payload
    channel: int = 0
    source: str = ""


class StoredEvent(NamedTuple):  # a tuple: built for every event read back
    """An event read back: the normalised identifier that did it and its time are known."""

    event_id: str
    identifier: Identifier
    time_ms: int
    type: EventType
    payload: Payload
    channel: int
    source: str
    seq: int


# -- validation ------------------------------------------------------------------


def _bad(path: str, reason: str) -> InvalidArgument:
    return InvalidArgument.field(path, reason)


def _text(value: str, path: str, *, required: bool = False, limit: int = MAX_TEXT_LENGTH) -> None:
    if required and not value.strip():
        raise _bad(path, "is empty")
    if len(value) > limit:
        raise _bad(path, f"longer than {limit} characters")


def _money(value: float, path: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise _bad(path, "must be a finite amount, not negative")


def _product(p: Product, path: str) -> None:
    _text(p.product_id, f"{path}.product_id", required=True)
    _text(p.category, f"{path}.category")
    _text(p.brand, f"{path}.brand")
    _money(p.price, f"{path}.price")
    if not 1 <= p.quantity <= 1_000_000:
        raise _bad(f"{path}.quantity", "must be between 1 and 1000000")


def _order(o: Order, path: str) -> None:
    _text(o.order_id, f"{path}.order_id", required=True)
    if len(o.lines) > MAX_LINES:
        raise _bad(f"{path}.lines", f"more than {MAX_LINES} lines")
    for i, line in enumerate(o.lines):
        _product(line, f"{path}.lines[{i}]")
    _money(o.total, f"{path}.total")
    if o.currency and not (len(o.currency) == 3 and o.currency.isalpha()):
        raise _bad(f"{path}.currency", "must be an ISO 4217 code such as EUR")
    for name in ("store", "cuisine", "restaurant", "meal_type", "delivery_city"):
        _text(getattr(o, name), f"{path}.{name}")


def _attributes(a: Attributes, path: str) -> None:
    for name in ("name", "city"):
        value = getattr(a, name)
        if value is not None:
            _text(value, f"{path}.{name}")
    if a.gender not in Gender._value2member_map_:
        raise _bad(f"{path}.gender", f"unknown gender {a.gender}")
    if a.birth_date is not None and a.birth_date and not _DATE.match(a.birth_date):
        raise _bad(f"{path}.birth_date", "must be YYYY-MM-DD")
    if a.time_zone and not _TIME_ZONE.match(a.time_zone):
        raise _bad(f"{path}.time_zone", "must be an IANA time zone such as Europe/Berlin")
    if a.language and not _LANGUAGE.match(a.language):
        raise _bad(f"{path}.language", "must be a language tag such as en or pt-BR")
    for i, (channel, _granted) in enumerate(a.consents):
        if channel not in Channel._value2member_map_ or channel == 0:
            raise _bad(f"{path}.consents[{i}].channel", "must name a channel")


_CHANNELS = frozenset(Channel._value2member_map_)


def plainly_valid(event: Event) -> bool:
    """True for a well-formed view, cart or wishlist event (most traffic), in one test.

    False says only "look closer": ``check`` then finds the field or passes the event.
    """
    p = event.payload
    t = event.time_ms
    return (type(p) is Product and 1 <= event.type <= 4 and 0 < len(event.event_id) <= 32
            and (t is None or 0 <= t < MAX_TIME_MS) and event.channel in _CHANNELS
            and len(event.source) <= 128 and 0 < len(p.product_id) <= MAX_TEXT_LENGTH
            and not p.product_id[0].isspace() and len(p.category) <= MAX_TEXT_LENGTH
            and len(p.brand) <= MAX_TEXT_LENGTH and 0.0 <= p.price <= 1e300
            and 1 <= p.quantity <= 1_000_000)


def check(event: Event, path: str) -> None:
    """Raise ``InvalidArgument`` naming the first bad field of ``event`` under ``path``."""
    if not event.event_id or len(event.event_id.encode()) > MAX_EVENT_ID_LENGTH:
        raise _bad(f"{path}.event_id", f"must be 1 to {MAX_EVENT_ID_LENGTH} bytes")
    if event.time_ms is not None and not 0 <= event.time_ms < MAX_TIME_MS:
        raise _bad(f"{path}.time", "must be between 1970 and 2100")
    if event.channel not in Channel._value2member_map_:
        raise _bad(f"{path}.channel", f"unknown channel {event.channel}")
    _text(event.source, f"{path}.source", limit=128)
    payload, kind = event.payload, event.type
    if type(payload) is not _PAYLOAD_OF_TYPE.get(kind):
        raise _bad(f"{path}.payload", "set exactly one of view, order, search, ... ")
    where = f"{path}.{FIELD_OF_TYPE[kind]}"
    if kind is EventType.ORDER:
        _order(payload, where)  # type: ignore[arg-type]
    elif type(payload) is Product:
        _product(payload, where)
    elif kind is EventType.ORDER_CANCELLED:
        _text(payload.order_id, f"{where}.order_id", required=True)  # type: ignore[union-attr]
        _text(payload.reason, f"{where}.reason")  # type: ignore[union-attr]
    elif kind is EventType.SEARCH:
        _text(payload.phrase, f"{where}.phrase")  # type: ignore[union-attr]
    elif kind is EventType.AD:
        ad: Ad = payload  # type: ignore[assignment]
        if ad.action not in AdAction._value2member_map_:
            raise _bad(f"{where}.action", "must be view, click or order")
        for name in ("advertiser", "campaign", "ad_id", "product_id"):
            _text(getattr(ad, name), f"{where}.{name}")
    elif kind is EventType.MESSAGE:
        if payload.action not in MessageAction._value2member_map_:  # type: ignore[union-attr]
            raise _bad(f"{where}.action",
                       "must be sent, delivered, opened, clicked or unsubscribed")
        _text(payload.campaign, f"{where}.campaign")  # type: ignore[union-attr]
    elif kind is EventType.CUSTOM:
        custom: Custom = payload  # type: ignore[assignment]
        _text(custom.name, f"{where}.name", required=True)
        if len(custom.properties) > MAX_PROPERTIES:
            raise _bad(f"{where}.properties", f"more than {MAX_PROPERTIES} properties")
        for key, value in custom.properties:
            _text(key, f"{where}.properties[{key!r}]", required=True, limit=128)
            if isinstance(value, str):
                _text(value, f"{where}.properties[{key!r}]")
            elif isinstance(value, float) and not math.isfinite(value):
                raise _bad(f"{where}.properties[{key!r}]", "must be a finite number")
    else:
        _attributes(payload, where)  # type: ignore[arg-type]
