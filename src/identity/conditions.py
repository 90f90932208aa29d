"""Segment condition trees: the declarative spec, parsed and validated once.

A tree arrives as the JSON form of ``identity.v1.Condition`` (a dict: the file format
of ``identity segment ...`` and what the servicer turns a message into). ``parse``
checks every node and raises ``InvalidArgument`` naming the bad node's path, e.g.
``root.all[2].event.window``, before anything is evaluated. The result is a tree of
frozen dataclasses; each node keeps its path so ``ExplainMembership`` can report it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Union

from identity.errors import InvalidArgument

__all__ = [
    "Range", "Window", "EventFilter", "EventLeaf", "AbandonedLeaf", "AttributeLeaf",
    "AggregateLeaf", "CohortLeaf", "ReachableLeaf", "TagLeaf", "SegmentLeaf", "Group", "Node",
    "parse", "EVENT_TYPES", "AGGREGATES", "ATTRIBUTES", "IDENTIFIER_KINDS", "MAX_NODES",
    "MAX_DEPTH", "segment_refs", "NAME_PATTERN",
]

# Event types a condition may name: (column type, action) with action 0 = any.
EVENT_TYPES: dict[str, tuple[int, int]] = {
    "view": (1, 0), "add_to_cart": (2, 0), "remove_from_cart": (3, 0), "wishlist": (4, 0),
    "order": (5, 0), "search": (7, 0),
    "ad_view": (8, 1), "ad_click": (8, 2), "ad_order": (8, 3),
    "message_sent": (9, 1), "message_delivered": (9, 2), "message_opened": (9, 3),
    "message_clicked": (9, 4), "message_unsubscribed": (9, 5),
    "custom": (10, 0),
}
PRODUCT_TYPES = {"view", "add_to_cart", "remove_from_cart", "wishlist", "order"}
AGGREGATES = ("orders_count", "total_spent", "average_check", "days_since_last_order",
              "days_since_last_activity")
ATTRIBUTES = ("gender", "age", "city", "language", "time_zone", "name", "birth_date")
IDENTIFIER_KINDS = ("customer_id", "email", "phone", "loyalty_card", "crm_id", "device_id")
CONSENT_CHANNELS = ("app", "web", "pos", "email", "push", "sms")
MEASURES = ("count", "amount", "distinct_products")
ORDER_KEYS = ("cuisine", "restaurant", "meal_type", "delivery_city", "store")
MAX_NODES = 1000
MAX_DEPTH = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True)
class Range:
    """Inclusive at both ends; ``None`` is open."""

    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class Window:
    """Fixed dates or ``from_days_ago``..``to_days_ago`` (calendar days before as_of's day)."""

    from_date: date | None = None
    to_date: date | None = None
    from_days_ago: int | None = None
    to_days_ago: int | None = None


@dataclass(frozen=True)
class EventFilter:
    type: str = ""
    name: str = ""
    product_ids: tuple[str, ...] = ()
    category: str = ""
    brand: str = ""
    search_equals: str = ""
    search_contains: str = ""
    advertiser: str = ""
    campaign: str = ""
    channel: str = ""
    order: tuple[tuple[str, str], ...] = ()
    ad: str = ""
    properties: tuple[tuple[str, str], ...] = ()  # custom: key -> value, all must hold


@dataclass(frozen=True)
class EventLeaf:
    path: str
    filter: EventFilter
    window: Window
    not_happened: bool
    count: Range
    measure: str


@dataclass(frozen=True)
class AbandonedLeaf:
    path: str
    filter: EventFilter
    window: Window
    cart_only: bool
    count: Range


@dataclass(frozen=True)
class AttributeLeaf:
    path: str
    name: str
    equals: str | None
    in_: tuple[str, ...]
    range: Range | None
    exists: bool | None


@dataclass(frozen=True)
class AggregateLeaf:
    path: str
    name: str
    range: Range


@dataclass(frozen=True)
class CohortLeaf:
    path: str
    cells: tuple[str, ...]
    r: Range | None
    f: Range | None
    m: Range | None


@dataclass(frozen=True)
class ReachableLeaf:
    path: str
    kind: str
    consent: str


@dataclass(frozen=True)
class TagLeaf:
    path: str
    name: str
    absent: bool
    value: str | None


@dataclass(frozen=True)
class SegmentLeaf:
    path: str
    name: str


@dataclass(frozen=True)
class Group:
    path: str
    op: str  # all, any, none
    children: tuple[Node, ...]


Node = Union[Group, EventLeaf, AbandonedLeaf, AttributeLeaf, AggregateLeaf, CohortLeaf,
             ReachableLeaf, TagLeaf, SegmentLeaf]
_GROUPS = ("all", "any", "none")
_LEAVES = ("event", "abandoned", "attribute", "aggregate", "cohort", "reachable", "tag",
           "segment")


def _bad(path: str, reason: str) -> InvalidArgument:
    return InvalidArgument.field(path, reason)


def parse(tree: Any, cells: tuple[str, ...] = (), path: str = "root") -> Node:
    """Validate a tree's JSON form and build its nodes; ``cells``: the cohort names allowed."""
    counter = [0]
    return _node(tree, path, 0, counter, cells)


def _node(tree: Any, path: str, depth: int, counter: list[int], cells: tuple[str, ...]) -> Node:
    if not isinstance(tree, dict):
        raise _bad(path, "a condition must be an object")
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise _bad(path, f"a tree may have at most {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise _bad(path, f"a tree may be at most {MAX_DEPTH} levels deep")
    keys = [k for k in tree if tree[k] not in (None, [], {})]
    unknown = [k for k in tree if k not in _GROUPS + _LEAVES]
    if unknown:
        raise _bad(f"{path}.{unknown[0]}", "unknown condition (groups: all, any, none; leaves: "
                   + ", ".join(_LEAVES) + ")")
    if len(keys) != 1:
        raise _bad(path, "set exactly one group or leaf, found "
                   + (", ".join(keys) if keys else "none (an empty group is not allowed)"))
    key = keys[0]
    body = tree[key]
    here = f"{path}.{key}"
    if key in _GROUPS:
        if not isinstance(body, list):
            raise _bad(here, "a group is a list of conditions")
        return Group(here, key, tuple(_node(child, f"{here}[{i}]", depth + 1, counter, cells)
                                      for i, child in enumerate(body)))
    if not isinstance(body, dict):
        raise _bad(here, "a leaf is an object")
    return _LEAF_PARSERS[key](body, here, cells)


# -- small field readers -----------------------------------------------------------

def _fields(body: dict, path: str, allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise _bad(f"{path}.{key}", "unknown field (known: " + ", ".join(allowed) + ")")


def _text(body: dict, key: str, path: str, required: bool = False) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise _bad(f"{path}.{key}", "must be text")
    value = value.strip()
    if required and not value:
        raise _bad(f"{path}.{key}", "is required")
    if len(value) > 512:
        raise _bad(f"{path}.{key}", "longer than 512 characters")
    return value


def _range(body: Any, path: str, low: float = -math.inf, high: float = math.inf) -> Range:
    if not isinstance(body, dict):
        raise _bad(path, "a range is an object with min and/or max")
    _fields(body, path, ("min", "max"))
    ends: list[float | None] = []
    for key in ("min", "max"):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise _bad(f"{path}.{key}", "must be a finite number")
            if not low <= value <= high:
                raise _bad(f"{path}.{key}", f"must be between {low:g} and {high:g}")
        ends.append(value)
    if ends[0] is not None and ends[1] is not None and ends[0] > ends[1]:
        raise _bad(path, "min is greater than max")
    return Range(ends[0], ends[1])


def _date(body: dict, key: str, path: str) -> date | None:
    text = _text(body, key, path)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _bad(f"{path}.{key}", f"not an ISO date (YYYY-MM-DD): {text!r}") from None


def _window(body: Any, path: str) -> Window:
    if body is None:
        return Window()
    if not isinstance(body, dict):
        raise _bad(path, "a window is an object")
    _fields(body, path, ("from_date", "to_date", "from_days_ago", "to_days_ago"))
    start, end = _date(body, "from_date", path), _date(body, "to_date", path)
    ago: list[int | None] = []
    for key in ("from_days_ago", "to_days_ago"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= 36500):
            raise _bad(f"{path}.{key}", "must be a whole number of days from 0 to 36500")
        ago.append(value)
    fixed = start is not None or end is not None
    relative = ago[0] is not None or ago[1] is not None
    if fixed and relative:
        raise _bad(path, "use fixed dates or days ago, not both")
    if start and end and start > end:
        raise _bad(path, "from_date is after to_date")
    if ago[0] is not None and ago[1] is not None and ago[0] < ago[1]:
        raise _bad(path, "from_days_ago must be at least to_days_ago (from is further back)")
    return Window(start, end, ago[0], ago[1])


def _filter(body: Any, path: str, need_type: bool) -> EventFilter:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _bad(path, "a filter is an object")
    _fields(body, path, ("type", "name", "product_ids", "category", "brand", "search",
                         "advertiser", "campaign", "ad", "channel", "order", "properties"))
    kind = _text(body, "type", path, required=need_type).lower()
    if kind and kind not in EVENT_TYPES:
        raise _bad(f"{path}.type", "unknown event type (one of " + ", ".join(EVENT_TYPES) + ")")
    name = _text(body, "name", path)
    if kind == "custom" and not name:
        raise _bad(f"{path}.name", "a custom event condition needs the event name")
    if name and kind != "custom":
        raise _bad(f"{path}.name", "only custom events have a name")
    products = body.get("product_ids") or []
    if not isinstance(products, list) or not all(isinstance(p, str) and p for p in products):
        raise _bad(f"{path}.product_ids", "must be a list of product ids")
    search = body.get("search") or {}
    if not isinstance(search, dict):
        raise _bad(f"{path}.search", "must be an object with equals or contains")
    _fields(search, f"{path}.search", ("equals", "contains"))
    equals, contains = _text(search, "equals", f"{path}.search"), \
        _text(search, "contains", f"{path}.search")
    if equals and contains:
        raise _bad(f"{path}.search", "set equals or contains, not both")
    channel = _text(body, "channel", path).lower()
    if channel and channel not in CONSENT_CHANNELS:
        raise _bad(f"{path}.channel", "unknown channel (one of " + ", ".join(CONSENT_CHANNELS)
                   + ")")
    order = body.get("order") or {}
    if not isinstance(order, dict):
        raise _bad(f"{path}.order", "must map order parameters to values")
    for key, value in order.items():
        if key not in ORDER_KEYS:
            raise _bad(f"{path}.order.{key}", "not an indexed order parameter (indexed: "
                       + ", ".join(ORDER_KEYS) + ")")
        if not isinstance(value, str) or not value.strip():
            raise _bad(f"{path}.order.{key}", "must be non-empty text")
    properties = body.get("properties") or {}
    if not isinstance(properties, dict):
        raise _bad(f"{path}.properties", "must map property names to values")
    for key, value in properties.items():
        if not isinstance(key, str) or not key.strip():
            raise _bad(f"{path}.properties", "property names must be non-empty text")
        if not isinstance(value, str) or not value.strip():
            raise _bad(f"{path}.properties.{key}", "must be non-empty text (numbers and "
                       "true/false as text)")
    result = EventFilter(
        kind, name, tuple(p.strip() for p in products), _text(body, "category", path),
        _text(body, "brand", path), equals, contains, _text(body, "advertiser", path),
        _text(body, "campaign", path), channel,
        tuple(sorted((k, v.strip()) for k, v in order.items())), _text(body, "ad", path),
        tuple(sorted((k.strip(), v.strip()) for k, v in properties.items())))
    _check_applies(result, path)
    return result


def _check_applies(f: EventFilter, path: str) -> None:
    """A filter field the type never carries would silently match nothing: refuse it."""
    looks = f.type in PRODUCT_TYPES or not f.type  # no type: abandoned items' views and carts
    rules = [
        ("product_ids", bool(f.product_ids), looks or f.type.startswith("ad_")),
        ("category", bool(f.category), looks),
        ("brand", bool(f.brand), looks),
        ("search", bool(f.search_equals or f.search_contains), f.type == "search"),
        ("advertiser", bool(f.advertiser), f.type.startswith("ad_")),
        ("campaign", bool(f.campaign), f.type.startswith(("ad_", "message_"))),
        ("order", bool(f.order), f.type == "order"),
        ("ad", bool(f.ad), f.type.startswith("ad_")),
        ("properties", bool(f.properties), f.type == "custom"),
    ]
    for key, used, allowed in rules:
        if used and not allowed:
            raise _bad(f"{path}.{key}", f"does not apply to events of type {f.type or 'any'}")


def _event(body: dict, path: str, _cells: tuple[str, ...]) -> EventLeaf:
    _fields(body, path, ("filter", "window", "not_happened", "count", "measure"))
    flt = _filter(body.get("filter"), f"{path}.filter", need_type=True)
    not_happened = bool(body.get("not_happened", False))
    measure = _text(body, "measure", path).lower() or "count"
    if measure not in MEASURES:
        raise _bad(f"{path}.measure", "one of " + ", ".join(MEASURES))
    if measure != "count" and flt.type not in PRODUCT_TYPES:
        raise _bad(f"{path}.measure", f"{measure} applies to product events and orders")
    if not_happened and body.get("count") is not None:
        raise _bad(f"{path}.count", "not_happened means a count of zero; leave count unset")
    count = _range(body["count"], f"{path}.count", 0) if body.get("count") is not None \
        else Range(1e-9 if measure == "amount" else 1, None)
    return EventLeaf(path, flt, _window(body.get("window"), f"{path}.window"), not_happened,
                     count, measure)


def _abandoned(body: dict, path: str, _cells: tuple[str, ...]) -> AbandonedLeaf:
    _fields(body, path, ("filter", "window", "cart_only", "count"))
    flt = _filter(body.get("filter"), f"{path}.filter", need_type=False)
    if flt.type or flt.name or flt.search_equals or flt.search_contains or flt.advertiser \
            or flt.campaign or flt.order or flt.ad or flt.properties:
        raise _bad(f"{path}.filter", "abandoned items filter by product_ids, category, brand "
                   "and channel only")
    count = _range(body["count"], f"{path}.count", 0) if body.get("count") is not None \
        else Range(1, None)
    return AbandonedLeaf(path, flt, _window(body.get("window"), f"{path}.window"),
                         bool(body.get("cart_only", False)), count)


def _attribute(body: dict, path: str, _cells: tuple[str, ...]) -> AttributeLeaf:
    _fields(body, path, ("name", "equals", "in", "range", "exists"))
    name = _text(body, "name", path, required=True).lower()
    if name not in ATTRIBUTES:
        raise _bad(f"{path}.name", "unknown attribute (one of " + ", ".join(ATTRIBUTES) + ")")
    equals = _text(body, "equals", path) or None
    values = body.get("in") or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _bad(f"{path}.in", "must be a list of text values")
    rng = _range(body["range"], f"{path}.range") if body.get("range") is not None else None
    exists = body.get("exists")
    if exists is not None and not isinstance(exists, bool):
        raise _bad(f"{path}.exists", "must be true or false")
    chosen = [k for k, v in (("equals", equals), ("in", values), ("range", rng),
                             ("exists", exists)) if v not in (None, [])]
    if len(chosen) != 1:
        raise _bad(path, "set exactly one of equals, in, range, exists")
    if rng is not None and name != "age":
        raise _bad(f"{path}.range", "ranges apply to age only")
    return AttributeLeaf(path, name, equals, tuple(v.strip() for v in values), rng, exists)


def _aggregate(body: dict, path: str, _cells: tuple[str, ...]) -> AggregateLeaf:
    _fields(body, path, ("name", "range"))
    name = _text(body, "name", path, required=True).lower()
    if name not in AGGREGATES:
        raise _bad(f"{path}.name", "unknown aggregate (one of " + ", ".join(AGGREGATES) + ")")
    if body.get("range") is None:
        raise _bad(f"{path}.range", "is required")
    return AggregateLeaf(path, name, _range(body["range"], f"{path}.range"))


def _cohort(body: dict, path: str, cells: tuple[str, ...]) -> CohortLeaf:
    _fields(body, path, ("cells", "r", "f", "m"))
    names = body.get("cells") or []
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise _bad(f"{path}.cells", "must be a list of cell names")
    for i, cell in enumerate(names):
        if cell not in cells:
            raise _bad(f"{path}.cells[{i}]", f"unknown cell {cell!r} (cells: "
                       + ", ".join(cells) + ")")
    scores = {k: _range(body[k], f"{path}.{k}", 1, 5) if body.get(k) is not None else None
              for k in ("r", "f", "m")}
    if not names and not any(scores.values()):
        raise _bad(path, "set cells or a score range (r, f, m)")
    return CohortLeaf(path, tuple(names), scores["r"], scores["f"], scores["m"])


def _reachable(body: dict, path: str, _cells: tuple[str, ...]) -> ReachableLeaf:
    _fields(body, path, ("kind", "consent"))
    kind, consent = _text(body, "kind", path).lower(), _text(body, "consent", path).lower()
    if bool(kind) == bool(consent):
        raise _bad(path, "set exactly one of kind, consent")
    if kind and kind not in IDENTIFIER_KINDS:
        raise _bad(f"{path}.kind", "one of " + ", ".join(IDENTIFIER_KINDS))
    if consent and consent not in CONSENT_CHANNELS:
        raise _bad(f"{path}.consent", "one of " + ", ".join(CONSENT_CHANNELS))
    return ReachableLeaf(path, kind, consent)


def _tag(body: dict, path: str, _cells: tuple[str, ...]) -> TagLeaf:
    _fields(body, path, ("name", "absent", "value"))
    value = body.get("value")
    if value is not None and not isinstance(value, str):
        raise _bad(f"{path}.value", "must be text")
    absent = bool(body.get("absent", False))
    if absent and value is not None:
        raise _bad(f"{path}.value", "a value cannot be required of an absent tag")
    return TagLeaf(path, _text(body, "name", path, required=True), absent, value)


def _segment(body: dict, path: str, _cells: tuple[str, ...]) -> SegmentLeaf:
    _fields(body, path, ("name",))
    name = _text(body, "name", path, required=True)
    if not NAME_PATTERN.match(name):
        raise _bad(f"{path}.name", "not a segment name")
    return SegmentLeaf(path, name)


_LEAF_PARSERS = {"event": _event, "abandoned": _abandoned, "attribute": _attribute,
                 "aggregate": _aggregate, "cohort": _cohort, "reachable": _reachable,
                 "tag": _tag, "segment": _segment}


def segment_refs(node: Node) -> list[SegmentLeaf]:
    """Every ``segment`` leaf of a tree, depth first."""
    if isinstance(node, Group):
        return [ref for child in node.children for ref in segment_refs(child)]
    return [node] if isinstance(node, SegmentLeaf) else []
