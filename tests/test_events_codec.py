"""Compact records decode to what was encoded; the fast validity test agrees with check."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from identity.event_codec import decode, encode, encode_product
from identity.events import (
    Ad, Attributes, Custom, Event, EventType, Message, Order, OrderCancelled, Product, Search,
    check, plainly_valid,
)

texts = st.text(max_size=20)
money = st.one_of(st.integers(0, 10**9).map(lambda c: c / 100),
                  st.floats(0, 1e12, allow_nan=False, allow_infinity=False))
products = st.builds(Product, texts, texts, texts, money, st.integers(1, 1_000_000))
event_ids = st.one_of(st.text(min_size=1, max_size=40), st.uuids().map(str),
                      st.uuids().map(lambda u: str(u).upper()))
optional = st.one_of(st.none(), texts)
payloads = st.one_of(
    st.tuples(st.sampled_from([1, 2, 3, 4]).map(EventType), products),
    st.tuples(st.just(EventType.ORDER),
              st.builds(Order, texts, st.lists(products, max_size=4).map(tuple), money,
                        texts, texts, texts, texts, texts, texts)),
    st.tuples(st.just(EventType.ORDER_CANCELLED), st.builds(OrderCancelled, texts, texts)),
    st.tuples(st.just(EventType.SEARCH), st.builds(Search, texts, st.integers(0, 2**32 - 1))),
    st.tuples(st.just(EventType.AD), st.builds(Ad, st.integers(1, 3), texts, texts, texts, texts)),
    st.tuples(st.just(EventType.MESSAGE), st.builds(Message, st.integers(1, 5), texts)),
    st.tuples(st.just(EventType.CUSTOM), st.builds(Custom, texts, st.lists(st.tuples(
        texts, st.one_of(texts, st.booleans(), st.integers(-2**63, 2**63 - 1),
                         st.floats(allow_nan=False))), max_size=4).map(tuple))),
    st.tuples(st.just(EventType.ATTRIBUTES), st.builds(
        Attributes, optional, st.integers(0, 3), optional, optional, optional, optional,
        st.lists(st.tuples(st.integers(1, 6), st.booleans()), max_size=3).map(tuple))),
)


class Dictionary:
    """A stand-in for the interned strings: ids in order of first use."""

    def __init__(self) -> None:
        self.texts = [""]
        self.ids = {"": 0}

    def intern(self, text: str) -> int:
        if text not in self.ids:
            self.ids[text] = len(self.texts)
            self.texts.append(text)
        return self.ids[text]


@given(event_ids, st.integers(0, 6), texts, payloads)
def test_every_payload_round_trips(event_id, channel, source, typed):
    kind, payload = typed
    strings = Dictionary()
    data = encode(event_id, kind, channel, source, payload, strings.intern)
    assert decode(data, strings.texts.__getitem__) == (event_id, kind, channel, source, payload)


@given(event_ids, st.sampled_from([1, 2, 3, 4]), st.integers(0, 6), texts, products)
def test_product_fast_path_matches_the_general_encoding(event_id, kind, channel, source, p):
    strings = Dictionary()
    general = encode(event_id, EventType(kind), channel, source, p, strings.intern)
    fast = encode_product(event_id, kind, channel, strings.intern(source),
                          strings.intern(p.product_id), strings.intern(p.category),
                          strings.intern(p.brand), p.price, p.quantity)
    assert fast == general


def test_uuid_event_ids_take_sixteen_bytes():
    strings = Dictionary()
    event_id = str(uuid.UUID(int=12345))
    short = encode(event_id, EventType.SEARCH, 1, "", Search("", 0), strings.intern)
    assert len(short) == 2 + 1 + 17 + 2


@given(st.builds(
    Event, st.text(max_size=40), st.just((2, "a@example.com")),
    st.one_of(st.none(), st.integers(-10, 5_000_000_000_000)),
    st.sampled_from(list(EventType)),
    st.one_of(st.builds(Product, texts, texts, texts, st.floats(), st.integers(-5, 2_000_000)),
              st.builds(Search, texts)),
    st.integers(-1, 8), st.text(max_size=130)))
def test_the_fast_validity_test_never_passes_what_check_refuses(event):
    if plainly_valid(event):
        check(event, "events[0]")  # must not raise
