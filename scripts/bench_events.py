#!/usr/bin/env python3
"""Benchmark of events and profiles over real gRPC, with synced (durable) commits.

Measures, in one run:

- events/s through ``TrackStream`` with ``--batch`` events per message (a seeded mix of
  60% views, 10% cart adds, 15% searches, 5% orders with two lines, 10% message events
  by ``--identifiers`` identifiers, each seen once in an untimed warm-up stream so the
  timed one measures events rather than new persons), each repetition over a fresh
  server and data folder;
- the same events in the columnar form (``PackedEvents``; orders, which it does not
  carry, go one by one in the same messages), on another fresh server (``--form``);
- beside them, the raw LMDB rate of the same writes: two puts per event (a 16-byte event
  key with a 24-byte value, a 12-byte digest with a 4-byte seq), one synced commit per
  batch, and again with one commit per ``--group`` batches as the service groups them;
  keys made before timing (``lmdb_event_puts_per_second``);
- ``GetProfile`` latency (median, p99) for a person with ``--profile-events`` events
  across 5 identifiers, first page of 50, beside ``Resolve`` of the same person;
- bytes per stored event: pages of every events sub-database (LMDB ``stat``) / events.

The server runs in a subprocess so client and server do not share a GIL; requests are
serialised before timing starts. Figures are medians of ``--repeat`` repetitions. The
server's CPU seconds over the timed stream are reported too (events per CPU-second):
unlike wall-clock rates, they hardly move when other work shares the machine. So are the
bytes the server wrote to storage per event (``/proc/PID/io``): every commit writes each
page it dirtied, so this shows what random keys cost the disk.

    .venv/bin/python scripts/bench_events.py                      # 200k events x 3
    .venv/bin/python scripts/bench_events.py --events 1000000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import lmdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from identity.v1 import events_pb2 as ev  # noqa: E402
from identity.client import packed_events  # noqa: E402
from identity.v1 import common_pb2, identity_pb2  # noqa: E402
from benchlib import BENCH_KEYS, authorized  # noqa: E402

STREAM = "/identity.v1.EventService/TrackStream"
TRACK = "/identity.v1.EventService/Track"
PROFILE = "/identity.v1.EventService/GetProfile"
RESOLVE = "/identity.v1.IdentityService/Resolve"
LINK = "/identity.v1.IdentityService/Link"
CPU = "/bench.v1.Stats/Cpu"
T0 = 1_760_000_000_000
EVENT_DBS = ("events", "event_ids", "columns", "strings", "string_ids", "orders", "order_ids",
             "node_orders", "attributes")
CATEGORIES = [f"Home/Kitchen/{c}" for c in ("Kettles", "Toasters", "Pans", "Knives", "Mugs")] + [
    f"Garden/{c}" for c in ("Hoses", "Seeds", "Tools")]
BRANDS = ("Bosch", "Tefal", "Smeg", "Russell Hobbs", "Philips", "Fiskars")


def make_event(rng: random.Random, n: int, who: common_pb2.Identifier, prefix: str) -> ev.Event:
    e = ev.Event(event_id=f"{prefix}-{n}", identifier=who, source="web",
                 channel=ev.EVENT_CHANNEL_WEB)
    e.time.FromMilliseconds(T0 + n * 37)
    product = dict(product_id=f"P{rng.randrange(5000)}", category=rng.choice(CATEGORIES),
                   brand=rng.choice(BRANDS), price=round(rng.uniform(2, 200), 2))
    r = rng.random()
    if r < 0.60:
        e.view.CopyFrom(ev.ProductEvent(**product))
    elif r < 0.70:
        e.add_to_cart.CopyFrom(ev.ProductEvent(**product, quantity=rng.randint(1, 3)))
    elif r < 0.85:
        e.search.phrase = rng.choice(("kettle", "electric kettle", "toaster", "garden hose"))
        e.search.results_count = rng.randrange(100)
    elif r < 0.90:
        e.order.CopyFrom(ev.OrderEvent(
            order_id=f"{prefix}-O{n}", currency="EUR",
            lines=[ev.OrderLine(**product, quantity=1),
                   ev.OrderLine(product_id="P1", category=CATEGORIES[0], brand="Bosch", price=30)]))
    else:
        e.channel = ev.EVENT_CHANNEL_EMAIL
        e.message.action = rng.randint(1, 4)
        e.message.campaign = rng.choice(("spring", "summer", "black-friday"))
    return e


def people(identifiers: int) -> list[common_pb2.Identifier]:
    return [common_pb2.Identifier(kind=6 if i % 2 else 2,
                                  value=f"dev-{i:08x}" if i % 2 else f"user{i}@example.com")
            for i in range(identifiers)]


def warm_up_messages(identifiers: int, batch: int) -> list[bytes]:
    """One search per identifier, so the timed stream measures events, not new identifiers."""
    events = []
    for n, who in enumerate(people(identifiers)):
        e = ev.Event(event_id=f"warm-{n}", identifier=who, source="web",
                     search=ev.SearchEvent(phrase="kettle"))
        e.time.FromMilliseconds(T0 - 1000)
        events.append(e)
    return [ev.TrackStreamRequest(events=events[i : i + batch]).SerializeToString()
            for i in range(0, len(events), batch)]


def stream_messages(count: int, batch: int, identifiers: int, seed: int, prefix: str,
                    packed: bool = False) -> list[bytes]:
    """The stream's messages; ``packed``: the same events, orders one by one (``events``)
    and every other type in the columnar form (``packed``) of the same message."""
    rng = random.Random(seed)
    people_ = people(identifiers)
    messages = []
    for start in range(0, count, batch):
        events = [make_event(rng, n, rng.choice(people_), prefix)
                  for n in range(start, min(count, start + batch))]
        if packed:
            orders = [e for e in events if e.HasField("order")]
            message = ev.TrackStreamRequest(events=orders, packed=packed_events(
                [e for e in events if not e.HasField("order")]))
        else:
            message = ev.TrackStreamRequest(events=events)
        messages.append(message.SerializeToString())
    return messages


# -- server in a subprocess --------------------------------------------------


def _cpu_handler() -> grpc.GenericRpcHandler:
    """``bench.v1.Stats/Cpu``: the server process's CPU seconds so far (user + system)."""

    def cpu(request: bytes, context: object) -> bytes:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return repr(usage.ru_utime + usage.ru_stime).encode()

    handler = grpc.unary_unary_rpc_method_handler(cpu)
    return grpc.method_handlers_generic_handler("bench.v1.Stats", {"Cpu": handler})


def serve_main(data: Path) -> None:
    from identity.app import App
    from identity.config import Settings
    from identity.server import create_server

    app = App.open(Settings.load(env={}, data_dir=data, map_size="4GiB", api_keys=BENCH_KEYS))
    server, port = create_server(app, "127.0.0.1:0", max_workers=8)
    server.add_generic_rpc_handlers((_cpu_handler(),))
    server.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()
    server.stop(None).wait()
    app.close()


class Server:
    def __init__(self, data: Path):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(data)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        self.channel = authorized(grpc.insecure_channel(f"127.0.0.1:{line.split()[1]}", options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]))

    def written_bytes(self) -> int:
        """Bytes the server process has caused to be written to storage (/proc/PID/io)."""
        with open(f"/proc/{self.proc.pid}/io") as io:
            return int(dict(line.split(": ") for line in io.read().splitlines())["write_bytes"])

    def cpu_seconds(self) -> float:
        call = self.channel.unary_unary(CPU, request_serializer=None, response_deserializer=None)
        return float(call(b""))

    def stop(self) -> None:
        self.channel.close()
        self.proc.stdin.close()
        self.proc.wait()


# -- measurements ------------------------------------------------------------


def lmdb_event_puts_per_second(folder: Path, count: int, batch: int, identifiers: int,
                               group: int = 1) -> float:
    """The same durable writes without the service: per event a 16-byte key (4-byte node
    of ``--identifiers``, then 12 bytes) with a 24-byte value and a random 12-byte digest
    with a 4-byte value; per batch two sorted ``putmulti`` and one synced commit, or with
    ``group`` > 1 each batch in a nested transaction and one synced commit per ``group``
    batches (the service's group commit). Keys are made before timing starts, so this is
    LMDB's own rate for this write pattern."""
    env = lmdb.open(str(folder), map_size=4 << 30, max_dbs=4, sync=True, metasync=True)
    events, ids = env.open_db(b"events"), env.open_db(b"event_ids")
    rng = random.Random(2)
    value = b"v" * 24  # about the size of a view event record
    batches = []
    for first in range(0, count, batch):
        n = range(first, min(count, first + batch))
        rows = sorted((rng.randrange(identifiers).to_bytes(4, "big") + i.to_bytes(12, "big"), value)
                      for i in n)
        digests = sorted((rng.getrandbits(96).to_bytes(12, "big"), b"seq4") for _ in n)
        batches.append((rows, digests))
    start = time.perf_counter()
    for first in range(0, len(batches), group):
        with env.begin(write=True) as parent:
            for rows, digests in batches[first : first + group]:
                txn = env.begin(write=True, parent=parent) if group > 1 else parent
                txn.cursor(events).putmulti(rows)
                txn.cursor(ids).putmulti(digests)
                if group > 1:
                    txn.commit()
    rate = count / (time.perf_counter() - start)
    env.close()
    return rate


def stream(channel: grpc.Channel, messages: list[bytes]) -> tuple[float, ev.TrackStreamResponse]:
    call = channel.stream_unary(STREAM, request_serializer=None,
                                response_deserializer=ev.TrackStreamResponse.FromString)
    start = time.perf_counter()
    reply = call(iter(messages))
    return time.perf_counter() - start, reply


def event_bytes(data: Path) -> dict[str, int]:
    env = lmdb.open(str(data), readonly=True, lock=False, max_dbs=64)
    sizes = {}
    with env.begin() as txn:
        for name in EVENT_DBS:
            stat = txn.stat(env.open_db(name.encode(), txn=txn, create=False))
            pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            sizes[name] = pages * stat["psize"]
    env.close()
    return sizes


def profile_latency(channel: grpc.Channel, events: int, calls: int
                    ) -> tuple[list[float], list[float]]:
    ids = [common_pb2.Identifier(kind=k, value=v) for k, v in (
        (1, "C-BENCH"), (2, "bench@example.com"), (3, "+14155550199"), (4, "40001234567"),
        (6, "dev-bench"))]
    link = channel.unary_unary(LINK, request_serializer=None,
                               response_deserializer=identity_pb2.LinkResponse.FromString)
    link(identity_pb2.LinkRequest(identifiers=ids, source="bench").SerializeToString())
    rng = random.Random(3)
    track = channel.unary_unary(TRACK, request_serializer=None,
                                response_deserializer=ev.TrackResponse.FromString)
    batch = [make_event(rng, n, ids[n % 5], "profile") for n in range(events)]
    for first in range(0, events, 500):
        track(ev.TrackRequest(events=batch[first : first + 500]).SerializeToString())
    get = channel.unary_unary(PROFILE, request_serializer=None,
                              response_deserializer=ev.GetProfileResponse.FromString)
    resolve = channel.unary_unary(RESOLVE, request_serializer=None,
                                  response_deserializer=identity_pb2.ResolveResponse.FromString)
    profile_request = ev.GetProfileRequest(identifier=ids[3]).SerializeToString()
    resolve_request = identity_pb2.ResolveRequest(identifier=ids[3]).SerializeToString()
    reply = get(profile_request)
    assert len(reply.events) == 50 and len(reply.person.identifiers) == 5
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(calls):
        for method, request, out in ((get, profile_request, timings[0]),
                                     (resolve, resolve_request, timings[1])):
            start = time.perf_counter()
            method(request)
            out.append((time.perf_counter() - start) * 1000)
    return timings


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> None:
    print(f"events={args.events} batch={args.batch} identifiers={args.identifiers} "
          f"repeat={args.repeat} (server in a subprocess, synced commits)")
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    try:
        forms = ("events", "packed") if args.form == "both" else (args.form,)
        rates: dict[str, list[float]] = {form: [] for form in forms}
        cpu_rates: dict[str, list[float]] = {form: [] for form in forms}
        written: dict[str, list[float]] = {form: [] for form in forms}
        raw_rates, grouped_rates, sizes, stored = [], [], {}, {}
        for rep in range(args.repeat):
            for form in forms:
                messages = stream_messages(args.events, args.batch, args.identifiers, rep,
                                           f"r{rep}", packed=form == "packed")
                data = work / f"data{rep}{form}"
                server = Server(data)
                try:
                    _, warm = stream(server.channel,
                                     warm_up_messages(args.identifiers, args.batch))
                    cpu_before, written_before = server.cpu_seconds(), server.written_bytes()
                    seconds, reply = stream(server.channel, messages)
                    cpu_used = server.cpu_seconds() - cpu_before
                    written[form].append((server.written_bytes() - written_before)
                                         / reply.stored)
                finally:
                    server.stop()
                assert reply.stored == args.events, reply
                stored[form] = warm.stored + reply.stored
                rates[form].append(reply.stored / seconds)
                cpu_rates[form].append(reply.stored / cpu_used)
                sizes[form] = event_bytes(data)
                print(f"  rep {rep}: TrackStream ({form}) {rates[form][-1]:,.0f} events/s "
                      f"({cpu_rates[form][-1]:,.0f} per server CPU-second)", flush=True)
                shutil.rmtree(data)
            raw_rates.append(lmdb_event_puts_per_second(work / f"raw{rep}", args.events,
                                                        args.batch, args.identifiers))
            shutil.rmtree(work / f"raw{rep}")
            grouped_rates.append(lmdb_event_puts_per_second(
                work / f"grouped{rep}", args.events, args.batch, args.identifiers, args.group))
            shutil.rmtree(work / f"grouped{rep}")
            print(f"  rep {rep}: raw LMDB {raw_rates[-1]:,.0f} events/s (a commit per batch), "
                  f"{grouped_rates[-1]:,.0f} events/s (a commit per {args.group} batches)",
                  flush=True)
        raw = statistics.median(raw_rates)
        print(f"raw LMDB same puts: {raw:,.0f} events/s with a synced commit per batch, "
              f"{statistics.median(grouped_rates):,.0f} events/s with one per {args.group} "
              f"batches (medians of {args.repeat})")
        for form in forms:
            rate = statistics.median(rates[form])
            print(f"TrackStream ({form}): {rate:,.0f} events/s durable (median of {args.repeat}"
                  f"; runs {', '.join(f'{r:,.0f}' for r in rates[form])}); ratio to raw LMDB "
                  f"{rate / raw:.2f}; server CPU: {statistics.median(cpu_rates[form]):,.0f} "
                  f"events per CPU-second; written to disk: "
                  f"{statistics.median(written[form]):,.0f} bytes per event")
            last = sizes[form]
            total = sum(last.values())
            print(f"  bytes per stored event ({form}): {total / stored[form]:.1f} ("
                  f"{', '.join(f'{k} {v / stored[form]:.1f}' for k, v in last.items() if v)})")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

        server = Server(work / "profile")
        try:
            profile, resolve = profile_latency(server.channel, args.profile_events, args.calls)
        finally:
            server.stop()
        print(f"GetProfile ({args.profile_events} events, 5 identifiers, page of 50), "
              f"{args.calls} calls: median {statistics.median(profile):.2f} ms, "
              f"p99 {pct(profile, 0.99):.2f} ms; Resolve of the same person: median "
              f"{statistics.median(resolve):.2f} ms, p99 {pct(resolve, 0.99):.2f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--identifiers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile-events", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--group", type=int, default=16,
                        help="batches per commit of the grouped raw LMDB baseline")
    parser.add_argument("--form", choices=("events", "packed", "both"), default="both",
                        help="per-event messages, the columnar form (orders still per event), "
                             "or both on fresh servers")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve)
    else:
        run(args)


if __name__ == "__main__":
    main()
