"""The fast engine agrees with the plain reference evaluator on random worlds and trees."""

from __future__ import annotations

import random
import tempfile
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity import event_index, segments
from identity.app import App
from identity.client import IdentityClient
from identity.config import Settings
from identity.server import create_server

from credentials import TEST_KEYS
from segment_reference import Reference, World
from segment_world import load_world

AS_OF = int(datetime(2026, 3, 30, 12, tzinfo=timezone.utc).timestamp())  # just after a DST change
ZONE = "Europe/Berlin"
CATEGORIES = ["Electronics/TV", "Electronics/Cameras", "Home/Kitchen", "Electronics"]
PRODUCTS = ["p1", "p2", "p3", "p4"]
PRODUCT_KINDS = ("view", "add_to_cart", "order")
# (SCOPE_BELOW, PRODUCT_READS) of the engine: plain (never narrowed, window slices only);
# narrowed with the default choice; narrowed, product filters always by product rows
PLANS = [(0.0, 0.0), (2.0, 0.25), (2.0, 1e12)]
ORDER_VALUES = {"cuisine": ["thai", "Pizza", ""], "restaurant": ["Roma", ""],
                "meal_type": ["lunch", ""], "delivery_city": ["Berlin", ""],
                "store": ["Roma", "Mitte", ""]}


@st.composite
def worlds(draw) -> World:
    size = draw(st.integers(1, 6))
    persons = []
    for p in range(size):
        ids = [f"email:u{p}@example.com"]
        if draw(st.booleans()):
            ids.append(f"phone:+4477009001{p:02d}")
        persons.append(set(ids))
    if size > 1 and draw(st.booleans()):  # a link joins two of them
        a, b = draw(st.lists(st.integers(0, size - 1), min_size=2, max_size=2, unique=True))
        persons[a] |= persons[b]
        persons = [p for i, p in enumerate(persons) if i != b]
    everyone = sorted(who for p in persons for who in p)
    events, orders = [], []
    for i in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["view", "add_to_cart", "order", "search", "cancel", "ad",
                                     "custom", "resight"]))
        e = {"id": f"e{i}", "who": draw(st.sampled_from(everyone)),
             "time": AS_OF - 86400 * draw(st.one_of(st.integers(-1, 4), st.integers(0, 130)))
             + draw(st.sampled_from([-12 * 3600 - 1, -12 * 3600, -3600, 0, 11 * 3600 + 59])),
             "channel": draw(st.sampled_from(["web", "app"]))}
        if kind in ("view", "add_to_cart"):
            e.update(type=kind, product=draw(st.sampled_from(PRODUCTS)),
                     category=draw(st.sampled_from(CATEGORIES)), amount=5.0)
        elif kind == "order":
            lines = [{"product": draw(st.sampled_from(PRODUCTS)),
                      "category": draw(st.sampled_from(CATEGORIES)), "price": 10.0}
                     for _ in range(draw(st.integers(1, 2)))]
            e.update(type="order", order_id=f"o{i}", lines=lines,
                     amount=float(draw(st.integers(1, 300))))
            for key, values in ORDER_VALUES.items():
                value = draw(st.sampled_from(values))
                if value:
                    e[key] = value
            orders.append(e)
        elif kind == "search":
            e.update(type="search", phrase=draw(st.sampled_from(["Red shoes", "red  SHOES x",
                                                                 "tv"])))
        elif kind == "ad":
            e.update(type="ad", action=draw(st.integers(1, 3)),
                     advertiser=draw(st.sampled_from(["Acme", "Globex"])),
                     campaign=draw(st.sampled_from(["spring", "Summer"])),
                     ad=draw(st.sampled_from(["ad-1", "ad-2"])))
        elif kind == "custom":
            e.update(type="custom", name=draw(st.sampled_from(["signup", "quiz"])),
                     properties=draw(st.dictionaries(
                         st.sampled_from(["plan", "seats", "trial"]),
                         st.sampled_from(["gold", "Silver", 3, 2.5, 3.0, True]), max_size=3)))
        elif kind == "resight" and orders:  # the same order seen again (till, app)
            seen = draw(st.sampled_from(orders))
            e.update({k: v for k, v in seen.items() if k not in ("id", "who", "time")})
        elif kind == "cancel" and orders:
            e.update(type="order_cancelled", order_id=draw(st.sampled_from(orders))["order_id"])
        else:
            continue
        events.append(e)
    tags = [{"who": draw(st.sampled_from(everyone)), "tag": "vip",
             "value": draw(st.sampled_from(["gold", "silver"])), "time": AS_OF - 1000 * j,
             "cleared": draw(st.booleans())} for j in range(draw(st.integers(0, 3)))]
    return World(persons, events, tags, ZONE)


windows = st.one_of(
    st.just({}),
    st.tuples(st.integers(0, 4), st.integers(0, 4)).map(
        lambda t: {"from_days_ago": max(t), "to_days_ago": min(t)}),
    st.tuples(st.integers(0, 120), st.integers(0, 120)).map(
        lambda t: {"from_days_ago": max(t), "to_days_ago": min(t)}),
    st.just({"from_date": "2026-03-29", "to_date": "2026-03-30"}),
    st.just({"from_days_ago": 1}),
)
counts = st.one_of(st.just(None), st.tuples(st.integers(0, 3), st.integers(0, 3)).map(
    lambda t: {"min": min(t), "max": max(t)}))


@st.composite
def event_leaves(draw) -> dict:
    kind = draw(st.sampled_from(["view", "add_to_cart", "order", "search", "ad_view", "ad_click",
                                 "ad_order", "custom"]))
    f: dict = {"type": kind}
    if kind.startswith("ad_"):
        for key, values in (("advertiser", ["acme", "Globex"]), ("campaign", ["spring"]),
                            ("ad", ["ad-1", "AD-2"])):
            if draw(st.booleans()):
                f[key] = draw(st.sampled_from(values))
    if kind == "custom":
        f["name"] = draw(st.sampled_from(["signup", "quiz"]))
        f["properties"] = draw(st.dictionaries(st.sampled_from(["plan", "seats", "trial"]),
                                               st.sampled_from(["gold", "silver", "3", "2.5",
                                                                "true"]), min_size=1, max_size=2))
    if kind == "order" and draw(st.booleans()):
        key = draw(st.sampled_from(list(ORDER_VALUES)))
        f["order"] = {key: draw(st.sampled_from([v for v in ORDER_VALUES[key] if v]))}
    if kind in PRODUCT_KINDS and draw(st.booleans()):
        f["category"] = draw(st.sampled_from(["electronics", "Electronics/TV", "home"]))
    if kind in PRODUCT_KINDS and draw(st.booleans()):
        f["product_ids"] = [draw(st.sampled_from(PRODUCTS))]
    if kind == "search":
        f["search"] = draw(st.sampled_from([{"equals": "redshoes"}, {"contains": "Red Sho"}]))
    if draw(st.booleans()):
        f["channel"] = draw(st.sampled_from(["web", "app"]))
    body: dict = {"filter": f, "window": draw(windows)}
    if draw(st.booleans()):
        body["not_happened"] = True
    else:
        count = draw(counts)
        if count is not None:
            body["count"] = count
    return {"event": body}


leaves = st.one_of(
    event_leaves(),
    st.builds(lambda w, c: {"abandoned": {"window": w, "cart_only": c}}, windows, st.booleans()),
    st.builds(lambda n, lo: {"aggregate": {"name": n, "range": {"min": lo}}},
              st.sampled_from(["orders_count", "total_spent", "days_since_last_order",
                               "days_since_last_activity", "average_check"]),
              st.integers(0, 60)),
    st.builds(lambda cells: {"cohort": {"cells": cells}},
              st.lists(st.sampled_from(["Newcomers", "Promising", "Loyal", "Drifting",
                                        "Sleeping", "At risk", "Lost"]), min_size=1, max_size=3)),
    st.builds(lambda k: {"reachable": {"kind": k}}, st.sampled_from(["email", "phone"])),
    st.builds(lambda v, a: {"tag": {"name": "vip", **({"absent": True} if a else
                                                      ({"value": v} if v else {}))}},
              st.sampled_from(["", "gold"]), st.booleans()),
)
trees = st.recursive(leaves, lambda kids: st.builds(
    lambda op, children: {op: children}, st.sampled_from(["all", "any", "none"]),
    st.lists(kids, min_size=1, max_size=3)), max_leaves=6)


@settings(max_examples=75, deadline=None, suppress_health_check=list(HealthCheck))
@given(world=worlds(), queries=st.lists(trees, min_size=1, max_size=6),
       batches=st.integers(1, 4), min_tail=st.sampled_from([1, 3, 1 << 14]))
def test_fast_engine_counts_equal_the_reference_evaluator(world: World, queries: list[dict],
                                                          batches: int, min_tail: int):
    """Events arrive in several batches with a query after each, so the index takes them
    in incrementally (sorted parts and tails, orders seen again or cancelled later);
    row-reading leaves run with and without the narrowing of ``all`` groups, and product
    filters read window slices or their products' rows."""
    saved, event_index._MIN_TAIL = event_index._MIN_TAIL, min_tail
    saved_scope = segments.SCOPE_BELOW, segments.PRODUCT_READS
    with tempfile.TemporaryDirectory() as data:
        app = App.open(Settings.load(env={}, data_dir=data, map_size="64MiB", time_zone=ZONE,
                                     api_keys=TEST_KEYS))
        server, port = create_server(app, "127.0.0.1:0", max_workers=4)
        server.start()
        try:
            with IdentityClient(f"127.0.0.1:{port}") as client:
                load_world(client, world.persons, world.events, world.tags, batches,
                           lambda: client.count_segment(queries[0], as_of=AS_OF * 1000))
                reference = Reference(world, AS_OF)
                for tree in queries:
                    for how in PLANS:
                        segments.SCOPE_BELOW, segments.PRODUCT_READS = how
                        app.segments.engine.clear_cache()  # leaf results differ by plan only
                        got = client.count_segment(tree, as_of=AS_OF * 1000).count
                        assert got == reference.count(tree), (tree, how)
        finally:
            event_index._MIN_TAIL = saved
            segments.SCOPE_BELOW, segments.PRODUCT_READS = saved_scope
            server.stop(None).wait()
            app.close()


def _dense_world(seed: int) -> World:
    """A seeded world dense enough that every condition below holds for some persons."""
    rnd = random.Random(seed)
    persons = [{f"email:d{p}@example.com"} | ({f"phone:+4477009002{p:02d}"} if p % 3 else set())
               for p in range(30)]
    persons[0] |= persons.pop(1)  # one merged person
    everyone = sorted(who for p in persons for who in p)
    events: list[dict] = []
    for i in range(400):
        who, t = rnd.choice(everyone), AS_OF - rnd.randrange(0, 100 * 86400)
        kind = rnd.choice(["view", "view", "add_to_cart", "order", "search"])
        e = {"id": f"d{i}", "who": who, "time": t, "channel": rnd.choice(["web", "app"])}
        if kind in ("view", "add_to_cart"):
            e.update(type=kind, product=rnd.choice(PRODUCTS), category=rnd.choice(CATEGORIES),
                     amount=5.0)
        elif kind == "order":
            e.update(type="order", order_id=f"do{i}", amount=float(rnd.randrange(1, 100)),
                     lines=[{"product": rnd.choice(PRODUCTS), "category": rnd.choice(CATEGORIES),
                             "price": 10.0}])
        else:
            e.update(type="search", phrase=rnd.choice(["tv", "red shoes"]))
        events.append(e)
    return World(persons, events, [], ZONE)


DENSE_TREES = [
    {"all": [{"aggregate": {"name": "orders_count", "range": {"min": 2}}},
             {"event": {"filter": {"type": "view", "category": "Electronics"},
                        "window": {"from_days_ago": 30, "to_days_ago": 0}, "count": {"min": 2}}},
             {"abandoned": {"window": {"from_days_ago": 20, "to_days_ago": 0}}}]},
    {"all": [{"cohort": {"cells": ["Loyal", "Promising", "At risk"]}},
             {"none": [{"event": {"filter": {"type": "order"},
                                  "window": {"from_days_ago": 10, "to_days_ago": 0}}}]},
             {"any": [{"event": {"filter": {"type": "search", "search": {"contains": "tv"}}}},
                      {"abandoned": {"cart_only": True, "count": {"min": 2}}}]}]},
    {"all": [{"reachable": {"kind": "phone"}},
             {"event": {"filter": {"type": "order", "category": "Home"}, "count": {"min": 1}}},
             {"event": {"filter": {"type": "add_to_cart", "product_ids": ["p1", "p2"]},
                        "window": {"from_days_ago": 60, "to_days_ago": 0}}}]},
    {"any": [{"event": {"filter": {"type": "view", "product_ids": ["p3"]},
                        "window": {"from_days_ago": 12, "to_days_ago": 2}, "count": {"min": 1}}},
             {"abandoned": {"filter": {"product_ids": ["p4"]},
                            "window": {"from_days_ago": 5, "to_days_ago": 0}}}]},
]


@pytest.mark.parametrize("seed, min_tail", [(1, 1 << 14), (2, 1)])
def test_narrowed_and_plain_evaluation_agree_with_the_reference_on_a_dense_world(
        make_server, seed: int, min_tail: int):
    world = _dense_world(seed)
    saved = segments.SCOPE_BELOW, segments.PRODUCT_READS
    saved_tail, event_index._MIN_TAIL = event_index._MIN_TAIL, min_tail  # 1: sorted parts
    server = make_server(time_zone=ZONE)
    try:
        with IdentityClient(server.address) as client:
            load_world(client, world.persons, world.events)
            reference = Reference(world, AS_OF)
            for tree in DENSE_TREES:
                want = reference.count(tree)
                assert want > 0, tree  # the world is dense enough to tell
                for how in PLANS:
                    segments.SCOPE_BELOW, segments.PRODUCT_READS = how
                    server.app.segments.engine.clear_cache()
                    assert client.count_segment(tree, as_of=AS_OF * 1000).count == want, \
                        (tree, how)
    finally:
        segments.SCOPE_BELOW, segments.PRODUCT_READS = saved
        event_index._MIN_TAIL = saved_tail
