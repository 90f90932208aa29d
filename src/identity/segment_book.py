"""Saved segments: named condition trees in LMDB (``segments``: name -> JSON record).

The tree is kept in its JSON form (the same as files and the CLI), validated on
save; references to other saved segments must exist and may not form a cycle, so
evaluation can always resolve them. Deleting a segment another one refers to is
refused: the reference would dangle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from identity.conditions import parse, segment_refs
from identity.errors import InvalidArgument, NotFound
from identity.store import Txn, WriteTxn

__all__ = ["SavedSegment", "SegmentBook"]


@dataclass(frozen=True)
class SavedSegment:
    name: str
    condition: dict[str, Any]
    description: str
    updated_ms: int


def _encode(segment: SavedSegment) -> bytes:
    return json.dumps({"condition": segment.condition, "description": segment.description,
                       "updated_ms": segment.updated_ms}, sort_keys=True).encode()


def _decode(name: str, raw: bytes) -> SavedSegment:
    data = json.loads(bytes(raw))
    return SavedSegment(name, data["condition"], data["description"], data["updated_ms"])


class SegmentBook:
    """Save, read, list and delete saved segments inside the caller's transactions."""

    def get(self, tx: Txn, name: str) -> SavedSegment:
        raw = tx.get("segments", name.encode())
        if raw is None:
            raise NotFound(f"no saved segment named {name!r}")
        return _decode(name, raw)

    def find(self, tx: Txn, name: str) -> SavedSegment | None:
        raw = tx.get("segments", name.encode())
        return None if raw is None else _decode(name, raw)

    def list(self, tx: Txn) -> list[SavedSegment]:
        return [_decode(bytes(k).decode(), v) for k, v in tx.items("segments")]

    def save(self, tx: WriteTxn, segment: SavedSegment, cells: tuple[str, ...]) -> bool:
        """Store ``segment``; True when it replaced one. Checks references and cycles."""
        tree = parse(segment.condition, cells, "condition")
        for ref in segment_refs(tree):
            if ref.name == segment.name:
                raise InvalidArgument.field(f"{ref.path}.name", "a segment cannot contain itself")
            if self.find(tx, ref.name) is None:
                raise InvalidArgument.field(f"{ref.path}.name",
                                            f"no saved segment named {ref.name!r}")
            if segment.name in self._reaches(tx, ref.name, cells):
                raise InvalidArgument.field(f"{ref.path}.name",
                                            f"{ref.name!r} refers back to {segment.name!r}")
        replaced = tx.get("segments", segment.name.encode()) is not None
        tx.put("segments", segment.name.encode(), _encode(segment))
        return replaced

    def delete(self, tx: WriteTxn, name: str) -> bool:
        for other in self.list(tx):
            if other.name != name and name in self._direct_refs(other):
                raise InvalidArgument.field("name", f"saved segment {other.name!r} refers to it")
        return tx.delete("segments", name.encode())

    def _direct_refs(self, segment: SavedSegment) -> set[str]:
        return {ref.name for ref in segment_refs(parse(segment.condition, _ANY_CELLS))}

    def _reaches(self, tx: Txn, start: str, cells: tuple[str, ...]) -> set[str]:
        """Every segment name reachable from ``start`` through references."""
        seen: set[str] = set()
        todo = [start]
        while todo:
            name = todo.pop()
            found = self.find(tx, name)
            if found is None:
                continue
            for ref in self._direct_refs(found):
                if ref not in seen:
                    seen.add(ref)
                    todo.append(ref)
        return seen


class _AnyCells(tuple):
    """Cell names are not re-checked when only references are wanted."""

    def __contains__(self, item: object) -> bool:
        return True


_ANY_CELLS = _AnyCells()
