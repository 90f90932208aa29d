"""Use cases of segments: count, export, save, explain, RF cohorts, behaviour tags.

Trees arrive in their JSON form and are validated here, whole, before anything is
evaluated or written (``InvalidArgument`` names the bad node, ``root.all[2]...``).
Reads evaluate over a snapshot of the columns and the current graph; ``save`` and
``set_tag`` are one write transaction each, acknowledged after commit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from identity.columns import EventColumns
from identity.conditions import Node, SegmentLeaf, parse
from identity.errors import InvalidArgument, NotFound
from identity.graph import LATEST_MS, IdentityGraph, now_ms
from identity.identifiers import Identifier
from identity.localdays import local_days
from identity.population import Population
from identity.rfm import DEFAULT_MATRIX, CohortMatrix
from identity.conditions import NAME_PATTERN
from identity.segment_book import SavedSegment, SegmentBook
from identity.segments import Evaluation, SegmentEngine
from identity.store import Store, Txn
from identity.strings import StringDictionary
from identity.tags import TagStore

__all__ = ["Segmentation", "Target", "CountResult", "Explained"]

MAX_TAG_LENGTH = 128


@dataclass(frozen=True)
class Target:
    """A tree's JSON form, or a saved segment's name."""

    condition: dict[str, Any] | None = None
    name: str = ""


@dataclass(frozen=True)
class CountResult:
    count: int
    persons: int
    micros: int


@dataclass(frozen=True)
class Explained:
    person_id: str
    member: bool
    nodes: list[tuple[str, bool, float | None]]


class Segmentation:
    """Segments over one store, graph and event columns."""

    def __init__(self, store: Store, graph: IdentityGraph, columns: EventColumns,
                 strings: StringDictionary, time_zone: str = "UTC",
                 matrix: CohortMatrix = DEFAULT_MATRIX):
        self.store, self.graph = store, graph
        self.matrix = matrix
        self.population = Population()
        self.tags = TagStore()
        self.book = SegmentBook()
        try:
            days = local_days(time_zone)
        except Exception:
            raise ValueError(f"unknown time zone {time_zone!r}") from None
        self.engine = SegmentEngine(columns, strings, self.population, self.tags, days, matrix)
        graph.listeners.append(self.population.assign)
        with store.read() as tx:
            self.population.load(tx)
            self.tags.load(tx)
        self.engine.index.sync()  # sort the stored events by type and time once, at start

    # -- trees -------------------------------------------------------------

    def _tree(self, tx: Txn, target: Target) -> Node:
        if target.condition is not None:
            return parse(target.condition, self.matrix.names, "root")
        if not target.name:
            raise InvalidArgument.field("segment", "give a condition or a saved segment name")
        name = _segment_name(target.name, "segment.name")
        return parse(self.book.get(tx, name).condition, self.matrix.names, "root")

    def _resolver(self, tx: Txn):
        def resolve(leaf: SegmentLeaf) -> Node:
            found = self.book.find(tx, leaf.name)
            if found is None:
                raise InvalidArgument.field(f"{leaf.path}.name",
                                            f"no saved segment named {leaf.name!r}")
            return parse(found.condition, self.matrix.names, f"{leaf.path}[{leaf.name}]")
        return resolve

    def evaluate(self, target: Target, as_of_ms: int | None = None,
                 explain: bool = False) -> Evaluation:
        as_of_ms = now_ms() if as_of_ms is None else as_of_ms
        state = self.engine.index.sync()  # before the snapshot: it then holds all rows shown
        with self.store.read() as tx:
            tree = self._tree(tx, target)
            return self.engine.evaluate(tx, tree, as_of_ms, self._resolver(tx), explain, state)

    # -- reads ---------------------------------------------------------------

    def count(self, target: Target, as_of_ms: int | None = None) -> CountResult:
        started = time.perf_counter()
        result = self.evaluate(target, as_of_ms)
        count = int(np.count_nonzero(result.members))
        return CountResult(count, result.persons, int((time.perf_counter() - started) * 1e6))

    def export(self, target: Target, as_of_ms: int | None = None, kind: int = 0,
               reachable_only: bool = False, batch_size: int = 1000
               ) -> Iterator[list[tuple[str, str]]]:
        """Batches of (person id, address on ``kind``): each member once."""
        members = np.flatnonzero(self.evaluate(target, as_of_ms).members)
        roots = self.population.roots()
        address_node = np.zeros(len(roots), dtype=np.int64)
        if kind:
            nodes = np.flatnonzero(self.population.kinds(len(roots)) == kind)
            nodes = nodes[np.isin(roots[nodes], members)]
            address_node[roots[nodes]] = nodes  # several: chosen below by last seen
            several = np.bincount(roots[nodes], minlength=len(roots)) > 1
        if reachable_only and kind:
            members = members[address_node[members] > 0]
        batch: list[tuple[str, str]] = []
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size].tolist()
            with self.store.read() as tx:
                batch = [self._member(tx, root, int(address_node[root]),
                                      bool(kind) and bool(several[root]), kind)
                         for root in chunk]
            yield batch

    def _member(self, tx: Txn, root: int, node: int, several: bool, kind: int
                ) -> tuple[str, str]:
        person_id = self.graph.person_id(tx, root)
        if not node:
            return person_id, ""
        if several:  # the identifier of that kind seen most recently
            infos = [self.graph.node_info(tx, n) for n in self.graph.members(tx, root)]
            best = max((i for i in infos if i.identifier.kind == kind),
                       key=lambda i: (i.last_seen_ms, i.node))
            return person_id, best.identifier.value
        return person_id, self.graph.node_info(tx, node).identifier.value

    def explain(self, person_id: str, target: Target, as_of_ms: int | None = None) -> Explained:
        with self.store.read() as tx:
            root = self.graph.root_of_person_id(tx, person_id.strip())
            current = self.graph.person_id(tx, root)
        result = self.evaluate(target, as_of_ms, explain=True)
        nodes = []
        for path, (values, measured) in result.nodes.items():
            value = float(measured[root]) if measured is not None else None
            nodes.append((path, bool(values[root]), value))
        nodes.sort(key=lambda item: _path_order(item[0]))
        return Explained(current, bool(result.members[root]), nodes)

    def cohort_matrix(self, as_of_ms: int | None = None) -> tuple[list[tuple[str, int]], int]:
        cells = self._cells(as_of_ms)
        counts = np.bincount(cells[cells >= 0], minlength=len(self.matrix.cells))
        persons = self._persons()
        without = int(np.count_nonzero((cells < 0) & persons[: len(cells)]))
        return list(zip(self.matrix.names, (int(c) for c in counts))), without

    def cohort_transitions(self, from_ms: int, to_ms: int | None = None, from_cell: str = "",
                           to_cell: str = "") -> list[tuple[str, str, str]]:
        to_ms = now_ms() if to_ms is None else to_ms
        for field, name in (("from_cell", from_cell), ("to_cell", to_cell)):
            if name and name not in self.matrix.names:
                raise InvalidArgument.field(field, f"unknown cell {name!r}")
        if to_ms < from_ms:
            raise InvalidArgument.field("to_time", "is before from_time")
        before, after = self._cells(from_ms), self._cells(to_ms)
        size = min(len(before), len(after))
        before, after = before[:size], after[:size]
        moved = (before != after) & (after >= 0)
        if from_cell:
            moved &= before == self.matrix.names.index(from_cell)
        if to_cell:
            moved &= after == self.matrix.names.index(to_cell)
        names = ("", *self.matrix.names)
        out = []
        with self.store.read() as tx:
            for root in np.flatnonzero(moved).tolist():
                out.append((self.graph.person_id(tx, root), names[before[root] + 1],
                            names[after[root] + 1]))
        out.sort()
        return out

    def _cells(self, as_of_ms: int | None) -> np.ndarray:
        """Every person's RF cell index (-1: none), by root node."""
        as_of_ms = now_ms() if as_of_ms is None else as_of_ms
        state = self.engine.index.sync()  # before the snapshot: it then holds all rows shown
        with self.store.read() as tx:
            return self.engine.cohort_cells(tx, as_of_ms, state)

    def _persons(self) -> np.ndarray:
        roots = self.population.roots()
        return (roots == np.arange(len(roots))) & (roots > 0)

    # -- writes --------------------------------------------------------------

    def save(self, name: str, condition: dict[str, Any], description: str = ""
             ) -> tuple[SavedSegment, bool]:
        name = _segment_name(name)
        if len(description) > 2000:
            raise InvalidArgument.field("description", "longer than 2000 characters")
        parse(condition, self.matrix.names, "condition")  # fail before the transaction
        segment = SavedSegment(name, condition, description, now_ms())
        replaced = self.store.write(lambda tx: self.book.save(tx, segment, self.matrix.names))
        return segment, replaced

    def get(self, name: str) -> SavedSegment:
        with self.store.read() as tx:
            return self.book.get(tx, _segment_name(name))

    def list(self) -> list[SavedSegment]:
        with self.store.read() as tx:
            return self.book.list(tx)

    def delete(self, name: str) -> bool:
        name = _segment_name(name)
        return self.store.write(lambda tx: self.book.delete(tx, name))

    def set_tag(self, who: Identifier | str, tag: str, value: str = "",
                at_ms: int | None = None, clear: bool = False) -> str:
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidArgument.field("tag", f"1-{MAX_TAG_LENGTH} characters")
        if len(value) > 512:
            raise InvalidArgument.field("value", "longer than 512 characters")
        if at_ms is not None and not 0 <= at_ms <= LATEST_MS:  # tag times are packed as i64
            raise InvalidArgument.field("at", "between 1970 and 9999")
        at_ms = now_ms() if at_ms is None else at_ms

        def apply(tx) -> str:
            if isinstance(who, Identifier):
                node = self.graph.node_of(tx, who)
                if node is None:
                    raise NotFound(f"unknown identifier {who}")
                root = self.graph.root_of(tx, node)
            else:
                root = self.graph.root_of_person_id(tx, who)
            self.tags.set(tx, root, tag, value, at_ms, clear)
            return self.graph.person_id(tx, root)

        return self.store.write(apply)


def _segment_name(name: str, field: str = "name") -> str:
    """A saved segment's name, checked before it becomes an LMDB key (which has a size limit)."""
    name = name.strip()
    if not NAME_PATTERN.match(name):
        raise InvalidArgument.field(field, "1-128 letters, digits, '_', '-' or '.'")
    return name


def _path_order(path: str) -> list[object]:
    """Sort key that puts ``root.all[10]`` after ``root.all[2]``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]
