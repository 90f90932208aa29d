"""Benchmark CountSegment and ExportSegment over gRPC on a synthetic world.

    .venv/bin/python scripts/bench_segments.py --persons 100000 --events 2000000

Builds a world in a temporary LMDB folder (persons linked through the graph; event
columns written as packed blocks, the same format the event store appends), restarts
the app so everything loads from LMDB, then times a segment of 11 leaves (event
windows with counts, not happened, abandoned, aggregates, cohort, reachable,
attribute) over gRPC: cold (leaf cache cleared before each call) and warm, medians
of several runs; a full export; the server's RSS; and the plain reference evaluator
(tests/segment_reference.py) on a sample of persons in the same run.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from identity import columns as columns_module  # noqa: E402
from identity.app import App, LinkInput  # noqa: E402
from identity.client import IdentityClient  # noqa: E402
from identity.config import Settings  # noqa: E402
from identity.server import create_server  # noqa: E402
from segment_reference import Reference, World  # noqa: E402

DAY = 86400
AS_OF = 1_781_524_800  # 2026-06-15 12:00 UTC
CATEGORIES = ["Electronics/TV", "Electronics/Cameras", "Electronics/Audio", "Home/Kitchen",
              "Home/Garden", "Fashion/Shoes", "Fashion/Bags", "Toys", "Books", "Sport/Bikes"]
TREE = {"all": [
    {"event": {"filter": {"type": "view", "category": "Electronics"},
               "window": {"from_days_ago": 30, "to_days_ago": 0}, "count": {"min": 2}}},
    {"event": {"filter": {"type": "add_to_cart"}, "window": {"from_days_ago": 60,
                                                             "to_days_ago": 0}}},
    {"event": {"filter": {"type": "order"}, "window": {"from_days_ago": 7, "to_days_ago": 0},
               "not_happened": True}},
    {"abandoned": {"window": {"from_days_ago": 60, "to_days_ago": 0}}},
    {"aggregate": {"name": "orders_count", "range": {"min": 1}}},
    {"aggregate": {"name": "total_spent", "range": {"min": 20}}},
    {"cohort": {"cells": ["Newcomers", "Promising", "Loyal", "Drifting", "At risk"]}},
    {"reachable": {"kind": "email"}},
    {"any": [
        {"event": {"filter": {"type": "search", "search": {"contains": "tv"}},
                   "window": {"from_days_ago": 90, "to_days_ago": 0}}},
        {"event": {"filter": {"type": "view", "product_ids": ["p1", "p2", "p3", "p4", "p5"]},
                   "window": {"from_days_ago": 90, "to_days_ago": 0}}},
    ]},
    {"aggregate": {"name": "days_since_last_activity", "range": {"max": 30}}},
    {"attribute": {"name": "city", "exists": False}},
]}


def build(data: str, persons: int, events: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    app = App.open(Settings.load(env={}, data_dir=data, map_size="8GiB", sync=False))
    try:
        step = 20_000
        for start in range(0, persons, step):
            batch = [LinkInput([(2, f"u{i}@example.com")] + ([(3, f"+1202555{i:04d}")]
                                                            if i % 3 == 0 and i < 10_000 else []))
                     for i in range(start, min(persons, start + step))]
            app.link_batch(batch)
        strings = app.tracking.strings
        texts = CATEGORIES + [f"p{i}" for i in range(5000)] + ["tv", "red shoes", "camera",
                                                                "smart tv 55", "kettle"]
        ids = app.store.write(lambda tx: [strings.intern(tx, t) for t in texts])
        cat_ids = np.array(ids[: len(CATEGORIES)], dtype=np.uint32)
        prod_ids = np.array(ids[len(CATEGORIES): len(CATEGORIES) + 5000], dtype=np.uint32)
        phrase_ids = np.array(ids[len(CATEGORIES) + 5000:], dtype=np.uint32)
        with app.store.read() as tx:
            nodes = np.array([app.graph.node_of(tx, app.identifier(2, f"u{i}@example.com"))
                              for i in range(persons)], dtype=np.uint32)
        block, order_ref = 250_000, 1
        for start in range(0, events, block):
            n = min(block, events - start)
            table = np.zeros(n, dtype=columns_module.ROW_DTYPE)
            table["node"] = nodes[rng.integers(0, persons, n)]
            table["time"] = AS_OF - rng.integers(0, 180 * DAY, n)
            kind = rng.choice([1, 2, 5, 7, 9], n, p=[0.6, 0.15, 0.08, 0.1, 0.07])
            table["type"] = kind
            table["channel"] = rng.choice([1, 2], n)
            product = rng.integers(0, 5000, n)
            table["product"] = np.where(kind <= 2, prod_ids[product], 0)
            table["category"] = np.where(kind <= 2, cat_ids[product % len(CATEGORIES)], 0)
            table["amount"] = np.where(kind <= 5, rng.uniform(5, 200, n), 0)
            table["action"] = np.where(kind == 9, rng.integers(1, 5, n), 0)
            table["label"] = np.where(kind == 7, phrase_ids[rng.integers(0, 5, n)], 0)
            orders = np.flatnonzero(kind == 5)
            table["order"][orders] = np.arange(order_ref, order_ref + len(orders))
            order_ref += len(orders)
            lines = table[orders].copy()  # one line per order
            lines["type"] = columns_module.ORDER_LINE
            lines["product"] = prod_ids[product[orders]]
            lines["category"] = cat_ids[product[orders] % len(CATEGORIES)]
            whole = np.concatenate([table, lines])
            app.store.write(lambda tx, whole=whole: _append(tx, whole))
    finally:
        app.close()


def _append(tx, table: np.ndarray) -> None:
    """Write one packed block, as ``EventColumns.append`` does for a committed batch."""
    raw = tx.get("meta", columns_module._NEXT_BLOCK)
    seq = columns_module._BLOCK_KEY.unpack(raw)[0] if raw else 1
    tx.put("meta", columns_module._NEXT_BLOCK, columns_module._BLOCK_KEY.pack(seq + 1))
    tx.put("columns", columns_module._BLOCK_KEY.pack(seq), columns_module.pack_block(table))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_sample(app: App, sample: int, seed: int) -> tuple[float, int]:
    """Seconds per person of the reference evaluator over ``sample`` persons."""
    cols = app.tracking.columns.snapshot()
    roots = app.segments.population.roots()
    person_rows = np.flatnonzero(roots == np.arange(len(roots)))
    person_rows = person_rows[person_rows > 0]
    chosen = np.random.default_rng(seed).choice(person_rows, min(sample, len(person_rows)),
                                                replace=False)
    text = app.tracking.strings.text
    rows = np.flatnonzero(np.isin(roots[cols.node], chosen))
    names = {5: "order", 1: "view", 2: "add_to_cart", 7: "search", 9: "message"}
    events, lines = [], {}
    for r in rows.tolist():
        t = int(cols.type[r])
        if t == columns_module.ORDER_LINE:
            lines.setdefault(int(cols.order[r]), []).append(
                {"product": text(int(cols.product[r])), "category": text(int(cols.category[r]))})
    for r in rows.tolist():
        t = int(cols.type[r])
        if t not in names:
            continue
        e = {"id": f"r{r}", "who": f"n{int(cols.node[r])}", "type": names[t],
             "time": int(cols.time[r]), "amount": float(cols.amount[r]),
             "channel": {1: "app", 2: "web"}.get(int(cols.channel[r]), ""),
             "action": int(cols.action[r])}
        if t <= 2:
            e.update(product=text(int(cols.product[r])), category=text(int(cols.category[r])))
        if t == 7:
            e["phrase"] = text(int(cols.label[r]))
        if t == 5:
            e.update(order_id=str(int(cols.order[r])), lines=lines.get(int(cols.order[r]), []))
        events.append(e)
    kinds = app.segments.population.kinds(len(roots))
    people = []
    for root in chosen.tolist():
        members = np.flatnonzero(roots == root).tolist()
        people.append({f"n{m}" for m in members} | {("email" if kinds[m] == 2 else "phone")
                                                     + f":{m}" for m in members})
    world = World(people, events, [], "UTC")
    reference = Reference(world, AS_OF)
    started = time.perf_counter()
    count = reference.count(TREE)
    return (time.perf_counter() - started) / len(people), count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sample", type=int, default=300, help="persons for the reference")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        started = time.perf_counter()
        build(data, args.persons, args.events, args.seed)
        print(f"built {args.persons:,} persons, {args.events:,} events (+order lines) in "
              f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        app = App.open(Settings.load(env={}, data_dir=data, map_size="8GiB", sync=False))
        print(f"loaded from LMDB in {time.perf_counter() - started:.1f} s; "
              f"{app.tracking.columns.snapshot().rows:,} column rows")
        server, port = create_server(app, "127.0.0.1:0")
        server.start()
        try:
            with IdentityClient(f"127.0.0.1:{port}", timeout=600) as client:
                as_of = AS_OF * 1000
                cold, warm, count = [], [], 0
                for _ in range(args.runs):
                    app.segments.engine.clear_cache()
                    t0 = time.perf_counter()
                    count = client.count_segment(TREE, as_of=as_of).count
                    cold.append(time.perf_counter() - t0)
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    client.count_segment(TREE, as_of=as_of)
                    warm.append(time.perf_counter() - t0)
                exports = []
                for _ in range(max(3, args.runs // 2)):
                    t0 = time.perf_counter()
                    exported = sum(1 for _ in client.export_segment(TREE, as_of=as_of,
                                                                    channel="email"))
                    exports.append(time.perf_counter() - t0)
                assert exported == count
            ref_per_person, ref_count = reference_sample(app, args.sample, args.seed)
        finally:
            server.stop(None).wait()
        cold_ms, warm_ms = statistics.median(cold) * 1000, statistics.median(warm) * 1000
        export_ms = statistics.median(exports) * 1000
        print(f"segment of 11 leaves: {count:,} of {args.persons:,} persons")
        print(f"CountSegment cold (leaf cache cleared): median {cold_ms:.1f} ms "
              f"= {args.persons / (cold_ms / 1000):,.0f} persons/s")
        print(f"CountSegment warm (leaf cache): median {warm_ms:.1f} ms")
        print(f"ExportSegment, all {count:,} members with e-mail: median {export_ms:.1f} ms")
        print(f"server RSS: {rss_mb():.0f} MiB")
        ref_ms = ref_per_person * args.persons * 1000
        print(f"reference evaluator: {ref_per_person * 1e6:.0f} us/person on {args.sample} "
              f"persons ({ref_count} members) -> {ref_ms / 1000:.1f} s for the base; "
              f"engine cold is {ref_ms / cold_ms:,.0f}x faster")
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
