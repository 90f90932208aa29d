"""Events over gRPC: the cross-device story, idempotence, atomic batches, orders counted once."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from identity.client import IdentityClient, identifier
from identity.identifiers import Identifier, Kind
from identity.v1 import events_pb2 as ev

T0 = 1_767_000_000_000  # ms, a fixed clock for readable histories
KETTLE = dict(product_id="K-42", category="Home/Kitchen/Kettles", brand="Bosch", price=39.99)


def event(event_id: str, who: str, at: int, *, channel: int = ev.EVENT_CHANNEL_WEB,
          source: str = "web", **payload) -> ev.Event:
    message = ev.Event(event_id=event_id, identifier=identifier(who), channel=channel,
                       source=source, **payload)
    message.time.FromMilliseconds(at)
    return message


def view(event_id: str, who: str, at: int, **kw) -> ev.Event:
    return event(event_id, who, at, view=ev.ProductEvent(**KETTLE), **kw)


def order(order_id: str, *lines: ev.OrderLine, **fields) -> ev.OrderEvent:
    return ev.OrderEvent(order_id=order_id, lines=lines or [ev.OrderLine(**KETTLE, quantity=1)],
                         currency="EUR", **fields)


def violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    detail = error_details_pb2.BadRequest()
    status.details[0].Unpack(detail)
    return [v.field for v in detail.field_violations]


def test_cross_device_kettle_story_is_one_person_from_any_identifier(client: IdentityClient):
    phone, email, customer, card = ("phone:+44 7700 900123", "email:Anna@Example.com",
                                    "customer_id:C-1001", "loyalty_card:4000 1234 5678")
    app = dict(channel=ev.EVENT_CHANNEL_APP, source="app")
    client.track([
        event("s1", phone, T0, search=ev.SearchEvent(phrase="kettle", results_count=24), **app),
        view("v1", phone, T0 + 1000, **app),
    ])
    client.track([view("v2", email, T0 + 60_000),
                  event("c1", email, T0 + 61_000, add_to_cart=ev.ProductEvent(**KETTLE))])
    client.link(customer, phone, source="app")  # the shop knows both logins are its customer
    client.link(customer, email, source="web")
    bought = client.record_purchase(order("T-17-0001"), loyalty_card="4000 1234 5678",
                                    phone="+44 7700-900-123", store="store-17",
                                    time=T0 + 86_400_000)
    assert bought.recorded and bought.person_id == "C-1001"

    for who in (phone, email, customer, card):
        profile = client.get_profile(who)
        assert profile.person.person_id == "C-1001"
        assert len(profile.person.identifiers) == 4
        assert [e.event_id for e in profile.events] == ["pos:T-17-0001", "c1", "v2", "v1", "s1"]
        assert profile.aggregates.orders_count == 1
        assert profile.aggregates.total_spent == pytest.approx(39.99)
    till = client.get_profile(card).events[0]
    assert till.identifier.value == "400012345678" and till.channel == ev.EVENT_CHANNEL_POS
    assert till.order.store == "store-17"


def test_event_stored_twice_is_stored_once(client: IdentityClient):
    batch = [view("v1", "email:a@example.com", T0), view("v2", "email:a@example.com", T0 + 1)]
    assert client.track(batch).stored == 2
    again = client.track([*batch, view("v3", "email:a@example.com", T0 + 2)])
    assert (again.stored, again.duplicates) == (1, 2)
    assert len(client.get_profile("email:a@example.com").events) == 3


def test_duplicate_event_ids_within_one_batch_store_once(client: IdentityClient):
    reply = client.track([view("v1", "email:a@example.com", T0)] * 3)
    assert (reply.stored, reply.duplicates) == (1, 2)


def test_batch_with_one_bad_event_stores_nothing_and_names_the_field(client: IdentityClient):
    bad = event("o1", "email:b@example.com", T0,
                order=order("A-1", ev.OrderLine(product_id="K", price=10),
                            ev.OrderLine(product_id="K", price=-5)))
    batch = [view("v1", "email:a@example.com", T0), view("v2", "phone:+14155550100", T0),
             view("v3", "email:a@example.com", T0), bad]
    with pytest.raises(grpc.RpcError) as caught:
        client.track(batch)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["events[3].order.lines[1].price"]
    with pytest.raises(grpc.RpcError) as unknown:
        client.get_profile("email:a@example.com")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # not even the identifier was made
    assert client.track(batch[:3]).stored == 3  # the same good events are new afterwards


@pytest.mark.parametrize("bad_event, field", [
    (ev.Event(event_id="x", identifier=identifier("email:a@example.com")), "events[0].payload"),
    (ev.Event(identifier=identifier("email:a@example.com"),
              search=ev.SearchEvent(phrase="x")), "events[0].event_id"),
    (ev.Event(event_id="x", identifier=identifier("email:not-an-email"),
              search=ev.SearchEvent(phrase="x")), "events[0].identifier"),
    (ev.Event(event_id="x", identifier=identifier("email:a@example.com"),
              view=ev.ProductEvent(product_id="")), "events[0].view.product_id"),
    (ev.Event(event_id="x", identifier=identifier("email:a@example.com"),
              ad=ev.AdEvent(campaign="c")), "events[0].ad.action"),
    (ev.Event(event_id="x", identifier=identifier("email:a@example.com"),
              attributes=ev.AttributesEvent(birth_date="1990-13-01")),
     "events[0].attributes.birth_date"),
])
def test_bad_event_is_refused_with_its_field_path(client: IdentityClient, bad_event, field):
    with pytest.raises(grpc.RpcError) as caught:
        client.track([bad_event])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value)[0].startswith(field)


def test_stream_commits_each_batch_and_reports_duplicates(client: IdentityClient):
    batches = [[view(f"v{b}-{i}", f"device_id:d{i}", T0 + b * 10 + i) for i in range(10)]
               for b in range(5)]
    summary = client.track_stream([*batches, batches[0]])
    assert (summary.batches, summary.stored, summary.duplicates) == (6, 50, 10)


def test_stream_batch_error_names_the_batch(client: IdentityClient):
    good = [view("v1", "device_id:d1", T0)]
    bad = [view("v2", "device_id:d1", T0), ev.Event(event_id="v3")]
    with pytest.raises(grpc.RpcError) as caught:
        client.track_stream([good, bad])
    assert violations(caught.value)[0].startswith("batch[1].events[1]")
    assert len(client.get_profile("device_id:d1").events) == 1


def test_retried_pos_push_changes_nothing(client: IdentityClient):
    first = client.record_purchase(order("T-1"), loyalty_card="5555 0001", phone="+14155550100",
                                   store="store-3", time=T0)
    retry = client.record_purchase(order("T-1"), loyalty_card="5555 0001",
                                   phone="+14155550100", store="store-3", time=T0)
    assert first.recorded and not retry.recorded
    assert retry.person_id == first.person_id
    assert retry.link_outcome == 0
    profile = client.get_profile("phone:+14155550100")
    assert [e.event_id for e in profile.events] == ["pos:T-1"]
    assert profile.aggregates.orders_count == 1


def test_pos_purchase_links_card_phone_and_customer_id(client: IdentityClient):
    client.link("customer_id:C-7", "email:c7@example.com", source="web")
    reply = client.record_purchase(order("T-2"), loyalty_card="7712", phone="+14155550177",
                                   customer_id="C-7")
    assert reply.person_id == "C-7"
    values = {i.identifier.value for i in client.resolve("loyalty_card:7712").person.identifiers}
    assert values == {"C-7", "c7@example.com", "7712", "+14155550177"}


def test_pos_purchase_needs_a_card_or_phone(client: IdentityClient):
    with pytest.raises(grpc.RpcError) as caught:
        client.record_purchase(order("T-3"), customer_id="C-9")
    assert violations(caught.value) == ["loyalty_card"]
    with pytest.raises(grpc.RpcError) as caught:
        client.record_purchase(order("T-3", ev.OrderLine(product_id="K", price=float("nan"))),
                               loyalty_card="1234")
    assert violations(caught.value) == ["order.lines[0].price"]


def test_purchase_at_till_counts_once_with_site_order(client: IdentityClient):
    site = event("site-A-9", "customer_id:C-3", T0, order=order("A-9", total=80.0))
    client.track([site])
    client.record_purchase(order("A-9", total=80.0), loyalty_card="3312", customer_id="C-3",
                           time=T0 + 5000)
    profile = client.get_profile("loyalty_card:3312")
    assert [e.event_id for e in profile.events] == ["pos:A-9", "site-A-9"]
    agg = profile.aggregates
    assert (agg.orders_count, agg.total_spent, agg.average_check) == (1, 80.0, 80.0)


def test_cancelled_order_leaves_the_aggregates(client: IdentityClient):
    who = "email:d@example.com"
    client.track([event("o1", who, T0, order=order("B-1", total=10.0)),
                  event("o2", who, T0 + 1, order=order("B-2", total=30.0))])
    client.track([event("x1", who, T0 + 2, order_cancelled=ev.OrderCancelledEvent(order_id="B-2"))])
    agg = client.get_profile(who).aggregates
    assert (agg.orders_count, agg.total_spent) == (1, 10.0)
    assert agg.last_order_time.ToMilliseconds() == T0
    assert agg.last_activity.ToMilliseconds() == T0 + 2


def test_link_merges_histories_and_aggregates_in_the_next_request(client: IdentityClient):
    client.track([event("o1", "email:e@example.com", T0, order=order("E-1", total=20.0)),
                  event("o2", "phone:+14155550123", T0 + 1, order=order("E-2", total=40.0))])
    assert client.get_profile("email:e@example.com").aggregates.orders_count == 1
    client.link("email:e@example.com", "phone:+14155550123", source="crm")
    profile = client.get_profile("email:e@example.com")
    assert profile.aggregates.orders_count == 2
    assert profile.aggregates.average_check == 30.0
    assert [e.event_id for e in profile.events] == ["o2", "o1"]


def test_events_survive_restart_with_columns(server, client: IdentityClient):
    client.track([view("v1", "email:a@example.com", T0),
                  event("o1", "email:a@example.com", T0 + 1, order=order("R-1"))])
    before = server.app.tracking.columns.snapshot()
    restarted = server.restart()
    try:
        with IdentityClient(restarted.address) as again:
            profile = again.get_profile("email:a@example.com")
            assert [e.event_id for e in profile.events] == ["o1", "v1"]
            assert profile.events[0].order.lines[0].category == "Home/Kitchen/Kettles"
        after = restarted.app.tracking.columns.snapshot()
        assert after.rows == before.rows == 3  # view, order, one order line
        assert after.type.tolist() == before.type.tolist()
        kettles = restarted.app.tracking.strings.lookup("Home/Kitchen/Kettles")
        assert after.category.tolist().count(kettles) == 2
    finally:
        restarted.stop()


def test_pos_purchase_with_a_blocklisted_card_is_refused(client: IdentityClient):
    with pytest.raises(grpc.RpcError) as caught:
        client.record_purchase(order("T-4"), loyalty_card="0000 0000")
    assert violations(caught.value) == ["loyalty_card"]


def test_pos_purchase_with_a_blocklisted_card_is_recorded_by_the_phone(client: IdentityClient):
    reply = client.record_purchase(order("T-5"), loyalty_card="0000 0000", phone="+14155550155")
    assert reply.recorded
    events = client.get_profile("phone:+14155550155").events
    assert [(e.event_id, e.identifier.value) for e in events] == [("pos:T-5", "+14155550155")]


def test_stream_stops_at_a_batch_refused_inside_its_transaction(client: IdentityClient):
    """A blocklisted identifier is found only while writing; later batches stay unwritten."""
    batches = [[view(f"a{b}", "device_id:d1", T0 + b)] for b in range(3)]
    batches.append([view("bad", "loyalty_card:0000 0000", T0)])
    batches += [[view(f"z{b}", "device_id:d1", T0 + 100 + b)] for b in range(20)]
    with pytest.raises(grpc.RpcError) as caught:
        client.track_stream(batches)
    assert violations(caught.value) == ["batch[3].events[0].identifier"]
    events = client.get_profile("device_id:d1").events
    assert [e.event_id for e in events] == ["a2", "a1", "a0"]


def test_forgotten_person_leaves_no_events_attributes_or_order_sightings(server, client):
    who = "email:g@example.com"
    client.track([view("v1", who, T0), event("o1", who, T0 + 1, order=order("Z-1")),
                  event("a1", who, T0 + 2, attributes=ev.AttributesEvent(name="Greta"))])
    with server.app.store.read() as tx:
        n = server.app.graph.node_of(tx, Identifier(Kind.EMAIL, "g@example.com"))
    reply = client.forget(who, actor="dpo", reason="erasure request")
    assert reply.events == 3
    with server.app.store.read() as tx:
        prefix = n.to_bytes(4, "big")
        assert not [k for k, _ in tx.items("events", prefix=prefix)]
        assert tx.get("attributes", prefix) is None
        assert tx.duplicates("node_orders", n.to_bytes(8, "big")) == []
    with pytest.raises(grpc.RpcError) as caught:
        client.get_profile(who)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
