"""The suspicious-clusters report: where deterministic linking has probably glued strangers.

Fast over millions of persons because the world is never one graph: the person
table and the link outcomes are read into numpy arrays and flagged with
vectorised masks (too large, a kind over its limit, refused customer-id
conflicts). Only persons large enough to hold a high-degree identifier, and
only flagged persons for bridges, are built as networkx graphs, one at a time.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import networkx as nx
import numpy as np

from identity.errors import NotFound
from identity.evidence import Evidence, Joining
from identity.graph import IdentityGraph
from identity.identifiers import Identifier
from identity.linklog import Outcome
from identity.store import Txn

__all__ = ["Finding", "FindingKind", "Progress", "ReportSettings", "identifier_graph", "suspicious"]

Progress = Callable[[str, int, int], None]


class FindingKind(IntEnum):
    """Why a person looks glued; numbers shared with ``identity.v1.FindingKind``."""

    LARGE_PERSON = 1
    KIND_OVER_LIMIT = 2
    CUSTOMER_CONFLICT = 3
    HIGH_DEGREE = 4
    BRIDGE = 5

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ReportSettings:
    """Thresholds; the defaults suit a shop's world of mostly 1-10 identifiers per person."""

    max_size: int = 50  # persons with more identifiers are flagged
    min_degree: int = 5  # an identifier linked to at least this many others ...
    degree_factor: float = 4.0  # ... and this many times the median degree is flagged
    bridge_min_side: int = 2  # a bridge is flagged when both sides keep this many identifiers
    sample: int = 2000  # persons sampled to estimate the median degree
    limit: int = 1000  # findings returned, highest scores first


@dataclass(frozen=True)
class Finding:
    """One suspicious thing, with its score (how far past its threshold) and evidence."""

    kind: FindingKind
    person_id: str
    score: float
    detail: str
    identifiers: tuple[Identifier, ...] = ()
    links: tuple[int, ...] = ()


def identifier_graph(joins: list[Joining] | tuple[Joining, ...], nodes=()) -> nx.Graph:
    """Identifiers as nodes, an edge wherever a link joined two; ``links`` lists its seqs."""
    g = nx.Graph()
    g.add_nodes_from(nodes)
    for join in joins:
        ns = join.nodes
        for i, u in enumerate(ns):
            for v in ns[i + 1 :]:
                if g.has_edge(u, v):
                    g[u][v]["links"].append(join.link.seq)
                else:
                    g.add_edge(u, v, links=[join.link.seq], source=join.link.source)
    return g


def _side_sizes(g: nx.Graph, bridges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """For each bridge, the size of its smaller side (bridge tree + subtree sums, linear)."""
    h = g.copy()
    h.remove_edges_from(bridges)
    comp: dict[int, int] = {}
    weight: list[int] = []
    for i, c in enumerate(nx.connected_components(h)):
        weight.append(len(c))
        comp.update(dict.fromkeys(c, i))
    tree = nx.Graph()
    tree.add_nodes_from(range(len(weight)))
    for u, v in bridges:
        tree.add_edge(comp[u], comp[v])
    total = g.number_of_nodes()
    below = list(weight)
    parent = {0: -1}
    for par, child in nx.dfs_edges(tree, 0):
        parent[child] = par
    for node in nx.dfs_postorder_nodes(tree, 0):
        if parent[node] >= 0:
            below[parent[node]] += below[node]
    out = {}
    for u, v in bridges:
        a, b = comp[u], comp[v]
        child = a if parent.get(a) == b else b
        out[(u, v)] = min(below[child], total - below[child])
    return out


def suspicious(tx: Txn, graph: IdentityGraph, evidence: Evidence,
               settings: ReportSettings = ReportSettings(),
               progress: Progress | None = None) -> list[Finding]:
    """Every finding over the whole world, highest score first (at most ``settings.limit``)."""
    note = progress or (lambda stage, done, total: None)
    findings: list[Finding] = []
    flagged: set[int] = set()
    person_ids: dict[int, str] = {}

    def pid(root: int) -> str:
        if root not in person_ids:
            person_ids[root] = graph.person_id(tx, root)
        return person_ids[root]

    note("persons", 0, 1)
    roots, table = graph.person_table(tx)
    sizes = table["size"].astype(np.int64)
    note("persons", 1, 1)

    for i in np.flatnonzero(sizes > settings.max_size):
        root = int(roots[i])
        flagged.add(root)
        findings.append(Finding(FindingKind.LARGE_PERSON, pid(root), sizes[i] / settings.max_size,
                                f"{sizes[i]} identifiers (threshold {settings.max_size})"))
    for kind, limit in graph.rules.kind_limits.items():
        counts = table["counts"][:, kind - 1]
        for i in np.flatnonzero(counts > limit):
            root = int(roots[i])
            flagged.add(root)
            findings.append(Finding(FindingKind.KIND_OVER_LIMIT, pid(root), counts[i] / limit,
                                    f"{counts[i]} {kind.label} identifiers (limit {limit})"))

    note("links", 0, 1)
    keys, outcomes = graph.log.outcome_column(tx)
    seqs = np.frombuffer(keys, dtype=">u8").astype(np.int64)
    codes = np.frombuffer(outcomes, dtype=np.uint8)
    refused: dict[tuple[Outcome, int], list[int]] = defaultdict(list)
    picked = np.flatnonzero((codes == Outcome.REFUSED_CONFLICT) | (codes == Outcome.REFUSED_LIMIT))
    for j, i in enumerate(picked):
        rec = graph.log.get(tx, int(seqs[i]))
        for root in _roots(tx, graph, rec.nodes):
            refused[(rec.outcome, root)].append(rec.seq)
        if j % 1000 == 0:
            note("links", j, len(picked))
    note("links", 1, 1)
    for (outcome, root), link_seqs in refused.items():
        flagged.add(root)
        kind = (FindingKind.CUSTOMER_CONFLICT if outcome is Outcome.REFUSED_CONFLICT
                else FindingKind.KIND_OVER_LIMIT)
        what = "another customer id" if outcome is Outcome.REFUSED_CONFLICT else "over a limit"
        findings.append(Finding(kind, pid(root), float(len(link_seqs)),
                                f"{len(link_seqs)} links refused: {what}",
                                links=tuple(link_seqs[:20])))

    median = _median_degree(tx, graph, evidence, roots, sizes, settings.sample)
    threshold = max(settings.min_degree, math.ceil(settings.degree_factor * median))
    candidates = np.flatnonzero(sizes > threshold)
    for j, i in enumerate(candidates):
        root = int(roots[i])
        joins = evidence.joining(tx, graph.members(tx, root))
        g = identifier_graph(joins)
        for node, degree in g.degree():
            if degree >= threshold:
                flagged.add(root)
                ident = graph.node_info(tx, node).identifier
                links = tuple(sorted({s for _, _, d in g.edges(node, data=True) for s in d["links"]}))
                findings.append(Finding(
                    FindingKind.HIGH_DEGREE, pid(root), degree / max(median, 1.0),
                    f"{ident} is linked to {degree} identifiers (median {median:g}, "
                    f"threshold {threshold})", (ident,), links[:20]))
        note("degrees", j + 1, len(candidates))

    for j, root in enumerate(sorted(flagged)):
        findings.extend(_bridges(tx, graph, evidence, root, pid(root), settings.bridge_min_side))
        note("bridges", j + 1, len(flagged))

    findings.sort(key=lambda f: (-f.score, f.person_id, f.kind))
    return findings[: settings.limit]


def _roots(tx: Txn, graph: IdentityGraph, nodes: tuple[int, ...]) -> set[int]:
    """Current roots of ``nodes``, skipping erased ones."""
    roots = set()
    for node in nodes:
        try:
            roots.add(graph.root_of(tx, node))
        except NotFound:
            continue
    return roots


def _median_degree(tx: Txn, graph: IdentityGraph, evidence: Evidence, roots: np.ndarray,
                   sizes: np.ndarray, sample: int) -> float:
    """Median number of distinct neighbours per identifier, over a sample of persons."""
    if len(roots) == 0:
        return 0.0
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(roots), size=min(sample, len(roots)), replace=False)
    degrees: Counter[int] = Counter()
    for i in chosen:
        if sizes[i] == 1:
            degrees[0] += 1
            continue
        members = graph.members(tx, int(roots[i]))
        g = identifier_graph(evidence.joining(tx, members), members)
        degrees.update(d for _, d in g.degree())
    values = np.repeat(np.fromiter(degrees.keys(), dtype=np.int64),
                       np.fromiter(degrees.values(), dtype=np.int64))
    return float(np.median(values))


def _bridges(tx: Txn, graph: IdentityGraph, evidence: Evidence, root: int, person_id: str,
             min_side: int) -> list[Finding]:
    members = graph.members(tx, root)
    g = identifier_graph(evidence.joining(tx, members), members)
    bridges = list(nx.bridges(g))
    if not bridges:
        return []
    out = []
    for (u, v), side in _side_sizes(g, bridges).items():
        if side < min_side:
            continue
        a, b = graph.node_info(tx, u).identifier, graph.node_info(tx, v).identifier
        out.append(Finding(FindingKind.BRIDGE, person_id, side / min_side,
                           f"removing the link {a} - {b} ({g[u][v]['source']}) leaves "
                           f"{side} and {len(g) - side} identifiers apart", (a, b),
                           tuple(g[u][v]["links"])))
    return out
