"""The event columns laid out for segment queries, kept current as batches commit.

``identity.columns`` holds rows in commit order, which suits appends but makes every
windowed condition scan every row. This index keeps, per event type, copies of that
type's columns sorted by time, so a window is a slice found with ``np.searchsorted``;
rows committed since the last sort wait in a small unsorted *tail* (row numbers into
the commit-order columns) and are merged in once the tail outgrows an eighth of its
part, so appends stay cheap and queries never sort the whole history.

It also keeps facts per graph node that aggregates need, updated from the new rows
only: last activity, and for orders the count, total and last time of the orders
that only one row ever reported and that no cancellation touched ("plain" orders).
Orders seen twice (site and till) or cancelled are few; their rows are listed apart
and resolved at query time, so an order seen through two identifiers of one person
still counts once, and a cancellation is honoured as of the query's time. Per-node
facts (times, and their local day numbers for "days since") become per-person
ones through ``root[node]`` at query time, so merges and
splits need no rebuild. Order refs are dense integers (``identity.orders``), so
per-order facts are plain arrays indexed by ref.

``sync`` brings the index up to the columns' committed rows and returns a ``State``:
immutable arrays (updates copy before writing), safe to read while the next batch
arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from identity.columns import COLUMNS, ORDER_LINE, PROPERTY, ColumnView, EventColumns

__all__ = ["EventIndex", "State", "Part", "NEVER", "NO_DAY", "ORDER", "CANCELLED"]

ORDER, CANCELLED = 5, 6
NEVER = np.iinfo(np.int64).max
NO_DAY = -(1 << 40)
_MIN_TAIL = 1 << 14
_U32_MAX = (1 << 32) - 1
_ALL = tuple(name for name, _ in COLUMNS if name != "type")
_DTYPES = dict(COLUMNS)
_PRODUCT = ("node", "time", "channel", "product", "category", "brand", "amount", "quantity")
# Columns a type's rows can carry (identity.columns); the others are zero for that type and
# are not copied into its sorted part (a view reads them as zeros).
KEPT: dict[int, tuple[str, ...]] = {
    1: _PRODUCT, 2: _PRODUCT, 3: _PRODUCT, 4: _PRODUCT,
    ORDER: ("node", "time", "channel", "amount", "order", "label", "place", "detail", "city",
            "venue"),
    CANCELLED: ("node", "time", "channel", "order"),
    7: ("node", "time", "channel", "label"),
    8: ("node", "time", "channel", "action", "product", "label", "place", "detail"),
    9: ("node", "time", "channel", "action", "label"),
    10: ("node", "time", "channel", "order", "label"),
    11: ("node", "time", "channel"),
    ORDER_LINE: tuple(name for name in _ALL if name != "action"),
    PROPERTY: ("node", "time", "channel", "order", "label", "place", "detail"),
}


@dataclass(frozen=True)
class Part:
    """One event type's rows: ``sorted`` columns by time, plus ``tail`` row numbers.

    Types with products also list their sorted rows grouped by product
    (``by_product[product_start[p]:product_start[p + 1]]``), so a condition on a few
    product ids reads those products' rows instead of the window's."""

    sorted: dict[str, np.ndarray]
    tail: np.ndarray  # row numbers into the commit-order columns, not sorted
    by_product: np.ndarray | None = None
    product_start: np.ndarray | None = None

    @staticmethod
    def build(columns: dict[str, np.ndarray], tail: np.ndarray) -> Part:
        """A part over time-sorted ``columns``, with its product grouping."""
        product = columns.get("product")
        if product is None:
            return Part(columns, tail)
        counts = np.bincount(product) if len(product) else np.zeros(0, np.int64)
        start = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=start[1:])
        return Part(columns, tail, np.argsort(product, kind="stable").astype(np.int32), start)

    def product_rows(self, products: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
        """Positions of the sorted rows of ``products`` with ``lo <= time <= hi``, or None
        when this part has no product grouping."""
        if self.by_product is None or self.product_start is None:
            return None
        products = products[products < len(self.product_start) - 1].astype(np.int64)
        starts = self.product_start[products]
        lengths = self.product_start[products + 1] - starts
        total = int(lengths.sum())
        ends = np.cumsum(lengths)
        rows = self.by_product[np.arange(total) + np.repeat(starts - (ends - lengths), lengths)]
        t = self.sorted["time"][rows]
        return np.sort(rows[(t >= lo) & (t <= hi)])

    def product_count(self, products: np.ndarray) -> int:
        """Rows (any time) of ``products``; -1 when this part has no product grouping."""
        if self.product_start is None:
            return -1
        products = products[products < len(self.product_start) - 1].astype(np.int64)
        return int((self.product_start[products + 1] - self.product_start[products]).sum())

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name in self.sorted:
            return self.sorted[name][rows]
        return np.zeros(len(rows), _DTYPES[name])

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """Slice bounds of the sorted rows with ``lo <= time <= hi`` (a u32 search: a
        Python int would make numpy convert the whole column first)."""
        if hi < 0 or lo > _U32_MAX:
            return 0, 0
        times = self.sorted["time"]
        a = np.searchsorted(times, np.uint32(max(lo, 0)), "left")
        b = np.searchsorted(times, np.uint32(min(hi, _U32_MAX)), "right")
        return int(a), int(b)

    def chunks(self, cols: ColumnView, lo: int, hi: int, names: tuple[str, ...]
               ) -> list[dict[str, np.ndarray]]:
        """Columns ``names`` of the rows with ``lo <= time <= hi``: a slice of the sorted
        part (views, no copy), then the tail's rows in the window if there are any."""
        a, b = self.span(lo, hi)
        out = [{name: self.sorted[name][a:b] if name in self.sorted
                else np.broadcast_to(np.zeros(1, _DTYPES[name]), (b - a,)) for name in names}]
        return out + self.tail_chunk(cols, lo, hi, names)

    def tail_chunk(self, cols: ColumnView, lo: int, hi: int, names: tuple[str, ...]
                   ) -> list[dict[str, np.ndarray]]:
        """The tail's rows in the window, as one chunk (or none)."""
        if len(self.tail):
            t = cols["time"][self.tail]
            rows = self.tail[(t >= lo) & (t <= hi)]
            if len(rows):
                return [{name: cols[name][rows] for name in names}]
        return []

    def select(self, cols: ColumnView, lo: int, hi: int, names: tuple[str, ...]
               ) -> dict[str, np.ndarray]:
        """``chunks`` joined into one set of columns."""
        parts = self.chunks(cols, lo, hi, names)
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in names}

    def __len__(self) -> int:
        return len(self.sorted["time"]) + len(self.tail)


@dataclass(frozen=True)
class State:
    """What one query reads: the columns, the parts and the per-node and per-order facts."""

    cols: ColumnView
    parts: dict[int, Part]
    max_time: int  # latest event time (s); -1 without events
    last_seen: np.ndarray  # per node: latest event time, -1 none
    last_seen_day: np.ndarray  # per node: its local day number, NO_DAY none
    orders: np.ndarray  # per node: plain orders (float64)
    spent: np.ndarray  # per node: total of plain orders
    last_order: np.ndarray  # per node: time of the latest plain order, -1 none
    last_order_day: np.ndarray  # per node: its local day number, NO_DAY none
    cancel_time: np.ndarray  # per order ref: first cancellation time, NEVER if none
    special: np.ndarray  # per order ref: seen twice or cancelled (not plain)
    first_row: np.ndarray  # per order ref: commit-order row of its first ORDER row, -1
    special_rows: np.ndarray  # commit-order rows of ORDER rows of special refs

    def part(self, code: int) -> Part:
        found = self.parts.get(code)
        if found is None:
            return Part({"time": np.zeros(0, np.uint32)}, np.zeros(0, np.int64))
        return found


def _grow(array: np.ndarray, size: int, fill) -> np.ndarray:
    if size <= len(array):
        return array.copy()
    bigger = np.full(max(size, len(array) + len(array) // 2), fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class EventIndex:
    """Per-type time-sorted parts and per-node facts over one ``EventColumns``."""

    def __init__(self, columns: EventColumns, day_of: Callable[[np.ndarray], np.ndarray]):
        self.columns = columns
        self.day_of = day_of  # UTC seconds -> local day numbers (identity.localdays)
        self._lock = threading.Lock()
        self._upto = 0
        self._parts: dict[int, Part] = {}
        self._max_time = -1
        self._last_seen = np.zeros(0, np.int64)
        self._last_seen_day = np.zeros(0, np.int64)
        self._last_order_day = np.zeros(0, np.int64)
        self._orders = np.zeros(0, np.float64)
        self._spent = np.zeros(0, np.float64)
        self._last_order = np.zeros(0, np.int64)
        self._sightings = np.zeros(0, np.int32)
        self._cancel = np.zeros(0, np.int64)
        self._first_row = np.zeros(0, np.int64)
        self._special_rows = np.zeros(0, np.int64)
        self._state: State | None = None

    def sync(self) -> State:
        """Take in the rows committed since the last call; the current state."""
        with self._lock:
            cols = self.columns.snapshot()
            if self._state is not None and cols.rows == self._upto:
                return self._state
            start, end = self._upto, cols.rows
            self._add_rows(cols, start, end)
            self._upto = end
            self._state = State(cols, dict(self._parts), self._max_time, self._last_seen,
                                self._last_seen_day, self._orders, self._spent,
                                self._last_order, self._last_order_day, self._cancel,
                                (self._sightings > 1) | (self._cancel != NEVER),
                                self._first_row, self._special_rows)
            return self._state

    # -- taking in rows ------------------------------------------------------

    def _add_rows(self, cols: ColumnView, start: int, end: int) -> None:
        if end == start:
            return
        kind = cols["type"][start:end]
        node = cols["node"][start:end].astype(np.int64)
        time = cols["time"][start:end].astype(np.int64)
        self._max_time = max(self._max_time, int(time.max()))
        top = int(node.max()) + 1
        last_seen = _grow(self._last_seen, top, -1)
        np.maximum.at(last_seen, node, time)
        self._last_seen = last_seen
        touched = None if len(node) > len(last_seen) // 4 else np.unique(node)
        self._last_seen_day = self._days(last_seen, self._last_seen_day, touched)
        codes = np.unique(kind).tolist()
        for code in codes:
            rows = np.flatnonzero(kind == code) + start
            self._add_to_part(cols, int(code), rows)
        if ORDER in codes or CANCELLED in codes:
            self._add_orders(cols, start, end, kind, node, time, top)

    def _add_to_part(self, cols: ColumnView, code: int, rows: np.ndarray) -> None:
        part = self._parts.get(code)
        if part is None:
            part = Part.build({name: np.zeros(0, _DTYPES[name])
                               for name in KEPT.get(code, _ALL)}, np.zeros(0, np.int64))
        tail = np.concatenate([part.tail, rows]) if len(part.tail) else rows
        if len(tail) < max(_MIN_TAIL, len(part.sorted["time"]) // 8):
            self._parts[code] = Part(part.sorted, tail, part.by_product, part.product_start)
            return
        kept = KEPT.get(code, _ALL)
        fresh = {name: cols[name][tail] for name in kept}
        order = np.argsort(fresh["time"], kind="stable")
        fresh = {name: values[order] for name, values in fresh.items()}
        old = part.sorted
        if not len(old["time"]) or int(old["time"][-1]) <= int(fresh["time"][0]):
            merged = {name: np.concatenate([old[name], fresh[name]]) for name in kept}
        else:  # late events: a stable merge keeps commit order among equal times
            joined = {name: np.concatenate([old[name], fresh[name]]) for name in kept}
            order = np.argsort(joined["time"], kind="stable")
            merged = {name: values[order] for name, values in joined.items()}
        self._parts[code] = Part.build(merged, np.zeros(0, np.int64))

    def _add_orders(self, cols: ColumnView, start: int, end: int, kind: np.ndarray,
                    node: np.ndarray, time: np.ndarray, top: int) -> None:
        """Per-order facts and per-node plain-order facts for new ORDER and CANCELLED rows."""
        ref = cols["order"][start:end].astype(np.int64)
        placed = np.flatnonzero(kind == ORDER)
        cancels = np.flatnonzero(kind == CANCELLED)
        size = int(ref[np.r_[placed, cancels]].max()) + 1
        sightings = _grow(self._sightings, size, 0)
        cancel = _grow(self._cancel, size, NEVER)
        first_row = _grow(self._first_row, size, -1)
        touched = np.unique(ref[np.r_[placed, cancels]])
        was_plain = (sightings[touched] == 1) & (cancel[touched] == NEVER)
        np.add.at(sightings, ref[placed], 1)
        np.minimum.at(cancel, ref[cancels], time[cancels])
        refs, first = np.unique(ref[placed], return_index=True)
        new = first_row[refs] < 0
        first_row[refs[new]] = placed[first[new]] + start
        special = (sightings > 1) | (cancel != NEVER)
        orders = _grow(self._orders, top, 0.0)
        spent = _grow(self._spent, top, 0.0)
        last_order = _grow(self._last_order, top, -1)
        # plain orders that stop being plain: take them back, note their rows as special
        lost = touched[was_plain & special[touched]]
        lost_rows = first_row[lost]
        specials = [self._special_rows, lost_rows]
        if len(lost):
            lost_nodes = cols["node"][lost_rows].astype(np.int64)
            np.subtract.at(orders, lost_nodes, 1.0)
            np.subtract.at(spent, lost_nodes, cols["amount"][lost_rows].astype(np.float64))
            self._recompute_last_order(cols, last_order, np.unique(lost_nodes), special)
        plain = ~special[ref[placed]]
        rows = placed[plain]
        np.add.at(orders, node[rows], 1.0)
        np.add.at(spent, node[rows], cols["amount"][start:end][rows].astype(np.float64))
        np.maximum.at(last_order, node[rows], time[rows])
        specials.append(placed[~plain] + start)
        self._special_rows = np.concatenate(specials)
        self._sightings, self._cancel, self._first_row = sightings, cancel, first_row
        self._orders, self._spent, self._last_order = orders, spent, last_order
        changed = np.r_[node[rows], cols["node"][lost_rows].astype(np.int64)]
        touched = None if len(changed) > len(last_order) // 4 else np.unique(changed)
        self._last_order_day = self._days(last_order, self._last_order_day, touched)

    def _days(self, times: np.ndarray, days: np.ndarray, nodes: np.ndarray | None
              ) -> np.ndarray:
        """Local day numbers of per-node times (all, or those of ``nodes``), copied."""
        days = _grow(days, len(times), NO_DAY)
        if nodes is None:
            nodes = np.arange(len(times))
        t = times[nodes]
        days[nodes] = np.where(t >= 0, self.day_of(np.maximum(t, 0)), NO_DAY)
        return days

    def _recompute_last_order(self, cols: ColumnView, last_order: np.ndarray,
                              nodes: np.ndarray, special: np.ndarray) -> None:
        """Latest plain order of ``nodes`` again, from their ORDER rows (a max cannot be undone)."""
        last_order[nodes] = -1
        part = self._parts.get(ORDER)
        if part is None:
            return
        dirty = np.zeros(len(last_order), dtype=bool)
        dirty[nodes] = True
        for n, t, r in ((part.sorted["node"], part.sorted["time"], part.sorted["order"]),
                        (cols["node"][part.tail], cols["time"][part.tail],
                         cols["order"][part.tail])):
            n = n.astype(np.int64)
            hit = dirty[n] & ~special[r]
            np.maximum.at(last_order, n[hit], t[hit].astype(np.int64))
