"""A plain reference evaluator for segment trees: one person at a time, obviously correct.

It knows nothing of columns, interned strings or numpy: it walks a list of plain
event dicts per person, with dates from ``zoneinfo``. The fast engine must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from identity.rfm import DEFAULT_MATRIX

TYPE_ACTIONS = {"view": ("view", 0), "add_to_cart": ("add_to_cart", 0), "order": ("order", 0),
                "search": ("search", 0), "ad_view": ("ad", 1), "ad_click": ("ad", 2),
                "ad_order": ("ad", 3), "message_opened": ("message", 3), "custom": ("custom", 0)}
ORDER_FIELDS = ("cuisine", "restaurant", "meal_type", "delivery_city", "store")


def _same(a: object, b: str) -> bool:
    """Text filters compare trimmed and case-folded; properties by their indexed text."""
    return _text(a).strip().casefold() == b.strip().casefold()


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class World:
    """Persons (sets of identifiers) and events: dicts with id, who, type, time (s) and fields."""

    persons: list[set[str]]
    events: list[dict]
    tags: list[dict] = field(default_factory=list)  # who, tag, value, time (s), cleared
    zone: str = "UTC"


def _day(t: int, zone: str) -> date:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).date()


def _in_window(t: int, w: dict, as_of: int, zone: str) -> bool:
    if t > as_of:
        return False
    day, today = _day(t, zone), _day(as_of, zone)
    if "from_date" in w and day < date.fromisoformat(w["from_date"]):
        return False
    if "to_date" in w and day > date.fromisoformat(w["to_date"]):
        return False
    if "from_days_ago" in w and day < today - timedelta(days=w["from_days_ago"]):
        return False
    if "to_days_ago" in w and day > today - timedelta(days=w["to_days_ago"]):
        return False
    return True


def _holds(value: float, rng: dict) -> bool:
    return ("min" not in rng or value >= rng["min"]) and ("max" not in rng or value <= rng["max"])


class Reference:
    def __init__(self, world: World, as_of: int):
        self.world, self.as_of, self.zone = world, as_of, world.zone
        cancelled = {e["order_id"] for e in world.events
                     if e["type"] == "order_cancelled" and e["time"] <= as_of}
        self.cancelled = cancelled
        self.by_who: dict[str, list[dict]] = {}
        for e in world.events:
            self.by_who.setdefault(e["who"], []).append(e)

    def events_of(self, person: set[str]) -> list[dict]:
        return [e for who in sorted(person) for e in self.by_who.get(who, [])
                if e["time"] <= self.as_of]

    def orders_of(self, person: set[str]) -> dict[str, dict]:
        """Distinct order ids, not cancelled: id -> (latest time, amount)."""
        orders: dict[str, dict] = {}
        for e in self.events_of(person):
            if e["type"] == "order" and e["order_id"] not in self.cancelled:
                seen = orders.get(e["order_id"])
                if seen is None or e["time"] > seen["time"]:
                    orders[e["order_id"]] = e
        return orders

    def matches(self, tree: dict, person: set[str]) -> bool:
        (key, body), = tree.items()
        if key == "all":
            return all(self.matches(c, person) for c in body)
        if key == "any":
            return any(self.matches(c, person) for c in body)
        if key == "none":
            return not any(self.matches(c, person) for c in body)
        return getattr(self, "_" + key)(body, person)

    def _event(self, body: dict, person: set[str]) -> bool:
        f = body["filter"]
        kind, action = TYPE_ACTIONS[f["type"]]
        window = body.get("window", {})
        hits = []
        for e in self.events_of(person):
            if e["type"] != kind or (action and e.get("action") != action):
                continue
            if not _in_window(e["time"], window, self.as_of, self.zone):
                continue
            if ("category" in f or "product_ids" in f) and not any(
                    _line_matches(f, product, category) for product, category in _lines(e)):
                continue  # an order's line filters must all hold on one of its lines
            if "search" in f:
                phrase = "".join(e.get("phrase", "").lower().split())
                s = f["search"]
                if "equals" in s and phrase != "".join(s["equals"].lower().split()):
                    continue
                if "contains" in s and "".join(s["contains"].lower().split()) not in phrase:
                    continue
            if "channel" in f and e.get("channel") != f["channel"]:
                continue
            if any(key in f and not _same(e.get(key, ""), f[key])
                   for key in ("advertiser", "campaign", "ad", "name")):
                continue
            if any(not _same(e.get(key, ""), value) for key, value in f.get("order", {}).items()):
                continue
            props = {k.casefold(): v for k, v in e.get("properties", {}).items()}
            if any(key.strip().casefold() not in props
                   or not _same(props[key.strip().casefold()], value)
                   for key, value in f.get("properties", {}).items()):
                continue
            if kind == "order" and e["order_id"] in self.cancelled:
                continue
            hits.append(e)
        if kind == "order":
            count = len({e["order_id"] for e in hits})
        else:
            count = len({e["id"] for e in hits})
        if body.get("not_happened"):
            return count == 0
        return _holds(count, body.get("count", {"min": 1}))

    def _abandoned(self, body: dict, person: set[str]) -> bool:
        window = body.get("window", {})
        kinds = {"add_to_cart"} if body.get("cart_only") else {"view", "add_to_cart"}
        f = body.get("filter", {})
        wanted = {p.casefold() for p in f.get("product_ids", [])}
        under = f.get("category", "").lower()
        last_look: dict[str, int] = {}
        for e in self.events_of(person):
            if e["type"] not in kinds or not _in_window(e["time"], window, self.as_of, self.zone):
                continue
            if wanted and e["product"].casefold() not in wanted:
                continue
            category = e["category"].lower()
            if under and not (category == under or category.startswith(under + "/")):
                continue
            if "channel" in f and e.get("channel") != f["channel"]:
                continue
            last_look[e["product"]] = max(last_look.get(e["product"], -1), e["time"])
        left = 0
        for product, looked in last_look.items():
            bought = any(product in _products(o) and o["time"] >= looked
                         for o in self.orders_of(person).values())
            left += not bought
        return _holds(left, body.get("count", {"min": 1}))

    def _aggregates(self, person: set[str]) -> dict[str, float | None]:
        orders = self.orders_of(person)
        today = _day(self.as_of, self.zone)
        events = self.events_of(person)
        total = sum(o["amount"] for o in orders.values())
        last = max((o["time"] for o in orders.values()), default=None)
        seen = max((e["time"] for e in events), default=None)
        return {
            "orders_count": len(orders), "total_spent": total,
            "average_check": total / len(orders) if orders else None,
            "days_since_last_order": (today - _day(last, self.zone)).days if last else None,
            "days_since_last_activity": (today - _day(seen, self.zone)).days if seen else None,
        }

    def _aggregate(self, body: dict, person: set[str]) -> bool:
        value = self._aggregates(person)[body["name"]]
        return value is not None and _holds(value, body["range"])

    def cell(self, person: set[str]) -> str:
        a = self._aggregates(person)
        if not a["orders_count"]:
            return ""
        return DEFAULT_MATRIX.cell_of(int(a["orders_count"]), int(a["days_since_last_order"]))

    def _cohort(self, body: dict, person: set[str]) -> bool:
        cell = self.cell(person)
        return bool(cell) and cell in body["cells"]

    def _attribute(self, body: dict, person: set[str]) -> bool:
        """Worlds here state no attributes: every one is missing."""
        return body.get("exists") is False

    def _reachable(self, body: dict, person: set[str]) -> bool:
        return any(who.split(":", 1)[0] == body["kind"] for who in person)

    def _tag(self, body: dict, person: set[str]) -> bool:
        settings = [t for t in self.world.tags if t["who"] in person and t["time"] <= self.as_of
                    and t["tag"] == body["name"]]
        latest = max(settings, key=lambda t: t["time"], default=None)
        has = latest is not None and not latest["cleared"] and (
            "value" not in body or latest["value"] == body["value"])
        return not has if body.get("absent") else has

    def count(self, tree: dict) -> int:
        return sum(self.matches(tree, person) for person in self.world.persons)


def _products(e: dict) -> list[str]:
    if e["type"] == "order":
        return [line["product"] for line in e["lines"]]
    return [e["product"]] if e.get("product") else []


def _lines(e: dict) -> list[tuple[str, str]]:
    """(product, category) of each line of an order, or of the event itself."""
    if e["type"] == "order":
        return [(line["product"], line["category"]) for line in e["lines"]]
    return [(e.get("product", ""), e.get("category", ""))]


def _line_matches(f: dict, product: str, category: str) -> bool:
    if "category" in f:
        want, category = f["category"].lower(), category.lower()
        if not (category == want or category.startswith(want + "/")):
            return False
    return "product_ids" not in f or product.casefold() in {p.casefold()
                                                             for p in f["product_ids"]}
