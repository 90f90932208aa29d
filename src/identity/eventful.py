"""Which nodes have ever had an order, a message event or an attribute statement, and
which have ever unsubscribed.

A trigger decision reads a person's orders, message events and attributes (time
zone, consents). Most persons have none of these on most of their identifiers, yet
finding that out from the row store costs a cursor per node per kind. The event
columns (``identity.columns``) already hold every stored event in memory, so one
vectorised pass over the rows appended since the last look marks the nodes that have
such rows; ``Suppression.decide`` skips the reads for the rest (checks and audiences
on read snapshots; never inside a write job, whose group is not yet in the columns).

An unsubscribe counts however old it is, while orders and sends only count inside
windows of days. So a second mask marks the nodes with an unsubscribe message event:
only theirs are read back to the beginning, and a long-lived customer's years of
message events are not decoded on every check.

The masks only grow (a forgotten node stays marked and is simply read), so they never
hide an event that the columns hold. Columns are appended right after each commit,
before the write is acknowledged; a decision made in that instant may miss an event
whose own write has not been acknowledged yet, as if it had arrived a moment later.
"""

from __future__ import annotations

import threading
from typing import TypeVar

import numpy as np

from identity.columns import EventColumns
from identity.events import EventType, MessageAction

__all__ = ["EventfulNodes"]

T = TypeVar("T")
_KINDS = np.array([EventType.ORDER, EventType.MESSAGE, EventType.ATTRIBUTES], np.uint8)
_MESSAGE, _UNSUBSCRIBED = int(EventType.MESSAGE), int(MessageAction.UNSUBSCRIBED)


class EventfulNodes:
    """Growing boolean masks over node ids, caught up with the event columns on ``refresh``."""

    def __init__(self, columns: EventColumns):
        self.columns = columns
        self._rows = 0
        self._mask = np.zeros(0, dtype=bool)  # an order, message event or attribute statement
        self._unsubscribed = np.zeros(0, dtype=bool)  # an unsubscribe message event
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
            nodes = view["node"][self._rows :]
            self._mask = _marked(self._mask, nodes[np.isin(kinds, _KINDS)])
            quits = (kinds == _MESSAGE) & (view["action"][self._rows :] == _UNSUBSCRIBED)
            self._unsubscribed = _marked(self._unsubscribed, nodes[quits])
            self._rows = view.rows  # last: a check that sees it caught up sees both masks

    def pick(self, nodes: dict[int, T]) -> dict[int, T]:
        """The entries of ``nodes`` whose node may have such rows: all but those with none
        as of the last refresh."""
        return _picked(self._mask, nodes)

    def unsubscribed(self, nodes: dict[int, T]) -> dict[int, T]:
        """The entries of ``nodes`` whose node may have unsubscribed from some channel."""
        return _picked(self._unsubscribed, nodes)


def _marked(mask: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """``mask`` with ``nodes`` set, grown (a new array) when a node lies beyond it."""
    if len(nodes):
        top = int(nodes.max()) + 1
        if top > len(mask):
            grown = np.zeros(max(top, 2 * len(mask)), dtype=bool)
            grown[: len(mask)] = mask
            mask = grown
        mask[nodes] = True
    return mask


def _picked(mask: np.ndarray, nodes: dict[int, T]) -> dict[int, T]:
    size = len(mask)
    return {n: v for n, v in nodes.items() if n < size and mask[n]}
