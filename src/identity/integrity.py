"""A read-only check of the identity graph's invariants, for audits and crash tests.

The graph keeps its union-find denormalised for one-read lookups (each node stores
its root, each root stores its person with member list, size and counts), so a
torn or partial write would show up as records that disagree with each other.
``check`` reads one snapshot and lists every disagreement it finds; it writes
nothing, so it can run beside a live server (LMDB readers never block the writer).

Invariants checked:

- ``ids``: every identifier key maps to an existing node of the same kind and value,
  and every node is reachable from exactly that key.
- ``node``: a known kind, first seen <= last seen, node id below the node counter.
- ``root``: a node's root is a node that is its own root and has a person record.
- ``person``: a person record sits on a root; its member list has no repeats, every
  member exists and points at this root; size and per-kind counts match the
  members; at most one customer id, and the customer field names it (0 if none).
- ``members``: every node appears in its root's member list.
- ``link-log``: link seqs below the link counter; the nodes a link names exist; the
  node index (``node_links``) and the link records name each other exactly.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

import numpy as np

from identity.identifiers import Kind
from identity.linklog import decode as decode_link
from identity.store import Txn

__all__ = ["INVARIANTS", "Problem", "check"]

_U64 = struct.Struct(">Q")
_NODE = struct.Struct("<QBqq")  # as graph.py: root, kind, first seen ms, last seen ms; value
_KIND_AT = 8  # offset of the kind byte in a node record
_PERSON = struct.Struct("<QI6I")  # as graph.py: customer node, size, counts per kind; members
_KIND_COUNT = len(Kind)
INVARIANTS = ("ids", "node", "root", "person", "members", "link-log")


@dataclass(frozen=True)
class Problem:
    """One broken invariant (one of ``INVARIANTS``) and what was found."""

    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


class _Found:
    """Problems collected up to a limit, so a badly broken database still answers quickly."""

    def __init__(self, limit: int):
        self.limit = limit
        self.problems: list[Problem] = []
        self.dropped = 0

    def add(self, invariant: str, detail: str) -> None:
        if len(self.problems) < self.limit:
            self.problems.append(Problem(invariant, detail))
        else:
            self.dropped += 1

    def result(self) -> list[Problem]:
        if self.dropped:
            return [*self.problems, Problem("more", f"{self.dropped} more problems not listed")]
        return self.problems


def _counter(tx: Txn, key: bytes) -> int | None:
    raw = tx.get("meta", key)
    return _U64.unpack(raw)[0] if raw is not None else None


def check(tx: Txn, limit: int = 1000) -> list[Problem]:
    """Every broken invariant in the snapshot ``tx`` (empty when healthy), at most ``limit``."""
    found = _Found(limit)
    nodes, roots = _check_nodes(tx, found)
    _check_ids(tx, nodes, found)
    person_roots, listed = _check_persons(tx, nodes, roots, found)
    _check_roots(nodes, roots, person_roots, listed, found)
    _check_link_log(tx, nodes, found)
    return found.result()


def _check_nodes(tx: Txn, found: _Found) -> tuple[np.ndarray, np.ndarray]:
    """Per-record node checks; every node id and its root as sorted arrays."""
    next_node = _counter(tx, b"next_node") or 1
    node_ids = array("Q")
    roots = array("Q")
    for key, raw in tx.items("nodes"):
        node = _U64.unpack(key)[0]
        if len(raw) < _NODE.size:
            found.add("node", f"node {node}: record of {len(raw)} bytes is truncated")
            continue
        root, kind, first, last = _NODE.unpack_from(raw)
        node_ids.append(node)
        roots.append(root)
        if not 1 <= kind <= _KIND_COUNT:
            found.add("node", f"node {node}: unknown kind {kind}")
        if first > last:
            found.add("node", f"node {node}: first seen {first} after last seen {last}")
        if node >= next_node:
            found.add("node", f"node {node}: not below the node counter {next_node}")
        id_key = bytes((kind,)) + bytes(raw[_NODE.size :])
        mapped = tx.get("ids", id_key)
        if mapped is None:
            found.add("ids", f"node {node}: its identifier has no ids entry")
        elif _U64.unpack(mapped)[0] != node:
            found.add("ids", f"node {node}: its identifier maps to node {_U64.unpack(mapped)[0]}")
    return np.frombuffer(node_ids, dtype=np.uint64), np.frombuffer(roots, dtype=np.uint64)


def _check_ids(tx: Txn, nodes: np.ndarray, found: _Found) -> None:
    """Each ids entry names an existing node of the same identifier."""
    for key, value in tx.items("ids"):
        node = _U64.unpack(value)[0]
        raw = tx.get("nodes", value)
        if raw is None:
            found.add("ids", f"identifier {bytes(key)!r} maps to missing node {node}")
        elif bytes((raw[_KIND_AT],)) + bytes(raw[_NODE.size :]) != bytes(key):
            found.add("ids", f"identifier {bytes(key)!r} maps to node {node} of another identifier")
    if tx.count("ids") != len(nodes):
        found.add("ids", f"{tx.count('ids')} identifiers for {len(nodes)} nodes")


def _check_persons(tx: Txn, nodes: np.ndarray, roots: np.ndarray, found: _Found
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-person checks; the person roots and every listed member, as arrays."""
    person_roots = array("Q")
    listed: list[np.ndarray] = []
    for key, raw in tx.items("persons"):
        root = _U64.unpack(key)[0]
        person_roots.append(root)
        if len(raw) < _PERSON.size or (len(raw) - _PERSON.size) % 8:
            found.add("person", f"person {root}: record of {len(raw)} bytes is malformed")
            continue
        customer, size, *counts = _PERSON.unpack_from(raw)
        members = np.frombuffer(bytes(raw[_PERSON.size :]), dtype=np.uint64)  # native, as array("Q")
        listed.append(members)
        where = np.searchsorted(nodes, root)
        if where >= len(nodes) or nodes[where] != root or roots[where] != root:
            found.add("person", f"person {root}: its root node is missing or not a root")
        if len(np.unique(members)) != len(members):
            found.add("person", f"person {root}: a member is listed twice")
        if size != len(members):
            found.add("person", f"person {root}: size {size} but {len(members)} members")
        actual = [0] * _KIND_COUNT
        customers: list[int] = []
        for member in members.tolist():
            member_raw = tx.get("nodes", _U64.pack(member))
            if member_raw is None:
                found.add("person", f"person {root}: member {member} does not exist")
                continue
            member_root, kind = _NODE.unpack_from(member_raw)[:2]
            if member_root != root:
                found.add("person", f"person {root}: member {member} points at root {member_root}")
            if 1 <= kind <= _KIND_COUNT:
                actual[kind - 1] += 1
            if kind == Kind.CUSTOMER_ID:
                customers.append(member)
        if actual != counts:
            found.add("person", f"person {root}: counts per kind {counts} but members have {actual}")
        if len(customers) > 1:
            found.add("person", f"person {root}: holds {len(customers)} customer ids "
                                f"(nodes {', '.join(map(str, customers))})")
        if customer != (customers[0] if customers else 0):
            found.add("person", f"person {root}: customer field {customer} but customer id "
                                f"members {customers}")
    all_listed = np.concatenate(listed) if listed else np.zeros(0, dtype=np.uint64)
    return np.frombuffer(person_roots, dtype=np.uint64), all_listed


def _check_roots(nodes: np.ndarray, roots: np.ndarray, person_roots: np.ndarray,
                 listed: np.ndarray, found: _Found) -> None:
    """Every node's root is a root with a person, and every node is listed by a person."""
    if not len(nodes):
        return
    where = np.minimum(np.searchsorted(nodes, roots), len(nodes) - 1)
    root_ok = (nodes[where] == roots) & (roots[where] == roots)
    for i in np.flatnonzero(~root_ok).tolist():
        found.add("root", f"node {nodes[i]}: root {roots[i]} is missing or not a root")
    has_person = np.isin(roots, person_roots)
    for i in np.flatnonzero(~has_person).tolist():
        found.add("root", f"node {nodes[i]}: root {roots[i]} has no person record")
    # Members point at their person (checked above) and are not repeated, so the lists are
    # disjoint: a node missing from every list is exactly one missing from its root's list.
    for node in np.setdiff1d(nodes, listed).tolist():
        found.add("members", f"node {node} is missing from its root's member list")


def _check_link_log(tx: Txn, nodes: np.ndarray, found: _Found) -> None:
    next_seq = _counter(tx, b"next_link_seq") or 1
    expected: set[tuple[int, int]] = set()  # (node, seq) pairs the node index must hold
    named: list[int] = []
    for key, raw in tx.items("links"):
        seq = _U64.unpack(key)[0]
        if seq >= next_seq:
            found.add("link-log", f"link {seq}: not below the link counter {next_seq}")
        try:
            record = decode_link(seq, raw)
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            found.add("link-log", f"link {seq}: record does not decode ({exc})")
            continue
        named += record.nodes
        expected.update((node, seq) for node in record.nodes)
    missing = np.setdiff1d(np.array(named, dtype=np.uint64), nodes)
    for node in missing.tolist():
        found.add("link-log", f"a link names node {node}, which does not exist")
    indexed: set[tuple[int, int]] = set()
    for key, value in tx.items("node_links"):
        indexed.add((_U64.unpack(key)[0], _U64.unpack(value)[0]))
    for node, seq in sorted(expected - indexed):
        found.add("link-log", f"link {seq} names node {node} but the node index misses it")
    for node, seq in sorted(indexed - expected):
        found.add("link-log", f"the node index lists link {seq} for node {node}, "
                              "which that link does not name")
