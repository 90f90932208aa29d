"""Profiles: one person assembled at read time from the graph, the events and the orders.

Nothing here is stored per person: the graph says which nodes (identifiers) make
the person now, and every part of the profile is gathered from those nodes in one
read snapshot. A merge is therefore visible in the very next request, and a link
never has to move or rewrite an event.

Attribute precedence ("latest value wins"): for each attribute (and each channel's
consent) the profile shows the value stated by the event with the latest event
time, whichever identifier reported it; between events with the same time, the one
stored later wins. A late-arriving backfill of an older statement does not
overwrite a newer one. Unset fields of an attributes event change nothing.

Aggregates count each order id once (a site and a till sighting are one order) and
leave cancelled orders out; ``total_spent`` sums order totals (the order's total, or
the sum of its lines when no total was sent) as reported, in the shop's currency.
Favourite categories rank categories by items bought, cuisines by orders; ties go
to the name first in alphabetical order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from identity.errors import InvalidArgument
from identity.event_store import ATTRIBUTE_SLOTS, CONSENT_SLOT, EventStore
from identity.events import StoredEvent
from identity.graph import LATEST_MS, IdentityGraph, PersonView
from identity.identifiers import Identifier
from identity.orders import OrderBook
from identity.store import Txn
from identity.strings import StringDictionary

__all__ = ["Aggregates", "HistoryQuery", "Profile", "ProfileReader", "MAX_PAGE_SIZE"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
FAVOURITES = 5


@dataclass(frozen=True)
class HistoryQuery:
    """Which part of the merged history to return."""

    types: frozenset[int] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str = ""


@dataclass(frozen=True)
class Aggregates:
    orders_count: int = 0
    total_spent: float = 0.0
    first_order_ms: int | None = None
    last_order_ms: int | None = None
    last_activity_ms: int | None = None
    favourite_categories: tuple[tuple[str, int], ...] = ()
    favourite_cuisines: tuple[tuple[str, int], ...] = ()
    currency: str = ""

    @property
    def average_check(self) -> float:
        return self.total_spent / self.orders_count if self.orders_count else 0.0


@dataclass(frozen=True)
class Profile:
    person: PersonView
    attributes: dict[str, str] = field(default_factory=dict)  # name -> value
    consents: dict[int, bool] = field(default_factory=dict)  # channel -> granted
    aggregates: Aggregates = Aggregates()
    events: list[StoredEvent] = field(default_factory=list)
    next_page_token: str = ""


def _token_position(token: str) -> bytes:
    try:
        position = bytes.fromhex(token)
    except ValueError:
        position = b""
    if len(position) != 12:
        raise InvalidArgument.field("page_token", "not a token this server returned")
    return position


class ProfileReader:
    """Builds profiles inside the caller's read transaction."""

    def __init__(self, graph: IdentityGraph, events: EventStore, orders: OrderBook,
                 strings: StringDictionary):
        self.graph = graph
        self.events = events
        self.orders = orders
        self.strings = strings

    def check(self, query: HistoryQuery) -> None:
        """Raise ``InvalidArgument`` for a query that cannot be answered."""
        if query.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument.field("page_size", f"at most {MAX_PAGE_SIZE}")
        if query.page_token:
            _token_position(query.page_token)
        for name, ms in (("since", query.since_ms), ("until", query.until_ms)):
            if ms is not None and not 0 <= ms <= LATEST_MS:  # as every stored time is
                raise InvalidArgument.field(name, "must be between 1970 and 9999")
        if (query.since_ms is not None and query.until_ms is not None
                and query.since_ms > query.until_ms):
            raise InvalidArgument.field("since", "later than until")

    def profile(self, tx: Txn, identifier: Identifier, query: HistoryQuery) -> Profile:
        person = self.graph.resolve(tx, identifier)
        nodes: dict[int, Identifier] = {i.node: i.identifier for i in person.identifiers}
        attributes, consents = self._attributes(tx, nodes)
        after = _token_position(query.page_token) if query.page_token else b""
        page, position = self.events.history(
            tx, nodes, types=query.types, since_ms=query.since_ms, until_ms=query.until_ms,
            after=after, limit=query.page_size or DEFAULT_PAGE_SIZE)
        return Profile(person, attributes, consents, self._aggregates(tx, nodes), page,
                       position.hex())

    def attributes(self, tx: Txn, nodes: dict[int, Identifier]
                   ) -> tuple[dict[str, str], dict[int, bool]]:
        """The person's attributes (latest value wins) and consents per channel, alone."""
        return self._attributes(tx, nodes)

    def _attributes(self, tx: Txn, nodes: dict[int, Identifier]
                    ) -> tuple[dict[str, str], dict[int, bool]]:
        latest: dict[int, tuple[int, int, str]] = {}
        for node in nodes:
            for slot, stated in self.events.node_attributes(tx, node).items():
                if slot not in latest or stated[:2] > latest[slot][:2]:
                    latest[slot] = stated
        attributes = {ATTRIBUTE_SLOTS[slot]: value for slot, (_, _, value) in latest.items()
                      if slot < CONSENT_SLOT}
        consents = {slot - CONSENT_SLOT: value == "1" for slot, (_, _, value) in latest.items()
                    if slot >= CONSENT_SLOT}
        return attributes, consents

    def _aggregates(self, tx: Txn, nodes: dict[int, Identifier]) -> Aggregates:
        records = [self.orders.get(tx, ref) for ref in sorted(self.orders.refs_of(tx, nodes))]
        counted = sorted((r for r in records if r is not None and r.counts),
                         key=lambda r: (r.time_ms, r.ref))
        last_activity = self.events.last_activity(tx, nodes)
        if not counted:
            return Aggregates(last_activity_ms=last_activity)
        categories: Counter[int] = Counter()
        cuisines: Counter[int] = Counter()
        for rec in counted:
            for sid, quantity in rec.categories:
                if sid:
                    categories[sid] += quantity
            if rec.cuisine:
                cuisines[rec.cuisine] += 1
        text = self.strings.text
        return Aggregates(
            orders_count=len(counted),
            total_spent=round(sum(r.total for r in counted), 6),
            first_order_ms=counted[0].time_ms,
            last_order_ms=counted[-1].time_ms,
            last_activity_ms=last_activity,
            favourite_categories=_top(categories, lambda sid: text(sid, tx)),
            favourite_cuisines=_top(cuisines, lambda sid: text(sid, tx)),
            currency=text(counted[-1].currency, tx),
        )


def _top(counter: Counter[int], name_of) -> tuple[tuple[str, int], ...]:
    named = sorted(((name_of(sid), count) for sid, count in counter.items()),
                   key=lambda item: (-item[1], item[0]))
    return tuple(named[:FAVOURITES])
