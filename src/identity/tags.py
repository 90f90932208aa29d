"""Behaviour tags that flows set on persons ("welcome_sent", "vip": "gold").

A tag is stored against the person's root node at the time it is set, like an
event against its node: a later merge moves nothing, and the segment engine maps
node -> person at query time. When a merged person carries the same tag from
several nodes, the latest setting (or clearing) wins. Every setting is kept
(``tags``: node u32 | tag | seq -> time ms, cleared flag, value) and mirrored in
memory as arrays, appended on commit.
"""

from __future__ import annotations

import struct
import threading

import numpy as np

from identity.store import Txn, WriteTxn

__all__ = ["TagStore", "TagRows"]

_KEY = struct.Struct(">I")
_SEQ = struct.Struct(">Q")
_VALUE = struct.Struct("<qB")  # time ms, cleared; value text follows
_NEXT = b"next_tag_seq"


class TagRows:
    """The tag settings as arrays: node, tag id, value id, time ms, cleared."""

    def __init__(self, node: np.ndarray, tag: np.ndarray, value: np.ndarray, time: np.ndarray,
                 cleared: np.ndarray):
        self.node, self.tag, self.value, self.time, self.cleared = node, tag, value, time, cleared


class TagStore:
    """Set tags in the caller's transaction; read them as arrays."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[int, int, int, int, int]] = []
        self._arrays: TagRows | None = None
        self._ids: dict[str, int] = {"": 0}
        self.version = 0

    def _id(self, text: str) -> int:
        found = self._ids.get(text)
        if found is None:
            found = self._ids[text] = len(self._ids)
        return found

    def id_of(self, text: str) -> int | None:
        return self._ids.get(text)

    def load(self, tx: Txn) -> None:
        rows = []
        for key, raw in tx.items("tags"):
            rows.append(self._decode(key, raw))
        with self._lock:
            self._rows = rows
            self._arrays = None
            self.version += 1

    def _decode(self, key: bytes, raw: bytes) -> tuple[int, int, int, int, int]:
        node = _KEY.unpack_from(key)[0]
        tag = bytes(key[_KEY.size : -_SEQ.size]).decode()
        time_ms, cleared = _VALUE.unpack_from(raw)
        value = bytes(raw[_VALUE.size :]).decode()
        with self._lock:
            return node, self._id(tag), self._id(value), time_ms, cleared

    def set(self, tx: WriteTxn, node: int, tag: str, value: str, time_ms: int,
            cleared: bool = False) -> None:
        raw = tx.get("meta", _NEXT)
        seq = _SEQ.unpack(raw)[0] if raw else 1
        tx.put("meta", _NEXT, _SEQ.pack(seq + 1))
        key = _KEY.pack(node) + tag.encode() + _SEQ.pack(seq)
        record = _VALUE.pack(time_ms, int(cleared)) + value.encode()
        tx.put("tags", key, record)
        tx.on_commit(lambda: self._append(self._decode(key, record)))

    def _append(self, row: tuple[int, int, int, int, int]) -> None:
        with self._lock:
            self._rows.append(row)
            self._arrays = None
            self.version += 1

    def rows(self) -> TagRows:
        with self._lock:
            if self._arrays is None:
                table = np.array(self._rows, dtype=np.int64).reshape(-1, 5)
                self._arrays = TagRows(*(table[:, i] for i in range(5)))
            return self._arrays
