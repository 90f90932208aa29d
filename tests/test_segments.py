"""Segments over a real server: merges applied at once, malformed trees, cohorts, DST days."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from identity.cli import main as cli_main
from segment_world import load_world

NOW = int(datetime(2026, 6, 15, 12, tzinfo=timezone.utc).timestamp())
DAY = 86400
TVS = {"event": {"filter": {"type": "view", "category": "Electronics/TV"},
                 "window": {"from_days_ago": 30, "to_days_ago": 0}}}
CAMERAS = {"event": {"filter": {"type": "view", "category": "electronics/cameras"},
                     "window": {"from_days_ago": 30, "to_days_ago": 0}}}


def view(i: int, who: str, category: str, t: int, product: str = "p") -> dict:
    return {"id": f"v{i}", "who": who, "type": "view", "time": t, "product": product,
            "category": category, "amount": 10.0}


def order(i: int, who: str, t: int, amount: float = 50.0, product: str = "p") -> dict:
    return {"id": f"o{i}", "who": who, "type": "order", "time": t, "order_id": f"O-{i}",
            "amount": amount, "lines": [{"product": product, "category": "X", "price": amount}]}


def violation(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    detail = error_details_pb2.BadRequest()
    status.details[0].Unpack(detail)
    return detail.field_violations[0].field


def test_link_puts_person_in_both_interest_segments_and_counts_them_once(client):
    load_world(client, [{"email:anna@example.com"}, {"phone:+447700900123"}], [
        view(1, "email:anna@example.com", "Electronics/TV/OLED", NOW - DAY),
        view(2, "phone:+447700900123", "Electronics/Cameras", NOW - 2 * DAY),
    ])
    either = {"any": [TVS, CAMERAS]}
    assert [client.count_segment(t, as_of=NOW * 1000).count for t in (TVS, CAMERAS, either)] \
        == [1, 1, 2]

    client.link("email:anna@example.com", "phone:+447700900123", source="login")

    assert [client.count_segment(t, as_of=NOW * 1000).count for t in (TVS, CAMERAS, either)] \
        == [1, 1, 1]
    both = {"all": [TVS, CAMERAS]}
    members = list(client.export_segment(both, as_of=NOW * 1000, channel="phone"))
    assert [(m.address) for m in members] == ["+447700900123"]
    explained = client.explain_membership(members[0].person_id, both, as_of=NOW * 1000)
    assert explained.member
    assert [(n.path, n.value) for n in explained.nodes] == [
        ("root.all", True), ("root.all[0].event", True), ("root.all[1].event", True)]


def test_an_order_seen_twice_counts_once_and_cancelled_orders_do_not_count(client):
    load_world(client, [{"email:b@example.com", "phone:+447700900124"}], [
        order(1, "email:b@example.com", NOW - DAY),
        {**order(1, "phone:+447700900124", NOW - DAY), "id": "pos:O-1"},
        order(2, "email:b@example.com", NOW - DAY),
        {"id": "c2", "who": "email:b@example.com", "type": "order_cancelled", "time": NOW - 10,
         "order_id": "O-2"},
    ])
    once = {"event": {"filter": {"type": "order"}, "count": {"min": 1, "max": 1}}}
    assert client.count_segment(once, as_of=NOW * 1000).count == 1
    before_cancel = client.count_segment({"aggregate": {"name": "orders_count",
                                                        "range": {"min": 2}}},
                                         as_of=(NOW - 60) * 1000)
    assert before_cancel.count == 1


def test_an_orders_line_filters_must_hold_on_one_line(client):
    load_world(client, [{"email:c@example.com"}, {"email:d@example.com"}], [
        {**order(3, "email:c@example.com", NOW - DAY), "lines": [
            {"product": "p1", "category": "Electronics/Cameras", "price": 10.0},
            {"product": "p2", "category": "Electronics/TV", "price": 10.0}]},
        {**order(4, "email:d@example.com", NOW - DAY), "lines": [
            {"product": "p1", "category": "Electronics/TV/OLED", "price": 10.0}]},
    ])
    p1_tv = {"event": {"filter": {"type": "order", "product_ids": ["p1"],
                                  "category": "Electronics/TV"}}}
    members = list(client.export_segment(p1_tv, as_of=NOW * 1000, channel="email"))
    assert [m.address for m in members] == ["d@example.com"]  # c's p1 was a camera


@pytest.mark.parametrize("tree, path", [
    ({"all": [TVS, CAMERAS, {"event": {"filter": {"type": "view"},
                                       "window": {"from_days_ago": 1, "to_days_ago": 5}}}]},
     "root.all[2].event.window"),
    ({"all": []}, "root"),
    ({"any": [{"event": {"filter": {"type": "teleport"}}}]}, "root.any[0].event.filter.type"),
    ({"attribute": {"name": "city"}}, "root.attribute"),
    ({"cohort": {"cells": ["Loyal", "Royal"]}}, "root.cohort.cells[1]"),
    ({"none": [{"event": {"filter": {"type": "view", "search": {"equals": "tv"}}}}]},
     "root.none[0].event.filter.search"),
    ({"segment": {"name": "never-saved"}}, "root.segment.name"),
])
def test_malformed_tree_is_invalid_argument_naming_the_bad_node(client, tree, path):
    with pytest.raises(grpc.RpcError) as caught:
        client.count_segment(tree)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violation(caught.value) == path


def test_cohort_matrix_and_transitions_follow_orders_and_days(client):
    who = ["email:new@example.com", "email:loyal@example.com", "email:lost@example.com"]
    load_world(client, [{w} for w in who], [
        order(1, who[0], NOW - 10 * DAY),
        *[order(10 + i, who[1], NOW - (40 + i) * DAY) for i in range(3)],
        *[order(20 + i, who[2], NOW - (200 + i) * DAY) for i in range(3)],
    ])
    cells = {c.name: c.count for c in client.cohort_matrix(as_of=NOW * 1000).cells}
    assert cells == {"Newcomers": 1, "Promising": 0, "Loyal": 1, "Drifting": 0, "Sleeping": 0,
                     "At risk": 0, "Lost": 1}
    moves = client.cohort_transitions(NOW * 1000, (NOW + 35 * DAY) * 1000).transitions
    assert sorted((m.from_cell, m.to_cell) for m in moves) == [
        ("Loyal", "At risk"), ("Newcomers", "Drifting")]
    only = client.cohort_transitions(NOW * 1000, (NOW + 35 * DAY) * 1000, to_cell="At risk")
    assert len(only.transitions) == 1
    loyal = {"cohort": {"cells": ["Loyal"], "f": {"min": 4}}}
    assert client.count_segment(loyal, as_of=NOW * 1000).count == 1


def test_relative_window_counts_calendar_days_across_daylight_saving(make_server):
    server = make_server(time_zone="Europe/Berlin")
    from identity.client import IdentityClient

    # Berlin springs forward on 2026-03-29; as_of is 00:30 local on 2026-03-30.
    as_of = int(datetime(2026, 3, 29, 22, 30, tzinfo=timezone.utc).timestamp())
    just_before_yesterday = int(datetime(2026, 3, 28, 22, 59, tzinfo=timezone.utc).timestamp())
    first_minute_of_yesterday = int(datetime(2026, 3, 28, 23, 0, tzinfo=timezone.utc).timestamp())
    with IdentityClient(server.address) as client:
        load_world(client, [{"email:x@example.com"}, {"email:y@example.com"}], [
            view(1, "email:x@example.com", "A", just_before_yesterday),
            view(2, "email:y@example.com", "A", first_minute_of_yesterday),
        ])
        yesterday = {"event": {"filter": {"type": "view"},
                               "window": {"from_days_ago": 1, "to_days_ago": 1}}}
        # 23 hours before as_of is still "yesterday" (a 23-hour day), 23.5 is the day before
        assert client.count_segment(yesterday, as_of=as_of * 1000).count == 1
        members = list(client.export_segment(yesterday, as_of=as_of * 1000, channel="email"))
        assert [m.address for m in members] == ["y@example.com"]


def test_saved_segments_nest_refuse_cycles_and_dangling_deletes(client):
    client.save_segment("tv", TVS, "viewed TVs lately")
    client.save_segment("tv-no-cameras", {"all": [{"segment": {"name": "tv"}},
                                                  {"none": [CAMERAS]}]})
    assert [s.name for s in client.list_segments().segments] == ["tv", "tv-no-cameras"]
    assert client.get_segment("tv").segment.description == "viewed TVs lately"
    with pytest.raises(grpc.RpcError) as caught:
        client.save_segment("tv", {"segment": {"name": "tv-no-cameras"}})
    assert violation(caught.value) == "condition.segment.name"
    with pytest.raises(grpc.RpcError) as caught:
        client.delete_segment("tv")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    load_world(client, [{"email:t@example.com"}],
               [view(1, "email:t@example.com", "Electronics/TV", NOW - DAY)])
    assert client.count_segment(name="tv-no-cameras", as_of=NOW * 1000).count == 1
    assert client.delete_segment("tv-no-cameras").deleted
    assert client.delete_segment("tv").deleted


def test_tags_set_by_flows_are_latest_wins_and_follow_merges(client):
    load_world(client, [{"email:g@example.com"}, {"phone:+447700900125"}], [])
    client.set_tag("email:g@example.com", "vip", "gold", at=(NOW - 100) * 1000)
    client.set_tag("phone:+447700900125", "vip", "silver", at=(NOW - 50) * 1000)
    gold = {"tag": {"name": "vip", "value": "gold"}}
    assert client.count_segment(gold, as_of=NOW * 1000).count == 1
    client.link("email:g@example.com", "phone:+447700900125")
    assert client.count_segment(gold, as_of=NOW * 1000).count == 0
    assert client.count_segment({"tag": {"name": "vip"}}, as_of=NOW * 1000).count == 1


def test_cli_counts_a_segment_from_a_json_file(client, server, tmp_path, capsys):
    load_world(client, [{"email:c@example.com"}],
               [view(1, "email:c@example.com", "Electronics/TV", NOW - DAY)])
    path = tmp_path / "tv.json"
    path.write_text(json.dumps(TVS))
    assert cli_main(["segment", "count", str(path), "--as-of", "2026-06-15T12:00:00+00:00",
                     "--address", server.address]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == "1"


def test_ad_order_parameter_and_custom_property_filters_pick_the_right_events(client):
    a, b = "email:ads@example.com", "email:food@example.com"
    load_world(client, [{a}, {b}], [
        {"id": "c1", "who": a, "type": "custom", "time": NOW - DAY, "name": "signup",
         "properties": {"plan": "gold", "seats": 3}},
        {"id": "c2", "who": b, "type": "custom", "time": NOW - DAY, "name": "signup",
         "properties": {"plan": "Gold", "seats": 2.5}},
        {"id": "c3", "who": b, "type": "custom", "time": NOW - DAY, "name": "quiz",
         "properties": {"seats": 3, "trial": True}},
        {"id": "a1", "who": a, "type": "ad", "action": 2, "time": NOW - DAY,
         "advertiser": "Acme", "campaign": "spring", "ad": "ad-1"},
        {"id": "a2", "who": b, "type": "ad", "action": 1, "time": NOW - DAY,
         "advertiser": "Acme", "campaign": "summer", "ad": "ad-2"},
        {**order(1, b, NOW - DAY), "cuisine": "Thai", "restaurant": "Roma",
         "meal_type": "lunch", "delivery_city": "Berlin"},
        {**order(2, a, NOW - DAY), "store": "Roma"},
    ])

    def count(f: dict) -> int:
        return client.count_segment({"event": {"filter": f}}, as_of=NOW * 1000).count

    # every wanted property on the same event; numbers and flags compare as their text
    assert count({"type": "custom", "name": "signup", "properties": {"plan": "gold"}}) == 2
    assert count({"type": "custom", "name": "signup",
                  "properties": {"plan": "gold", "seats": "3"}}) == 1
    assert count({"type": "custom", "name": "quiz", "properties": {"trial": "true"}}) == 1
    assert count({"type": "custom", "name": "signup", "properties": {"trial": "true"}}) == 0
    assert count({"type": "ad_click", "advertiser": "acme"}) == 1
    assert count({"type": "ad_view", "ad": "AD-2", "campaign": "summer"}) == 1
    assert count({"type": "ad_view", "ad": "ad-1"}) == 0
    # a restaurant is not a store: each order parameter has its own column
    assert count({"type": "order", "order": {"restaurant": "roma", "cuisine": "thai",
                                             "meal_type": "Lunch",
                                             "delivery_city": "berlin"}}) == 1
    assert count({"type": "order", "order": {"store": "roma"}}) == 1
    assert count({"type": "order", "order": {"restaurant": "roma", "store": "roma"}}) == 0
