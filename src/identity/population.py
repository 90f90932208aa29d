"""Who is who, as arrays: node -> person, node kinds and stated attributes per node.

Segments count persons, but events, attributes and tags stay keyed by the node
that produced them. This view keeps ``root[node]`` (0: erased) current from the
graph's listeners, so a merge or a split is visible to the next query without a
rebuild, and reduces per-node facts to per-person ones with ``latest``: among a
person's nodes, the value stated last wins. Persons are indexed by their root node,
so every per-person array has one slot per node and ``persons()`` marks the roots.

Start-up reads the ``nodes`` and ``attributes`` sub-databases once (one Python step
per record, not per event); later only new nodes and nodes that stated attributes
since the last query are re-read.
"""

from __future__ import annotations

import struct
import threading
from array import array
from datetime import date
from itertools import chain

import numpy as np

from identity.store import Txn

__all__ = ["Population", "SLOTS", "CONSENT_SLOT"]

_U64 = struct.Struct(">Q")
_ATTR_KEY = struct.Struct(">I")
_ATTR = struct.Struct("<BqIH")  # slot, time ms, seq, value length (identity.event_store)
CONSENT_SLOT = 16  # + channel number, as in identity.event_store
SLOTS = {"name": 0, "birth_date": 1, "city": 2, "time_zone": 3, "language": 4, "gender": 5}
_GENDERS = {"1": "female", "2": "male", "3": "other"}
_ATTRIBUTES_TYPE = 11


def _grow(array: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    if size <= len(array):
        return array
    bigger = np.full(max(size, 2 * len(array)), fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class Population:
    """Node -> root, node kinds and per-node attributes; thread-safe updates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root = np.zeros(1 << 12, dtype=np.uint32)
        self._kind = np.zeros(1 << 12, dtype=np.uint8)
        self._size = 1  # nodes are numbered from 1
        self._kinds_upto = 1
        self.version = 0
        # slot -> [time ms, seq, value id] per node; value ids index self._values
        self._attr: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._values: list[str] = [""]
        self._value_ids: dict[str, int] = {"": 0}
        self._attr_rows_seen = 0

    # -- keeping current ---------------------------------------------------

    def load(self, tx: Txn) -> None:
        """Read every node (root and kind) and every node's stated attributes."""
        keys, heads = [], []
        for key, value in tx.items("nodes"):
            keys.append(key)
            heads.append(value[:9])
        with self._lock:
            if keys:
                nodes = np.frombuffer(b"".join(keys), dtype=">u8").astype(np.int64)
                head = np.frombuffer(b"".join(heads), dtype=[("root", "<u8"), ("kind", "u1")])
                size = int(nodes.max()) + 1
                self._root = _grow(self._root, size)
                self._kind = _grow(self._kind, size)
                self._root[nodes] = head["root"]
                self._kind[nodes] = head["kind"]
                self._size = max(self._size, size)
                self._kinds_upto = self._size
            self.version += 1
        for key, raw in tx.items("attributes"):
            self._put_attributes(_ATTR_KEY.unpack(key)[0], raw)

    def assign(self, assignments: list[tuple[int, int]]) -> None:
        """Graph listener: (node, root) after a commit; root 0 means erased."""
        if not assignments:
            return
        if len(assignments) <= 32:  # a unary link's few: numpy's per-call overhead dominates
            size = max(node for node, _ in assignments) + 1
            with self._lock:
                self._root = _grow(self._root, size)
                self._kind = _grow(self._kind, size)
                root = self._root
                for node, person in assignments:
                    root[node] = person
                self._size = max(self._size, size)
                self.version += 1
            return
        # Flattened through an array: a third faster than numpy reading a list of tuples.
        flat = array("q", chain.from_iterable(assignments))
        pairs = np.frombuffer(flat, dtype=np.int64).reshape(-1, 2)
        with self._lock:
            size = int(pairs[:, 0].max()) + 1
            self._root = _grow(self._root, size)
            self._kind = _grow(self._kind, size)
            self._root[pairs[:, 0]] = pairs[:, 1]
            self._size = max(self._size, size)
            self.version += 1

    def refresh(self, tx: Txn, node_col: np.ndarray, type_col: np.ndarray) -> None:
        """Read kinds of new nodes, and attributes of nodes that stated some since last time."""
        with self._lock:
            start, end = self._kinds_upto, self._size
        if end > start:
            # Listeners may already know nodes committed after ``tx`` began: read up to the
            # snapshot's last node and leave newer ones for a later call.
            last = tx.last_key("nodes")
            end = min(end, _U64.unpack(last)[0] + 1 if last else 1)
            kinds = []
            for key, value in tx.items("nodes", start=_U64.pack(start)):
                node = _U64.unpack(key)[0]
                if node >= end:
                    break
                kinds.append((node, value[8]))
            with self._lock:  # under the lock: ``assign`` may be swapping in a grown array
                for node, kind in kinds:
                    self._kind[node] = kind
                if end > self._kinds_upto:
                    self._kinds_upto = end
                    self.version += 1
        seen = self._attr_rows_seen
        if len(type_col) > seen:
            fresh = node_col[seen:][type_col[seen:] == _ATTRIBUTES_TYPE]
            for node in np.unique(fresh).tolist():
                raw = tx.get("attributes", _ATTR_KEY.pack(node))
                if raw is not None:
                    self._put_attributes(node, raw)
            self._attr_rows_seen = len(type_col)

    def _put_attributes(self, node: int, raw: bytes) -> None:
        pos = 0
        with self._lock:
            while pos < len(raw):
                slot, t, seq, length = _ATTR.unpack_from(raw, pos)
                pos += _ATTR.size
                text = bytes(raw[pos : pos + length]).decode()
                pos += length
                if slot == SLOTS["gender"]:
                    text = _GENDERS.get(text, text)
                value = text.strip().casefold()
                vid = self._value_ids.get(value)
                if vid is None:
                    vid = self._value_ids[value] = len(self._values)
                    self._values.append(value)
                arrays = self._attr.get(slot)
                if arrays is None or len(arrays[0]) <= node:
                    size = max(node + 1, len(self._root))
                    old = arrays or (np.zeros(0, np.int64), np.zeros(0, np.int64),
                                     np.zeros(0, np.int32))
                    arrays = (_grow(old[0], size, -1), _grow(old[1], size), _grow(old[2], size))
                    if not len(old[0]):
                        arrays[0][:] = -1
                    self._attr[slot] = arrays
                arrays[0][node], arrays[1][node], arrays[2][node] = t, seq, vid
            self.version += 1

    # -- reading -----------------------------------------------------------

    def roots(self) -> np.ndarray:
        """``root[node]`` for every node so far (a copy: later merges do not change it)."""
        return self.versioned_roots()[0]

    def versioned_roots(self) -> tuple[np.ndarray, int]:
        """``roots()`` and the version they are of, read together: results cached under a
        version must come from that version's roots (and so have its length)."""
        with self._lock:
            return self._root[: self._size].astype(np.int64), self.version

    def kinds(self, size: int) -> np.ndarray:
        with self._lock:
            return self._kind[:size].copy()

    def value_id(self, text: str) -> int | None:
        return self._value_ids.get(text.strip().casefold())

    def value_text(self, vid: int) -> str:
        return self._values[vid]

    def latest(self, slot: int, root: np.ndarray) -> np.ndarray:
        """Per person (indexed by root node): the value id stated last, -1 when none."""
        out = np.full(len(root), -1, dtype=np.int64)
        arrays = self._attr.get(slot)
        if arrays is None:
            return out
        times, seqs, vids = (a[: len(root)] for a in arrays)
        nodes = np.flatnonzero(times[: len(root)] >= 0)
        nodes = nodes[root[nodes] > 0]
        if not len(nodes):
            return out
        order = np.lexsort((seqs[nodes], times[nodes], root[nodes]))
        nodes = nodes[order]
        persons = root[nodes]
        last = np.flatnonzero(np.r_[persons[1:] != persons[:-1], True])
        out[persons[last]] = vids[nodes[last]]
        return out

    def birth_days(self, root: np.ndarray) -> np.ndarray:
        """Per person: birth date as YYYYMMDD, -1 when unknown or unreadable."""
        vids = self.latest(SLOTS["birth_date"], root)
        table = np.full(len(self._values), -1, dtype=np.int64)
        for vid, text in enumerate(self._values):
            try:
                d = date.fromisoformat(text)
                table[vid] = d.year * 10000 + d.month * 100 + d.day
            except ValueError:
                pass
        out = np.full(len(root), -1, dtype=np.int64)
        known = vids >= 0
        out[known] = table[vids[known]]
        return out
