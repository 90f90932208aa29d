"""The admins' tools over the identity graph: explain, merge log, split, block, forget.

Deterministic linking is only as good as its evidence, so every merge can be
explained (the shortest chain of links between two identifiers, networkx over
that one person) and undone (``split``), junk values can be blocked, and a
person can be erased on request. Every change is one transaction and is
itself logged with who asked and why.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import networkx as nx

from identity.actions import Action, ActionKind, ActionLog
from identity.blocklist import BlockRule
from identity.errors import InvalidArgument, NotFound
from identity.evidence import Evidence, Joining
from identity.forget import EraseEvents, Erasures, ForgetResult
from identity.graph import IdentityGraph, NodeInfo, now_ms
from identity.identifiers import Identifier, Kind
from identity.linklog import LinkRecord, Outcome
from identity.report import Finding, Progress, ReportSettings, suspicious
from identity.split import SplitOutcome, Splitter, Who
from identity.store import Store, Txn, WriteTxn

__all__ = ["Audit", "BlockResult", "Explanation", "LoggedLink", "PersonGraph", "Step", "Who"]

_LOG_CHUNK = 512  # records read per short read transaction while streaming the log


@dataclass(frozen=True)
class Step:
    """One link of an evidence chain: it joined ``left`` and ``right``."""

    left: NodeInfo
    right: NodeInfo
    link: LinkRecord


@dataclass(frozen=True)
class Explanation:
    """Why two identifiers are one person: the shortest chain of links between them."""

    person_id: str
    same_person: bool
    other_person_id: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class PersonGraph:
    """One person's identifiers and the links that still join them (for pictures, reports)."""

    person_id: str
    nodes: tuple[NodeInfo, ...]
    links: tuple[Joining, ...]


@dataclass(frozen=True)
class LoggedLink:
    """A link log record with its identifiers (None where erased) and the action that cut it."""

    link: LinkRecord
    identifiers: tuple[Identifier | None, ...]
    cut_by: int


@dataclass(frozen=True)
class BlockResult:
    action_seq: int
    split: SplitOutcome | None


def _key(identifier: Identifier) -> bytes:
    return bytes((identifier.kind,)) + identifier.value.encode()


class Audit:
    """Explain, log, split, block and forget; one store, the graph it serves."""

    def __init__(self, store: Store, graph: IdentityGraph):
        self.store = store
        self.graph = graph
        self.evidence = Evidence(graph.log)
        self.actions = ActionLog()
        self.erasures = Erasures()
        self.splitter = Splitter(store, graph, self.evidence, self.actions)
        # Set by the event store: erases a forgotten person's events in the same transaction.
        self.erase_events: EraseEvents | None = None
        with store.read() as tx:
            self.erasures.load(tx)
            for key, _ in tx.items("blocked"):
                graph.rules.blocklist.add(BlockRule(bytes(key[1:]).decode(), Kind(key[0])))
        graph.replay_guard = self.erasures.replayed

    # -- reads ---------------------------------------------------------------

    def _node(self, tx: Txn, identifier: Identifier) -> int:
        node = self.graph.node_of(tx, identifier)
        if node is None:
            raise NotFound(f"unknown identifier {identifier}")
        return node

    def explain(self, a: Identifier, b: Identifier) -> Explanation:
        """The shortest chain of links joining ``a`` and ``b``, oldest links preferred."""
        with self.store.read() as tx:
            node_a, node_b = self._node(tx, a), self._node(tx, b)
            root_a, root_b = self.graph.root_of(tx, node_a), self.graph.root_of(tx, node_b)
            person = self.graph.person_id(tx, root_a)
            if root_a != root_b:
                return Explanation(person, False, self.graph.person_id(tx, root_b), ())
            joins = self.evidence.joining(tx, self.graph.members(tx, root_a))
            g = nx.Graph()  # identifiers and links as the two sides of a bipartite graph
            for join in joins:
                for node in join.nodes:
                    g.add_edge(("link", join.link.seq), ("node", node))
            if node_a == node_b:
                return Explanation(person, True, person, ())
            path = nx.shortest_path(g, ("node", node_a), ("node", node_b))
            by_seq = {join.link.seq: join.link for join in joins}
            steps = tuple(
                Step(self.graph.node_info(tx, path[i - 1][1]),
                     self.graph.node_info(tx, path[i + 1][1]), by_seq[path[i][1]])
                for i in range(1, len(path), 2))
            return Explanation(person, True, person, steps)

    def person_graph(self, tx: Txn, root: int) -> PersonGraph:
        members = self.graph.members(tx, root)
        nodes = tuple(self.graph.node_info(tx, n) for n in members)
        links = tuple(self.evidence.joining(tx, members))
        return PersonGraph(self.graph.person_id(tx, root), nodes, links)

    def person_graph_of(self, identifier: Identifier | None = None, person_id: str = ""
                        ) -> PersonGraph:
        with self.store.read() as tx:
            return self.person_graph(tx, self._root(tx, identifier, person_id))

    def _root(self, tx: Txn, identifier: Identifier | None, person_id: str) -> int:
        if identifier is not None:
            return self.graph.root_of(tx, self._node(tx, identifier))
        if person_id.strip():
            return self.graph.root_of_person_id(tx, person_id.strip())
        raise InvalidArgument.field("target", "give an identifier or a person id")

    def merge_log(self, *, since_ms: int = 0, first_seq: int = 1,
                  sources: Iterable[str] = (), outcomes: Iterable[Outcome] = (),
                  with_ignored: bool = False) -> Iterator[list[LoggedLink]]:
        """Links observed since ``since_ms``, filtered, in batches; short read snapshots."""
        sources, outcomes = set(sources), set(outcomes)
        seq = first_seq
        while True:
            batch: list[LoggedLink] = []
            scanned = 0
            with self.store.read() as tx:
                for rec in self.graph.log.since(tx, seq):
                    scanned += 1
                    seq = rec.seq + 1
                    if (rec.observed_ms >= since_ms and (not sources or rec.source in sources)
                            and (not outcomes or rec.outcome in outcomes)
                            and (not with_ignored or rec.ignored)):
                        batch.append(LoggedLink(rec, tuple(self._ident(tx, n) for n in rec.nodes),
                                                self.evidence.cut_by(tx, rec.seq)))
                    if scanned >= _LOG_CHUNK:
                        break
            if batch:
                yield batch
            if scanned < _LOG_CHUNK:
                return

    def _ident(self, tx: Txn, node: int) -> Identifier | None:
        try:
            return self.graph.node_info(tx, node).identifier
        except NotFound:
            return None

    def report(self, settings: ReportSettings = ReportSettings(),
               progress: Progress | None = None) -> list[Finding]:
        """The suspicious-clusters report over one read snapshot of the whole world."""
        with self.store.read() as tx:
            return suspicious(tx, self.graph, self.evidence, settings, progress)

    def report_stream(self, settings: ReportSettings = ReportSettings(),
                      every_s: float = 0.25) -> Iterator[tuple[str, int, int] | list[Finding]]:
        """Progress tuples (at most one per ``every_s``) while the report runs, then findings."""
        updates: queue.Queue = queue.Queue()
        last = [0.0]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= every_s or done >= total:
                last[0] = now
                updates.put((stage, done, total))

        def run() -> None:
            try:
                updates.put(self.report(settings, progress))
            except BaseException as exc:  # handed to the consumer
                updates.put(exc)

        threading.Thread(target=run, name="audit-report", daemon=True).start()
        while True:
            item = updates.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, list):
                return

    def identifiers(self, nodes: Iterable[int]) -> list[Identifier]:
        """The identifiers of ``nodes`` still known (erased ones are skipped)."""
        with self.store.read() as tx:
            found = (self._ident(tx, n) for n in nodes)
            return [i for i in found if i is not None]

    def person_ids(self, roots: Iterable[int]) -> list[str]:
        """Current person ids of the persons once rooted at ``roots`` (erased ones skipped)."""
        out: list[str] = []
        with self.store.read() as tx:
            for node in roots:
                try:
                    out.append(self.graph.person_id(tx, self.graph.root_of(tx, node)))
                except NotFound:
                    continue
        return list(dict.fromkeys(out))

    def action_log(self, first_seq: int = 1, since_ms: int = 0) -> list[Action]:
        with self.store.read() as tx:
            return [a for a in self.actions.since(tx, first_seq) if a.at_ms >= since_ms]

    # -- changes -------------------------------------------------------------

    @staticmethod
    def _check(who: Who) -> None:
        if not who.actor.strip():
            raise InvalidArgument.field("actor", "say who asks for this change")
        if not who.reason.strip():
            raise InvalidArgument.field("reason", "say why (it is logged)")

    def split_link(self, seq: int, who: Who) -> SplitOutcome:
        self._check(who)
        return self.splitter.by_link(seq, who)

    def split_identifier(self, identifier: Identifier, who: Who) -> SplitOutcome:
        self._check(who)
        with self.store.read() as tx:
            node = self._node(tx, identifier)
        return self.splitter.by_node(node, who)

    def split_source(self, source: str, who: Who, identifier: Identifier | None = None,
                     person_id: str = "") -> Iterator[SplitOutcome]:
        """Remove every link from ``source`` of one person (or of everyone), person by person."""
        self._check(who)
        if not source.strip():
            raise InvalidArgument.field("source", "is empty")
        root = None
        if identifier is not None or person_id.strip():
            with self.store.read() as tx:
                root = self._root(tx, identifier, person_id)
        return self.splitter.by_source(source.strip(), who, root)

    def block(self, identifier: Identifier, who: Who, apply: bool = False) -> BlockResult:
        """Never merge through ``identifier`` again; ``apply`` also splits what it glued."""
        self._check(who)

        def run(tx: WriteTxn) -> BlockResult:
            key = _key(identifier)
            seq = self.actions.next_seq(tx)
            tx.put("blocked", key, seq.to_bytes(8, "big"))
            node = self.graph.node_of(tx, identifier)
            split = None
            if apply and node is not None:
                split = self.splitter.detach_node(tx, node, ActionKind.BLOCK, who,
                                                  note=f"{identifier}")
            else:
                self.actions.append(tx, Action(0, ActionKind.BLOCK, now_ms(), who.actor,
                                               who.reason, nodes=(node,) if node else (),
                                               note=f"{identifier}"))
            tx.on_commit(lambda: self.graph.rules.blocklist.add(
                BlockRule(identifier.value, identifier.kind)))
            return BlockResult(seq, split)

        return self.store.write(run)

    def forget(self, who: Who, identifier: Identifier | None = None, person_id: str = ""
               ) -> ForgetResult:
        """Erase a person: identifiers, links (tombstones stay), events; keep salted hashes."""
        self._check(who)

        def run(tx: WriteTxn) -> ForgetResult:
            at = now_ms()
            root = self._root(tx, identifier, person_id)
            erased = self.graph.erase(tx, root)
            nodes = [info.node for info in erased]
            links = self.graph.log.redact(tx, set(nodes))
            self.evidence.forget_nodes(tx, nodes)
            self.erasures.record(tx, [info.identifier for info in erased], at)
            events = self.erase_events(tx, nodes) if self.erase_events else 0
            seq = self.actions.append(tx, Action(
                0, ActionKind.FORGET, at, who.actor, who.reason,
                note=f"erased {len(nodes)} identifiers, {len(links)} links, {events} events",
                extra={"identifiers": len(nodes), "links": len(links), "events": events}))
            return ForgetResult(seq, len(nodes), len(links), events)

        return self.store.write(run)
