"""Split: undo merges by removing evidence, then recompute the person from the link log.

Three ways to remove evidence: one link, every link from a source, or one
identifier (taken out of every link logged so far). The affected person is
recomputed as the connected components of what still counts; each component
becomes a person (``IdentityGraph.repartition``), the customer id keeping its
person id. Each person split is one transaction with its own logged action, so
a bulk split interrupted half-way leaves whole persons split or untouched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace

from identity.actions import Action, ActionKind, ActionLog
from identity.errors import InvalidArgument, NotFound
from identity.evidence import JOINING_OUTCOMES, Evidence, components
from identity.graph import IdentityGraph, now_ms
from identity.store import Store, Txn, WriteTxn

__all__ = ["Splitter", "SplitOutcome", "Who"]


@dataclass(frozen=True)
class Who:
    """Who asked for an admin change and why; both are required and logged."""

    actor: str
    reason: str


@dataclass(frozen=True)
class SplitOutcome:
    """One person split (or left whole): its id before, and the person ids and sizes after."""

    action_seq: int
    before: str
    pieces: tuple[tuple[str, int], ...]
    done: int = 1
    total: int = 1


class Splitter:
    """Removes evidence and recomputes the persons it touched."""

    def __init__(self, store: Store, graph: IdentityGraph, evidence: Evidence, actions: ActionLog):
        self.store = store
        self.graph = graph
        self.evidence = evidence
        self.actions = actions

    # -- inside one transaction --------------------------------------------

    def recompute(self, tx: WriteTxn, root: int) -> tuple[str, list[int]]:
        """Re-split the person rooted at ``root`` over the links that still count."""
        before = self.graph.person_id(tx, root)
        members = self.graph.members(tx, root)
        pieces = components(members, self.evidence.joining(tx, members))
        if len(pieces) == 1:
            return before, [root]
        return before, self.graph.repartition(tx, root, pieces)

    def _logged(self, tx: WriteTxn, action: Action, roots: list[int]) -> SplitOutcome:
        """Recompute ``roots`` and log ``action`` with the persons it left."""
        seq = self.actions.append(tx, action)
        befores: list[str] = []
        after: list[int] = []
        for root in dict.fromkeys(roots):
            before, pieces = self.recompute(tx, root)
            befores.append(before)
            after.extend(pieces)
        self.actions.replace(tx, seq, replace(action, roots=tuple(after)))
        sizes = tuple((self.graph.person_id(tx, r), len(self.graph.members(tx, r))) for r in after)
        return SplitOutcome(seq, ", ".join(befores), sizes)

    def detach_node(self, tx: WriteTxn, node: int, kind: ActionKind, who: Who,
                    note: str = "") -> SplitOutcome:
        """Take ``node`` out of every link so far and recompute its person."""
        root = self.graph.root_of(tx, node)
        seq = self.actions.next_seq(tx)
        self.evidence.detach(tx, node, seq)
        action = Action(0, kind, now_ms(), who.actor, who.reason, nodes=(node,), note=note)
        return self._logged(tx, action, [root])

    # -- the three targets ---------------------------------------------------

    def by_link(self, seq: int, who: Who) -> SplitOutcome:
        def run(tx: WriteTxn) -> SplitOutcome:
            rec = self.graph.log.get(tx, seq)
            if rec is None:
                raise NotFound(f"no link {seq} in the log")
            if rec.outcome not in JOINING_OUTCOMES or len(rec.nodes) < 2:
                raise InvalidArgument.field("link_seq", f"link {seq} joined nothing "
                                                        f"({rec.outcome.label})")
            if not self.evidence.cut_link(tx, seq, self.actions.next_seq(tx)):
                raise InvalidArgument.field("link_seq", f"link {seq} was already removed")
            roots = [self.graph.root_of(tx, n) for n in rec.nodes]
            action = Action(0, ActionKind.SPLIT_LINK, now_ms(), who.actor, who.reason,
                            links=(seq,), source=rec.source)
            return self._logged(tx, action, roots)

        return self.store.write(run)

    def by_node(self, node: int, who: Who) -> SplitOutcome:
        return self.store.write(
            lambda tx: self.detach_node(tx, node, ActionKind.SPLIT_IDENTIFIER, who))

    def by_source(self, source: str, who: Who, root: int | None = None
                  ) -> Iterator[SplitOutcome]:
        """Remove every link from ``source`` (of one person, or everywhere), person by person.

        Yields after each committed person; stopping the iteration stops the split there.
        """
        with self.store.read() as tx:
            plan = self._plan_source(tx, source, root)
        total = len(plan)
        for done, seqs in enumerate(plan.values(), 1):
            outcome = self.store.write(
                lambda tx, seqs=seqs: self._split_source_one(tx, source, seqs, who))  # type: ignore[misc]
            yield replace(outcome, done=done, total=total)

    def _plan_source(self, tx: Txn, source: str, root: int | None) -> dict[int, list[int]]:
        plan: dict[int, list[int]] = defaultdict(list)
        if root is not None:
            members = self.graph.members(tx, root)
            for join in self.evidence.joining(tx, members):
                if join.link.source == source:
                    plan[root].append(join.link.seq)
            return plan
        for rec in self.graph.log.since(tx):
            if (rec.source == source and rec.outcome in JOINING_OUTCOMES
                    and len(rec.nodes) >= 2 and not self.evidence.cut_by(tx, rec.seq)):
                try:
                    plan[self.graph.root_of(tx, rec.nodes[0])].append(rec.seq)
                except NotFound:  # erased since
                    continue
        return plan

    def _split_source_one(self, tx: WriteTxn, source: str, seqs: list[int], who: Who
                          ) -> SplitOutcome:
        action_seq = self.actions.next_seq(tx)
        roots: list[int] = []
        for seq in seqs:
            rec = self.graph.log.get(tx, seq)
            if rec is None or not self.evidence.cut_link(tx, seq, action_seq):
                continue
            for node in rec.nodes:
                try:
                    roots.append(self.graph.root_of(tx, node))
                except NotFound:
                    continue
        action = Action(0, ActionKind.SPLIT_SOURCE, now_ms(), who.actor, who.reason,
                        links=tuple(seqs), source=source)
        return self._logged(tx, action, roots)
