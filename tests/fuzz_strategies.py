"""Hypothesis strategies for bad input: any protobuf request, built from its descriptor.

``message_of(descriptor)`` walks a message's fields and fills them with edge values (NUL,
bidi marks, emoji, combining marks, very long strings, extreme and negative numbers,
unknown enum values, oneofs, repeated and map fields, timestamps far out of range), so
every RPC is fuzzed without a hand-written strategy. Some message types get targeted
strategies on top: identifiers (``kind:value`` pairs with near-miss values), segment
condition trees (deep, half-built or over-full nodes) and packed event columns.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import descriptor as d
from google.protobuf.message import Message
from hypothesis import strategies as st

from identity import conditions
from identity.v1 import common_pb2, events_pb2, segments_pb2

__all__ = ["message_of", "edge_strings", "identifiers", "conditions_pb", "condition_json",
           "SEEDED_IDENTIFIERS", "SEEDED_NAMES", "stream_of"]

# Values the fuzz fixture stores before the first example, so fuzzed requests reach
# existing persons, segments and rules, not only the empty-database paths.
SEEDED_IDENTIFIERS = [
    (1, "C-1001"), (2, "anna.petrova@example.com"), (3, "+447700900123"),
    (4, "400012345678"), (6, "tablet-7"), (2, "bob@example.com"), (1, "C-2002"),
]
SEEDED_NAMES = ["tv-viewers", "loyal", "C-1001", "C-2002", "web", "pos:store-17", "spring",
                "kettle", "P-1", "Electronics/TV", "push-1", "vip"]

_ODD = [
    "\x00", "\u200f", "\u202e", "\u200b", "\ufeff", "\u00a0", "\u3000", "\t", "\n", "\r\n",
    "\U0001f600", "\U0001f469\u200d\U0001f469\u200d\U0001f467", "e\u0301", "\u0301\u0301\u0301",
    "\u0130", "\u00df", "\ufb01", "\uffff", "\U0010ffff", "\ud7ff", "\u2028", "%s", "{}", "'",
    '"', "\\", "/", "..", ":", "@", "+", "-", " ", "*", "\x7f", "\x1b[2J",
]
_VOCAB = sorted(set(
    list(conditions.EVENT_TYPES) + list(conditions.AGGREGATES) + list(conditions.ATTRIBUTES)
    + list(conditions.IDENTIFIER_KINDS) + list(conditions.CONSENT_CHANNELS)
    + list(conditions.MEASURES) + list(conditions.ORDER_KEYS)
    + ["Champions", "Loyal", "At risk", "Lost", "New", "2026-03-01", "2026-02-30", "0001-01-01",
       "9999-12-31", "22:00-09:00", "09:00-22:00", "25:00-01:00", "UTC", "Europe/London",
       "Mars/Olympus", "USD", "usd", "GBP", "abandoned_cart", "true", "false", "3", "2.5",
       "NaN", "-0", "1e309"]
    + SEEDED_NAMES + [v for _, v in SEEDED_IDENTIFIERS]))

_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=24)


@st.composite
def _odd_mix(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(st.sampled_from(_ODD), st.sampled_from(_VOCAB), _text),
                          min_size=1, max_size=5))
    return "".join(parts)


def _long(piece: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda s, n: (s or "x") * (n // max(1, len(s or "x"))), piece,
                     st.sampled_from([129, 513, 4097, 70_000]))


def edge_strings() -> st.SearchStrategy[str]:
    """Empty, vocabulary words, unicode oddities and very long strings."""
    return st.one_of(st.just(""), st.sampled_from(_VOCAB), _odd_mix(), _text,
                     _long(st.sampled_from(_ODD + ["a", "7"])))


def _ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edges = sorted({v for v in (0, 1, -1, 2, 7, 100, 1000, 36500, 36501, 100_001, 2**31 - 1,
                                -(2**31), 2**32 - 1, 2**53, 2**63 - 1, -(2**63), 2**64 - 1)
                    if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(-3, 12)
                     .filter(lambda v: low <= v <= high))


_DOUBLES = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-9, 5e-324, 1e308, -1e308, 2.0**53,
                     float("inf"), float("-inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True))
_FLOATS = st.one_of(st.sampled_from([0.0, -1.0, 3.4e38, float("inf"), float("nan")]),
                    st.floats(width=32))

_SECONDS = st.one_of(
    st.sampled_from([0, -1, 1, 1_780_000_000, -62_135_596_800, -62_135_596_801,
                     253_402_300_799, 253_402_300_800, 2**53, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1), st.integers(1_700_000_000, 1_900_000_000))
_NANOS = st.one_of(st.sampled_from([0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]),
                   st.integers(-(2**31), 2**31 - 1))


def _time(full_name: str) -> st.SearchStrategy[Message]:
    from google.protobuf import duration_pb2, timestamp_pb2

    cls = timestamp_pb2.Timestamp if full_name.endswith("Timestamp") else duration_pb2.Duration
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), _SECONDS, _NANOS)


# -- targeted strategies -------------------------------------------------------------

_KIND_VALUES = {
    1: ["C-1001", "C-2002", " C-1001 ", "c-1001", "", " ", "C\x00", "C" * 300],
    2: ["anna.petrova@example.com", " Anna.Petrova@Example.COM ", "a@", "@b", "a@b@c", "a@@b",
        "анна@пример.рф", "a@xn--", "a@-bad-.com", "a+tag@gmail.com", "a@b..c", "a@" + "b" * 300,
        "test@test.com", "a@\u200fexample.com", "a@example.com\x00", "a@[127.0.0.1]"],
    3: ["+447700900123", "+44 7700 900123", "8 (912) 555-01-02", "+", "++1", "+0", "0",
        "+1" + "9" * 40, "+44\u00a07700\u00a0900123", "\u0661\u0662\u0663\u0664\u0665\u0666",
        "+447700900123 ext. 99", "tel:+447700900123", "+999999999999999"],
    4: ["4000 1234 5678", "400012345678", "----", "4000-1234", "\u0664\u0660\u0660\u0660",
        "0" * 100, "4000 \u200b1234"],
    5: ["CRM-1", "", " "],
    6: ["tablet-7", "", "\x00", "d" * 1000],
}


@st.composite
def identifiers(draw: st.DrawFn) -> common_pb2.Identifier:
    """``kind:value`` pairs: seeded ones, near misses per kind, wrong kinds, unknown kinds."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        kind, value = draw(st.sampled_from(SEEDED_IDENTIFIERS))
    elif choice == 1:
        kind = draw(st.sampled_from(sorted(_KIND_VALUES)))
        value = draw(st.sampled_from(_KIND_VALUES[kind]))
    elif choice == 2:  # a value of one kind sent as another, or an unknown kind
        kind = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 99, -1, 2**31 - 1, -(2**31)]))
        value = draw(st.sampled_from(sum(_KIND_VALUES.values(), [])))
    else:
        kind = draw(_ints(32, True))
        value = draw(edge_strings())
    return common_pb2.Identifier(kind=kind, value=value)


def _range_pb() -> st.SearchStrategy[segments_pb2.Range]:
    end = st.one_of(st.none(), _DOUBLES, st.sampled_from([0.0, 1.0, 5.0, 6.0, 36500.0]))
    return st.builds(lambda lo, hi: segments_pb2.Range(min=lo, max=hi), end, end)


def _window_pb() -> st.SearchStrategy[segments_pb2.Window]:
    date = st.one_of(st.just(""), st.sampled_from(["2026-03-01", "2026-02-30", "0001-01-01",
                                                   "9999-12-31", "2026-3-1", "yesterday"]),
                     edge_strings())
    ago = st.one_of(st.none(), _ints(32, True))
    return st.builds(lambda a, b, c, e: segments_pb2.Window(
        from_date=a, to_date=b, from_days_ago=c, to_days_ago=e), date, date, ago, ago)


_words = st.one_of(st.sampled_from(_VOCAB), edge_strings())


def _filter_pb() -> st.SearchStrategy[segments_pb2.EventFilter]:
    return st.builds(
        lambda t, name, products, cat, search, channel, order, props: segments_pb2.EventFilter(
            type=t, name=name, product_ids=products, category=cat,
            search=segments_pb2.TextMatch(**search), channel=channel, order=order,
            properties=props),
        st.one_of(st.sampled_from(list(conditions.EVENT_TYPES) + ["", "VIEW", "nope"]),
                  edge_strings()),
        st.one_of(st.just(""), _words), st.lists(_words, max_size=3),
        st.one_of(st.just(""), _words),
        st.fixed_dictionaries({}, optional={"equals": _words, "contains": _words}),
        st.one_of(st.just(""), _words),
        st.dictionaries(st.one_of(st.sampled_from(conditions.ORDER_KEYS), _words), _words,
                        max_size=2),
        st.dictionaries(_words, _words, max_size=2))


def _leaf_pb() -> st.SearchStrategy[segments_pb2.Condition]:
    c = segments_pb2
    leaves = {
        "event": st.builds(lambda f, w, n, r, m: c.EventCondition(
            filter=f, window=w, not_happened=n, count=r, measure=m),
            _filter_pb(), _window_pb(), st.booleans(), st.one_of(st.none(), _range_pb()),
            st.one_of(st.sampled_from(["", "count", "amount", "distinct_products"]), _words)),
        "abandoned": st.builds(lambda f, w, b, r: c.AbandonedCondition(
            filter=f, window=w, cart_only=b, count=r),
            _filter_pb(), _window_pb(), st.booleans(), st.one_of(st.none(), _range_pb())),
        "attribute": st.builds(lambda n, e, i, r, x: c.AttributeCondition(
            name=n, equals=e, range=r, exists=x, **{"in": i}),
            _words, st.one_of(st.just(""), _words), st.lists(_words, max_size=3),
            st.one_of(st.none(), _range_pb()), st.one_of(st.none(), st.booleans())),
        "aggregate": st.builds(lambda n, r: c.AggregateCondition(name=n, range=r),
                               _words, st.one_of(st.none(), _range_pb())),
        "cohort": st.builds(lambda cells, r, f, m: c.CohortCondition(cells=cells, r=r, f=f, m=m),
                            st.lists(_words, max_size=3), st.one_of(st.none(), _range_pb()),
                            st.one_of(st.none(), _range_pb()), st.one_of(st.none(), _range_pb())),
        "reachable": st.builds(lambda k, c2: c.ReachableCondition(kind=k, consent=c2),
                               st.one_of(st.just(""), _words), st.one_of(st.just(""), _words)),
        "tag": st.builds(lambda n, a, v: c.TagCondition(name=n, absent=a, value=v),
                         _words, st.booleans(), st.one_of(st.none(), _words)),
        "segment": st.builds(lambda n: c.SegmentRef(name=n), _words),
    }

    @st.composite
    def leaf(draw: st.DrawFn) -> segments_pb2.Condition:
        message = segments_pb2.Condition()
        # Usually one leaf; sometimes none (an empty node) or two (an over-full node).
        for name in draw(st.lists(st.sampled_from(sorted(leaves)), min_size=0, max_size=2,
                                  unique=True)):
            getattr(message, name).CopyFrom(draw(leaves[name]))
        return message

    return leaf()


def _group(children: st.SearchStrategy[segments_pb2.Condition]
           ) -> st.SearchStrategy[segments_pb2.Condition]:
    @st.composite
    def group(draw: st.DrawFn) -> segments_pb2.Condition:
        message = segments_pb2.Condition()
        for name in draw(st.lists(st.sampled_from(["all", "any", "none"]), min_size=1,
                                  max_size=2, unique=True)):
            getattr(message, name).extend(draw(st.lists(children, max_size=3)))
        return message

    return group()


def _chain(depth: int, leaf: segments_pb2.Condition, group: str) -> segments_pb2.Condition:
    root = node = segments_pb2.Condition()
    for _ in range(depth):  # built top-down: protobuf refuses to copy a message this deep
        node = getattr(node, group).add()
    node.MergeFrom(leaf)
    return root


def conditions_pb() -> st.SearchStrategy[segments_pb2.Condition]:
    """Segment trees in message form: valid-looking, half-built, over-full and very deep."""
    deep = st.builds(_chain, st.sampled_from([31, 32, 33, 60, 90]), _leaf_pb(),
                     st.sampled_from(["all", "any", "none"]))
    wide = st.builds(lambda leaf, n: segments_pb2.Condition(any=[leaf] * n), _leaf_pb(),
                     st.sampled_from([1001, 2000]))
    return st.one_of(st.recursive(_leaf_pb(), _group, max_leaves=8), deep, wide)


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), _DOUBLES,
                          _words)


def condition_json() -> st.SearchStrategy[object]:
    """Trees in their JSON form with wrong types anywhere: what a file or a caller of the
    domain may hand over before protobuf has checked a single type."""
    keys = st.sampled_from(
        ["all", "any", "none", "event", "abandoned", "attribute", "aggregate", "cohort",
         "reachable", "tag", "segment", "filter", "window", "count", "measure", "not_happened",
         "type", "name", "product_ids", "category", "search", "equals", "contains", "channel",
         "order", "properties", "min", "max", "from_date", "to_date", "from_days_ago",
         "to_days_ago", "in", "range", "exists", "cells", "r", "f", "m", "kind", "consent",
         "absent", "value", "cart_only", "brand", "advertiser", "campaign", "ad", "bogus"])
    return st.recursive(
        _json_scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                st.dictionaries(st.one_of(keys, _words), inner, max_size=3)),
        max_leaves=12)


@st.composite
def _packed(draw: st.DrawFn) -> events_pb2.PackedEvents:
    """Columns of one length (reaching the per-row checks) or of mismatched lengths."""
    n = draw(st.integers(0, 4))
    same = draw(st.booleans())

    def size() -> int:
        return n if same else draw(st.integers(0, 5))

    idx = _ints(32, False) if not same else st.integers(0, 3)
    m = events_pb2.PackedEvents(texts=draw(st.lists(_words, max_size=4)))
    k = size()
    m.event_ids.extend(draw(st.lists(edge_strings(), min_size=k, max_size=k)))
    people = draw(st.lists(identifiers(), max_size=3))
    m.identifier_kinds.extend(p.kind for p in people)
    m.identifier_values.extend(p.value for p in people)
    for name in ("identifier", "source", "product_id", "category", "brand", "phrase",
                 "campaign"):
        k = size()
        getattr(m, name).extend(draw(st.lists(idx, min_size=k, max_size=k)))
    for name, values in (("type", _ints(32, True)), ("channel", _ints(32, True)),
                         ("time_ms", _ints(64, True)), ("quantity", _ints(32, True)),
                         ("results_count", _ints(32, True)), ("action", _ints(32, True)),
                         ("price", _DOUBLES)):
        field = m.DESCRIPTOR.fields_by_name[name]
        if field.type == d.FieldDescriptor.TYPE_UINT32:
            values = _ints(32, False)
        elif field.type == d.FieldDescriptor.TYPE_UINT64:
            values = _ints(64, False)
        elif field.type == d.FieldDescriptor.TYPE_INT64:
            values = _ints(64, True)
        k = size()
        getattr(m, name).extend(draw(st.lists(values, min_size=k, max_size=k)))
    return m


def _targeted() -> dict[str, Callable[[], st.SearchStrategy[Message]]]:
    return {
        "identity.v1.Identifier": identifiers,
        "identity.v1.Condition": conditions_pb,
        "identity.v1.PackedEvents": _packed,
        "google.protobuf.Timestamp": lambda: _time("Timestamp"),
        "google.protobuf.Duration": lambda: _time("Duration"),
    }


# -- the generic walk ------------------------------------------------------------------

_F = d.FieldDescriptor
_SCALARS: dict[int, st.SearchStrategy[object]] = {
    _F.TYPE_INT32: _ints(32, True), _F.TYPE_SINT32: _ints(32, True),
    _F.TYPE_SFIXED32: _ints(32, True), _F.TYPE_INT64: _ints(64, True),
    _F.TYPE_SINT64: _ints(64, True), _F.TYPE_SFIXED64: _ints(64, True),
    _F.TYPE_UINT32: _ints(32, False), _F.TYPE_FIXED32: _ints(32, False),
    _F.TYPE_UINT64: _ints(64, False), _F.TYPE_FIXED64: _ints(64, False),
    _F.TYPE_DOUBLE: _DOUBLES, _F.TYPE_FLOAT: _FLOATS, _F.TYPE_BOOL: st.booleans(),
    _F.TYPE_BYTES: st.binary(max_size=64),
}
MAX_DEPTH = 3


def _enum(field: d.FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    unknown = [max(known) + 1, 99, -1, 2**31 - 1, -(2**31)]
    return st.one_of(st.sampled_from(known), st.sampled_from(unknown))


def _value(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy[object]:
    if field.type == _F.TYPE_MESSAGE:
        return message_of(field.message_type, depth + 1)
    if field.type == _F.TYPE_ENUM:
        return _enum(field)
    if field.type == _F.TYPE_STRING:
        return edge_strings()
    return _SCALARS[field.type]


def _is_map(field: d.FieldDescriptor) -> bool:
    return (field.type == _F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)


def _repeated(field: d.FieldDescriptor) -> bool:
    return field.is_repeated


@st.composite
def _walk(draw: st.DrawFn, descriptor: d.Descriptor, depth: int) -> Message:
    from google.protobuf import message_factory

    message = message_factory.GetMessageClass(descriptor)()
    real_oneofs = [o for o in descriptor.oneofs if not _synthetic(o)]
    chosen = {o.name: draw(st.sampled_from([None, *o.fields])) for o in real_oneofs}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and not _synthetic(oneof):
            if chosen[oneof.name] is not field:
                continue
        elif not draw(st.booleans()):  # every other field: set or left unset
            continue
        if field.type == _F.TYPE_MESSAGE and depth >= MAX_DEPTH and not _is_map(field):
            continue
        if _is_map(field):
            key = field.message_type.fields_by_name["key"]
            value = field.message_type.fields_by_name["value"]
            entries = draw(st.dictionaries(_value(key, depth), _value(value, depth), max_size=3))
            target = getattr(message, field.name)
            for k, v in entries.items():
                if value.type == _F.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif _repeated(field):
            values = draw(st.lists(_value(field, depth), max_size=3))
            target = getattr(message, field.name)
            if field.type == _F.TYPE_MESSAGE:
                for v in values:
                    target.add().CopyFrom(v)
            else:
                target.extend(values)
        elif field.type == _F.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(_value(field, depth)))
        else:
            setattr(message, field.name, draw(_value(field, depth)))
    return message


def _synthetic(oneof: d.OneofDescriptor) -> bool:
    """A proto3 ``optional`` field's hidden oneof (not a real choice between fields)."""
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def message_of(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of ``descriptor``: the generic walk, or a targeted strategy where one exists."""
    targeted = _targeted().get(descriptor.full_name)
    walk = _walk(descriptor, depth)
    if targeted is None:
        return walk
    if descriptor.full_name.startswith("google.protobuf."):
        return targeted()
    return st.one_of(targeted(), walk)


def stream_of(descriptor: d.Descriptor) -> st.SearchStrategy[list[Message]]:
    """The messages of a client stream: none, one, or a few."""
    return st.lists(message_of(descriptor), max_size=3)
