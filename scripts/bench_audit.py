"""Benchmark the admins' tools: the suspicious-clusters report over a world, and a big split.

    .venv/bin/python scripts/bench_audit.py                  # 100k persons (about a minute)
    .venv/bin/python scripts/bench_audit.py --persons 1000000 --no-naive

The world: persons of an e-mail and a device, half of them with a customer id;
every ``--glue-every`` persons a call-centre phone glues ``--glue-size`` anonymous ones,
and some customer-id conflicts are refused. Baselines measured in the same run:
a raw LMDB cursor pass over the ``persons`` and ``links`` sub-databases (the
floor for any report reading them), and a naive report that builds one networkx
graph of every link and runs degrees and bridges over all of it.
The split: a 1,000-identifier component (two halves of 500 glued through one
phone) split by that phone, against the merge that glued it, medians of runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx

from identity.app import App, LinkInput
from identity.config import Settings
from identity.identifiers import Kind
from identity.report import FindingKind
from identity.split import Who

C, E, P, D = int(Kind.CUSTOMER_ID), int(Kind.EMAIL), int(Kind.PHONE), int(Kind.DEVICE_ID)
BATCH = 5000


def build_world(app: App, persons: int, glue_every: int, glue_size: int) -> int:
    links: list[LinkInput] = []
    count = 0

    def add(*pairs: tuple[int, str]) -> None:
        nonlocal count
        links.append(LinkInput(list(pairs), source="bench"))
        if len(links) >= BATCH:
            app.link_batch(links)
            count += len(links)
            links.clear()

    for i in range(persons):  # even persons have a customer id, odd ones are anonymous
        if i % 2 == 0:
            add((C, f"C{i}"), (E, f"p{i}@example.com"))
        add((E, f"p{i}@example.com"), (D, f"dev-{i}"))
        if i % glue_every == glue_every - 1:  # a shared call-centre phone on anonymous orders
            phone = f"+1212555{i // glue_every % 10000:04d}"
            for j in range(i - 2 * glue_size + 2, i + 1, 2):
                add((P, phone), (D, f"dev-{j}"))
            add((C, f"C{i - 1}"), (E, f"p{i - 3}@example.com"))  # refused: two customer ids
    if links:
        app.link_batch(links)
        count += len(links)
    return count


def raw_pass(app: App) -> float:
    started = time.perf_counter()
    with app.store.read() as tx:
        for db in ("persons", "links"):
            for _ in tx.items(db):
                pass
    return time.perf_counter() - started


def naive_report(app: App) -> tuple[float, int]:
    """One networkx graph of every link; degrees and bridges over the whole world."""
    started = time.perf_counter()
    g = nx.Graph()
    with app.store.read() as tx:
        for rec in app.graph.log.since(tx):
            if rec.outcome.value <= 4:
                ns = rec.nodes
                g.add_edges_from((ns[i], ns[j]) for i in range(len(ns)) for j in range(i + 1, len(ns)))
    degrees = sorted(d for _, d in g.degree())
    median = degrees[len(degrees) // 2]
    high = sum(1 for _, d in g.degree() if d >= max(5, 4 * median))
    bridges = sum(1 for _ in nx.bridges(g))
    del bridges
    return time.perf_counter() - started, high


def bench_split(app: App, size: int, runs: int) -> tuple[list[float], list[float]]:
    half = size // 2
    links = []
    for side in "ab":  # a chain e-mail, device, e-mail, ... of ``half`` identifiers
        for i in range(half // 2):
            links.append(LinkInput([(E, f"big-{side}{i}@example.com"), (D, f"big-{side}{i}")],
                                   source="bench"))
            if i:
                links.append(LinkInput([(D, f"big-{side}{i - 1}"),
                                        (E, f"big-{side}{i}@example.com")], source="bench"))
    app.link_batch(links)
    tie = LinkInput([(D, "big-a1"), (P, "+12125550999")], source="callcentre")
    glue = LinkInput([(P, "+12125550999"), (E, "big-b0@example.com")], source="callcentre")
    who = Who("bench", "benchmark")
    phone = app.identifier(P, "+12125550999")
    splits, merges = [], []
    for _ in range(runs):
        app.link(tie)  # the phone joins A (again: a split took it out of its old links)
        started = time.perf_counter()
        app.link(glue)
        merges.append(time.perf_counter() - started)
        assert len(app.resolve(phone).identifiers) >= size - 1
        started = time.perf_counter()
        outcome = app.audit.split_identifier(phone, who)
        splits.append(time.perf_counter() - started)
        assert len(outcome.pieces) == 3, outcome
    return splits, merges


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--glue-every", type=int, default=10_000)
    ap.add_argument("--glue-size", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--split-size", type=int, default=1000)
    ap.add_argument("--no-naive", action="store_true", help="skip the whole-world networkx baseline")
    ap.add_argument("--data", help="LMDB folder [a temporary one]")
    args = ap.parse_args()

    data = Path(args.data or tempfile.mkdtemp(prefix="bench-audit-"))
    limits = {kind: 10_000 for kind in Kind if kind is not Kind.CUSTOMER_ID}  # room for 1,000
    app = App.open(Settings.load(env={}, data_dir=data, map_size="4GiB", kind_limits=limits))
    try:
        started = time.perf_counter()
        links = build_world(app, args.persons, args.glue_every, args.glue_size)
        print(f"world: {args.persons:,} persons, {links:,} links built in "
              f"{time.perf_counter() - started:.1f} s", flush=True)

        raws = [raw_pass(app) for _ in range(args.runs)]
        reports = []
        for _ in range(args.runs):
            started = time.perf_counter()
            findings = app.audit.report()
            reports.append(time.perf_counter() - started)
        kinds = {k.label: sum(1 for f in findings if f.kind is k) for k in FindingKind}
        report_s, raw_s = statistics.median(reports), statistics.median(raws)
        print(f"report: median {report_s:.2f} s over {args.runs} runs; findings {kinds}")
        print(f"raw LMDB pass over persons + links: median {raw_s:.2f} s "
              f"(report / raw = {report_s / raw_s:.1f}x)")
        if not args.no_naive:
            naive_s, high = naive_report(app)
            print(f"naive whole-world networkx report: {naive_s:.2f} s, {high} high-degree "
                  f"(naive / report = {naive_s / report_s:.1f}x)")

        splits, merges = bench_split(app, args.split_size, args.runs)
        split_s, merge_s = statistics.median(splits), statistics.median(merges)
        print(f"split of a {args.split_size}-identifier component by its phone: median "
              f"{split_s * 1000:.0f} ms; the merge that glued it: {merge_s * 1000:.1f} ms "
              f"(split / merge = {split_s / merge_s:.0f}x)")
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
