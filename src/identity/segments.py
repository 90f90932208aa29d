"""The segment engine: a condition tree evaluated as numpy operations over whole columns.

Every leaf becomes an array over persons (indexed by root node, see
``identity.population``). Event leaves read the rows of one type in their window as
a slice of that type's time-sorted part (``identity.event_index``), filter them with
table lookups over interned-string ids, map rows to persons with ``root[node]`` and
count with ``np.bincount``; aggregates reduce per-node facts the index keeps current
to per-person ones; groups are boolean algebra. Nothing loops in Python over persons
or events. Relative windows are turned into UTC bounds at query time from calendar
days in the configured time zone (``identity.localdays``), so a segment is never stale.

Meanings: windows are inclusive and end at ``as_of`` at the latest; counts are of
distinct events after identity merge (an order seen on the site and at the till is
one order; cancelled orders, as of ``as_of``, are left out of orders and
aggregates); "not happened" is a count of zero; a missing attribute or aggregate
fails every comparison except ``exists: false``. Leaf results are cached per data
version (rows, graph, attributes, tags) and evaluation bounds.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from identity.columns import ORDER_LINE, PROPERTY, EventColumns
from identity.conditions import (
    EVENT_TYPES, IDENTIFIER_KINDS, AbandonedLeaf, AggregateLeaf, AttributeLeaf, CohortLeaf,
    EventFilter, EventLeaf, Group, Node, Range, ReachableLeaf, SegmentLeaf, TagLeaf, Window,
)
from identity.errors import InvalidArgument
from identity.event_index import NO_DAY, ORDER, EventIndex, State
from identity.localdays import LocalDays
from identity.population import CONSENT_SLOT, SLOTS, Population
from identity.rfm import CohortMatrix, quintile_scores
from identity.store import Txn
from identity.strings import StringDictionary
from identity.tags import TagStore
from identity.text_index import TextIndex

__all__ = ["SegmentEngine", "Evaluation"]

CHANNELS = {"app": 1, "web": 2, "pos": 3, "email": 4, "push": 5, "sms": 6}
_CACHE_SIZE = 256
SCOPE_BELOW = 0.5  # row-reading leaves look at in-scope rows only below this share of persons
PRODUCT_READS = 0.25  # product filters read their products' rows below this share of a window
# order parameter -> column of ORDER and line rows (``identity.columns``)
ORDER_COLUMNS = {"cuisine": "label", "store": "place", "meal_type": "detail",
                 "delivery_city": "city", "restaurant": "venue"}
_MIX = np.uint32(0x9E3779B1)


def _bit(product: np.ndarray) -> np.ndarray:
    """Which of 32 signature bits a product id sets: the top 5 bits of a product hash."""
    return (product.astype(np.uint32, copy=False) * _MIX) >> np.uint32(27)


@dataclass
class Evaluation:
    """One query's result: members (bool per root node) and, on request, every node's."""

    members: np.ndarray
    persons: int
    nodes: dict[str, tuple[np.ndarray, np.ndarray | None]]


def _in_range(values: np.ndarray, rng: Range) -> np.ndarray:
    hit = np.ones(len(values), dtype=bool)
    if rng.min is not None:
        hit &= values >= rng.min
    if rng.max is not None:
        hit &= values <= rng.max
    return hit


class SegmentEngine:
    """Evaluates parsed trees over the event index, the population and the tags."""

    def __init__(self, columns: EventColumns, strings: StringDictionary, population: Population,
                 tags: TagStore, days: LocalDays, matrix: CohortMatrix):
        self.columns, self.population, self.tags = columns, population, tags
        self.days, self.matrix = days, matrix
        self.text = TextIndex(strings)
        self.index = EventIndex(columns, days.day_of)
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._version: tuple[int, ...] = ()  # data version of the cached results

    # -- the query ---------------------------------------------------------

    def evaluate(self, tx: Txn, tree: Node, as_of_ms: int,
                 resolve: Callable[[SegmentLeaf], Node], explain: bool = False,
                 state: State | None = None) -> Evaluation:
        """``state``: an ``index.sync()`` taken before ``tx`` began (else one is taken now)."""
        q = self._query(tx, as_of_ms, resolve, explain, state)
        members = q.node(tree) & q.persons
        return Evaluation(members, int(np.count_nonzero(q.persons)), q.explained)

    def cohort_cells(self, tx: Txn, as_of_ms: int, state: State | None = None) -> np.ndarray:
        """Every person's RF cell index (-1: none), by root node, as of a time."""
        q = self._query(tx, as_of_ms, lambda leaf: leaf, False, state)
        return np.where(q.persons, q.cells(), -1)

    def _query(self, tx: Txn, as_of_ms: int, resolve: Callable[[SegmentLeaf], Node],
               explain: bool, state: State | None) -> _Query:
        # Attributes of the state's rows are read from ``tx``: it must have begun after the
        # state was taken, or it may lack what the newest rows stated.
        state = state or self.index.sync()
        self.population.refresh(tx, state.cols.node, state.cols.type)
        root, population_version = self.population.versioned_roots()
        if len(root) < len(state.last_seen):  # nodes committed a moment ago: in no person yet
            root = _fit(root, len(state.last_seen), 0)
        query = _Query(self, state, root.astype(np.int32), as_of_ms // 1000, resolve, explain,
                       population_version)
        with self._lock:  # data moved on: results of older versions are never asked again
            if query.version != self._version:
                self._cache.clear()
                self._version = query.version
        return query

    def cached(self, key: tuple, compute: Callable[[], object]) -> object:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return value

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


def _fit(values: np.ndarray, n: int, fill) -> np.ndarray:
    """A per-node array cut or padded to ``n`` nodes."""
    if len(values) >= n:
        return values[:n]
    out = np.full(n, fill, dtype=values.dtype)
    out[: len(values)] = values
    return out


def _sum(index: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """``np.bincount`` with weights, always float64 (even over no rows)."""
    return np.bincount(index, weights=weights, minlength=n).astype(np.float64, copy=False)


def _latest(key: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Indices of the latest row of each key (ties: the later row)."""
    if not len(key):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(key)), time, key))
    return order[np.r_[key[order][1:] != key[order][:-1], True]]


def _isin(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``np.isin`` for interned-string ids: one gather from a table of the wanted ids
    (indices past the table clip to its last slot, which is never wanted); no sort."""
    if not len(ids):
        return np.zeros(len(values), dtype=bool)
    table = np.zeros(int(ids.max()) + 2, dtype=bool)
    table[ids] = True
    return table.take(values, mode="clip")


class _Query:
    """The state of one evaluation: the index state, roots, bounds, results by path."""

    def __init__(self, engine: SegmentEngine, state: State, root: np.ndarray, as_of: int,
                 resolve: Callable[[SegmentLeaf], Node], explain: bool, population_version: int):
        self.e, self.st, self.cols, self.root, self.as_of = engine, state, state.cols, root, as_of
        self.n = len(root)
        ids = np.arange(self.n)
        self.is_root = root == ids
        self.persons = self.is_root & (ids > 0)
        self.today = engine.days.day_of(as_of)
        self.resolve = resolve
        self.explain = explain
        self.explained: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.version = (state.cols.rows, population_version, engine.tags.version)
        self.max_time = max(state.max_time, 0)
        self._stack: list[str] = []
        self._scope_nodes: np.ndarray | None = None  # see _scoped
        cancelled = state.cancel_time <= as_of  # per order ref, as of the query's time
        self.cancelled = cancelled if cancelled.any() else None

    # -- tree --------------------------------------------------------------

    def node(self, node: Node, scope: np.ndarray | None = None) -> np.ndarray:
        """The node's value per person; exact where ``scope`` is True (None: everywhere).

        An ``all`` group evaluates its children cheapest first and gives each the persons
        still in (an ``any`` group, those not yet in), so conditions that read many rows
        look only at the rows of persons who can still match: their row filters drop
        the others' rows with a byte lookup before any other work. Explanations need
        every value, so they evaluate everything everywhere."""
        if self.explain:
            scope = None
        if isinstance(node, Group):
            result = None
            children = sorted(node.children, key=self._cost) if not self.explain \
                else node.children
            for child in children:
                if result is None:
                    within = scope
                else:
                    within = result if node.op == "all" else ~result
                    if scope is not None:
                        within = within & scope
                part = self.node(child, within)
                result = part if result is None else \
                    (result & part if node.op == "all" else result | part)
            if node.op == "none":
                result = ~result
            measured = None
        elif isinstance(node, SegmentLeaf):
            if node.name in self._stack:
                raise InvalidArgument.field(f"{node.path}.name", "segments refer to each other")
            self._stack.append(node.name)
            result, measured = self.node(self.resolve(node), scope), None
            self._stack.pop()
        else:
            key = (replace(node, path=""), *self._bounds_key(node), self.version)
            if isinstance(node, (EventLeaf, AbandonedLeaf)) and scope is not None \
                    and np.count_nonzero(scope) < SCOPE_BELOW * len(scope):
                key = (*key, hashlib.blake2b(np.packbits(scope).tobytes()).digest())
                result, measured = self.e.cached(key, lambda: self._scoped(node, scope))
            else:
                result, measured = self.e.cached(key, lambda: self._leaf(node))  # type: ignore
        if self.explain:
            self.explained[node.path] = (result, measured)
        return result

    def _scoped(self, node: Node, scope: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A row-reading leaf over the rows of nodes whose person is in ``scope`` only."""
        self._scope_nodes = scope[self.root]
        try:
            return self._leaf(node)
        finally:
            self._scope_nodes = None

    def _cost(self, node: Node) -> float:
        """Rows a condition reads (0 for conditions over persons only), to order ``all``."""
        if isinstance(node, Group):
            return sum(self._cost(child) for child in node.children)
        if isinstance(node, SegmentLeaf):
            return float("inf")
        if isinstance(node, EventLeaf):
            code, _ = EVENT_TYPES[node.filter.type]
            lines = code == ORDER and bool(node.filter.product_ids or node.filter.category
                                           or node.filter.brand)
            code = PROPERTY if node.filter.properties else ORDER_LINE if lines else code
            return self._rows_in(code, node.window)
        if isinstance(node, AbandonedLeaf):
            return self._rows_in(1, node.window) + self._rows_in(2, node.window) \
                + self._rows_in(ORDER_LINE, Window())
        return 0.0

    def _rows_in(self, code: int, w: Window) -> float:
        part = self.st.part(code)
        a, b = part.span(*self.window(w))
        return float(b - a + len(part.tail))

    def _bounds_key(self, node: Node) -> tuple[object, ...]:
        """What a leaf's value depends on besides itself and the data."""
        as_of = min(self.as_of, self.max_time)
        if isinstance(node, EventLeaf):
            return (*self.window(node.window), as_of)
        if isinstance(node, AbandonedLeaf):  # explained: exact counts, not just yes/no
            return (*self.window(node.window), as_of, self.explain)
        if isinstance(node, (AggregateLeaf, CohortLeaf)):
            return (as_of, self.today)
        if isinstance(node, AttributeLeaf):
            return (self.today,)
        return (self.as_of,)

    def _leaf(self, node: Node) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(node, EventLeaf):
            return self.event(node)
        if isinstance(node, AbandonedLeaf):
            return self.abandoned(node)
        if isinstance(node, AttributeLeaf):
            return self.attribute(node), None
        if isinstance(node, AggregateLeaf):
            values = self.aggregates()[node.name]
            return _in_range(values, node.range) & ~np.isnan(values), values
        if isinstance(node, CohortLeaf):
            return self.cohort(node), None
        if isinstance(node, ReachableLeaf):
            return self.reachable(node), None
        if isinstance(node, TagLeaf):
            return self.tag(node), None
        raise TypeError(f"not a leaf: {node!r}")

    # -- windows and rows --------------------------------------------------

    def window(self, w: Window) -> tuple[int, int]:
        """Inclusive UTC-second bounds of a window, ending at as_of at the latest."""
        days = self.e.days
        lo, hi = 0, self.as_of
        if w.from_date is not None:
            lo = days.start(days.day_number(w.from_date))
        if w.to_date is not None:
            hi = min(hi, days.start(days.day_number(w.to_date) + 1) - 1)
        if w.from_days_ago is not None:
            lo = days.start(self.today - w.from_days_ago)
        if w.to_days_ago is not None:
            hi = min(hi, days.start(self.today - w.to_days_ago + 1) - 1)
        return lo, hi

    def _tests(self, f: EventFilter) -> list[tuple[str, np.ndarray]]:
        """(column, wanted string ids) for every text filter of ``f``."""
        text = self.e.text
        tests: list[tuple[str, np.ndarray]] = []
        if f.product_ids:
            tests.append(("product", np.concatenate([text.ids("exact", p) for p in f.product_ids])))
        if f.category:
            tests.append(("category", text.ids("under", f.category)))
        if f.brand:
            tests.append(("brand", text.ids("equals", f.brand)))
        if f.search_equals:
            tests.append(("label", text.ids("phrase", f.search_equals)))
        if f.search_contains:
            tests.append(("label", text.ids("contains", f.search_contains)))
        if f.campaign:
            tests.append(("label", text.ids("equals", f.campaign)))
        if f.advertiser:
            tests.append(("place", text.ids("equals", f.advertiser)))
        if f.ad:
            tests.append(("detail", text.ids("exact", f.ad)))
        if f.name:
            tests.append(("label", text.ids("exact", f.name)))
        for key, value in f.order:
            tests.append((ORDER_COLUMNS[key], text.ids("equals", value)))
        return tests

    def select(self, code: int, f: EventFilter, w: Window, action: int = 0,
               extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """``person`` and the columns ``extra`` of the rows of type ``code`` in the window
        that match the filter, belong to a person and, for orders and their lines, were
        not cancelled as of ``as_of``. Cheap tests on the slice come first; the random
        ``root[node]`` gather is done for the rows that pass them only."""
        lo, hi = self.window(w)
        tests = self._tests(f)
        orders = code in (ORDER, ORDER_LINE)
        names = {"node", *extra, *(column for column, _ in tests)}
        if action:
            names.add("action")
        if f.channel:
            names.add("channel")
        if orders:
            names.add("order")
        part, names = self.st.part(code), tuple(sorted(names))
        products = next((ids for column, ids in tests if column == "product"), None)
        a, b = part.span(lo, hi)
        if products is not None \
                and 0 <= part.product_count(products) < PRODUCT_READS * (b - a):
            # a few products: their rows (grouped by product) instead of the window's slice
            rows = part.product_rows(products, lo, hi)
            chunks = [{name: part.column(name, rows) for name in names}]
            chunks += part.tail_chunk(self.cols, lo, hi, names)
        else:
            chunks = part.chunks(self.cols, lo, hi, names)
        outs = [self._filter(data, f, tests, action, orders, extra) for data in chunks]
        if len(outs) == 1:
            return outs[0]
        return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}

    def _filter(self, data: dict[str, np.ndarray], f: EventFilter,
                tests: list[tuple[str, np.ndarray]], action: int, orders: bool,
                extra: tuple[str, ...]) -> dict[str, np.ndarray]:
        """``select`` on one chunk of rows."""
        keep: np.ndarray | None = None

        def narrow(hit: np.ndarray) -> None:
            nonlocal keep
            keep = hit if keep is None else keep & hit

        if self._scope_nodes is not None:
            narrow(self._scope_nodes[data["node"]])
        if action:
            narrow(data["action"] == action)
        if f.channel:
            narrow(data["channel"] == CHANNELS[f.channel])
        for column, ids in tests:
            narrow(_isin(data[column], ids))
        if orders and len(data["order"]) and self.cancelled is not None:
            narrow(~self.cancelled.take(data["order"], mode="clip"))
        wanted = ("node", *extra)
        if keep is not None and not keep.all():
            rows = np.flatnonzero(keep)
            data = {name: data[name][rows] for name in wanted}
        person = self.root[data["node"]]
        out = {name: data[name] for name in extra}
        if len(person) and not person.all():  # nodes of erased persons
            known = person > 0
            person = person[known]
            out = {name: values[known] for name, values in out.items()}
        out["person"] = person
        return out

    # -- leaves ------------------------------------------------------------

    def event(self, leaf: EventLeaf) -> tuple[np.ndarray, np.ndarray]:
        f = leaf.filter
        code, action = EVENT_TYPES[f.type]
        if f.properties:
            values = self.custom_with_properties(leaf)
        else:
            lines = code == ORDER and bool(f.product_ids or f.category or f.brand
                                           or leaf.measure == "distinct_products")
            extra = ("amount",) if leaf.measure == "amount" else \
                ("product",) if leaf.measure == "distinct_products" or lines else ()
            if code == ORDER:  # what resolving orders seen twice needs
                extra = ("product", "amount", "order", "time") if lines else \
                    ("amount", "order", "time")
            d = self.select(ORDER_LINE if lines else code, f, leaf.window, action, extra)
            person = d["person"]
            if leaf.measure == "distinct_products":
                values = self._distinct_pairs(person, d["product"])
            elif code == ORDER:
                values = self._orders(d, lines, leaf.measure == "amount")
            elif leaf.measure == "amount":
                values = _sum(person, d["amount"], self.n)
            else:
                values = np.bincount(person, minlength=self.n).astype(np.float64)
        if leaf.not_happened:
            return values == 0, values
        return _in_range(values, leaf.count), values

    def _distinct_pairs(self, person: np.ndarray, product: np.ndarray) -> np.ndarray:
        known = product > 0
        keys = np.unique((person[known].astype(np.int64) << 32) | product[known])
        return np.bincount(keys >> 32, minlength=self.n).astype(np.float64)

    def _orders(self, d: dict[str, np.ndarray], lines: bool, amount: bool) -> np.ndarray:
        """Per person: distinct orders (or their amount) among selected ORDER or line rows.

        A plain order has one ORDER row, so its rows are its person's alone: ORDER rows
        count as they are, line rows through a bitmap of refs. Orders seen twice are
        resolved by (person, ref) over their few rows, keeping the latest sighting."""
        n, person, ref = self.n, d["person"], d["order"].astype(np.int64)
        special = self.st.special[ref]
        plain = ~special
        if amount:
            values = _sum(person[plain], d["amount"][plain], n)
        elif lines:
            owner = np.zeros(len(self.st.special), dtype=np.int64)
            owner[ref[plain]] = person[plain]  # every row of a plain ref has one person
            seen = np.zeros(len(self.st.special), dtype=bool)
            seen[ref[plain]] = True
            values = np.bincount(owner[seen], minlength=n).astype(np.float64)
        else:
            values = np.bincount(person[plain], minlength=n).astype(np.float64)
        if special.any():
            sp, sr, st = person[special], ref[special], d["time"][special]
            key = (sp.astype(np.int64) << 32) | sr
            if amount and lines:  # each (order, product) once, from one sighting
                pairs = np.stack([key, d["product"][special].astype(np.int64)], axis=1)
                _, pick = np.unique(pairs, axis=0, return_index=True)
                values += _sum(sp[pick], d["amount"][special][pick], n)
            elif amount:  # the latest sighting's amount
                last = _latest(key, st)
                values += _sum(sp[last], d["amount"][special][last], n)
            else:
                values += np.bincount(np.unique(key) >> 32, minlength=n)
        return values

    def custom_with_properties(self, leaf: EventLeaf) -> np.ndarray:
        """Per person: custom events of the name whose properties all equal the wanted ones.

        PROPERTY rows carry the event's seq in ``order``; an event matches when each of
        the wanted keys has a row with the wanted value."""
        f = leaf.filter
        text = self.e.text
        d = self.select(PROPERTY, replace(f, properties=()), leaf.window, 0,
                        ("order", "place", "detail"))
        hit = np.zeros(len(d["order"]), dtype=bool)
        for key, value in f.properties:
            hit |= _isin(d["place"], text.ids("exact", key)) \
                & _isin(d["detail"], text.ids("equals", value))
        seq = d["order"][hit].astype(np.int64)
        person = d["person"][hit]
        _events, first, matched = np.unique(seq, return_index=True, return_counts=True)
        whole = first[matched == len(f.properties)]
        return np.bincount(person[whole], minlength=self.n).astype(np.float64)

    def abandoned(self, leaf: AbandonedLeaf) -> tuple[np.ndarray, np.ndarray]:
        """Items looked at in the window and not ordered at or after the last look.

        Each person gets a 32-bit signature of the products it bought (one bit per
        product hash); a look whose bit is unset in its person's signature was never
        bought. The few others are checked exactly against the purchases of their
        persons: (person, product) keys, latest purchase time per key, one search."""
        looks = [self.select(2, leaf.filter, leaf.window, 0, ("product", "time"))]
        if not leaf.cart_only:
            looks.append(self.select(1, leaf.filter, leaf.window, 0, ("product", "time")))
        person = np.concatenate([d["person"] for d in looks])
        product = np.concatenate([d["product"] for d in looks])
        time = np.concatenate([d["time"] for d in looks])
        if len(product) and not product.all():
            known = product > 0
            person, product, time = person[known], product[known], time[known]
        bought = self.select(ORDER_LINE, EventFilter(), Window(), 0, ("product", "time"))
        bperson, bproduct = bought["person"], bought["product"]
        signature = np.zeros(self.n, dtype=np.uint32)
        np.bitwise_or.at(signature, bperson, np.left_shift(np.uint32(1), _bit(bproduct)))
        maybe = np.flatnonzero((signature[person] >> _bit(product)) & np.uint32(1))
        left = np.ones(len(person), dtype=bool)
        width = int(max(product.max(initial=0), bproduct.max(initial=0))) + 1
        if len(maybe):
            suspects = np.zeros(self.n, dtype=bool)
            suspects[person[maybe]] = True
            near = np.flatnonzero(suspects[bperson])
            keys = bperson[near].astype(np.int64) * width + bproduct[near]
            order = np.argsort(keys)
            keys, times = keys[order], bought["time"][near][order].astype(np.int64)
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            keys, times = keys[starts], np.maximum.reduceat(times, starts)  # latest per key
            wanted = person[maybe].astype(np.int64) * width + product[maybe]
            at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
            latest = np.where(keys[at] == wanted, times[at], -1)
            left[maybe] = time[maybe] > latest
        rng = leaf.count
        if not self.explain and rng.max is None and (rng.min is None or rng.min <= 1):
            has = np.zeros(self.n, dtype=bool)
            has[person[left]] = True
            values = has.astype(np.float64)  # 1: at least one item (exact count not needed)
        else:
            pairs = np.unique(person[left].astype(np.int64) * width + product[left])
            values = np.bincount(pairs // width, minlength=self.n).astype(np.float64)
        return _in_range(values, rng), values

    def attribute(self, leaf: AttributeLeaf) -> np.ndarray:
        pop = self.e.population
        if leaf.name == "age":
            born = self.e.cached(("born", self.version), lambda: pop.birth_days(self.root))
            d = self.e.days.date_of(self.today)
            today = d.year * 10000 + d.month * 100 + d.day
            known = born >= 0  # type: ignore[operator]
            age = np.where(known, (today - born) // 10000, -1)  # type: ignore[operator]
            if leaf.exists is not None:
                return known == leaf.exists
            if leaf.range is not None:
                return known & _in_range(age, leaf.range)
            values = [leaf.equals] if leaf.equals is not None else list(leaf.in_)
            wanted = [float(v) for v in values if _number(v)]
            return known & np.isin(age, wanted)
        slot = SLOTS[leaf.name]
        vids = self.e.cached(("attr", slot, self.version), lambda: pop.latest(slot, self.root))
        if leaf.exists is not None:
            return (vids >= 0) == leaf.exists  # type: ignore[operator]
        values = [leaf.equals] if leaf.equals is not None else list(leaf.in_)
        ids = [v for v in (pop.value_id(x) for x in values) if v is not None]
        return np.isin(vids, ids)  # type: ignore[arg-type]

    def aggregates(self) -> dict[str, np.ndarray]:
        key = ("aggregates", min(self.as_of, self.max_time), self.today, self.version)
        return self.e.cached(key, self._aggregates)  # type: ignore[return-value]

    def _person_sum(self, per_node: np.ndarray) -> np.ndarray:
        return np.bincount(self.root, weights=_fit(per_node, self.n, 0.0), minlength=self.n)

    def _person_max(self, per_node: np.ndarray, none: int = -1) -> np.ndarray:
        """Per person: the max over its nodes (``none``: none); only merged nodes scatter."""
        values = _fit(per_node, self.n, none)
        out = np.where(self.is_root, values, none).astype(np.int64)
        merged = np.flatnonzero(~self.is_root & (self.root > 0))
        np.maximum.at(out, self.root[merged], values[merged])
        return out

    def _aggregates(self) -> dict[str, np.ndarray]:
        st, n = self.st, self.n
        if self.as_of >= st.max_time:  # every event counts: the maintained per-node facts
            count = self._person_sum(st.orders)
            total = self._person_sum(st.spent)
            order_day = self._person_max(st.last_order_day, NO_DAY)
            seen_day = self._person_max(st.last_seen_day, NO_DAY)
        else:  # an earlier time: plain orders and activity from the rows up to as_of
            d = self.select(ORDER, EventFilter(), Window(), 0, ("amount", "order", "time"))
            plain = ~st.special[d["order"]]
            count = np.bincount(d["person"][plain], minlength=n).astype(np.float64)
            total = _sum(d["person"][plain], d["amount"][plain], n)
            last_order = np.full(n, -1, dtype=np.int64)
            np.maximum.at(last_order, d["person"][plain], d["time"][plain].astype(np.int64))
            last_seen = np.full(n, -1, dtype=np.int64)
            for code in list(st.parts):
                rows = st.part(code).select(self.cols, 0, self.as_of, ("node", "time"))
                np.maximum.at(last_seen, self.root[rows["node"]], rows["time"].astype(np.int64))
            last_seen[0] = -1
            order_day, seen_day = self._day(last_order), self._day(last_seen)
        # orders seen twice (or cancelled later): once per (person, ref), latest sighting
        rows = st.special_rows
        if len(rows):
            c = self.cols
            ref = c.order[rows].astype(np.int64)
            t = c.time[rows].astype(np.int64)
            person = self.root[c.node[rows]]
            keep = (t <= self.as_of) & (st.cancel_time[ref] > self.as_of) & (person > 0)
            ref, t, person, amount = ref[keep], t[keep], person[keep], c.amount[rows[keep]]
            key = (person.astype(np.int64) << 32) | ref
            last = _latest(key, t)
            count += np.bincount(person[last], minlength=n)
            total += _sum(person[last], amount[last], n)
            np.maximum.at(order_day, person[last], self._day(t[last]))
        seen_day[0] = NO_DAY
        with np.errstate(invalid="ignore", divide="ignore"):
            average = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return {"orders_count": count, "total_spent": total, "average_check": average,
                "days_since_last_order": self._days_since(order_day),
                "days_since_last_activity": self._days_since(seen_day)}

    def _day(self, times: np.ndarray) -> np.ndarray:
        """Local day numbers of times; NO_DAY where there is no time (-1)."""
        return np.where(times >= 0, self.e.days.day_of(np.maximum(times, 0)), NO_DAY)

    def _days_since(self, day: np.ndarray) -> np.ndarray:
        return np.where(day != NO_DAY, self.today - day, np.nan)

    def cells(self) -> np.ndarray:
        """Per person: RF cell index (-1 none)."""
        a = self.aggregates()
        return self.e.matrix.assign(a["orders_count"], a["days_since_last_order"])

    def scores(self, key: str) -> np.ndarray:
        """Per person: the R, F or M quintile score (0 without orders)."""
        a = self.aggregates()
        orders = a["orders_count"]
        buyers = (orders > 0) & self.persons
        if key == "r":
            days = np.nan_to_num(a["days_since_last_order"], nan=-1).astype(np.int64)
            return quintile_scores(-days, buyers)
        return quintile_scores(orders if key == "f" else a["total_spent"], buyers)

    def cohort(self, leaf: CohortLeaf) -> np.ndarray:
        cell = self.cells()
        if leaf.cells:  # a table over cell + 1 (slot 0: no cell)
            wanted = np.zeros(len(self.e.matrix.names) + 1, dtype=bool)
            wanted[[self.e.matrix.names.index(name) + 1 for name in leaf.cells]] = True
            hit = wanted[cell + 1]
        else:
            hit = cell >= 0
        for key in ("r", "f", "m"):
            rng = getattr(leaf, key)
            if rng is not None:
                score = self.scores(key)
                hit &= (score > 0) & _in_range(score, rng)
        return hit

    def reachable(self, leaf: ReachableLeaf) -> np.ndarray:
        if leaf.kind:
            kind = IDENTIFIER_KINDS.index(leaf.kind) + 1
            nodes = np.flatnonzero(self.e.population.kinds(self.n) == kind)
            return np.bincount(self.root[nodes], minlength=self.n)[: self.n] > 0
        slot = CONSENT_SLOT + CHANNELS[leaf.consent]
        pop = self.e.population
        vids = self.e.cached(("attr", slot, self.version), lambda: pop.latest(slot, self.root))
        granted = pop.value_id("1")
        return vids == (granted if granted is not None else -2)  # type: ignore[operator]

    def tag(self, leaf: TagLeaf) -> np.ndarray:
        t = self.e.tags.rows()
        tag_id = self.e.tags.id_of(leaf.name)
        has = np.zeros(self.n, dtype=bool)
        if tag_id is not None and len(t.node):
            sel = np.flatnonzero((t.tag == tag_id) & (t.time <= self.as_of * 1000 + 999))
            person = self.root[t.node[sel]]
            order = np.lexsort((sel, t.time[sel], person))
            sel, person = sel[order], person[order]
            last = np.flatnonzero(np.r_[person[1:] != person[:-1], True])
            sel, person = sel[last], person[last]
            on = t.cleared[sel] == 0
            if leaf.value is not None:
                value_id = self.e.tags.id_of(leaf.value)
                on &= t.value[sel] == (value_id if value_id is not None else -1)
            has[person[on & (person > 0)]] = True
        return ~has if leaf.absent else has


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
