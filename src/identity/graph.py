"""The identity graph: union-find over interned integer node ids, persisted in LMDB.

Each identifier is interned once to a node id. Each node stores its root, so
"which person is this" is one read; each root stores the person: its customer
node, identifier counts per kind and the member list. A merge relabels the
smaller side (union by size), so every node is relabelled at most log2(n) times.

Which id survives a merge: the person id is the customer id when the merged
person has one; otherwise it is ``P<root node>`` of the larger side (ties: the
older root). Absorbed ids stay resolvable, because the node a retired ``P<n>``
names still exists and points at its current root.
"""

from __future__ import annotations

import re
import struct
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from identity.blocklist import Blocklist
from identity.errors import NotFound
from identity.identifiers import Identifier, Kind
from identity.linklog import LinkLog, Outcome
from identity.store import Txn, WriteTxn

__all__ = ["IdentityGraph", "LinkResult", "MergeRules", "NodeInfo", "PersonView", "Outcome",
           "Reach", "PERSON_DTYPE", "LATEST_MS"]

_U64 = struct.Struct(">Q")
_NODE = struct.Struct("<QBqq")  # root, kind, first seen ms, last seen ms; value follows
_ROOT = struct.Struct("<Q")  # the leading root field of a node record
_PERSON = struct.Struct("<QI6I")  # customer node (0: none), size, identifiers per kind
PERSON_DTYPE = np.dtype([("customer", "<u8"), ("size", "<u4"), ("counts", "<u4", (6,))])
_NEXT_NODE = b"next_node"
_INTERNAL_ID = re.compile(r"^P([1-9][0-9]*)$")
_KINDS = tuple(Kind)
_KIND_OF = {int(kind): kind for kind in Kind}
# Module globals: an enum member looked up on its class (``Kind.CUSTOMER_ID``) is slow.
_CUSTOMER = Kind.CUSTOMER_ID
_CREATED, _ADDED, _MERGED, _ALREADY_LINKED = (
    Outcome.CREATED, Outcome.ADDED, Outcome.MERGED, Outcome.ALREADY_LINKED)


@dataclass(frozen=True)
class MergeRules:
    """What a link may merge: per-kind identifier limits and junk values that never merge."""

    kind_limits: dict[Kind, int] = field(default_factory=dict)
    blocklist: Blocklist = field(default_factory=Blocklist)


@dataclass(frozen=True)
class LinkResult:
    outcome: Outcome
    person_id: str
    detail: str = ""
    absorbed_person_ids: tuple[str, ...] = ()
    ignored: tuple[tuple[Identifier, str], ...] = ()
    link_seq: int = 0


class NodeInfo(NamedTuple):  # a tuple: built for every member on every read of a person
    node: int
    identifier: Identifier
    root: int
    first_seen_ms: int
    last_seen_ms: int


class PersonView(NamedTuple):
    root: int
    person_id: str
    customer_id: str
    identifiers: tuple[NodeInfo, ...]


class Reach(NamedTuple):
    """A person as a send decision needs it (``IdentityGraph.reach``)."""

    person_id: str
    identifiers: dict[int, Identifier]  # node -> identifier, every member
    latest: tuple[int, Identifier] | None  # (node, identifier): the newest seen of the kind


@dataclass
class _Person:
    customer: int
    size: int
    counts: list[int]
    raw: bytes = field(default=b"", repr=False, compare=False)  # as read: holds the members

    def pack(self) -> bytes:
        return _PERSON.pack(self.customer, self.size, *self.counts)

    def stored_members(self) -> array:
        """The member list as read with this record (before any change in this link)."""
        nodes = array("Q")
        nodes.frombytes(self.raw[_PERSON.size :])
        return nodes


def _id_key(identifier: Identifier) -> bytes:
    return _KIND_BYTE[identifier.kind] + identifier.value.encode()


_KIND_BYTE = [bytes((kind,)) for kind in range(256)]  # the key's leading kind byte, made once


def now_ms() -> int:
    return time.time_ns() // 1_000_000


LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the latest time records hold


class IdentityGraph:
    """Link and resolve inside the caller's transaction; knows nothing of gRPC."""

    def __init__(self, rules: MergeRules | None = None):
        self.rules = rules or MergeRules()
        self.log = LinkLog()
        # Called after commit with (node, root) assignments: new nodes and relabelled ones.
        self.listeners: list[Callable[[list[tuple[int, int]]], None]] = []
        # Asked only about new identifiers: (tx, identifier, observed ms) -> True when it was
        # erased on request after being observed, so a late replay must leave it out.
        self.replay_guard: Callable[[Txn, Identifier, int], bool] | None = None

    # -- reads -------------------------------------------------------------

    def node_of(self, tx: Txn, identifier: Identifier) -> int | None:
        raw = tx.get("ids", _id_key(identifier))
        return _U64.unpack(raw)[0] if raw is not None else None

    def node_info(self, tx: Txn, node: int) -> NodeInfo:
        raw = tx.get("nodes", _U64.pack(node))
        if raw is None:
            raise NotFound(f"no node {node}")
        root, kind, first, last = _NODE.unpack_from(raw)
        value = bytes(raw[_NODE.size :]).decode()
        return NodeInfo(node, Identifier(Kind(kind), value), root, first, last)

    def root_of(self, tx: Txn, node: int) -> int:
        return self.locate(tx, node)[0]

    def locate(self, tx: Txn, node: int) -> tuple[int, tuple[int, bytes]]:
        """The root of ``node``, and the node with its record for ``person(seen=...)``: the
        person read that follows need not read that record again."""
        raw = tx.get("nodes", _U64.pack(node))
        if raw is None:
            raise NotFound(f"no node {node}")
        return _NODE.unpack_from(raw)[0], (node, raw)

    def members(self, tx: Txn, root: int) -> array:
        """Node ids of the person rooted at ``root``."""
        return self._person(tx, root).stored_members()

    def person_id(self, tx: Txn, root: int) -> str:
        person = self._person(tx, root)
        return self._value(tx, person.customer) if person.customer else f"P{root}"

    def person(self, tx: Txn, root: int, seen: tuple[int, bytes] | None = None) -> PersonView:
        """The person rooted at ``root``; ``seen`` is a member already read (``locate``)."""
        customer_node, records = self._member_records(tx, root, seen)
        unpack, head, kinds = _NODE.unpack_from, _NODE.size, _KIND_OF
        infos = []
        customer = ""
        for node, raw in records:  # node_info for each, inlined: Resolve's loop
            node_root, kind, first, last = unpack(raw)
            value = raw[head:].decode()
            if node == customer_node:
                customer = value
            infos.append(NodeInfo(node, Identifier(kinds[kind], value), node_root, first, last))
        return PersonView(root, customer or f"P{root}", customer, tuple(infos))

    def reach(self, tx: Txn, root: int, kind: Kind, seen: tuple[int, bytes] | None = None
              ) -> Reach:
        """The person rooted at ``root`` with its most recently seen identifier of ``kind``
        (ties: the newer node). ``person`` without a NodeInfo per member: every trigger
        check reads one."""
        customer_node, records = self._member_records(tx, root, seen)
        unpack, head, kinds = _NODE.unpack_from, _NODE.size, _KIND_OF
        wanted, newest, latest = int(kind), (-1, -1), None
        identifiers = {}
        customer = ""
        for node, raw in records:
            _, member_kind, _, last = unpack(raw)
            identifier = identifiers[node] = Identifier(kinds[member_kind], raw[head:].decode())
            if node == customer_node:
                customer = identifier.value
            if member_kind == wanted and (last, node) > newest:
                newest, latest = (last, node), (node, identifier)
        return Reach(customer or f"P{root}", identifiers, latest)

    def _member_records(self, tx: Txn, root: int, seen: tuple[int, bytes] | None
                        ) -> tuple[int, list[tuple[int, bytes]]]:
        """The person's customer node (0: none) and each member's node record; ``seen`` is
        a member already read. No _Person is built: only the members are read."""
        record = self._person_record(tx, root)
        members = array("Q")
        members.frombytes(record[_PERSON.size :])
        get, pack = tx.get, _U64.pack
        seen_node, seen_raw = seen if seen is not None else (-1, None)
        records = [(node, seen_raw if node == seen_node else get("nodes", pack(node)))
                   for node in members]
        for node, raw in records:
            if raw is None:
                raise NotFound(f"no node {node}")
        return _PERSON.unpack_from(record)[0], records

    def resolve(self, tx: Txn, identifier: Identifier) -> PersonView:
        node = self.node_of(tx, identifier)
        if node is None:
            raise NotFound(f"unknown identifier {identifier}")
        root, seen = self.locate(tx, node)
        return self.person(tx, root, seen)

    def root_of_person_id(self, tx: Txn, person_id: str) -> int:
        """The current root of a person id, current or retired by a merge."""
        node = self.node_of(tx, Identifier(Kind.CUSTOMER_ID, person_id))
        if node is None:
            match = _INTERNAL_ID.match(person_id)
            node = int(match.group(1)) if match else None
        if node is None or tx.get("nodes", _U64.pack(node)) is None:
            raise NotFound(f"unknown person id {person_id!r}")
        return self.root_of(tx, node)

    def resolve_person_id(self, tx: Txn, person_id: str) -> PersonView:
        return self.person(tx, self.root_of_person_id(tx, person_id))

    # -- the one write -----------------------------------------------------

    def link(
        self,
        tx: WriteTxn,
        identifiers: list[Identifier],
        *,
        source: str = "",
        observed_ms: int | None = None,
        request_id: str = "",
    ) -> LinkResult:
        """Record that ``identifiers`` were seen together and merge their persons if allowed."""
        batch = _Batch(tx, self.log)
        result = self._link(tx, batch, identifiers, source, observed_ms, request_id)
        self._flush(tx, batch)
        return result

    def link_many(self, tx: WriteTxn,
                  links: Iterable[tuple[list[Identifier], str, int | None, str]]
                  ) -> list[LinkResult]:
        """``link`` each of ``links`` (identifiers, source, observed ms, request id), in order.

        The results and the bytes written are those of one ``link`` call per link; the
        counters are read once and the link log is written in one go.
        """
        batch = _Batch(tx, self.log)
        results = [self._link(tx, batch, *link) for link in links]
        self._flush(tx, batch)
        return results

    def _flush(self, tx: WriteTxn, batch: _Batch) -> None:
        batch.flush(tx)
        if batch.assignments:
            # One call for the whole batch: each node once, with the root it ended up with.
            final = list(dict(batch.assignments).items())
            tx.on_commit(lambda: self._notify(final))

    def _link(self, tx: WriteTxn, batch: _Batch, identifiers: list[Identifier], source: str,
              observed_ms: int | None, request_id: str) -> LinkResult:
        observed_ms = now_ms() if observed_ms is None else observed_ms
        usable: list[Identifier] = []
        ignored: list[tuple[Identifier, str]] = []
        reason_of = self.rules.blocklist.reason
        for identifier in dict.fromkeys(identifiers):
            reason = reason_of(identifier)
            if reason:
                ignored.append((identifier, reason))
            else:
                usable.append(identifier)
        ignored_text = tuple(f"{i}\t{r}" for i, r in ignored) if ignored else ()
        log_add = batch.log.add

        def record(outcome: Outcome, nodes: list[int], detail: str = "") -> int:
            return log_add(observed_ms, outcome, nodes, source, request_id, detail, ignored_text)

        if not usable:
            detail = "every identifier is blocklisted"
            seq = record(Outcome.IGNORED, [], detail)
            return LinkResult(Outcome.IGNORED, "", detail, (), tuple(ignored), seq)

        nodes: list[int] = []  # node of each usable identifier, 0 while new
        roots: dict[int, _Person] = {}
        node_records: dict[int, bytes] = {}
        new: list[Identifier] = []  # the usable identifiers without a node yet
        get = tx.get
        for identifier in usable:
            found = get("ids", _id_key(identifier))
            if found is None:
                nodes.append(0)
                new.append(identifier)
                continue
            node = _U64.unpack(found)[0]
            nodes.append(node)
            raw = get("nodes", found)  # the ids value is the node key
            node_records[node] = raw
            root = _ROOT.unpack_from(raw)[0]
            if root not in roots:
                roots[root] = self._person(tx, root)
        guard = self.replay_guard
        if guard is not None and new:
            erased = set()
            for identifier in new:  # a loop, not a comprehension: no function per link
                if guard(tx, identifier, observed_ms):
                    erased.add(identifier)
            if erased:  # erased before this was observed: leave it out
                kept = [i for i, node in enumerate(nodes) if node or usable[i] not in erased]
                usable, nodes = [usable[i] for i in kept], [nodes[i] for i in kept]
                new = [i for i in new if i not in erased]
                if not usable:
                    detail = "every identifier was erased on request"
                    seq = record(Outcome.IGNORED, [], detail)
                    return LinkResult(Outcome.IGNORED, "", detail, (), tuple(ignored), seq)

        refusal = self._refusal(tx, roots, new)
        assignments: list[tuple[int, int]] = []
        absorbed: list[str] = []
        person_id = ""
        if refusal:
            outcome, detail = refusal
            for i, identifier in enumerate(usable):  # still seen: each new one stands alone
                if not nodes[i]:
                    nodes[i] = batch.allocate(tx, 1)
                    self._put_node(tx, identifier, nodes[i], nodes[i], observed_ms)
                    self._put_person(tx, nodes[i], _new_person(identifier, nodes[i]),
                                     array("Q", [nodes[i]]))
                    assignments.append((nodes[i], nodes[i]))
            survivor = self.root_of(tx, nodes[0])
        else:
            detail = ""
            if len(roots) >= 2:
                outcome = _MERGED
            elif roots:
                outcome = _ADDED if new else _ALREADY_LINKED
            else:
                outcome = _CREATED
            survivor, absorbed = self._union(tx, batch, roots, usable, nodes, observed_ms,
                                             assignments)
            if roots:
                customer = roots[survivor].customer  # merged into the survivor by _union
            else:
                customer = next((n for i, n in zip(usable, nodes) if i.kind is _CUSTOMER), 0)
            person_id = self._person_id_of(tx, survivor, customer, usable, nodes)

        for node, raw in node_records.items():
            root, kind, first, last = _NODE.unpack_from(raw)
            if first <= observed_ms <= last:
                continue
            if absorbed and root != survivor and root in roots:  # relabelled in this link
                root = survivor
            tx.put("nodes", _U64.pack(node), _NODE.pack(root, kind, min(first, observed_ms),
                                                        max(last, observed_ms)) + raw[_NODE.size :])
        seq = record(outcome, nodes, detail)
        if assignments and self.listeners:
            batch.assignments += assignments
        return LinkResult(outcome, person_id or self.person_id(tx, survivor), detail,
                          tuple(absorbed), tuple(ignored), seq)

    # -- admin: whole-table reads and undoing merges -----------------------

    def person_table(self, tx: Txn) -> tuple[np.ndarray, np.ndarray]:
        """Every person as arrays, for vectorised reports: roots, and (customer, size, counts)."""
        keys: list[bytes] = []
        heads: list[bytes] = []
        for key, value in tx.items("persons"):
            keys.append(key)
            heads.append(value[: _PERSON.size])
        roots = np.frombuffer(b"".join(keys), dtype=">u8").astype(np.uint64)
        table = np.frombuffer(b"".join(heads), dtype=PERSON_DTYPE)
        return roots, table

    def repartition(self, tx: WriteTxn, root: int, pieces: list[list[int]]) -> list[int]:
        """Make each piece of the person rooted at ``root`` a person of its own; their roots.

        The piece holding ``root`` keeps it (and so ``P<root>``), every other piece is rooted
        at its smallest node; a customer id keeps its person id wherever it lands. Listeners
        hear of every relabelled node after commit, exactly as for a merge.
        """
        members = self.members(tx, root)
        if sorted(n for piece in pieces for n in piece) != sorted(members):
            raise ValueError(f"pieces do not cover the person rooted at node {root}")
        roots: list[int] = []
        assignments: list[tuple[int, int]] = []
        for piece in pieces:
            new_root = root if root in piece else min(piece)
            person = _Person(0, 0, [0] * len(_KINDS))
            for node in piece:
                key = _U64.pack(node)
                raw = tx.get("nodes", key)
                old_root, kind = _NODE.unpack_from(raw)[:2]
                person.size += 1
                person.counts[kind - 1] += 1
                if kind == _CUSTOMER:
                    person.customer = node
                if old_root != new_root:
                    tx.put("nodes", key, _ROOT.pack(new_root) + raw[_ROOT.size :])
                    assignments.append((node, new_root))
            self._put_person(tx, new_root, person, array("Q", sorted(piece)))
            roots.append(new_root)
        if assignments and self.listeners:
            tx.on_commit(lambda: self._notify(assignments))
        return roots

    def erase(self, tx: WriteTxn, root: int) -> list[NodeInfo]:
        """Delete the person rooted at ``root``: identifiers, nodes, person record.

        Returns what was erased (for the caller's hashes). The link log is the caller's to
        redact. Listeners hear ``(node, 0)`` for each erased node: it belongs to no one now.
        """
        infos = [self.node_info(tx, node) for node in self.members(tx, root)]
        for info in infos:
            tx.delete("ids", _id_key(info.identifier))
            tx.delete("nodes", _U64.pack(info.node))
        tx.delete("persons", _U64.pack(root))
        if self.listeners:
            gone = [(info.node, 0) for info in infos]
            tx.on_commit(lambda: self._notify(gone))
        return infos

    # -- internals ---------------------------------------------------------

    def _person_id_of(self, tx: Txn, root: int, customer: int, usable: list[Identifier],
                      nodes: list[int]) -> str:
        """``person_id`` for a person whose customer node is known, reading no more than needed."""
        if not customer:
            return f"P{root}"
        for identifier, node in zip(usable, nodes):
            if node == customer:
                return identifier.value
        return self._value(tx, customer)

    def _value(self, tx: Txn, node: int) -> str:
        """The identifier value of ``node`` (what ``node_info`` would decode, nothing else)."""
        raw = tx.get("nodes", _U64.pack(node))
        if raw is None:
            raise NotFound(f"no node {node}")
        return bytes(raw[_NODE.size :]).decode()

    def _notify(self, assignments: list[tuple[int, int]]) -> None:
        for listener in self.listeners:
            listener(assignments)

    def _refusal(self, tx: Txn, roots: dict[int, _Person], new: list[Identifier]
                 ) -> tuple[Outcome, str] | None:
        persons = roots.values()
        joined = 0
        for p in persons:
            if p.customer:
                joined += 1
        for i in new:
            if i.kind is _CUSTOMER:
                joined += 1
        if joined > 1:
            customers = [self._value(tx, p.customer) for p in persons if p.customer]
            customers += [i.value for i in new if i.kind is _CUSTOMER]
            listed = ", ".join(repr(c) for c in sorted(customers))
            return Outcome.REFUSED_CONFLICT, f"would join different customer ids: {listed}"
        limits = self.rules.kind_limits
        if not limits or (not new and len(roots) <= 1):
            return None  # nothing joins, so no person's count can grow
        added: dict[Kind, int] = {}
        for i in new:
            added[i.kind] = added.get(i.kind, 0) + 1
        single = len(roots) <= 1
        if single:  # the loop below for one person (or none): only added kinds can grow
            counts_of = next(iter(persons)).counts if roots else None
            for kind, limit in limits.items():
                extra = added.get(kind)
                if not extra:
                    continue
                combined = (counts_of[kind - 1] if counts_of else 0) + extra
                if combined > limit:  # and above the one count it grows from, as extra > 0
                    return (Outcome.REFUSED_LIMIT, f"would give a person {combined} "
                            f"{kind.label} identifiers (limit {limit})")
            return None
        for kind, limit in limits.items():
            extra = added.get(kind, 0)
            if single and not extra:
                continue  # this kind's count stays what it is
            counts = [p.counts[kind - 1] for p in persons]
            combined = sum(counts) + extra
            if combined > limit and combined > max(counts, default=0):
                return (Outcome.REFUSED_LIMIT,
                        f"would give a person {combined} {kind.label} identifiers (limit {limit})")
        return None

    def _union(self, tx: WriteTxn, batch: _Batch, roots: dict[int, _Person],
               usable: list[Identifier], nodes: list[int], observed_ms: int,
               assignments: list[tuple[int, int]]) -> tuple[int, list[str]]:
        if roots:
            if len(roots) == 1:
                survivor = next(iter(roots))
            else:
                survivor = max(roots, key=lambda r: (roots[r].size, -r))
            person = roots[survivor]
            member_list = person.stored_members()
        else:
            survivor = 0
            person = _Person(0, 0, [0] * len(_KINDS))
            member_list = array("Q")
        absorbed = []
        for root, other in roots.items():
            if root == survivor:
                continue
            absorbed.append(self._value(tx, other.customer) if other.customer else f"P{root}")
            moved = other.stored_members()
            for node in moved:
                key = _U64.pack(node)
                raw = tx.get("nodes", key)
                tx.put("nodes", key, _ROOT.pack(survivor) + raw[_ROOT.size :])
                assignments.append((node, survivor))
            member_list.extend(moved)
            person.size += other.size
            person.customer = person.customer or other.customer
            person.counts = [a + b for a, b in zip(person.counts, other.counts)]
            tx.delete("persons", _U64.pack(root))
        fresh = [i for i, node in enumerate(nodes) if not node]
        next_node = batch.allocate(tx, len(fresh)) if fresh else 0
        for i in fresh:
            identifier = usable[i]
            nodes[i] = next_node
            next_node += 1
            self._put_node(tx, identifier, nodes[i], survivor or nodes[i], observed_ms)
            if not survivor:
                survivor = nodes[i]
            member_list.append(nodes[i])
            person.size += 1
            person.counts[identifier.kind - 1] += 1
            if identifier.kind is _CUSTOMER:
                person.customer = nodes[i]
            assignments.append((nodes[i], survivor))
        if assignments:
            self._put_person(tx, survivor, person, member_list)
        return survivor, absorbed

    def _put_node(self, tx: WriteTxn, identifier: Identifier, node: int, root: int,
                  observed_ms: int) -> None:
        key = _U64.pack(node)
        tx.put("ids", _id_key(identifier), key)
        record = _NODE.pack(root, identifier.kind, observed_ms, observed_ms)
        tx.put("nodes", key, record + identifier.value.encode())

    def _person(self, tx: Txn, root: int) -> _Person:
        raw = self._person_record(tx, root)
        customer, size, *counts = _PERSON.unpack_from(raw)
        return _Person(customer, size, counts, raw)

    @staticmethod
    def _person_record(tx: Txn, root: int) -> bytes:
        raw = tx.get("persons", _U64.pack(root))
        if raw is None:
            raise NotFound(f"no person rooted at node {root}")
        return raw

    def _put_person(self, tx: WriteTxn, root: int, person: _Person, member_list: array) -> None:
        tx.put("persons", _U64.pack(root), person.pack() + member_list.tobytes())


class _Batch:
    """What one transaction's links share (node counter, log, listener news), written last."""

    __slots__ = ("log", "assignments", "_next_node")

    def __init__(self, tx: Txn, log: LinkLog):
        self.log = log.batch(tx)
        self.assignments: list[tuple[int, int]] = []  # (node, root) for the listeners
        self._next_node = 0  # read on first use

    def allocate(self, tx: Txn, count: int) -> int:
        """Reserve ``count`` consecutive node ids; the first of them."""
        if not self._next_node:
            raw = tx.get("meta", _NEXT_NODE)
            self._next_node = _U64.unpack(raw)[0] if raw else 1
        node = self._next_node
        self._next_node += count
        return node

    def flush(self, tx: WriteTxn) -> None:
        if self._next_node:
            tx.put("meta", _NEXT_NODE, _U64.pack(self._next_node))
        self.log.flush(tx)


def _new_person(identifier: Identifier, node: int) -> _Person:
    counts = [0] * len(_KINDS)
    counts[identifier.kind - 1] = 1
    return _Person(node if identifier.kind is _CUSTOMER else 0, 1, counts)
