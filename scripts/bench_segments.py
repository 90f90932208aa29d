"""Benchmark CountSegment and ExportSegment over gRPC on a synthetic world.

    .venv/bin/python scripts/bench_segments.py --persons 100000 --events 2000000
    .venv/bin/python scripts/bench_segments.py --persons 1000000 --events 20000000 --runs 5

Builds a world in a temporary LMDB folder: persons linked through the graph's
domain API (``App.link_batch``, 20,000 per transaction), events written as packed
column blocks of 250,000 rows, the format ``EventColumns.append`` stores for a
committed batch (a bulk import of columns; the per-person row store is not written,
segments do not read it). Then a separate server process loads everything from
LMDB, so its resident memory is the server's alone, and the script times a segment
of 11 leaves (event windows with counts, not happened, abandoned, aggregates,
cohort, reachable, attribute) over gRPC: cold (leaf cache cleared before each
call), warm, and right after 1,000 new events and a merge arrive through ``Track``
and ``Link`` (the index and per-node facts catch up incrementally); a full export;
the server's RSS; and the plain reference evaluator (tests/segment_reference.py) on
a sample of persons in the same run. Medians of several runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
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
from identity.segmentation import Target  # noqa: E402
from identity.server import create_server  # noqa: E402
from benchlib import BENCH_KEYS  # noqa: E402
from segment_reference import Reference, World  # noqa: E402
from segment_world import event_pb  # noqa: E402

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
    app = App.open(Settings.load(env={}, data_dir=data, map_size="64GiB", sync=False))
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


def reference_sample(app: App, sample: int, seed: int) -> tuple[float, int, int]:
    """Seconds per person of the reference evaluator over ``sample`` persons; its member
    count there and the engine's."""
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
    elapsed = time.perf_counter() - started
    members = app.segments.evaluate(Target(TREE), AS_OF * 1000).members
    engine = int(np.count_nonzero(members[chosen]))
    return elapsed / len(people), count, engine


def serve(data: str) -> int:
    """The server process: loads the world, serves gRPC, obeys commands on stdin.

    Commands: ``clear`` (empty the leaf cache), ``reference SAMPLE SEED`` (time the
    reference evaluator here, where the world is loaded), ``quit``."""
    started = time.perf_counter()
    app = App.open(Settings.load(env={}, data_dir=data, map_size="64GiB", sync=False,
                                 api_keys=BENCH_KEYS))
    rows = app.tracking.columns.snapshot().rows
    server, port = create_server(app, "127.0.0.1:0")
    server.start()
    print(f"port {port} {time.perf_counter() - started:.1f} {rows}", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "clear":
                app.segments.engine.clear_cache()
                print("ok", flush=True)
            elif words[0] == "reference":
                per_person, count, engine = reference_sample(app, int(words[1]), int(words[2]))
                print(f"{per_person} {count} {engine}", flush=True)
    finally:
        server.stop(None).wait()
        app.close()
    return 0


def rss_mib(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def fresh_events(persons: int, count: int, seed: int) -> list:
    """``count`` new view and order events of existing persons, as a client would send them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        who = f"email:u{int(rng.integers(0, persons))}@example.com"
        t = AS_OF - int(rng.integers(0, 5 * DAY))
        if i % 10 == 0:
            out.append(event_pb({"id": f"fresh-o{seed}-{i}", "who": who, "type": "order",
                                 "time": t, "order_id": f"fresh-{seed}-{i}", "amount": 30.0,
                                 "lines": [{"product": "p7", "category": CATEGORIES[0],
                                            "price": 30.0}]}))
        else:
            out.append(event_pb({"id": f"fresh-v{seed}-{i}", "who": who, "type": "view",
                                 "time": t, "product": f"p{i % 50}", "category": CATEGORIES[0],
                                 "amount": 10.0}))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sample", type=int, default=300, help="persons for the reference")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serve", metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    with tempfile.TemporaryDirectory() as data:
        started = time.perf_counter()
        build(data, args.persons, args.events, args.seed)
        print(f"built {args.persons:,} persons, {args.events:,} events (+order lines) in "
              f"{time.perf_counter() - started:.1f} s")
        proc = subprocess.Popen([sys.executable, __file__, "--serve", data],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None

        def command(text: str) -> str:
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip()

        try:
            _, port, load_s, rows = proc.stdout.readline().split()
            print(f"server loaded from LMDB (columns, graph, per-type time-sorted index) in "
                  f"{float(load_s):.1f} s; {int(rows):,} column rows")
            loaded_rss = rss_mib(proc.pid)[0]
            with IdentityClient(f"127.0.0.1:{port}", timeout=600) as client:
                as_of = AS_OF * 1000
                cold, warm, fresh, count = [], [], [], 0
                for _ in range(args.runs):
                    command("clear")
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
                rss, peak = rss_mib(proc.pid)
                for run in range(args.runs):  # new events and a merge, then the next count
                    client.track(fresh_events(args.persons, 1000, run))
                    client.link(f"email:u{2 * run + 1}@example.com",
                                f"email:u{2 * run + 2}@example.com", source="bench")
                    t0 = time.perf_counter()
                    client.count_segment(TREE, as_of=as_of)
                    fresh.append(time.perf_counter() - t0)
            per_person, ref_count, engine_count = \
                command(f"reference {args.sample} {args.seed}").split()
            ref_per_person = float(per_person)
        finally:
            proc.stdin.close()
            proc.wait()
        cold_ms, warm_ms = statistics.median(cold) * 1000, statistics.median(warm) * 1000
        export_ms, fresh_ms = statistics.median(exports) * 1000, statistics.median(fresh) * 1000
        print(f"segment of 11 leaves: {count:,} of {args.persons:,} persons")
        print(f"CountSegment cold (leaf cache cleared): median {cold_ms:.1f} ms "
              f"= {args.persons / (cold_ms / 1000):,.0f} persons/s "
              f"(runs: {', '.join(f'{t * 1000:.0f}' for t in cold)})")
        print(f"CountSegment warm (leaf cache): median {warm_ms:.1f} ms")
        print(f"CountSegment after 1,000 new events and a merge: median {fresh_ms:.1f} ms")
        print(f"ExportSegment, all {count:,} members with e-mail: median {export_ms:.1f} ms")
        print(f"server RSS: {loaded_rss:.0f} MiB after load, {rss:.0f} MiB after the queries "
              f"(peak {peak:.0f} MiB)")
        ref_ms = ref_per_person * args.persons * 1000
        print(f"reference evaluator: {ref_per_person * 1e6:.0f} us/person on {args.sample} "
              f"persons ({ref_count} members; the engine finds {engine_count} of them) -> "
              f"{ref_ms / 1000:.1f} s for the base; "
              f"engine cold is {ref_ms / cold_ms:,.0f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
