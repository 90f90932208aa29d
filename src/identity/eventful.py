"""Which nodes have ever had an order, a message event or an attribute statement.

A trigger decision reads a person's orders, message events and attributes (time
zone, consents). Most persons have none of these on most of their identifiers, yet
finding that out from the row store costs a cursor per node per kind. The event
columns (``identity.columns``) already hold every stored event in memory, so one
vectorised pass over the rows appended since the last look marks the nodes that have
such rows; ``Suppression.decide`` skips the reads for the rest (checks and audiences
on read snapshots; never inside a write job, whose group is not yet in the columns).

The mask only grows (a forgotten node stays marked and is simply read), so it never
hides an event that the columns hold. Columns are appended right after each commit,
before the write is acknowledged; a decision made in that instant may miss an event
whose own write has not been acknowledged yet, as if it had arrived a moment later.
"""

from __future__ import annotations

import threading
from typing import TypeVar

import numpy as np

from identity.columns import EventColumns
from identity.events import EventType

__all__ = ["EventfulNodes"]

T = TypeVar("T")
_KINDS = np.array([EventType.ORDER, EventType.MESSAGE, EventType.ATTRIBUTES], np.uint8)


class EventfulNodes:
    """A growing boolean mask over node ids, caught up with the event columns on ``refresh``."""

    def __init__(self, columns: EventColumns):
        self.columns = columns
        self._rows = 0
        self._mask = np.zeros(0, dtype=bool)
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Mark the nodes of rows appended since the last refresh."""
        if len(self.columns) == self._rows:  # nothing appended: the usual case per check
            return
        with self._lock:
            view = self.columns.snapshot()
            if view.rows == self._rows:
                return
            kinds = view["type"][self._rows :]
            nodes = view["node"][self._rows :][np.isin(kinds, _KINDS)]
            if len(nodes):
                top = int(nodes.max()) + 1
                if top > len(self._mask):
                    grown = np.zeros(max(top, 2 * len(self._mask)), dtype=bool)
                    grown[: len(self._mask)] = self._mask
                    self._mask = grown
                self._mask[nodes] = True
            self._rows = view.rows

    def pick(self, nodes: dict[int, T]) -> dict[int, T]:
        """The entries of ``nodes`` whose node may have such rows: all but those with none
        as of the last refresh."""
        mask = self._mask
        size = len(mask)
        return {n: v for n, v in nodes.items() if n < size and mask[n]}
