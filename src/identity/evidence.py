"""Which links still count as evidence, once admins have removed some.

The link log is append-only, so a split never deletes a link: it records a cut.
A cut link (``L`` + seq) no longer joins anything; a detached identifier
(``N`` + node) no longer takes part in links logged before it was detached, so
the rest of such a link still joins its other identifiers. A person is then
recomputed as the connected components of its members over what still counts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from identity.linklog import LinkLog, LinkRecord, Outcome
from identity.store import Txn, WriteTxn

__all__ = ["Evidence", "Joining", "JOINING_OUTCOMES", "components"]

_U64 = struct.Struct(">Q")
_DETACH = struct.Struct("<QQ")  # action seq, first link seq still counting for the node

# Outcomes of links that joined their identifiers (refused and ignored ones joined nothing).
JOINING_OUTCOMES = frozenset(
    {Outcome.CREATED, Outcome.ADDED, Outcome.MERGED, Outcome.ALREADY_LINKED})


@dataclass(frozen=True)
class Joining:
    """A link that still joins ``nodes`` (its nodes minus detached ones, two or more)."""

    link: LinkRecord
    nodes: tuple[int, ...]


class Evidence:
    """Cuts, and the links that still join a set of nodes, inside the caller's transaction."""

    def __init__(self, log: LinkLog):
        self.log = log

    def cut_link(self, tx: WriteTxn, seq: int, action: int) -> bool:
        """Stop link ``seq`` joining anything; False if it was already cut."""
        return tx.put("cuts", b"L" + _U64.pack(seq), _U64.pack(action), overwrite=False)

    def detach(self, tx: WriteTxn, node: int, action: int) -> None:
        """Take ``node`` out of every link logged so far (later links count again)."""
        last = tx.last_key("links")
        next_seq = _U64.unpack(last)[0] + 1 if last else 1
        tx.put("cuts", b"N" + _U64.pack(node), _DETACH.pack(action, next_seq))

    def cut_by(self, tx: Txn, seq: int) -> int:
        """The action that cut link ``seq``, or 0."""
        raw = tx.get("cuts", b"L" + _U64.pack(seq))
        return _U64.unpack(raw)[0] if raw else 0

    def forget_nodes(self, tx: WriteTxn, nodes: Iterable[int]) -> None:
        for node in nodes:
            tx.delete("cuts", b"N" + _U64.pack(node))

    def joining(self, tx: Txn, members: Iterable[int]) -> list[Joining]:
        """Every link that still joins two or more of ``members``, oldest first."""
        member_set = set(members)
        seen: set[int] = set()
        detached: dict[int, int] = {}
        out: list[Joining] = []
        for node in member_set:
            raw = tx.get("cuts", b"N" + _U64.pack(node))
            if raw:
                detached[node] = _DETACH.unpack(raw)[1]
        for node in sorted(member_set):
            for key in tx.duplicates("node_links", _U64.pack(node)):
                (seq,) = _U64.unpack(key)
                if seq in seen:
                    continue
                seen.add(seq)
                rec = self.log.get(tx, seq)
                if rec is None or rec.outcome not in JOINING_OUTCOMES or self.cut_by(tx, seq):
                    continue
                nodes = tuple(dict.fromkeys(
                    n for n in rec.nodes
                    if n in member_set and not (n in detached and seq < detached[n])))
                if len(nodes) >= 2:
                    out.append(Joining(rec, nodes))
        out.sort(key=lambda j: j.link.seq)
        return out


def components(members: Iterable[int], joining: Iterable[Joining]) -> list[list[int]]:
    """Connected components of ``members`` over ``joining`` links (union-find), largest first."""
    parent = {node: node for node in members}

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for join in joining:
        first = find(join.nodes[0])
        for other in join.nodes[1:]:
            root = find(other)
            if root != first:
                parent[root] = first
    groups: dict[int, list[int]] = {}
    for node in parent:
        groups.setdefault(find(node), []).append(node)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
