"""The segment engine: a condition tree evaluated as numpy operations over whole columns.

Every leaf becomes a boolean array over persons (indexed by root node, see
``identity.population``): event leaves select rows of one type (a row index per
type, extended as batches arrive), filter them with vectorised comparisons, map
rows to persons with ``root[node]`` and count with ``np.bincount``; groups are
boolean algebra. Nothing loops in Python over persons or events. Relative windows
are turned into UTC bounds at query time from calendar days in the configured
time zone (``identity.localdays``), so a segment is never stale.

Meanings: windows are inclusive and end at ``as_of`` at the latest; counts are of
distinct events after identity merge (an order seen on the site and at the till is
one order; cancelled orders, as of ``as_of``, are left out of orders and
aggregates); "not happened" is a count of zero; a missing attribute or aggregate
fails every comparison except ``exists: false``. Leaf results are cached per data
version (rows, graph, attributes, tags) and evaluation bounds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from identity.columns import ORDER_LINE, ColumnView, EventColumns
from identity.conditions import (
    EVENT_TYPES, IDENTIFIER_KINDS, AbandonedLeaf, AggregateLeaf, AttributeLeaf, CohortLeaf,
    EventFilter, EventLeaf, Group, Node, Range, ReachableLeaf, SegmentLeaf, TagLeaf, Window,
)
from identity.errors import InvalidArgument
from identity.localdays import LocalDays
from identity.population import CONSENT_SLOT, SLOTS, Population
from identity.rfm import CohortMatrix, quintile_scores
from identity.store import Txn
from identity.strings import StringDictionary
from identity.tags import TagStore

__all__ = ["SegmentEngine", "Evaluation"]

ORDER, CANCELLED = 5, 6
CHANNELS = {"app": 1, "web": 2, "pos": 3, "email": 4, "push": 5, "sms": 6}
_CACHE_SIZE = 256


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


class _TextIndex:
    """Interned-string ids by normalised text, scanned incrementally as the dictionary grows."""

    def __init__(self, strings: StringDictionary):
        self.strings = strings
        self._scans: dict[tuple[str, str], tuple[int, list[int]]] = {}
        self._lock = threading.Lock()

    def ids(self, how: str, text: str) -> np.ndarray:
        """Ids whose text ``how``-matches ``text``: equals, under (category), phrase, contains."""
        key = (how, text)
        with self._lock:
            done, found = self._scans.get(key, (1, []))
            found = list(found)
            want = _norm(how, text)
            end = len(self.strings)
            i = done
            while i < end:
                try:
                    candidate = self.strings.text(i)
                except KeyError:
                    break
                if _matches(how, _norm(how, candidate), want):
                    found.append(i)
                i += 1
            self._scans[key] = (i, found)
            return np.array(found, dtype=np.uint32)


def _norm(how: str, text: str) -> str:
    if how in ("phrase", "contains"):
        return "".join(text.casefold().split())
    return text.strip().casefold()


def _matches(how: str, candidate: str, want: str) -> bool:
    if how == "under":
        return candidate == want or candidate.startswith(want.rstrip("/") + "/")
    if how == "contains":
        return want in candidate
    return candidate == want


class SegmentEngine:
    """Evaluates parsed trees over the event columns, the population and the tags."""

    def __init__(self, columns: EventColumns, strings: StringDictionary, population: Population,
                 tags: TagStore, days: LocalDays, matrix: CohortMatrix):
        self.columns, self.population, self.tags = columns, population, tags
        self.days, self.matrix = days, matrix
        self.text = _TextIndex(strings)
        self._lock = threading.Lock()
        self._type_rows: dict[int, np.ndarray] = {}
        self._typed_upto = 0
        self._cache: OrderedDict[tuple, object] = OrderedDict()

    # -- the query ---------------------------------------------------------

    def evaluate(self, tx: Txn, tree: Node, as_of_ms: int,
                 resolve: Callable[[SegmentLeaf], Node], explain: bool = False) -> Evaluation:
        cols = self.columns.snapshot()
        self.population.refresh(tx, cols.node, cols.type)
        q = _Query(self, cols, self.population.roots(), as_of_ms // 1000, resolve, explain)
        members = q.node(tree) & q.persons
        return Evaluation(members, int(np.count_nonzero(q.persons)), q.explained)

    def cohort_cells(self, tx: Txn, as_of_ms: int) -> np.ndarray:
        """Every person's RF cell index (-1: none), by root node, as of a time."""
        cols = self.columns.snapshot()
        self.population.refresh(tx, cols.node, cols.type)
        q = _Query(self, cols, self.population.roots(), as_of_ms // 1000, lambda leaf: leaf,
                   False)
        return np.where(q.persons, q.cohorts()["cell"], -1)

    def rows_of_type(self, cols: ColumnView, code: int) -> np.ndarray:
        """Row indices of one type, in commit order; extended incrementally."""
        with self._lock:
            size = cols.rows
            if size > self._typed_upto:
                fresh = cols.type[self._typed_upto : size]
                for t in np.unique(fresh).tolist():
                    add = np.flatnonzero(fresh == t) + self._typed_upto
                    old = self._type_rows.get(t)
                    self._type_rows[t] = add if old is None else np.concatenate([old, add])
                self._typed_upto = size
            rows = self._type_rows.get(code, np.zeros(0, dtype=np.int64))
            return rows[: np.searchsorted(rows, size)]

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


class _Query:
    """The state of one evaluation: a snapshot of rows and roots, bounds, results by path."""

    def __init__(self, engine: SegmentEngine, cols: ColumnView, root: np.ndarray, as_of: int,
                 resolve: Callable[[SegmentLeaf], Node], explain: bool):
        self.e, self.cols, self.root, self.as_of = engine, cols, root, as_of
        self.n = len(root)
        ids = np.arange(self.n)
        self.persons = (root == ids) & (ids > 0)
        self.today = engine.days.day_of(as_of)
        self.resolve = resolve
        self.explain = explain
        self.explained: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.version = (cols.rows, engine.population.version, engine.tags.version)
        self.max_time = int(cols.time.max()) if cols.rows else 0
        self._stack: list[str] = []

    # -- tree --------------------------------------------------------------

    def node(self, node: Node) -> np.ndarray:
        if isinstance(node, Group):
            parts = [self.node(child) for child in node.children]
            result = np.logical_or.reduce(parts) if node.op != "all" \
                else np.logical_and.reduce(parts)
            if node.op == "none":
                result = ~result
            measured = None
        elif isinstance(node, SegmentLeaf):
            if node.name in self._stack:
                raise InvalidArgument.field(f"{node.path}.name", "segments refer to each other")
            self._stack.append(node.name)
            result, measured = self.node(self.resolve(node)), None
            self._stack.pop()
        else:
            key = (replace(node, path=""), *self._bounds_key(node), self.version)
            result, measured = self.e.cached(key, lambda: self._leaf(node))  # type: ignore
        if self.explain:
            self.explained[node.path] = (result, measured)
        return result

    def _bounds_key(self, node: Node) -> tuple[int, ...]:
        """What a leaf's value depends on besides itself and the data."""
        as_of = min(self.as_of, self.max_time)
        if isinstance(node, (EventLeaf, AbandonedLeaf)):
            return (*self.window(node.window), as_of)
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

    def cancelled(self) -> np.ndarray:
        rows = self.e.rows_of_type(self.cols, CANCELLED)
        rows = rows[self.cols.time[rows] <= self.as_of]
        return np.unique(self.cols.order[rows])

    def rows(self, f: EventFilter, w: Window, code: int, action: int = 0) -> np.ndarray:
        """Row indices of type ``code`` matching the filter in the window."""
        c = self.cols
        rows = self.e.rows_of_type(c, code)
        lo, hi = self.window(w)
        t = c.time[rows]
        rows = rows[(t >= lo) & (t <= hi)]
        tests: list[tuple[str, np.ndarray]] = []
        if action:
            rows = rows[c.action[rows] == action]
        if f.channel:
            rows = rows[c.channel[rows] == CHANNELS[f.channel]]
        text = self.e.text
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
        if f.name:
            tests.append(("label", text.ids("exact", f.name)))
        for key, value in f.order:
            tests.append(("label" if key == "cuisine" else "place", text.ids("equals", value)))
        for column, ids in tests:
            rows = rows[np.isin(c[column][rows], ids)]
        if code in (ORDER, ORDER_LINE) and len(rows):
            rows = rows[~np.isin(c.order[rows], self.cancelled())]
        return rows

    # -- leaves ------------------------------------------------------------

    def event(self, leaf: EventLeaf) -> tuple[np.ndarray, np.ndarray]:
        f = leaf.filter
        code, action = EVENT_TYPES[f.type]
        lines = code == ORDER and bool(f.product_ids or f.category or f.brand
                                       or leaf.measure == "distinct_products")
        rows = self.rows(f, leaf.window, ORDER_LINE if lines else code, action)
        c = self.cols
        person = self.root[c.node[rows]]
        keep = person > 0
        rows, person = rows[keep], person[keep]
        if leaf.measure == "distinct_products":
            product = c.product[rows].astype(np.int64)
            known = product > 0
            keys = np.unique((person[known] << 32) | product[known])
            values = np.bincount(keys >> 32, minlength=self.n).astype(np.float64)
        elif code == ORDER:
            # one order (or order line) per person however many sightings it has
            key = (person << 32) | c.order[rows].astype(np.int64)
            if leaf.measure == "amount":
                if lines:  # each line once: (person, order, product)
                    pairs = np.stack([key, c.product[rows].astype(np.int64)], axis=1)
                    _, first = np.unique(pairs, axis=0, return_index=True)
                else:
                    _, first = np.unique(key, return_index=True)
                values = np.bincount(person[first], weights=c.amount[rows[first]],
                                     minlength=self.n)
            else:
                values = np.bincount(np.unique(key) >> 32, minlength=self.n)
                values = values.astype(np.float64)
        elif leaf.measure == "amount":
            values = np.bincount(person, weights=c.amount[rows], minlength=self.n)
        else:
            values = np.bincount(person, minlength=self.n).astype(np.float64)
        if leaf.not_happened:
            return values == 0, values
        return _in_range(values, leaf.count), values

    def abandoned(self, leaf: AbandonedLeaf) -> tuple[np.ndarray, np.ndarray]:
        c = self.cols
        looked = [self.rows(leaf.filter, leaf.window, 2)]
        if not leaf.cart_only:
            looked.append(self.rows(leaf.filter, leaf.window, 1))
        rows = np.concatenate(looked)
        person = self.root[c.node[rows]]
        keep = (person > 0) & (c.product[rows] > 0)
        rows, person = rows[keep], person[keep]
        key = (person << 32) | c.product[rows].astype(np.int64)
        viewed = np.unique(key)
        last_look = np.zeros(len(viewed), dtype=np.int64)
        np.maximum.at(last_look, np.searchsorted(viewed, key), c.time[rows].astype(np.int64))
        bought = self.rows(EventFilter(), Window(), ORDER_LINE)
        bperson = self.root[c.node[bought]]
        bkey = (bperson << 32) | c.product[bought].astype(np.int64)
        inside = np.isin(bkey, viewed)
        last_buy = np.full(len(viewed), -1, dtype=np.int64)
        np.maximum.at(last_buy, np.searchsorted(viewed, bkey[inside]),
                      c.time[bought[inside]].astype(np.int64))
        left = viewed[last_buy < last_look]
        values = np.bincount(left >> 32, minlength=self.n).astype(np.float64)
        return _in_range(values, leaf.count), values

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

    def _aggregates(self) -> dict[str, np.ndarray]:
        c, n = self.cols, self.n
        rows = self.rows(EventFilter(), Window(), ORDER)
        person = self.root[c.node[rows]]
        keep = person > 0
        rows, person = rows[keep], person[keep]
        key = (person << 32) | c.order[rows].astype(np.int64)
        _, first = np.unique(key, return_index=True)
        count = np.bincount(person[first], minlength=n).astype(np.float64)
        total = np.bincount(person[first], weights=c.amount[rows[first]], minlength=n)
        last_order = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last_order, person, c.time[rows].astype(np.int64))
        every = np.flatnonzero(c.time <= self.as_of)
        active = self.root[c.node[every]]
        last_seen = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last_seen, active, c.time[every].astype(np.int64))
        last_seen[0] = -1
        with np.errstate(invalid="ignore", divide="ignore"):
            average = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        days = self.e.days
        since_order = np.where(last_order >= 0, self.today - days.day_of(last_order), np.nan)
        since_seen = np.where(last_seen >= 0, self.today - days.day_of(last_seen), np.nan)
        return {"orders_count": count, "total_spent": total, "average_check": average,
                "days_since_last_order": since_order.astype(np.float64),
                "days_since_last_activity": since_seen.astype(np.float64)}

    def cohorts(self) -> dict[str, np.ndarray]:
        """Per person: RF cell index (-1 none) and R, F, M scores (0 without orders)."""
        a = self.aggregates()
        orders = a["orders_count"]
        days = np.nan_to_num(a["days_since_last_order"], nan=-1).astype(np.int64)
        buyers = (orders > 0) & self.persons
        cell = self.e.matrix.assign(np.where(buyers, orders, 0).astype(np.int64), days)
        return {"cell": cell, "r": quintile_scores(-days, buyers),
                "f": quintile_scores(orders, buyers),
                "m": quintile_scores(a["total_spent"], buyers)}

    def cohort(self, leaf: CohortLeaf) -> np.ndarray:
        scores = self.cohorts()
        hit = scores["cell"] >= 0
        if leaf.cells:
            wanted = [self.e.matrix.names.index(name) for name in leaf.cells]
            hit &= np.isin(scores["cell"], wanted)
        for key in ("r", "f", "m"):
            rng = getattr(leaf, key)
            if rng is not None:
                hit &= (scores[key] > 0) & _in_range(scores[key], rng)
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
