#!/usr/bin/env python3
"""Benchmark of trigger decisions over real gRPC: CheckTrigger and FilterAudience.

A seeded world of ``--persons`` persons (customer id, e-mail, one or two push
devices; one in five has an order of the product the trigger is about, one in
ten a recorded push, and with ``--history N`` N older pushes, one a day before the
last week, as a long-lived customer has) is loaded into a server in a subprocess
over a fresh LMDB folder with synced commits. Then, in the same run:

- a trivial unary gRPC echo (a bare gRPC server in the server's process, no credentials
  to check), twice: on gRPC's shared thread pool and on a pool of two threads of its own
  (``benchlib``); calls/s, p99. Each ratio is to the faster of the two, so the server's
  placement of ``CheckTrigger`` (``--check-workers``) cannot make the baseline slower;
- ``CheckTrigger`` without reservation (one read snapshot per call): calls/s, p99, and
  the floor, 0.5x the echo;
- ``CheckTrigger`` with ``reserve=true`` (decided on a snapshot, then one write job
  per call that re-validates and reserves, group committed): calls/s, p99;
- ``FilterAudience`` over every person's device id, batches of ``--batch`` (messages
  built before timing): persons/s;
- raw synced one-put LMDB commits on the same disk: p50 and p99 latency, for context.

Unary figures use ``--threads`` and then ``--many`` client threads on one
channel for ``--seconds`` each, requests serialised before timing (a reserving
check groups its commit with the checks running beside it, so concurrency
matters). The echo, check and reserve runs alternate in ``--slices`` short rounds,
so that a shared machine's load changes hit all three alike; every figure is the
median of ``--repeat`` repetitions on the same world, and each ratio is the median
of per-repetition ratios to the echo interleaved with it. Plain checks start again
at the first request in each round while reserving ones carry on through the list,
so after the first round most plain checks ask about a person just reserved for
(a send found: dedupe and caps have work to do).

    .venv/bin/python scripts/bench_triggers.py                   # 100k persons
    .venv/bin/python scripts/bench_triggers.py --persons 1000000  # the 1M world
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from identity.rpc.convert import timestamp_of  # noqa: E402
from identity.v1 import common_pb2, events_pb2, identity_pb2, triggers_pb2  # noqa: E402
from benchlib import (  # noqa: E402
    BENCH_KEYS, ECHO_METHOD, ECHO_ON_POOL_METHOD, authorized, start_echo_server)
from identity.server import CHECK_WORKERS, READ_WORKERS  # noqa: E402

ECHOES = {"echo_shared": ECHO_METHOD, "echo_pooled": ECHO_ON_POOL_METHOD}
CHECK = "/identity.v1.TriggerService/CheckTrigger"
NOON = 1_780_488_000_000  # 2026-06-03 12:00 UTC: outside the default quiet hours
CID, EMAIL, DEVICE = 1, 2, 6


def ident(kind: int, value: str) -> common_pb2.Identifier:
    return common_pb2.Identifier(kind=kind, value=value)


class World:
    """Links, events and requests of a seeded world, serialised up front."""

    def __init__(self, persons: int, seed: int, batch: int, history: int = 0):
        rng = random.Random(seed)
        self.persons = persons
        links, events = [], []
        for i in range(persons):
            ids = [ident(CID, f"C{i}"), ident(EMAIL, f"p{i}@example.com"),
                   ident(DEVICE, f"dev-{i}-a")]
            if rng.random() < 0.3:
                ids.append(ident(DEVICE, f"dev-{i}-b"))
            links.append(identity_pb2.LinkRequest(identifiers=ids, source="app"))
            if i % 5 == 0:
                order = events_pb2.OrderEvent(order_id=f"O{i}", lines=[events_pb2.OrderLine(
                    product_id=f"K-{i % 50}", category="Home/Kitchen/Kettles", price=39.0)])
                e = events_pb2.Event(event_id=f"o{i}", identifier=ident(CID, f"C{i}"),
                                     channel=events_pb2.EVENT_CHANNEL_WEB, order=order)
                e.time.FromMilliseconds(NOON - 3_600_000)
                events.append(e)
            if i % 10 == 0:
                e = events_pb2.Event(
                    event_id=f"m{i}", identifier=ident(DEVICE, f"dev-{i}-a"),
                    channel=events_pb2.EVENT_CHANNEL_PUSH, message=events_pb2.MessageEvent(
                        action=events_pb2.MESSAGE_ACTION_SENT, campaign="earlier"))
                e.time.FromMilliseconds(NOON - 7_200_000)
                events.append(e)
                for day in range(history):  # older than every cap and dedupe window
                    e = events_pb2.Event(
                        event_id=f"m{i}-{day}", identifier=ident(DEVICE, f"dev-{i}-a"),
                        channel=events_pb2.EVENT_CHANNEL_PUSH, message=events_pb2.MessageEvent(
                            action=events_pb2.MESSAGE_ACTION_SENT, campaign="weekly"))
                    e.time.FromMilliseconds(NOON - (8 + day) * 86_400_000)
                    events.append(e)
        self.link_batches = [identity_pb2.LinkStreamRequest(links=links[s : s + batch])
                             for s in range(0, len(links), batch)]
        self.event_batches = [events_pb2.TrackStreamRequest(events=events[s : s + batch])
                              for s in range(0, len(events), batch)]
        self.events = len(events)
        picks = [rng.randrange(persons) for _ in range(50_000)]
        self.checks = [self._check(i, reserve=False) for i in picks]
        self.reserving = [self._check(i, reserve=True, key=f"bench/{n}")
                          for n, i in enumerate(picks)]
        self.echo = self.checks[0]
        self.batch = batch

    @staticmethod
    def _check(i: int, reserve: bool, key: str = "") -> bytes:
        return triggers_pb2.CheckTriggerRequest(
            identifier=ident(DEVICE, f"dev-{i}-a"), trigger=triggers_pb2.TRIGGER_KIND_ABANDONED_CART,
            product_ids=[f"K-{i % 50}"], channel=events_pb2.EVENT_CHANNEL_PUSH, campaign="bench",
            now=timestamp_of(NOON), event_time=timestamp_of(NOON - 4 * 3_600_000),
            reserve=reserve, idempotency_key=key).SerializeToString()

    def audience(self, run: int):
        settings = triggers_pb2.AudienceSettings(
            trigger=triggers_pb2.TRIGGER_KIND_PRICE_DROP, product_ids=["K-5"],
            channel=events_pb2.EVENT_CHANNEL_PUSH, campaign=f"audience-{run}",
            now=timestamp_of(NOON))
        first = True
        for start in range(0, self.persons, self.batch):
            message = triggers_pb2.FilterAudienceRequest(identifiers=[
                ident(DEVICE, f"dev-{i}-a") for i in range(start, min(start + self.batch,
                                                                       self.persons))])
            if first:
                message.settings.CopyFrom(settings)
                first = False
            yield message


def serve_main(data: Path, workers: int, read_workers: int, check_workers: int) -> None:
    """Subprocess mode: print the port, serve until stdin closes."""
    from identity.app import App
    from identity.config import Settings
    from identity.gc_policy import tune_for_serving
    from identity.server import create_server

    app = App.open(Settings.load(env={}, data_dir=data, map_size="2GiB", api_keys=BENCH_KEYS))
    server, port = create_server(app, "127.0.0.1:0", max_workers=workers,
                                 read_workers=read_workers, check_workers=check_workers)
    tune_for_serving()  # the collector set as ``identity serve`` sets it
    server.start()
    echo_server, echo_port = start_echo_server(workers, 0)  # both echoes (ECHOES)
    print(f"PORT {port} {echo_port}", flush=True)
    sys.stdin.read()
    echo_server.stop(None).wait()
    server.stop(None).wait()
    app.close()


def unary(channel: grpc.Channel, method: str, requests: list[bytes], threads: int,
          seconds: float, offset: list[int]) -> tuple[float, list[float]]:
    """Elapsed seconds and every call's latency from ``threads`` threads on one channel."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.perf_counter() + seconds

    def worker(t: int) -> None:
        mine = latencies[t]
        while time.perf_counter() < stop:
            with lock:
                i = offset[0]
                offset[0] += 1
            began = time.perf_counter()
            call(requests[i % len(requests)], timeout=30)
            mine.append(time.perf_counter() - began)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - start, [x for mine in latencies for x in mine]


def interleaved(channel: grpc.Channel, echo_channel: grpc.Channel, world: World, threads: int,
                seconds: float, slices: int, offset: list[int]) -> dict[str, tuple[float, float]]:
    """Calls/s and p99 (ms) of both echoes, check and reserve, run in ``slices``
    alternating rounds of ``seconds / slices`` each, so all see the same machine load."""
    spent: dict[str, float] = {}
    latencies: dict[str, list[float]] = {}
    for _ in range(slices):
        for name, method, requests in (*((e, m, [world.echo]) for e, m in ECHOES.items()),
                                       ("check", CHECK, world.checks),
                                       ("reserve", CHECK, world.reserving)):
            elapsed, calls = unary(echo_channel if name in ECHOES else channel, method,
                                   requests, threads, seconds / slices,
                                   offset if name == "reserve" else [0])
            spent[name] = spent.get(name, 0.0) + elapsed
            latencies.setdefault(name, []).extend(calls)
    out = {}
    for name, calls in latencies.items():
        calls.sort()
        out[name] = (len(calls) / spent[name], calls[int(0.99 * (len(calls) - 1))] * 1000)
    return out


def synced_commits(folder: Path, count: int = 200) -> tuple[float, float]:
    """p50 and p99 (ms) of one-put synced LMDB commits on the benchmark's disk: the floor
    under a reservation's latency, and so (threads / p50) a ceiling on reserving calls/s."""
    import lmdb

    env = lmdb.open(str(folder), map_size=64 << 20, sync=True, metasync=True)
    took = []
    for i in range(count):
        began = time.perf_counter()
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), b"x" * 64)
        took.append(time.perf_counter() - began)
    env.close()
    took.sort()
    return took[count // 2] * 1000, took[int(0.99 * (count - 1))] * 1000


@dataclass
class Served:
    """The benchmark's server, its world loaded: channels to it and to its echo."""

    proc: subprocess.Popen
    channel: grpc.Channel  # sends the benchmark's API key
    echo_channel: grpc.Channel
    folder: Path  # the temporary folder holding its data, removed afterwards
    load_seconds: float


@contextmanager
def served(world: World, workers: int, read_workers: int, check_workers: int = CHECK_WORKERS,
           tmp: str | None = None) -> Iterator[Served]:
    """``serve_main`` in a subprocess over a fresh folder, with ``world`` streamed in."""
    folder = Path(tempfile.mkdtemp(prefix="bench-triggers-", dir=tmp))
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(folder / "data"),
                             "--workers", str(workers), "--read-workers", str(read_workers),
                             "--check-workers", str(check_workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, echo_port = map(int, proc.stdout.readline().split()[1:3])
        raw = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)])
        grpc.channel_ready_future(raw).result(timeout=30)
        channel = authorized(raw)
        echo_channel = grpc.insecure_channel(f"127.0.0.1:{echo_port}")
        began = time.perf_counter()
        channel.stream_unary("/identity.v1.IdentityService/LinkStream",
                             request_serializer=identity_pb2.LinkStreamRequest.SerializeToString,
                             response_deserializer=None)(iter(world.link_batches))
        channel.stream_unary("/identity.v1.EventService/TrackStream",
                             request_serializer=events_pb2.TrackStreamRequest.SerializeToString,
                             response_deserializer=None)(iter(world.event_batches))
        yield Served(proc, channel, echo_channel, folder, time.perf_counter() - began)
        echo_channel.close()
        raw.close()
    finally:
        proc.stdin.close()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    world = World(args.persons, args.seed, args.batch, args.history)
    print(f"world: {args.persons:,} persons, {world.events:,} events "
          f"(built in {time.perf_counter() - t0:.1f}s); server in a subprocess; "
          f"{os.cpu_count()} cores; {args.threads} client threads; sync on")
    with served(world, args.workers, args.read_workers, args.check_workers, args.tmp) as server:
        print(f"loaded in {server.load_seconds:.1f}s\n")
        channel, echo_channel, folder = server.channel, server.echo_channel, server.folder
        audience = channel.stream_stream(
            "/identity.v1.TriggerService/FilterAudience",
            request_serializer=triggers_pb2.FilterAudienceRequest.SerializeToString,
            response_deserializer=triggers_pb2.FilterAudienceResponse.FromString)
        results: dict[str, list[float]] = {}
        offset = [0]
        for rep in range(args.repeat):
            for threads in (args.threads, args.many):
                measured = interleaved(channel, echo_channel, world, threads, args.seconds,
                                       args.slices, offset)
                echo = max(measured[name][0] for name in ECHOES)  # the faster echo
                for name, (rate, p99) in measured.items():
                    results.setdefault(f"{name}{threads}_rate", []).append(rate)
                    results.setdefault(f"{name}{threads}_p99", []).append(p99)
                    if name not in ECHOES:  # ratio to the echoes interleaved with it, this rep
                        results.setdefault(f"{name}{threads}_ratio", []).append(rate / echo)
            p50, p99 = synced_commits(folder / f"commits{rep}")
            results.setdefault("commit_p50_ms", []).append(p50)
            results.setdefault("commit_p99_ms", []).append(p99)
            messages = list(world.audience(rep))  # built before timing, like unary requests
            began = time.perf_counter()
            replies = list(audience(iter(messages)))
            rate = world.persons / (time.perf_counter() - began)
            results.setdefault("audience", []).append(rate)
            summary = replies[-1].summary
            print(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.2f}" for k, v in results.items())
                  + f"; audience sent {summary.send:,}, suppressed {summary.suppressed:,}")

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians of {args.repeat} (ratios: median of each repetition's ratio to the "
          "faster of its two echoes):")
    for threads in (args.threads, args.many):
        for name in ECHOES:
            label = name.replace("_", ", ")
            print(f"  {label + ',':<21} {threads:>2} threads {med[f'{name}{threads}_rate']:>9,.0f} "
                  f"calls/s   p99 {med[f'{name}{threads}_p99']:6.2f} ms")
        for name, label in (("check", "CheckTrigger"), ("reserve", "CheckTrigger reserve")):
            rate, ratio = med[f"{name}{threads}_rate"], med[f"{name}{threads}_ratio"]
            verdict = f"floor 0.50 {'met' if ratio >= 0.5 else 'NOT MET'}" if name == "check" \
                else "(a synced write per SEND; the floor is the plain check's)"
            print(f"  {label + ',':<21} {threads:>2} threads {rate:>9,.0f} calls/s   p99 "
                  f"{med[f'{name}{threads}_p99']:6.2f} ms   {ratio:.2f}x echo   {verdict}")
    print(f"  FilterAudience                     {med['audience']:>9,.0f} persons/s")
    print(f"  synced LMDB commit (raw, one put)  p50 {med['commit_p50_ms']:.2f} ms, p99 "
          f"{med['commit_p99_ms']:.2f} ms: at most {args.threads / med['commit_p50_ms'] * 1000:,.0f}"
          f" reserving calls/s with {args.threads} threads if each waits for one commit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=100_000, help="persons in the world")
    parser.add_argument("--batch", type=int, default=1000, help="items per stream message")
    parser.add_argument("--history", type=int, default=0,
                        help="older pushes of each person with a recorded push")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians reported)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="seconds of each unary figure per repetition")
    parser.add_argument("--slices", type=int, default=4,
                        help="alternating rounds of echo, check and reserve those seconds "
                             "are split into")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--many", type=int, default=16,
                        help="client threads of the second, more concurrent round")
    parser.add_argument("--workers", type=int, default=16, help="server thread pool size")
    parser.add_argument("--read-workers", type=int, default=READ_WORKERS,
                        help="threads for the server's quick reads (0: the shared pool)")
    parser.add_argument("--check-workers", type=int, default=CHECK_WORKERS,
                        help="threads for the server's CheckTrigger (0: the shared pool)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tmp", default=None, help="folder for the temporary LMDB data")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(Path(args.serve), args.workers, args.read_workers, args.check_workers)
    else:
        run(args)


if __name__ == "__main__":
    main()
