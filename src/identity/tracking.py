"""Use cases of events and profiles: track, record a till purchase, read a profile.

Input is validated and normalised here, whole, before a write transaction starts,
so a bad event in a batch writes nothing and the error names its field. Each call
(or stream batch) is one transaction, acknowledged after it is durable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import NamedTuple

from identity.columns import EventColumns
from identity.errors import FieldViolation, InvalidArgument
from identity.event_packs import Pack, ValidPack, check_pack, write_pack
from identity.event_store import EventStore, ValidEvent
from identity.events import Channel, Event, EventType, Order, check, plainly_valid
from identity.graph import IdentityGraph, now_ms
from identity.identifiers import Identifier, Kind
from identity.orders import OrderBook
from identity.profiles import HistoryQuery, Profile, ProfileReader
from identity.store import Store, WriteTxn
from identity.strings import StringDictionary

__all__ = ["Purchase", "PurchaseResult", "StreamBatch", "Tracking",
           "purchase_event_id"]

MAX_BATCHES_IN_FLIGHT = 128  # batches checked ahead of the writer; those queued share a commit
IDENTIFIER_CACHE_SIZE = 1 << 20  # raw identifiers whose normal form is remembered

# Paths of a till purchase checked as an event (".order.total") -> request fields.
_PURCHASE_PATHS = {".event_id": "order.order_id", "[0].identifier": "loyalty_card"}
Identify = Callable[[int, str, str], Identifier]  # kind, raw value, field path


@dataclass(frozen=True)
class Purchase:
    """A purchase at a till as the POS sent it (identifiers raw)."""

    order: Order
    loyalty_card: str = ""
    phone: str = ""
    customer_id: str = ""
    store: str = ""
    time_ms: int | None = None


@dataclass(frozen=True)
class PurchaseResult:
    person_id: str
    recorded: bool  # False: this order id came from a till before; nothing changed
    link_outcome: int  # identity.graph.Outcome, 0 when nothing was linked
    event_id: str


class StreamBatch(NamedTuple):
    """One stream message: events one by one, then (optionally) more in columnar form."""

    events: Sequence[Event]
    pack: Pack | None = None


def _stopped_note(index: int) -> str:
    return f"{index} earlier batches were committed; this one and later ones were not"


def purchase_event_id(order_id: str) -> str:
    """The event id of a till purchase: a retried push carries the same one."""
    return f"pos:{order_id}"


class Tracking:
    """Events, orders and profiles over one store and identity graph."""

    def __init__(self, store: Store, graph: IdentityGraph, identify: Identify,
                 max_batch: int = 10_000):
        self.store = store
        self.max_batch = max_batch  # events (per-event and packed together) in one batch
        self.graph = graph
        self.identify = identify
        # raw (kind, value) -> normalised identifier; normalising is a pure function of the
        # settings, so the map never goes stale. Bounded by clearing.
        self._identified: dict[tuple[int, str], Identifier] = {}
        self.strings = StringDictionary()
        self.columns = EventColumns()
        self.orders = OrderBook(self.strings)
        self.events = EventStore(graph, self.strings, self.columns, self.orders)
        self.profiles = ProfileReader(graph, self.events, self.orders, self.strings)
        store.write(self.columns.compact)  # before load: merge blocks of unary calls
        with store.read() as tx:
            self.events.load(tx)

    def track(self, events: Sequence[Event], path: str = "events") -> tuple[int, int]:
        """Store a batch atomically; returns (stored, duplicates skipped)."""
        valid = self.validate(events, path)
        return self.store.write(lambda tx: self.events.record(tx, valid, path))

    def track_batches(self, batches: Iterable[Sequence[Event] | StreamBatch],
                      path: str = "batch") -> Iterator[tuple[int, int]]:
        """Store batches in order, each atomically; yield (stored, duplicates) once durable.

        The next batch is validated while earlier ones wait for the writer, so batches
        that queue up share one synced commit (each in its own nested transaction).
        The first bad batch stops the stream: every earlier batch is committed, it and
        every later one are not, and the error names it (``batch[4].events[17].price``).
        """
        chain = self.store.chain()
        pending: deque[tuple[int, Future]] = deque()

        def settle(index: int, future: Future) -> tuple[int, int]:
            try:
                return future.result()
            except InvalidArgument as exc:
                raise exc.under(f"{path}[{index}]", _stopped_note(index)) from None

        for index, batch in enumerate(batches):
            if not isinstance(batch, StreamBatch):
                batch = StreamBatch(batch)
            try:
                self._check_size(len(batch.events), batch.pack)
                valid = self.validate(batch.events)
                pack = self.validate_pack(batch.pack) if batch.pack is not None else None
            except InvalidArgument as exc:
                while pending:
                    yield settle(*pending.popleft())
                raise exc.under(f"{path}[{index}]", _stopped_note(index)) from None
            job = chain.submit(lambda tx, valid=valid, pack=pack: self._record(tx, valid, pack))
            pending.append((index, job))
            while pending and (pending[0][1].done() or len(pending) > MAX_BATCHES_IN_FLIGHT):
                yield settle(*pending.popleft())
        while pending:
            yield settle(*pending.popleft())

    def _record(self, tx: WriteTxn, valid: list[ValidEvent], pack: ValidPack | None
                ) -> tuple[int, int]:
        stored, duplicates = self.events.record(tx, valid) if valid else (0, 0)
        if pack is not None:
            more, repeated = write_pack(self.events, tx, pack)
            stored, duplicates = stored + more, duplicates + repeated
        return stored, duplicates

    def validate_pack(self, pack: Pack, path: str = "packed") -> ValidPack:
        """Check a columnar batch whole (``identity.event_packs``) before it is written."""
        return check_pack(pack, self._identify_cached, now_ms(), path, self._identified)

    def _identify_cached(self, kind: int, value: str, path: str) -> Identifier:
        seen = self._identified
        identifier = seen.get((kind, value))
        if identifier is None:
            if len(seen) > IDENTIFIER_CACHE_SIZE:
                seen.clear()
            identifier = seen[(kind, value)] = self.identify(kind, value, path)
        return identifier

    def _check_size(self, events: int, pack: Pack | None) -> None:
        total = events + (len(pack.event_ids) if pack is not None else 0)
        if total > self.max_batch:
            raise InvalidArgument.field("events", f"{total} events in one batch; "
                                                  f"at most {self.max_batch}")

    def validate(self, events: Sequence[Event], path: str = "events") -> list[ValidEvent]:
        if len(events) > self.max_batch:
            raise InvalidArgument.field(path, f"at most {self.max_batch} events per batch")
        now = now_ms()
        identify = self.identify
        seen = self._identified
        if len(seen) > IDENTIFIER_CACHE_SIZE:
            seen.clear()
        valid = []
        for i, event in enumerate(events):
            if not plainly_valid(event):
                check(event, f"{path}[{i}]")
            identifier = seen.get(event.who)
            if identifier is None:
                kind, value = event.who
                identifier = seen[event.who] = identify(kind, value, f"{path}[{i}].identifier")
            valid.append((event, identifier, now if event.time_ms is None else event.time_ms))
        return valid

    def record_purchase(self, purchase: Purchase) -> PurchaseResult:
        """Link card, phone and customer id and record the order, in one transaction."""
        identifiers = [
            self.identify(kind, raw, name)
            for kind, raw, name in ((Kind.LOYALTY_CARD, purchase.loyalty_card, "loyalty_card"),
                                    (Kind.PHONE, purchase.phone, "phone"),
                                    (Kind.CUSTOMER_ID, purchase.customer_id, "customer_id"))
            if raw.strip()
        ]
        if not any(i.kind in (Kind.LOYALTY_CARD, Kind.PHONE) for i in identifiers):
            raise InvalidArgument.field("loyalty_card", "a loyalty card or a phone is needed")
        order = purchase.order
        if not order.store and purchase.store:
            order = Order(order.order_id, order.lines, order.total, order.currency,
                          purchase.store, order.cuisine, order.restaurant, order.meal_type,
                          order.delivery_city)
        source = f"pos:{order.store}" if order.store else "pos"
        event = Event(purchase_event_id(order.order_id), (0, ""), purchase.time_ms,
                      EventType.ORDER, order, Channel.POS, source)
        time_ms = now_ms() if purchase.time_ms is None else purchase.time_ms
        try:
            check(event, "")
            return self.store.write(lambda tx: self._purchase(tx, identifiers, event, time_ms))
        except InvalidArgument as exc:
            raise InvalidArgument([FieldViolation(_PURCHASE_PATHS.get(v.field, v.field[1:]),
                                                  v.reason) for v in exc.violations]) from None

    def _purchase(self, tx: WriteTxn, identifiers: list[Identifier], event: Event,
                  time_ms: int) -> PurchaseResult:
        if self.events.seen(tx, event.event_id):
            node = self.graph.node_of(tx, identifiers[0])
            person_id = self.graph.person_id(tx, self.graph.root_of(tx, node)) if node else ""
            return PurchaseResult(person_id, False, 0, event.event_id)
        link = self.graph.link(tx, identifiers, source=event.source, observed_ms=time_ms)
        ignored = {identifier for identifier, _ in link.ignored}
        usable = [i for i in identifiers if i not in ignored] or identifiers
        self.events.record(tx, [(event, usable[0], time_ms)], path="")  # done by card, else phone
        return PurchaseResult(link.person_id, True, int(link.outcome), event.event_id)

    def profile(self, kind: int, value: str, query: HistoryQuery) -> Profile:
        """The person of any identifier with one page of its merged history."""
        identifier = self.identify(kind, value, "identifier")
        self.profiles.check(query)
        with self.store.read() as tx:
            return self.profiles.profile(tx, identifier, query)
