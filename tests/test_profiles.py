"""Profiles over gRPC: attribute precedence, paged and filtered history, favourites."""

from __future__ import annotations

import grpc
import pytest

from identity.client import IdentityClient
from identity.v1 import events_pb2 as ev
from tests.test_events import KETTLE, T0, event, order, view

EMAIL, PHONE = "email:f@example.com", "phone:+14155550111"


def attributes(event_id: str, who: str, at: int, **fields) -> ev.Event:
    return event(event_id, who, at, attributes=ev.AttributesEvent(**fields))


def test_latest_stated_attribute_wins_across_identifiers(client: IdentityClient):
    client.link(EMAIL, PHONE, source="crm")
    client.track([
        attributes("a1", EMAIL, T0, name="Anna P", city="Leeds", language="en"),
        attributes("a2", PHONE, T0 + 10, city="York", gender=ev.GENDER_FEMALE),
    ])
    client.track([attributes("a3", EMAIL, T0 + 5, city="Hull", name="Anna Petrova")])
    attrs = client.get_profile(PHONE).attributes
    assert attrs.city == "York"  # T0+10 beats the later-arriving T0+5
    assert attrs.name == "Anna Petrova"  # T0+5 beats T0
    assert (attrs.language, attrs.gender) == ("en", ev.GENDER_FEMALE)


def test_same_time_attribute_goes_to_the_one_stored_later(client: IdentityClient):
    client.track([attributes("a1", EMAIL, T0, city="Leeds")])
    client.track([attributes("a2", EMAIL, T0, city="York")])
    assert client.get_profile(EMAIL).attributes.city == "York"


def test_unset_attribute_fields_change_nothing(client: IdentityClient):
    client.track([attributes("a1", EMAIL, T0, name="Anna", birth_date="1990-04-01")])
    client.track([attributes("a2", EMAIL, T0 + 1, time_zone="Europe/London")])
    attrs = client.get_profile(EMAIL).attributes
    assert (attrs.name, attrs.birth_date, attrs.time_zone) == ("Anna", "1990-04-01",
                                                               "Europe/London")


def test_consent_is_latest_per_channel(client: IdentityClient):
    client.link(EMAIL, PHONE, source="crm")
    grant = ev.ChannelConsent(channel=ev.EVENT_CHANNEL_EMAIL, granted=True)
    sms = ev.ChannelConsent(channel=ev.EVENT_CHANNEL_SMS, granted=True)
    revoke = ev.ChannelConsent(channel=ev.EVENT_CHANNEL_EMAIL, granted=False)
    client.track([attributes("a1", EMAIL, T0, consents=[grant, sms]),
                  attributes("a2", PHONE, T0 + 1, consents=[revoke])])
    consents = {c.channel: c.granted for c in client.get_profile(EMAIL).attributes.consents}
    assert consents == {ev.EVENT_CHANNEL_EMAIL: False, ev.EVENT_CHANNEL_SMS: True}


def test_history_pages_cover_every_event_once_newest_first(client: IdentityClient):
    client.link(EMAIL, PHONE, source="crm")
    client.track([view(f"v{i}", EMAIL if i % 3 else PHONE, T0 + (i // 2) * 1000)
                  for i in range(23)])
    seen, token = [], ""
    while True:
        page = client.get_profile(EMAIL, page_size=5, page_token=token)
        assert len(page.events) <= 5
        seen += [(e.time.ToMilliseconds(), e.event_id) for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 23 and len({e for _, e in seen}) == 23
    assert [t for t, _ in seen] == sorted((t for t, _ in seen), reverse=True)


def test_new_events_do_not_shift_a_page_in_progress(client: IdentityClient):
    client.track([view(f"v{i}", EMAIL, T0 + i) for i in range(6)])
    first = client.get_profile(EMAIL, page_size=3)
    client.track([view("newest", EMAIL, T0 + 100)])
    second = client.get_profile(EMAIL, page_size=3, page_token=first.next_page_token)
    assert [e.event_id for e in first.events] == ["v5", "v4", "v3"]
    assert [e.event_id for e in second.events] == ["v2", "v1", "v0"]


def test_history_filters_by_type_and_time(client: IdentityClient):
    client.track([
        view("v1", EMAIL, T0),
        event("s1", EMAIL, T0 + 1000, search=ev.SearchEvent(phrase="kettle")),
        event("o1", EMAIL, T0 + 2000, order=order("F-1")),
        view("v2", EMAIL, T0 + 3000),
        event("s2", EMAIL, T0 + 4000, search=ev.SearchEvent(phrase="toaster")),
    ])
    searches = client.get_profile(EMAIL, types=[ev.EVENT_TYPE_SEARCH])
    assert [e.event_id for e in searches.events] == ["s2", "s1"]
    window = client.get_profile(EMAIL, since=T0 + 1000, until=T0 + 3000)
    assert [e.event_id for e in window.events] == ["o1", "s1"]  # since inclusive, until not
    both = client.get_profile(EMAIL, types=[ev.EVENT_TYPE_VIEW, ev.EVENT_TYPE_ORDER],
                              since=T0 + 1, page_size=1)
    assert [e.event_id for e in both.events] == ["v2"]
    rest = client.get_profile(EMAIL, types=[ev.EVENT_TYPE_VIEW, ev.EVENT_TYPE_ORDER],
                              since=T0 + 1, page_size=1, page_token=both.next_page_token)
    assert [e.event_id for e in rest.events] == ["o1"]


def test_favourites_rank_categories_by_items_and_cuisines_by_orders(client: IdentityClient):
    pizza = ev.OrderLine(product_id="P1", category="Food/Pizza", price=9, quantity=3)
    sushi = ev.OrderLine(product_id="S1", category="Food/Sushi", price=20, quantity=1)
    client.track([
        event("o1", EMAIL, T0, order=order("G-1", pizza, cuisine="italian")),
        event("o2", EMAIL, T0 + 1, order=order("G-2", sushi, cuisine="japanese")),
        event("o3", EMAIL, T0 + 2, order=order("G-3", sushi, cuisine="japanese")),
    ])
    agg = client.get_profile(EMAIL).aggregates
    assert [(f.name, f.count) for f in agg.favourite_categories] == [("Food/Pizza", 3),
                                                                    ("Food/Sushi", 2)]
    assert [(f.name, f.count) for f in agg.favourite_cuisines] == [("japanese", 2),
                                                                  ("italian", 1)]
    assert agg.total_spent == 27 + 40  # no total sent: the sum of the lines


def test_every_event_type_reads_back_as_sent(client: IdentityClient):
    sent = [
        event("e1", EMAIL, T0, view=ev.ProductEvent(**KETTLE, quantity=1)),
        event("e2", EMAIL, T0 + 1, add_to_cart=ev.ProductEvent(**KETTLE, quantity=2)),
        event("e3", EMAIL, T0 + 2, remove_from_cart=ev.ProductEvent(**KETTLE, quantity=1)),
        event("e4", EMAIL, T0 + 3, wishlist=ev.ProductEvent(**KETTLE, quantity=1)),
        event("e5", EMAIL, T0 + 4, order=order("H-1", total=12.345, store="s1", cuisine="thai",
                                                restaurant="R", meal_type="lunch",
                                                delivery_city="Leeds")),
        event("e6", EMAIL, T0 + 5, order_cancelled=ev.OrderCancelledEvent(order_id="H-1",
                                                                           reason="late")),
        event("e7", EMAIL, T0 + 6, search=ev.SearchEvent(phrase="Kettle ", results_count=3)),
        event("e8", EMAIL, T0 + 7, ad=ev.AdEvent(action=ev.AD_ACTION_CLICK, advertiser="Bosch",
                                                  campaign="spring", ad_id="ad1",
                                                  product_id="K-42")),
        event("e9", EMAIL, T0 + 8, channel=ev.EVENT_CHANNEL_EMAIL, source="esp",
              message=ev.MessageEvent(action=ev.MESSAGE_ACTION_OPENED, campaign="spring")),
        event("0b3f7d2c-9a4e-4c1b-8f6d-2e5a7c9b1d3f", EMAIL, T0 + 9,
              custom=ev.CustomEvent(name="coupon", properties={
                  "code": ev.PropertyValue(text="SPRING"), "value": ev.PropertyValue(number=2.5),
                  "uses": ev.PropertyValue(integer=-3), "first": ev.PropertyValue(flag=True)})),
        attributes("e11", EMAIL, T0 + 10, name="Anna", gender=ev.GENDER_OTHER,
                   consents=[ev.ChannelConsent(channel=ev.EVENT_CHANNEL_PUSH, granted=True)]),
    ]
    client.track(sent)
    got = list(reversed(client.get_profile(EMAIL, page_size=100).events))
    for message in got:
        message.identifier.value = "f@example.com"
    for a, b in zip(sent, got):
        a.identifier.value = "f@example.com"
        assert a == b


def test_unknown_identifier_and_bad_queries_are_refused(client: IdentityClient):
    with pytest.raises(grpc.RpcError) as caught:
        client.get_profile("email:nobody@example.com")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    client.track([view("v1", EMAIL, T0)])
    for bad in (dict(page_size=5000), dict(page_token="zz"), dict(since=T0 + 5, until=T0),
                dict(until=10**20), dict(since=-1000)):  # (ms; the fuzz test found the first)
        with pytest.raises(grpc.RpcError) as caught:
            client.get_profile(EMAIL, **bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
