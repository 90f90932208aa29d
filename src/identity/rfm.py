"""RF cohorts: a recency x frequency matrix of named cells, and R/F/M quintile scores.

The default matrix is the common 7-cell retention matrix, by orders count and
calendar days since the last order (as of the query time):

    orders  Newcomers  Promising  Loyal  Drifting  Sleeping  At risk  Lost
    1       0-40                         41-75     76+
    2                  0-51              52-75     76+
    3+                            0-51                       52-112   113+

A matrix is a list of cells, each a union of rules (orders range x days range,
inclusive); a person with no order is in no cell. Cells should not overlap; where
they do, the first listed wins.

Quintile scores (1-5, 5 best) are computed over the persons with at least one order
as of the query time. The value is -days since the last order for R, the orders
count for F and the total spent for M. A person's score is
``ceil(5 * at_or_below / n)``, where ``at_or_below`` is the number of those ``n``
persons whose value is not better: equal values always get equal scores, the best
value always scores 5, and ties can leave lower scores unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CellRule", "Cell", "CohortMatrix", "DEFAULT_MATRIX", "quintile_scores"]

_NO_END = 1 << 40


@dataclass(frozen=True)
class CellRule:
    """Orders count in ``[min_orders, max_orders]`` and days since last order in range."""

    min_orders: int
    max_orders: int
    min_days: int
    max_days: int


@dataclass(frozen=True)
class Cell:
    name: str
    rules: tuple[CellRule, ...]


@dataclass(frozen=True)
class CohortMatrix:
    """The configured cells, in display order."""

    cells: tuple[Cell, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(cell.name for cell in self.cells)

    def assign(self, orders: np.ndarray, days: np.ndarray) -> np.ndarray:
        """The cell index of every person (-1: none); ``orders`` 0 means no order, days
        below 0 or NaN mean no last order.

        One gather from a small table of (orders, days) -> cell: past the largest
        finite bound of any rule every value falls in the same cells, so both axes are
        clipped there (and negative days are in no cell)."""
        table, top_orders, top_days = self._table()
        d = np.fmin(np.fmax(days, -1), top_days)  # NaN -> -1 (fmax ignores NaN)
        index = np.minimum(orders, top_orders).astype(np.intp)
        index *= top_days + 2
        index += d.astype(np.intp)
        index += 1
        return table[index]

    def _table(self) -> tuple[np.ndarray, int, int]:
        """Cells of every (orders, days + 1) up to the clipping points, flattened."""
        ends = [v for c in self.cells for r in c.rules
                for v in (r.min_orders, r.max_orders) if v < _NO_END]
        top_orders = max(ends, default=1) + 1
        ends = [v for c in self.cells for r in c.rules
                for v in (r.min_days, r.max_days) if v < _NO_END]
        top_days = max(ends, default=0) + 1
        grid_orders = np.repeat(np.arange(top_orders + 1), top_days + 2)
        grid_days = np.tile(np.arange(-1, top_days + 1), top_orders + 1)
        return self._assign_by_rules(grid_orders, grid_days), top_orders, top_days

    def _assign_by_rules(self, orders: np.ndarray, days: np.ndarray) -> np.ndarray:
        cell = np.full(len(orders), -1, dtype=np.int16)
        for index in range(len(self.cells) - 1, -1, -1):  # first listed wins
            for rule in self.cells[index].rules:
                hit = ((orders >= max(rule.min_orders, 1)) & (orders <= rule.max_orders)
                       & (days >= rule.min_days) & (days <= rule.max_days))
                cell[hit] = index
        return cell

    def cell_of(self, orders: int, days: int) -> str:
        """One person's cell name ('' for none): the plain form, for explanations and tests."""
        for cell in self.cells:
            for rule in cell.rules:
                if (orders >= max(rule.min_orders, 1) and orders <= rule.max_orders
                        and rule.min_days <= days <= rule.max_days):
                    return cell.name
        return ""

    @classmethod
    def from_config(cls, data: list[dict]) -> CohortMatrix:
        """``[{"name": "Loyal", "rules": [{"orders": [3, null], "days": [0, 51]}]}, ...]``."""
        cells = []
        for entry in data:
            rules = []
            for rule in entry["rules"]:
                lo, hi = rule["orders"]
                dlo, dhi = rule["days"]
                rules.append(CellRule(int(lo), _NO_END if hi is None else int(hi),
                                      int(dlo), _NO_END if dhi is None else int(dhi)))
            cells.append(Cell(str(entry["name"]), tuple(rules)))
        names = [c.name for c in cells]
        if not cells or len(set(names)) != len(names):
            raise ValueError("a cohort matrix needs cells with distinct names")
        return cls(tuple(cells))


DEFAULT_MATRIX = CohortMatrix((
    Cell("Newcomers", (CellRule(1, 1, 0, 40),)),
    Cell("Promising", (CellRule(2, 2, 0, 51),)),
    Cell("Loyal", (CellRule(3, _NO_END, 0, 51),)),
    Cell("Drifting", (CellRule(1, 1, 41, 75), CellRule(2, 2, 52, 75))),
    Cell("Sleeping", (CellRule(1, 2, 76, _NO_END),)),
    Cell("At risk", (CellRule(3, _NO_END, 52, 112),)),
    Cell("Lost", (CellRule(3, _NO_END, 113, _NO_END),)),
))


def quintile_scores(values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Scores 1-5 of ``values`` (higher is better) among ``eligible``; 0 elsewhere."""
    scores = np.zeros(len(values), dtype=np.int8)
    pool = np.sort(values[eligible])
    n = len(pool)
    if n == 0:
        return scores
    at_or_below = np.searchsorted(pool, values[eligible], side="right")
    scores[eligible] = -((-5 * at_or_below) // n)  # ceil
    return scores
