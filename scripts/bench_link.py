#!/usr/bin/env python3
"""Benchmark of the identity graph's write and read paths over real gRPC.

A synthetic, seeded world of persons, each known by several identifiers
(customer id for most, e-mails in mixed case, phones in E.164 and national
formats, loyalty cards with spaces, devices), is linked into a real server
over a fresh LMDB folder with synced commits, and measured:

- links/s through ``LinkStream`` (batches of ``--batch`` links per message);
- links/s through unary ``Link`` and ``Resolve`` calls/s at 1 and 4 client threads;

and, in the same run, the baselines the results read against:

- (a) batched LMDB puts/s (``putmulti``, one synced commit per batch);
- (b) a trivial unary gRPC echo (a bare gRPC server in the server's process, no
  credentials to check) at 1 and 4 threads;
- (c) the latency of a synced one-put LMDB commit (what a lone unary write waits for).

By default the server runs in a subprocess, so client and server do not share
a GIL (``--in-process`` puts both in one process). Requests are serialised
before timing starts, so the figures measure the server, not the client's
message building. Every figure is the median of ``--repeat`` repetitions;
each repetition starts a fresh server over an empty data folder.

    .venv/bin/python scripts/bench_link.py                # 100k persons
    .venv/bin/python scripts/bench_link.py --persons 20000 --repeat 5
    .venv/bin/python scripts/bench_link.py --persons 20000 --app-only   # no gRPC: CPU/link
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import lmdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from identity.v1 import common_pb2, identity_pb2  # noqa: E402
from benchlib import BENCH_KEYS, ECHO_METHOD, authorized, start_echo_server  # noqa: E402
from identity.server import READ_WORKERS  # noqa: E402

LINK_METHOD = "/identity.v1.IdentityService/Link"
STREAM_METHOD = "/identity.v1.IdentityService/LinkStream"
RESOLVE_METHOD = "/identity.v1.IdentityService/Resolve"
FIRST_MS = 1_700_000_000_000
YEAR_MS = 365 * 24 * 3600 * 1000
DOMAINS = ("example.com", "gmail.com", "mail.example.org", "shop.example.net", "outlook.com")
SOURCES = ("web", "app", "pos:store-17", "pos:store-4", "crm")

CID, EMAIL, PHONE, CARD, CRM, DEVICE = 1, 2, 3, 4, 5, 6


# -- the synthetic world ----------------------------------------------------


def _phone_digits(rng: random.Random) -> str:
    """A ten-digit North American number (area code and exchange start 2-9)."""
    return (f"{rng.randint(2, 9)}{rng.randint(0, 99):02d}"
            f"{rng.randint(2, 9)}{rng.randint(0, 99):02d}{rng.randint(0, 9999):04d}")


def person_links(i: int, rng: random.Random) -> list[tuple[list[tuple[int, str]], str, int]]:
    """The links in which person ``i`` shows up: (identifiers, source, observed ms)."""
    cid = f"C-{i:07d}" if rng.random() < 0.7 else None
    emails = [f"user{i}.{k}@{rng.choice(DOMAINS)}" for k in range(rng.randint(1, 2))]
    phones = [_phone_digits(rng) for _ in range(rng.randint(1, 2))]
    card = None
    if rng.random() < 0.5:
        card = f"{rng.randint(4000, 4999)} {i:08d} {rng.randint(0, 9999):04d}"
    crm = f"crm-{i}" if rng.random() < 0.3 else None
    devices = [f"{rng.getrandbits(64):016x}-{i}" for _ in range(rng.randint(1, 3))]

    def email(k: int = 0) -> tuple[int, str]:
        value = emails[k % len(emails)]
        return EMAIL, value.upper() if rng.random() < 0.2 else f" {value}"

    def phone(k: int = 0) -> tuple[int, str]:
        d = phones[k % len(phones)]
        form = rng.random()
        if form < 0.4:
            return PHONE, f"+1{d}"
        if form < 0.8:
            return PHONE, f"({d[:3]}) {d[3:6]}-{d[6:]}"
        return PHONE, f"1-{d[:3]}-{d[3:6]}-{d[6:]}"

    links = []
    signup = [email(0), (DEVICE, devices[0])]
    if cid:
        signup.insert(0, (CID, cid))
    links.append(signup)
    links.append([email(0), phone(0)])
    if card:
        links.append([(CARD, card), phone(len(phones) - 1)])
    if crm:
        links.append([(CRM, crm), email(len(emails) - 1)])
    for device in devices[1:]:
        links.append([(DEVICE, device), email(rng.randrange(2))])
    if len(emails) > 1 or len(phones) > 1:
        links.append([email(1), phone(1)] + ([(CID, cid)] if cid else []))
    if rng.random() < 0.01:  # a junk value typed into a form: blocklisted, merges nobody
        links.append([(EMAIL, "test@test.com"), phone(0)])
    return [(ids, rng.choice(SOURCES), FIRST_MS + rng.randrange(YEAR_MS)) for ids in links]


def link_request(ids: list[tuple[int, str]], source: str, ms: int, rid: str
                 ) -> identity_pb2.LinkRequest:
    request = identity_pb2.LinkRequest(
        identifiers=[common_pb2.Identifier(kind=k, value=v) for k, v in ids],
        source=source, request_id=rid)
    request.observed_at.FromMilliseconds(ms)
    return request


class World:
    """The persons' links (shuffled across persons) plus raw identifiers to resolve."""

    def __init__(self, persons: int, extra: int, seed: int, batch: int):
        rng = random.Random(seed)
        links = []
        for i in range(persons):
            links += person_links(i, rng)
        rng.shuffle(links)  # persons arrive in pieces: creates, adds, merges, repeats
        self.links = len(links)
        self.batches = [
            identity_pb2.LinkStreamRequest(links=[
                link_request(ids, src, ms, f"s{start + j}")
                for j, (ids, src, ms) in enumerate(links[start : start + batch])
            ]).SerializeToString()
            for start in range(0, len(links), batch)
        ]
        lookups = [ident for ids, _, _ in rng.sample(links, min(len(links), 20_000))
                   for ident in ids if ident[1] != "test@test.com"]
        self.resolves = [
            identity_pb2.ResolveRequest(identifier=common_pb2.Identifier(kind=k, value=v))
            .SerializeToString()
            for k, v in lookups
        ]
        unary = []
        for i in range(persons, persons + extra):  # persons not in the streamed world
            unary += person_links(i, rng)
        self.unary = [link_request(ids, src, ms, f"u{j}").SerializeToString()
                      for j, (ids, src, ms) in enumerate(unary)]
        self.echo = self.unary[0]  # a payload the size of a typical link request


# -- the server (in a subprocess or in this process) ------------------------


def start_server(data: Path, max_workers: int, read_workers: int
                 ) -> tuple[object, object, int, object, int]:
    from identity.app import App
    from identity.config import Settings
    from identity.gc_policy import tune_for_serving
    from identity.server import create_server

    app = App.open(Settings.load(env={}, data_dir=data, map_size="1GiB", api_keys=BENCH_KEYS))
    server, port = create_server(app, "127.0.0.1:0", max_workers=max_workers,
                                 read_workers=read_workers)
    if not os.environ.get("BENCH_DEFAULT_GC"):  # as ``identity serve`` runs (gc_policy)
        tune_for_serving()
    server.start()
    echo_server, echo_port = start_echo_server(max_workers, read_workers)
    return app, server, port, echo_server, echo_port


def serve_main(data: Path, max_workers: int, read_workers: int, profile: str | None) -> None:
    """Subprocess mode: print the port, serve until stdin closes, print CPU seconds used."""
    app, server, port, echo_server, echo_port = start_server(data, max_workers, read_workers)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        _profile_writer(app, profiler)
    print(f"PORT {port} {echo_port}", flush=True)
    sys.stdin.read()
    echo_server.stop(None).wait()
    server.stop(None).wait()
    app.close()
    if profiler:
        profiler.dump_stats(profile)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU {usage.ru_utime + usage.ru_stime:.3f}", flush=True)


def _profile_writer(app: object, profiler: cProfile.Profile) -> None:
    """Profile every write job (they all run on the store's writer thread)."""
    store = app.store  # type: ignore[attr-defined]
    submit = store.submit

    def profiled_submit(fn):
        def run(tx):
            profiler.enable()
            try:
                return fn(tx)
            finally:
                profiler.disable()
        return submit(run)

    store.submit = profiled_submit


class Server:
    def __init__(self, data: Path, in_process: bool, max_workers: int, read_workers: int,
                 profile: str | None):
        self.in_process = in_process
        self.cpu = None
        if in_process:
            self.app, self.server, self.port, self.echo_server, self.echo_port = \
                start_server(data, max_workers, read_workers)
            return
        cmd = [sys.executable, __file__, "--serve", str(data), "--workers", str(max_workers),
               "--read-workers", str(read_workers)]
        if profile:
            cmd += ["--profile", profile]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        self.port, self.echo_port = map(int, line.split()[1:3])

    def cpu_seconds(self) -> float | None:
        return self.cpu

    def cpu_now(self) -> float | None:
        """CPU seconds the server process has used so far (Linux, subprocess mode only)."""
        if self.in_process:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.in_process:
            self.echo_server.stop(None).wait()
            self.server.stop(None).wait()
            self.app.close()
            return
        self.proc.stdin.close()
        for line in self.proc.stdout:
            if line.startswith("CPU "):
                self.cpu = float(line.split()[1])
        self.proc.wait()


# -- measurements -----------------------------------------------------------


def lmdb_puts_per_second(folder: Path, batch: int, seconds: float) -> float:
    """Raw rate of synced LMDB puts in batches: one putmulti and one commit per batch."""
    env = lmdb.open(str(folder), map_size=1 << 30, sync=True, metasync=True)
    rng = random.Random(1)
    puts = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        items = sorted((rng.getrandbits(64).to_bytes(8, "big"), b"v" * 40) for _ in range(batch))
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(items)
        puts += batch
    rate = puts / (time.perf_counter() - start)
    env.close()
    return rate


def synced_commit_ms(folder: Path, commits: int = 200) -> tuple[float, int]:
    """Median latency of a synced one-put commit: what a lone unary write waits for at least."""
    env = lmdb.open(str(folder), map_size=1 << 26, sync=True, metasync=True)
    times = []
    for i in range(commits):
        start = time.perf_counter()
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), b"v" * 40)
        times.append(time.perf_counter() - start)
    env.close()
    return statistics.median(times) * 1000, commits


def stream_links(channel: grpc.Channel, world: World
                 ) -> tuple[float, identity_pb2.LinkStreamResponse]:
    call = channel.stream_unary(STREAM_METHOD, request_serializer=None,
                                response_deserializer=identity_pb2.LinkStreamResponse.FromString)
    start = time.perf_counter()
    summary = call(iter(world.batches))
    elapsed = time.perf_counter() - start
    if summary.links != world.links:
        raise RuntimeError(f"stream committed {summary.links} of {world.links} links")
    return world.links / elapsed, summary


def calls_per_second(channel: grpc.Channel, method: str, requests: list[bytes], threads: int,
                     seconds: float, offset: list[int]) -> tuple[float, int]:
    """Unary calls/s from ``threads`` client threads sharing one channel, for ``seconds``."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    lock = threading.Lock()
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(t: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            with lock:
                i = offset[0]
                offset[0] += 1
            call(requests[i % len(requests)], timeout=30)
            n += 1
        counts[t] = n

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - start), sum(counts)


def run(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    world = World(args.persons, args.extra, args.seed, args.batch)
    print(f"world: {args.persons} persons, {world.links} links in {len(world.batches)} batches "
          f"of {args.batch}; {len(world.unary)} unary links, {len(world.resolves)} resolve "
          f"targets (built in {time.perf_counter() - t0:.1f}s)")
    mode = "in-process (client and server share one GIL)" if args.in_process else \
        "subprocess (client and server in separate processes)"
    print(f"server: {mode}; {os.cpu_count()} cores; sync on; {args.repeat} repetitions, "
          f"{args.seconds}s per unary measurement\n")
    results: dict[str, list[float]] = {}

    cpu_per_op: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    def measure(name: str, server: Server, fn, *fn_args) -> None:
        """Run one measurement; note its rate and the server's CPU microseconds per operation."""
        before = server.cpu_now()
        rate, ops = fn(*fn_args)
        after = server.cpu_now()
        note(name, rate)
        if before is not None and after is not None and ops:
            cpu_per_op.setdefault(name, []).append((after - before) / ops * 1e6)

    root = Path(tempfile.mkdtemp(prefix="bench-link-", dir=args.tmp))
    try:
        for rep in range(args.repeat):
            note("lmdb_puts", lmdb_puts_per_second(root / f"raw{rep}", args.batch, 1.0))
            note("commit_ms", synced_commit_ms(root / f"commit{rep}")[0])
            profile = args.profile if rep == 0 else None
            server = Server(root / f"data{rep}", args.in_process, args.workers,
                            args.read_workers, profile)
            raw = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20)])
            channel = authorized(raw)
            echo_channel = grpc.insecure_channel(f"127.0.0.1:{server.echo_port}")
            try:
                grpc.channel_ready_future(raw).result(timeout=10)
                grpc.channel_ready_future(echo_channel).result(timeout=10)
                streamed: list = []

                def stream() -> tuple[float, int]:
                    rate, summary = stream_links(channel, world)
                    streamed.append(summary)
                    return rate, world.links

                measure("stream", server, stream)
                rate, summary = results["stream"][-1], streamed[0]
                offset = [0]
                for threads in (1, 4):
                    s = args.seconds
                    measure(f"echo{threads}", server, calls_per_second, echo_channel, ECHO_METHOD,
                            [world.echo], threads, s, [0])
                    measure(f"link{threads}", server, calls_per_second, channel, LINK_METHOD,
                            world.unary, threads, s, offset)
                    measure(f"resolve{threads}", server, calls_per_second, channel,
                            RESOLVE_METHOD, world.resolves, threads, s, [0])
            finally:
                echo_channel.close()
                raw.close()
                server.stop()
            cpu = server.cpu_seconds()
            print(f"rep {rep + 1}: stream {rate:,.0f} links/s; " + ", ".join(
                f"{k} {v[-1]:,.{2 if k == 'commit_ms' else 0}f}" for k, v in results.items()
                if k != "stream")
                + (f"; server CPU {cpu:.1f}s" if cpu is not None else ""))
            if rep == 0:
                print("  stream outcomes: " + ", ".join(
                    f"{f.name} {getattr(summary, f.name)}"
                    for f in identity_pb2.LinkStreamResponse.DESCRIPTOR.fields))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in results.items()}
    if cpu_per_op:
        print("\nserver CPU per operation (median, microseconds): " + ", ".join(
            f"{name} {statistics.median(values):,.0f}" for name, values in cpu_per_op.items()))
    print(f"\nmedians of {args.repeat}:")
    print(f"  LMDB batched puts (raw)   {med['lmdb_puts']:>10,.0f} puts/s")
    print(f"  LMDB synced commit        {med['commit_ms']:>10.2f} ms (one put, median latency)")
    print(f"  LinkStream                {med['stream']:>10,.0f} links/s   "
          f"{med['stream'] / med['lmdb_puts']:.2f}x raw puts   floor 50,000 "
          f"{'met' if med['stream'] >= 50_000 else 'NOT MET'} (target 100,000)")
    for threads in (1, 4):
        echo = med[f"echo{threads}"]
        print(f"  echo, {threads} thread{'s' if threads > 1 else ' '}          "
              f"{echo:>10,.0f} calls/s")
        for name in ("link", "resolve"):
            value = med[f"{name}{threads}"]
            label = "Link" if name == "link" else "Resolve"
            print(f"  {label + ',':8} {threads} thread{'s' if threads > 1 else ' '}       "
                  f"{value:>10,.0f} calls/s   {value / echo:.2f}x echo   floor 0.70 "
                  f"{'met' if value >= 0.7 * echo else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=100_000, help="persons in the world")
    parser.add_argument("--extra", type=int, default=20_000,
                        help="further persons whose links are sent by unary Link")
    parser.add_argument("--batch", type=int, default=1000, help="links per LinkStream message")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians reported)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each unary run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=16, help="server thread pool size")
    parser.add_argument("--read-workers", type=int, default=READ_WORKERS,
                        help="threads for quick reads and the echo (0: the shared pool)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server in this process (shares the client's GIL)")
    parser.add_argument("--tmp", default=None,
                        help="folder for the temporary LMDB data (default: the system temp)")
    parser.add_argument("--profile", default=None,
                        help="cProfile the server's write jobs in the first repetition to FILE")
    parser.add_argument("--app-only", action="store_true",
                        help="no gRPC: CPU per link of App.link_batches and App.link in-process")
    parser.add_argument("--unary", type=int, default=3000, help="unary links in --app-only")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(Path(args.serve), args.workers, args.read_workers, args.profile)
    elif args.app_only:
        run_app_only(args)
    else:
        run(args)


# -- without gRPC: the server's own CPU per link ---------------------------


def _app_only_once(world: World, unary: int, data: Path) -> tuple[float, float]:
    """Process CPU µs per link: the stream's messages decoded, converted and linked in
    batches (``App.link_batches``, as LinkStream does), then ``unary`` links one by one."""
    from identity.app import App
    from identity.config import Settings
    from identity.rpc.convert import link_input

    app = App.open(Settings.load(env={}, data_dir=data, map_size="1GiB", api_keys=BENCH_KEYS))
    if not os.environ.get("BENCH_DEFAULT_GC"):  # as ``identity serve`` runs (gc_policy)
        from identity.gc_policy import tune_for_serving
        tune_for_serving()
    try:
        parse = identity_pb2.LinkStreamRequest.FromString
        start, links = time.process_time(), 0
        for results in app.link_batches([link_input(r) for r in parse(b).links]
                                        for b in world.batches):
            links += len(results)
        stream = (time.process_time() - start) / links * 1e6
        requests = [identity_pb2.LinkRequest.FromString(b) for b in world.unary[:unary]]
        start = time.process_time()
        for request in requests:
            app.link(link_input(request))
        return stream, (time.process_time() - start) / max(1, len(requests)) * 1e6
    finally:
        app.close()


def run_app_only(args: argparse.Namespace) -> None:
    world = World(args.persons, args.extra, args.seed, args.batch)
    print(f"world: {args.persons} persons, {world.links} links; app only (no gRPC), sync on, "
          f"{args.repeat} repetitions, each over a fresh LMDB folder")
    streams, unaries = [], []
    for rep in range(args.repeat):
        root = Path(tempfile.mkdtemp(prefix="bench_link_app_", dir=args.tmp))
        try:
            stream, unary = _app_only_once(world, args.unary, root / "data")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        streams.append(stream)
        unaries.append(unary)
        print(f"rep {rep + 1}: link_batches {stream:.1f} µs CPU per link; "
              f"link {unary:.1f} µs CPU per call")
    print(f"medians of {args.repeat}: link_batches {statistics.median(streams):.1f} µs CPU "
          f"per link, link {statistics.median(unaries):.1f} µs CPU per call")


if __name__ == "__main__":
    main()
