"""The admin action log: every split, block and forget, with who asked and why.

Actions are evidence too: a merge can be explained by links, and its undoing by
an action. Records name nodes and links by number, never by identifier value,
so forgetting a person leaves nothing personal here (a blocked value is junk by
definition and is kept).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import IntEnum

from identity.store import Txn, WriteTxn

__all__ = ["Action", "ActionKind", "ActionLog"]

_U64 = struct.Struct(">Q")


class ActionKind(IntEnum):
    """What an admin did; numbers shared with ``identity.v1.ActionKind``."""

    SPLIT_LINK = 1
    SPLIT_SOURCE = 2
    SPLIT_IDENTIFIER = 3
    BLOCK = 4
    FORGET = 5

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Action:
    """One admin action. ``roots`` are the persons it left (by root node)."""

    seq: int
    kind: ActionKind
    at_ms: int
    actor: str
    reason: str
    links: tuple[int, ...] = ()
    nodes: tuple[int, ...] = ()
    roots: tuple[int, ...] = ()
    source: str = ""
    note: str = ""
    extra: dict[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        data = asdict(self)
        del data["seq"]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, seq: int, raw: bytes) -> Action:
        data = json.loads(raw)
        data["kind"] = ActionKind(data["kind"])
        for name in ("links", "nodes", "roots"):
            data[name] = tuple(data[name])
        return cls(seq=seq, **data)


class ActionLog:
    """Append and read admin actions inside the caller's transaction."""

    def next_seq(self, tx: Txn) -> int:
        last = tx.last_key("actions")
        return _U64.unpack(last)[0] + 1 if last else 1

    def append(self, tx: WriteTxn, action: Action) -> int:
        """Store ``action`` (its ``seq`` is taken from the log) and return its seq."""
        seq = self.next_seq(tx)
        tx.put("actions", _U64.pack(seq), action.encode())
        return seq

    def replace(self, tx: WriteTxn, seq: int, action: Action) -> None:
        """Complete a record appended earlier in the same transaction (e.g. its ``roots``)."""
        tx.put("actions", _U64.pack(seq), action.encode())

    def get(self, tx: Txn, seq: int) -> Action | None:
        raw = tx.get("actions", _U64.pack(seq))
        return Action.decode(seq, raw) if raw else None

    def since(self, tx: Txn, first_seq: int = 1) -> Iterator[Action]:
        for key, raw in tx.items("actions", start=_U64.pack(first_seq)):
            yield Action.decode(_U64.unpack(key)[0], raw)
