"""The columnar form of a stream batch (``PackedEvents``): the same events, the same guarantees."""

from __future__ import annotations

import itertools

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.client import IdentityClient, identifier, packed_events
from identity.v1 import events_pb2 as ev

from test_events import KETTLE, T0, event, violations, view

_examples = itertools.count()
TOASTER = dict(product_id="T-7", category="Home/Kitchen/Toasters", brand="Smeg", price=89.5)


def mixed(prefix: str, who: str) -> list[ev.Event]:
    """Every type the packed form carries, with channels, sources, quantities, a UUID id."""
    return [
        view(f"{prefix}-v1", who, T0, channel=ev.EVENT_CHANNEL_APP, source="app"),
        event(f"{prefix}-c1", who, T0 + 1, add_to_cart=ev.ProductEvent(**TOASTER, quantity=3)),
        event(f"{prefix}-r1", who, T0 + 2, remove_from_cart=ev.ProductEvent(**TOASTER)),
        event(f"{prefix}-w1", who, T0 + 3, wishlist=ev.ProductEvent(product_id="X", price=0.125)),
        event(f"{prefix}-s1", who, T0 + 4, search=ev.SearchEvent(phrase=" Kettle ",
                                                                 results_count=24)),
        event(f"{prefix}-m1", who, T0 + 5, channel=ev.EVENT_CHANNEL_EMAIL, source="esp",
              message=ev.MessageEvent(action=ev.MESSAGE_ACTION_OPENED, campaign="spring")),
        event("0f8fad5b-d9cb-469f-a165-70867728950" + prefix[-1], who, T0 + 6,
              view=ev.ProductEvent(**KETTLE)),
    ]


def stream_packed(client: IdentityClient, *batches: list[ev.Event]) -> ev.TrackStreamResponse:
    return client.track_stream_packed(packed_events(batch) for batch in batches)


def comparable(profile: ev.GetProfileResponse) -> list[ev.Event]:
    events = []
    for stored in profile.events:
        copy = ev.Event()
        copy.CopyFrom(stored)
        copy.ClearField("event_id")
        copy.ClearField("identifier")
        events.append(copy)
    return events


def column_rows(server, who: str) -> list[tuple]:
    """Segment column rows of the node of ``who``, without the node column."""
    tracking = server.app.tracking
    message = identifier(who)
    with tracking.store.read() as tx:
        node = tracking.graph.node_of(tx, tracking.identify(message.kind, message.value, "x"))
    view = tracking.columns.snapshot()
    mask = view.node == node
    names = [name for name in view if name != "node"]
    return list(zip(*(view[name][mask].tolist() for name in names)))


def test_packed_events_are_stored_exactly_as_the_same_events_one_by_one(server):
    with IdentityClient(server.address) as client:
        one_by_one = client.track_stream([mixed("a1", "email:one@example.com")])
        packed = stream_packed(client, mixed("b2", "email:two@example.com"))
        assert (one_by_one.stored, packed.stored) == (7, 7)
        first = client.get_profile("email:one@example.com")
        second = client.get_profile("email:two@example.com")
    assert comparable(first) == comparable(second)
    assert len(first.events) == 7
    assert second.events[0].event_id == "0f8fad5b-d9cb-469f-a165-708677289502"
    assert second.events[1].message.campaign == "spring"
    assert second.events[2].search.phrase == " Kettle "
    assert column_rows(server, "email:one@example.com") == column_rows(
        server, "email:two@example.com")


def test_packed_event_ids_are_the_same_idempotence_keys(client: IdentityClient):
    events = mixed("a1", "device_id:d1")
    assert client.track(events[:3]).stored == 3
    summary = stream_packed(client, events, events[:2] + events[:2])
    assert (summary.stored, summary.duplicates) == (4, 3 + 4)
    again = client.track_stream([events])
    assert (again.stored, again.duplicates) == (0, 7)
    assert len(client.get_profile("device_id:d1").events) == 7


def test_new_identifiers_of_a_pack_become_persons(client: IdentityClient):
    stream_packed(client, [view("v1", "email:New@Example.com", T0),
                           view("v2", "device_id:dev-9", T0 + 1)])
    assert client.resolve("email:new@example.com").person.person_id
    client.link("email:new@example.com", "device_id:dev-9", source="web")
    profile = client.get_profile("device_id:dev-9")
    assert [e.event_id for e in profile.events] == ["v2", "v1"]
    assert profile.events[1].identifier.value == "new@example.com"


def bad_pack(field: str, value, at: int = 2) -> ev.PackedEvents:
    pack = packed_events([view(f"v{i}", "email:a@example.com", T0 + i) for i in range(4)])
    values = list(getattr(pack, field))
    values[at] = value
    pack.ClearField(field)
    getattr(pack, field).extend(values)
    return pack


@pytest.mark.parametrize("pack, field", [
    (bad_pack("price", -1.0), "batch[0].packed.price[2]"),
    (bad_pack("price", float("nan"), at=1), "batch[0].packed.price[1]"),
    (bad_pack("quantity", 2_000_000), "batch[0].packed.quantity[2]"),
    (bad_pack("type", ev.EVENT_TYPE_ORDER), "batch[0].packed.type[2]"),
    (bad_pack("event_ids", ""), "batch[0].packed.event_ids[2]"),
    (bad_pack("identifier", 5, at=3), "batch[0].packed.identifier[3]"),
    (bad_pack("product_id", 0), "batch[0].packed.product_id[2]"),
    (bad_pack("product_id", 99), "batch[0].packed.product_id[2]"),
    (bad_pack("time_ms", -5), "batch[0].packed.time_ms[2]"),
    (bad_pack("channel", 42), "batch[0].packed.channel[2]"),
    (bad_pack("texts", "not empty", at=0), "batch[0].packed.texts[0]"),
    (ev.PackedEvents(texts=[""], event_ids=["x"], identifier=[0], type=[ev.EVENT_TYPE_SEARCH],
                     identifier_kinds=[2], identifier_values=["a@example.com"], price=[3.0]),
     "batch[0].packed.price[0]"),  # product fields only on product events
    (ev.PackedEvents(texts=[""], event_ids=["x"], identifier=[0], type=[ev.EVENT_TYPE_MESSAGE],
                     identifier_kinds=[2], identifier_values=["a@example.com"]),
     "batch[0].packed.action[0]"),
    (ev.PackedEvents(texts=[""], event_ids=["x", "y"], identifier=[0],
                     type=[ev.EVENT_TYPE_SEARCH] * 2,
                     identifier_kinds=[2], identifier_values=["a@example.com"]),
     "batch[0].packed.identifier"),  # one entry per event
    (ev.PackedEvents(texts=[""], event_ids=["x"], identifier=[0], type=[ev.EVENT_TYPE_SEARCH],
                     identifier_kinds=[2], identifier_values=["not-an-email"]),
     "batch[0].packed.identifier_values[0]"),
    (ev.PackedEvents(texts=[""], event_ids=["x"], identifier=[0], type=[ev.EVENT_TYPE_SEARCH],
                     identifier_kinds=[0], identifier_values=["a@example.com"]),
     "batch[0].packed.identifier_kinds[0]"),
    (ev.PackedEvents(texts=[""], event_ids=["x"], identifier=[0], type=[ev.EVENT_TYPE_SEARCH],
                     identifier_kinds=[2, 2], identifier_values=["a@example.com"]),
     "batch[0].packed.identifier_values"),
])
def test_bad_packed_event_stores_nothing_and_is_named(client: IdentityClient, pack, field):
    with pytest.raises(grpc.RpcError) as caught:
        client.track_stream_packed([pack])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [field]
    with pytest.raises(grpc.RpcError) as unknown:
        client.get_profile("email:a@example.com")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_first_bad_event_of_a_pack_is_the_one_named(client: IdentityClient):
    pack = bad_pack("price", -1.0, at=3)
    pack.quantity[1] = 2_000_000
    with pytest.raises(grpc.RpcError) as caught:
        client.track_stream_packed([pack])
    assert violations(caught.value) == ["batch[0].packed.quantity[1]"]


def test_a_message_with_events_and_a_pack_is_one_atomic_batch(client: IdentityClient):
    bad = ev.TrackStreamRequest(events=[view("e1", "device_id:d1", T0), ev.Event(event_id="e2")],
                                packed=packed_events([view("p1", "device_id:d1", T0 + 1)]))
    good = ev.TrackStreamRequest(events=[view("e1", "device_id:d1", T0)],
                                 packed=packed_events([view("p1", "device_id:d1", T0 + 1),
                                                       view("e1", "device_id:d1", T0)]))
    with pytest.raises(grpc.RpcError) as caught:
        client.events.TrackStream(iter([bad]))
    assert violations(caught.value)[0].startswith("batch[0].events[1]")
    summary = client.events.TrackStream(iter([good]))
    assert (summary.batches, summary.stored, summary.duplicates) == (1, 2, 1)
    assert [e.event_id for e in client.get_profile("device_id:d1").events] == ["p1", "e1"]


def test_stream_stops_at_a_bad_pack_keeping_earlier_batches(client: IdentityClient):
    with pytest.raises(grpc.RpcError) as caught:
        client.track_stream_packed([packed_events([view("v1", "device_id:d1", T0)]),
                                    bad_pack("price", -1.0)])
    assert violations(caught.value) == ["batch[1].packed.price[2]"]
    assert [e.event_id for e in client.get_profile("device_id:d1").events] == ["v1"]


def test_packed_form_refuses_types_it_does_not_carry_on_the_client():
    with pytest.raises(ValueError):
        packed_events([event("o1", "device_id:d1", T0,
                             order=ev.OrderEvent(order_id="A", lines=[ev.OrderLine(**KETTLE)]))])


# -- both forms agree on any batch (hypothesis) ----------------------------------------

_texts = st.sampled_from(["", "web", "Home/Kitchen/Kettles", "Bosch", "ünïcödé ☕", " x ", "P1"])
_product = st.fixed_dictionaries(dict(
    product_id=st.sampled_from(["P1", "K-42", "ünï"]), category=_texts, brand=_texts,
    price=st.one_of(st.sampled_from([0.0, 39.99, 0.125, 1e-3, 123456.78]),
                    st.floats(0, 1e6, allow_nan=False)),
    quantity=st.integers(0, 5)))
_payload = st.one_of(
    *(st.builds(lambda p, case=case: {case: ev.ProductEvent(**p)}, _product)
      for case in ("view", "add_to_cart", "remove_from_cart", "wishlist")),
    st.builds(lambda phrase, n: {"search": ev.SearchEvent(phrase=phrase, results_count=n)},
              _texts, st.integers(0, 1000)),
    st.builds(lambda action, campaign: {"message": ev.MessageEvent(action=action,
                                                                   campaign=campaign)},
              st.integers(1, 5), _texts))
_event = st.tuples(st.integers(0, 9), st.integers(0, 3), st.integers(1, 4_000_000_000_000),
                   st.integers(0, 6), _texts, _payload)  # id, who, time, channel, source


def _events(prefix: str, drawn: list[tuple]) -> list[ev.Event]:
    return [event(f"{prefix}-e{n}", f"device_id:{prefix}-{who}", at, channel=channel,
                  source=source, **payload)
            for n, who, at, channel, source, payload in drawn]


def _history(client: IdentityClient, who: str) -> list[ev.Event] | None:
    try:
        return comparable(client.get_profile(who, page_size=100))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return None


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(_event, min_size=1, max_size=25))
def test_any_batch_of_packable_events_is_stored_alike_in_both_forms(server, drawn):
    prefix = f"t{next(_examples)}"
    with IdentityClient(server.address) as client:
        one_by_one = client.track_stream([_events(f"{prefix}a", drawn)])
        packed = stream_packed(client, _events(f"{prefix}b", drawn))
        assert (one_by_one.stored, one_by_one.duplicates) == (packed.stored, packed.duplicates)
        for who in sorted({who for _, who, *_ in drawn}):
            first = _history(client, f"device_id:{prefix}a-{who}")
            assert first == _history(client, f"device_id:{prefix}b-{who}")
            if first is None:  # all its events repeated earlier ids: never stored, in both
                continue
            assert column_rows(server, f"device_id:{prefix}a-{who}") == column_rows(
                server, f"device_id:{prefix}b-{who}")
