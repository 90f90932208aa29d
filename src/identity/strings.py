"""Interned strings: product ids, categories, brands, campaigns... as small integer ids.

Event records and segment columns repeat the same few thousand strings millions
of times; storing a u32 id instead keeps each event compact and lets segment
conditions compare integers in numpy. Id 0 is the empty string (a field not set).

The dictionary lives in LMDB (``strings``: text -> id, ``string_ids``: id -> text)
and in memory. New ids are allocated inside the caller's write transaction and
reach the in-memory maps only when that transaction commits, so a rolled-back
batch leaves no id behind. Only the store's writer thread calls ``intern``.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping

from identity.store import Txn, WriteTxn

__all__ = ["StringDictionary", "MAX_INTERNED_LENGTH"]

_ID = struct.Struct(">I")
_NEXT_ID = b"next_string_id"
MAX_INTERNED_LENGTH = 512


class StringDictionary:
    """Two-way map between strings and u32 ids, persisted in the caller's transactions."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {"": 0}
        self._texts: list[str] = [""]
        self._lock = threading.Lock()

    def load(self, tx: Txn) -> None:
        """Read every interned string (one pass at start-up)."""
        ids: dict[str, int] = {"": 0}
        texts: list[str] = [""]
        for key, value in tx.items("string_ids"):
            (sid,) = _ID.unpack(key)
            text = value.decode()
            if sid >= len(texts):
                texts.extend([""] * (sid + 1 - len(texts)))
            texts[sid] = text
            ids[text] = sid
        with self._lock:
            self._ids, self._texts = ids, texts

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def ids(self) -> Mapping[str, int]:
        """Committed strings -> ids; the writer's hot path reads it directly. Do not modify."""
        return self._ids

    def intern(self, tx: WriteTxn, text: str) -> int:
        """The id of ``text``, allocating one in ``tx`` when it is new."""
        sid = self._ids.get(text)
        if sid is not None:
            return sid
        encoded = text.encode()
        raw = tx.get("strings", encoded)
        if raw is not None:  # allocated earlier in this (not yet committed) group
            return _ID.unpack(raw)[0]
        raw = tx.get("meta", _NEXT_ID)
        sid = _ID.unpack(raw)[0] if raw else 1
        tx.put("meta", _NEXT_ID, _ID.pack(sid + 1))
        tx.put("strings", encoded, _ID.pack(sid))
        tx.put("string_ids", _ID.pack(sid), encoded)
        tx.on_commit(lambda: self._publish(sid, text))
        return sid

    def lookup(self, text: str) -> int | None:
        """The id of a committed string, or None (a condition on it then matches nothing)."""
        return self._ids.get(text)

    def text(self, sid: int, tx: Txn | None = None) -> str:
        """The string of ``sid``; reads LMDB when the id was committed a moment ago."""
        texts = self._texts
        if sid < len(texts) and (sid == 0 or texts[sid]):
            return texts[sid]
        if tx is not None:
            raw = tx.get("string_ids", _ID.pack(sid))
            if raw is not None:
                return bytes(raw).decode()
        raise KeyError(f"no interned string {sid}")

    def _publish(self, sid: int, text: str) -> None:
        with self._lock:
            if sid >= len(self._texts):
                self._texts.extend([""] * (sid + 1 - len(self._texts)))
            self._texts[sid] = text
            self._ids[text] = sid
