"""Helpers that push a plain world (see segment_reference) into a real server."""

from __future__ import annotations

from identity.client import IdentityClient, identifier
from identity.v1 import events_pb2
from google.protobuf.timestamp_pb2 import Timestamp

CHANNELS = {"web": 2, "app": 1, "email": 4}
KINDS = {"view": "view", "add_to_cart": "add_to_cart"}
ORDER_FIELDS = ("cuisine", "restaurant", "meal_type", "delivery_city", "store")


def ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def event_pb(e: dict) -> events_pb2.Event:
    base = dict(event_id=e["id"], identifier=identifier(e["who"]), time=ts(e["time"]),
                channel=CHANNELS.get(e.get("channel", "web"), 2))
    kind = e["type"]
    if kind in ("view", "add_to_cart"):
        product = events_pb2.ProductEvent(product_id=e["product"], category=e["category"],
                                          brand=e.get("brand", ""), price=e.get("amount", 1.0),
                                          quantity=1)
        return events_pb2.Event(**base, **{kind: product})
    if kind == "order":
        lines = [events_pb2.OrderLine(product_id=line["product"], category=line["category"],
                                      price=line["price"], quantity=1) for line in e["lines"]]
        return events_pb2.Event(**base, order=events_pb2.OrderEvent(
            order_id=e["order_id"], lines=lines, total=e["amount"],
            **{key: e[key] for key in ORDER_FIELDS if key in e}))
    if kind == "order_cancelled":
        return events_pb2.Event(**base, order_cancelled=events_pb2.OrderCancelledEvent(
            order_id=e["order_id"]))
    if kind == "search":
        return events_pb2.Event(**base, search=events_pb2.SearchEvent(phrase=e["phrase"]))
    if kind == "ad":
        return events_pb2.Event(**base, ad=events_pb2.AdEvent(
            action=e["action"], campaign=e.get("campaign", "c"),
            advertiser=e.get("advertiser", ""), ad_id=e.get("ad", "")))
    if kind == "custom":
        props = {}
        for key, value in e.get("properties", {}).items():
            field = "flag" if isinstance(value, bool) else "integer" if isinstance(value, int) \
                else "number" if isinstance(value, float) else "text"
            props[key] = events_pb2.PropertyValue(**{field: value})
        return events_pb2.Event(**base, custom=events_pb2.CustomEvent(name=e["name"],
                                                                      properties=props))
    if kind == "message":
        return events_pb2.Event(**base, message=events_pb2.MessageEvent(
            action=e["action"], campaign=e.get("campaign", "c")))
    raise ValueError(kind)


def load_world(client: IdentityClient, persons: list[set[str]], events: list[dict],
               tags: list[dict] = (), batches: int = 1, between=None) -> None:
    """Link the persons, track the events in ``batches`` calls (``between()`` after each)."""
    for person in persons:
        client.link(*sorted(person), source="test")
    size = max(1, -(-len(events) // max(batches, 1)))
    for start in range(0, len(events), size):
        client.track([event_pb(e) for e in events[start : start + size]])
        if between is not None:
            between()
    for t in tags:
        client.set_tag(t["who"], t["tag"], t.get("value", ""), at=t["time"] * 1000,
                       clear=t.get("cleared", False))
