#!/usr/bin/env python3
"""Mixed-traffic load test: several client processes against one server, for a bounded time.

70% reads (Resolve, GetProfile, CountSegment, CheckTrigger) and 30% writes (Link, Track,
RecordPurchase), drawn at random by each of ``--clients`` processes (one channel each,
one call at a time), for ``--seconds``. Reports throughput overall and per RPC, p50/p99
client-side latency per RPC, and every error: any failed call makes the exit status 1.

By default it starts ``identity serve`` on a loopback port over a temporary folder and
seeds a world there first (``--persons`` persons linked by ``LinkStream``, ``--events``
views each by ``TrackStream``). With ``--address`` it targets a running server instead
and seeds its world there, under identifiers unique to this run (it writes test data:
use a server you can throw away). The key is ``--api-key``, else ``$IDENTITY_API_KEY``;
a server this script starts is called with its development admin key when it wrote one.

    .venv/bin/python scripts/load_test.py                            # 4 clients, 30 s, 5,000 persons
    .venv/bin/python scripts/load_test.py --clients 8 --seconds 60 --persons 50000 --events 20
    .venv/bin/python scripts/load_test.py --address 127.0.0.1:50051 --seconds 10
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from identity.client import IdentityClient, identifier, link_request
from identity.v1 import events_pb2 as ev

# RPC -> share of calls, in percent: 70 reads, 30 writes.
MIX = {"Resolve": 25, "GetProfile": 20, "CheckTrigger": 15, "CountSegment": 10,
       "Link": 12, "Track": 12, "RecordPurchase": 6}
READS = ("Resolve", "GetProfile", "CheckTrigger", "CountSegment")
SEGMENTS = (
    {"event": {"filter": {"type": "view", "category": "Home"},
               "window": {"from_days_ago": 30, "to_days_ago": 0}}},
    {"all": [{"reachable": {"kind": "email"}},
             {"event": {"filter": {"type": "add_to_cart"}, "window": {"from_days_ago": 7}}}]},
    {"aggregate": {"name": "orders_count", "range": {"min": 1}}},
)
CATEGORIES = ("Home/Kitchen/Kettles", "Home/Garden", "Electronics/TV", "Toys")
DAY_MS = 86_400_000


@dataclass(frozen=True)
class World:
    """Names of the seeded persons: person ``i`` is known by ``email(i)``, ``phone(i)``..."""

    tag: str  # unique to this run, so a running server's data is not touched
    persons: int

    def email(self, i: int) -> str:
        return f"email:u{i}.{self.tag}@example.com"

    def device(self, i: int) -> str:
        return f"device_id:d{i}-{self.tag}"

    def customer(self, i: int) -> str:
        return f"customer_id:C-{self.tag}-{i}"

    def phone(self, i: int) -> str:
        """A valid North American number: area code from the run's tag, exchange 200-999."""
        return f"+1{200 + int(self.tag, 16) % 700}{200 + i // 10_000}{i % 10_000:04d}"


def view(event_id: str, who: str, at_ms: int, cart: bool = False, category: str = "Home"
         ) -> ev.Event:
    product = ev.ProductEvent(product_id=f"p{hash(event_id) % 500}", category=category,
                              brand="Acme", price=19.5, quantity=1)
    event = ev.Event(event_id=event_id, identifier=identifier(who), channel=ev.EVENT_CHANNEL_WEB,
                     **{"add_to_cart" if cart else "view": product})
    event.time.FromMilliseconds(at_ms)
    return event


def seed(client: IdentityClient, world: World, events: int, batch: int = 500) -> None:
    """Link every person's identifiers (most with a customer id) and give each some views."""
    rng = random.Random(world.tag)

    def links():
        for i in range(world.persons):
            who = [world.email(i), f"phone:{world.phone(i)}", world.device(i)]
            if rng.random() < 0.7:
                who.append(world.customer(i))
            yield link_request(*who, source="seed")

    requests = list(links())
    client.link_stream(requests[s : s + batch] for s in range(0, len(requests), batch))
    now = int(time.time() * 1000)
    views = [view(f"seed-{world.tag}-{i}-{k}", world.device(i) if k % 2 else world.email(i),
                  now - rng.randrange(60 * DAY_MS), cart=rng.random() < 0.2,
                  category=rng.choice(CATEGORIES))
             for i in range(world.persons) for k in range(events)]
    client.track_stream(views[s : s + batch] for s in range(0, len(views), batch))


@dataclass
class Tally:
    """One client's calls: latencies in seconds per RPC, and what went wrong."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {rpc: [] for rpc in MIX})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MIX, 0))
    samples: list[str] = field(default_factory=list)


def client_main(number: int, address: str, api_key: str | None, world: World, seconds: float,
                start_at: float) -> Tally:
    """One client process: random calls from ``MIX`` until the deadline."""
    rng = random.Random(f"{world.tag}-{number}")
    tally = Tally()
    kwargs = {} if api_key is None else {"api_key": api_key}
    names, weights = list(MIX), list(MIX.values())
    serial = 0
    with IdentityClient(address, **kwargs) as client:
        calls = {
            "Resolve": lambda i: client.resolve(rng.choice((world.email, world.device))(i)),
            "GetProfile": lambda i: client.get_profile(world.email(i), page_size=20),
            "CheckTrigger": lambda i: client.check_trigger(
                world.email(i), "abandoned_cart", "email", products=[f"p{i % 500}"]),
            "CountSegment": lambda i: client.count_segment(rng.choice(SEGMENTS)),
            # a new device seen with a known e-mail, now and then with another person's too
            "Link": lambda i: client.link(
                world.email(i), f"device_id:w{number}-{serial}-{world.tag}",
                *([world.email(rng.randrange(world.persons))] if rng.random() < 0.05 else []),
                source=f"load-{number}"),
            "Track": lambda i: client.track([
                view(f"w{number}-{serial}-{k}-{world.tag}", world.device(i),
                     int(time.time() * 1000), cart=k == 1) for k in range(rng.randint(1, 4))]),
            "RecordPurchase": lambda i: client.record_purchase(
                ev.OrderEvent(order_id=f"o{number}-{serial}-{world.tag}", currency="EUR",
                              lines=[ev.OrderLine(product_id=f"p{i % 500}", category="Home",
                                                  price=19.5, quantity=1)]),
                phone=world.phone(i), store="store-1"),
        }
        time.sleep(max(0.0, start_at - time.time()))
        deadline = time.perf_counter() + seconds
        while True:
            rpc = rng.choices(names, weights)[0]
            person = rng.randrange(world.persons)
            serial += 1
            started = time.perf_counter()
            if started >= deadline:
                break
            try:
                calls[rpc](person)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                tally.errors[rpc] += 1
                if len(tally.samples) < 5:
                    tally.samples.append(f"{rpc}: {exc!r}"[:300])
                continue
            tally.latencies[rpc].append(time.perf_counter() - started)
    return tally


class ServerProcess:
    """``identity serve`` on a free loopback port over ``data``; its dev key if it wrote one."""

    def __init__(self, data: Path):
        identity = ROOT / ".venv" / "bin" / "identity"
        command = [str(identity)] if identity.exists() else [sys.executable, "-m", "identity.cli"]
        env = {k: v for k, v in os.environ.items() if k != "IDENTITY_API_KEY"}
        self.log = data / "server.log"  # its access log would drown the report
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [*command, "serve", "--data", str(data), "--address", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            found = re.search(r"identity serving on (\S+:\d+)", line)
            if found:
                self.address = found.group(1)
                break
        else:
            raise RuntimeError(f"server exited with {self.proc.wait()} before serving:\n"
                               + self.log.read_text()[-2000:])
        key_file = data / "dev-admin.key"
        self.api_key = key_file.read_text().strip() if key_file.exists() else None

    def cpu_seconds(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def report(tallies: list[Tally], seconds: float) -> int:
    """Print the table; returns the number of failed calls."""
    print(f"{'rpc':<15}{'calls':>9}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    total_calls = total_errors = 0
    for rpc in sorted(MIX, key=lambda r: (r not in READS, -MIX[r])):
        latencies = [x for t in tallies for x in t.latencies[rpc]]
        errors = sum(t.errors[rpc] for t in tallies)
        total_calls += len(latencies) + errors
        total_errors += errors
        print(f"{rpc:<15}{len(latencies):>9}{len(latencies) / seconds:>10.1f}"
              f"{percentile(latencies, 0.5) * 1e3:>9.2f}{percentile(latencies, 0.99) * 1e3:>9.2f}"
              f"{errors:>8}")
    reads = sum(len(t.latencies[r]) for t in tallies for r in READS)
    print(f"{'all':<15}{total_calls:>9}{total_calls / seconds:>10.1f}{'':>18}{total_errors:>8}")
    print(f"reads {reads / max(1, total_calls - total_errors):.0%} of successful calls")
    for sample in [s for t in tallies for s in t.samples][:10]:
        print(f"  error: {sample}")
    return total_errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="client processes [4]")
    parser.add_argument("--seconds", type=float, default=30.0, help="load duration [30]")
    parser.add_argument("--persons", type=int, default=5000, help="persons seeded [5000]")
    parser.add_argument("--events", type=int, default=5, help="views seeded per person [5]")
    parser.add_argument("--address", help="a running server (default: start one on loopback)")
    parser.add_argument("--api-key", help="key for --address [$IDENTITY_API_KEY]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = parser.parse_args()

    world = World(uuid.uuid4().hex[:8], args.persons)
    server = folder = None
    if args.address:
        address, api_key = args.address, args.api_key
    else:
        folder = Path(tempfile.mkdtemp(prefix="identity-load-"))
        server = ServerProcess(folder)
        address, api_key = server.address, server.api_key
    try:
        kwargs = {} if api_key is None else {"api_key": api_key}
        started = time.perf_counter()
        with IdentityClient(address, **kwargs) as client:
            seed(client, world, args.events)
        print(f"server {address}; seeded {args.persons} persons, {args.persons * args.events} "
              f"views in {time.perf_counter() - started:.1f} s")
        cpu_before = server.cpu_seconds() if server else None
        load_before = os.getloadavg()
        context = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
        with context.Pool(args.clients) as pool:
            start_at = time.time() + 2.0  # every client connected before the clock starts
            jobs = [pool.apply_async(client_main, (n, address, api_key, world, args.seconds,
                                                   start_at)) for n in range(args.clients)]
            tallies = [job.get(timeout=args.seconds + 120) for job in jobs]
        load_after = os.getloadavg()
        cpu_after = server.cpu_seconds() if server else None
    finally:
        if server:
            server.stop()
        if folder and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.clients} client processes, {args.seconds:g} s, one call at a time each")
    errors = report(tallies, args.seconds)
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{x:.2f}" for x in load_before)
          + "; after: " + ", ".join(f"{x:.2f}" for x in load_after)
          + f"; cores: {os.cpu_count()}")
    if cpu_before is not None and cpu_after is not None:
        print(f"server CPU: {(cpu_after - cpu_before) / args.seconds:.2f} cores on average")
    print(f"errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
