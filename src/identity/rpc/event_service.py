"""``identity.v1.EventService``: Track, TrackStream, RecordPurchase, GetProfile.

Only conversion lives here: protobuf messages to ``identity.events`` values and
back, and one ``App.tracking`` call per request (or per stream batch).
"""

from __future__ import annotations

import grpc
import numpy as np

from identity.app import App
from identity.event_packs import Pack
from identity.events import (
    Ad, Attributes, Custom, Event, EventType, Message, Order, OrderCancelled, Payload, Product,
    Search, StoredEvent,
)
from identity.profiles import HistoryQuery, Profile
from identity.rpc.limits import throttled
from identity.rpc.convert import identifier_pb, ms_of, person_pb, timestamp_of
from identity.rpc.status import translate_errors
from identity.tracking import Purchase, StreamBatch
from identity.v1 import events_pb2, events_pb2_grpc

__all__ = ["EventServicer", "add_to_server", "event_of", "event_pb", "pack_of"]

_TYPES = {t.name.lower(): t for t in EventType}
_PRODUCT_CASES = frozenset({"view", "add_to_cart", "remove_from_cart", "wishlist"})


# Bulk streams build two NamedTuples per event; ``tuple.__new__`` skips their Python-level
# ``__new__`` (every field is passed, in order).
_new = tuple.__new__


def _product(p) -> Product:
    return _new(Product, (p.product_id, p.category, p.brand, p.price, p.quantity or 1))


def _order(o) -> Order:
    return Order(o.order_id, tuple(_product(line) for line in o.lines), o.total,
                 o.currency.upper(), o.store, o.cuisine, o.restaurant, o.meal_type,
                 o.delivery_city)


def _custom(c) -> Custom:
    properties = []
    for key in sorted(c.properties):
        value = c.properties[key]
        which = value.WhichOneof("value")
        properties.append((key, getattr(value, which) if which else ""))
    return Custom(c.name, tuple(properties))


def _attributes(a) -> Attributes:
    def opt(name: str) -> str | None:
        return getattr(a, name) if a.HasField(name) else None

    return Attributes(opt("name"), a.gender, opt("birth_date"), opt("city"), opt("time_zone"),
                      opt("language"), tuple((c.channel, c.granted) for c in a.consents))


_PAYLOAD_OF = {
    "view": _product, "add_to_cart": _product, "remove_from_cart": _product,
    "wishlist": _product, "order": _order,
    "order_cancelled": lambda c: OrderCancelled(c.order_id, c.reason),
    "search": lambda s: Search(s.phrase, s.results_count),
    "ad": lambda a: Ad(a.action, a.advertiser, a.campaign, a.ad_id, a.product_id),
    "message": lambda m: Message(m.action, m.campaign),
    "custom": _custom, "attributes": _attributes,
}


def event_of(m: events_pb2.Event) -> Event:
    case = m.WhichOneof("payload")
    payload: Payload | None = None
    if case in _PRODUCT_CASES:
        p = getattr(m, case)
        payload = _new(Product, (p.product_id, p.category, p.brand, p.price, p.quantity or 1))
    elif case:
        payload = _PAYLOAD_OF[case](getattr(m, case))
    time_ms = None
    if m.HasField("time"):
        t = m.time
        time_ms = t.seconds * 1000 + t.nanos // 1_000_000
    who = m.identifier
    return _new(Event, (m.event_id, (who.kind, who.value), time_ms, _TYPES[case] if case else 0,
                        payload, m.channel, m.source))


_PACK_ARRAYS = ("identifier", "type", "time_ms", "channel", "source", "product_id", "category",
                "brand", "price", "quantity", "phrase", "results_count", "action", "campaign")


def pack_of(m: events_pb2.PackedEvents) -> Pack:
    """Columns straight from protobuf's C arrays: one numpy conversion per field."""
    return Pack(list(m.texts), np.array(m.identifier_kinds, np.int64).tolist(),
                list(m.identifier_values), list(m.event_ids),
                *(np.array(getattr(m, name), np.float64 if name == "price" else np.int64)
                  for name in _PACK_ARRAYS))


def _batch(m: events_pb2.TrackStreamRequest) -> StreamBatch:
    return StreamBatch([event_of(e) for e in m.events],
                       pack_of(m.packed) if m.HasField("packed") else None)


def _product_pb(p: Product) -> dict:
    return {"product_id": p.product_id, "category": p.category, "brand": p.brand,
            "price": p.price, "quantity": p.quantity}


def _payload_pb(p: Payload):
    if isinstance(p, Product):
        return events_pb2.ProductEvent(**_product_pb(p))
    if isinstance(p, Order):
        return events_pb2.OrderEvent(
            order_id=p.order_id, lines=[events_pb2.OrderLine(**_product_pb(x)) for x in p.lines],
            total=p.total, currency=p.currency, store=p.store, cuisine=p.cuisine,
            restaurant=p.restaurant, meal_type=p.meal_type, delivery_city=p.delivery_city)
    if isinstance(p, OrderCancelled):
        return events_pb2.OrderCancelledEvent(order_id=p.order_id, reason=p.reason)
    if isinstance(p, Search):
        return events_pb2.SearchEvent(phrase=p.phrase, results_count=p.results_count)
    if isinstance(p, Ad):
        return events_pb2.AdEvent(action=p.action, advertiser=p.advertiser, campaign=p.campaign,
                                  ad_id=p.ad_id, product_id=p.product_id)
    if isinstance(p, Message):
        return events_pb2.MessageEvent(action=p.action, campaign=p.campaign)
    if isinstance(p, Custom):
        message = events_pb2.CustomEvent(name=p.name)
        for key, value in p.properties:
            target = message.properties[key]
            if isinstance(value, bool):
                target.flag = value
            elif isinstance(value, int):
                target.integer = value
            elif isinstance(value, float):
                target.number = value
            else:
                target.text = value
        return message
    message = events_pb2.AttributesEvent(
        gender=p.gender, consents=[events_pb2.ChannelConsent(channel=c, granted=g)
                                   for c, g in p.consents])
    for name in ("name", "birth_date", "city", "time_zone", "language"):
        value = getattr(p, name)
        if value is not None:
            setattr(message, name, value)
    return message


def event_pb(event: StoredEvent) -> events_pb2.Event:
    message = events_pb2.Event(
        event_id=event.event_id, identifier=identifier_pb(event.identifier),
        time=timestamp_of(event.time_ms), channel=event.channel, source=event.source)
    getattr(message, event.type.name.lower()).CopyFrom(_payload_pb(event.payload))
    return message


def _query(request: events_pb2.GetProfileRequest) -> HistoryQuery:
    return HistoryQuery(frozenset(request.types), ms_of(request, "since"),
                        ms_of(request, "until"), request.page_size, request.page_token)


def _profile_pb(profile: Profile) -> events_pb2.GetProfileResponse:
    agg, attrs = profile.aggregates, profile.attributes
    aggregates = events_pb2.ProfileAggregates(
        orders_count=agg.orders_count, total_spent=agg.total_spent,
        average_check=agg.average_check, currency=agg.currency,
        favourite_categories=[events_pb2.Favourite(name=n, count=c)
                              for n, c in agg.favourite_categories],
        favourite_cuisines=[events_pb2.Favourite(name=n, count=c)
                            for n, c in agg.favourite_cuisines])
    for field, ms in (("first_order_time", agg.first_order_ms),
                      ("last_order_time", agg.last_order_ms),
                      ("last_activity", agg.last_activity_ms)):
        if ms is not None:
            getattr(aggregates, field).CopyFrom(timestamp_of(ms))
    attributes = events_pb2.ProfileAttributes(
        name=attrs.get("name", ""), gender=int(attrs.get("gender", "0")),
        birth_date=attrs.get("birth_date", ""), city=attrs.get("city", ""),
        time_zone=attrs.get("time_zone", ""), language=attrs.get("language", ""),
        consents=[events_pb2.ChannelConsent(channel=c, granted=g)
                  for c, g in sorted(profile.consents.items())])
    return events_pb2.GetProfileResponse(
        person=person_pb(profile.person), attributes=attributes, aggregates=aggregates,
        events=[event_pb(e) for e in profile.events], next_page_token=profile.next_page_token)


class EventServicer(events_pb2_grpc.EventServiceServicer):
    def __init__(self, app: App):
        self.tracking = app.tracking
        self.stream_rate = app.settings.max_stream_items_per_second

    @translate_errors
    def Track(self, request, context):  # noqa: N802 (gRPC method name)
        stored, duplicates = self.tracking.track([event_of(m) for m in request.events])
        return events_pb2.TrackResponse(stored=stored, duplicates=duplicates)

    @translate_errors
    def TrackStream(self, request_iterator, context):  # noqa: N802
        batches = stored = duplicates = 0
        messages = throttled(request_iterator, self.stream_rate,
                             lambda m: len(m.events) + len(m.packed.event_ids))
        converted = (_batch(message) for message in messages)
        for done, skipped in self.tracking.track_batches(converted):
            batches += 1
            stored += done
            duplicates += skipped
        return events_pb2.TrackStreamResponse(batches=batches, stored=stored,
                                              duplicates=duplicates)

    @translate_errors
    def RecordPurchase(self, request, context):  # noqa: N802
        purchase = Purchase(_order(request.order), request.loyalty_card, request.phone,
                            request.customer_id, request.store, ms_of(request, "time"))
        result = self.tracking.record_purchase(purchase)
        return events_pb2.RecordPurchaseResponse(
            person_id=result.person_id, recorded=result.recorded,
            link_outcome=result.link_outcome, event_id=result.event_id)

    @translate_errors
    def GetProfile(self, request, context):  # noqa: N802
        profile = self.tracking.profile(request.identifier.kind, request.identifier.value,
                                        _query(request))
        return _profile_pb(profile)


def add_to_server(app: App, server: grpc.Server) -> str:
    """Register the servicer; returns its full service name (for health and reflection)."""
    events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(app), server)
    return events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
