#!/usr/bin/env python3
"""What one call costs the server: CPU (user and system) and context switches per call.

The trigger benchmark's world (``bench_triggers.World``) is loaded into its server, run
in a subprocess as there (sync on, the collector set as ``identity serve`` sets it, the
echoes in the same process); then both echoes (on gRPC's shared pool and on a pool of two
of its own), ``CheckTrigger`` (read snapshot; on its pool unless ``--check-workers 0``)
and ``Resolve`` (by device id; a quick read, on its own pool unless ``--read-workers 0``)
are called from ``--threads`` client threads for
``--seconds`` each, in ``--rounds`` alternating rounds. For each, the server process's
CPU time and its threads' voluntary and involuntary context switches are read from
``/proc`` before and after, and divided by the calls made: the figures behind "Why a
read RPC costs more in the server than in-process" in docs/BENCHMARKS.md. Linux only.

    .venv/bin/python scripts/bench_call_cost.py                      # 20k persons, 4 threads
    .venv/bin/python scripts/bench_call_cost.py --threads 16 --read-workers 0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import bench_triggers  # noqa: E402
from identity.server import CHECK_WORKERS, READ_WORKERS  # noqa: E402
from identity.v1 import common_pb2, identity_pb2  # noqa: E402

RESOLVE = "/identity.v1.IdentityService/Resolve"
DEVICE = 6


def process_counters(pid: int) -> tuple[float, float, int, int]:
    """User and system CPU seconds, voluntary and involuntary switches of all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    voluntary = involuntary = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                involuntary += int(line.split()[1])
    return int(fields[11]) / tick, int(fields[12]) / tick, voluntary, involuntary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=16, help="server thread pool size")
    parser.add_argument("--read-workers", type=int, default=READ_WORKERS,
                        help="threads for the server's quick reads (0: the shared pool)")
    parser.add_argument("--check-workers", type=int, default=CHECK_WORKERS,
                        help="threads for the server's CheckTrigger (0: the shared pool)")
    args = parser.parse_args()

    world = bench_triggers.World(args.persons, seed=7, batch=1000)
    resolves = [identity_pb2.ResolveRequest(identifier=common_pb2.Identifier(
        kind=DEVICE, value=f"dev-{i}-a")).SerializeToString() for i in range(0, args.persons, 7)]
    with bench_triggers.served(world, args.workers, args.read_workers,
                               args.check_workers) as server:
        print(f"{args.persons:,} persons, {args.threads} client threads, read pool "
              f"{args.read_workers or 'off'}, check pool {args.check_workers or 'off'}; "
              "per call: server CPU (user + system), switches")
        for _ in range(args.rounds):
            for name, target, method, requests in (
                    *((name.replace("_", ", "), server.echo_channel, method, [world.echo])
                      for name, method in bench_triggers.ECHOES.items()),
                    ("CheckTrigger", server.channel, bench_triggers.CHECK, world.checks),
                    ("Resolve", server.channel, RESOLVE, resolves)):
                before = process_counters(server.proc.pid)
                elapsed, calls = bench_triggers.unary(target, method, requests, args.threads,
                                                      args.seconds, [0])
                after = process_counters(server.proc.pid)
                n = len(calls)
                user, system, voluntary, involuntary = (b - a for a, b in zip(before, after))
                print(f"  {name:<15} {n / elapsed:7,.0f} calls/s   CPU {(user + system) / n * 1e6:5.0f}"
                      f" µs (user {user / n * 1e6:4.0f}, system {system / n * 1e6:4.0f})   "
                      f"switches {voluntary / n:5.1f} voluntary, {involuntary / n:4.1f} involuntary",
                      flush=True)


if __name__ == "__main__":
    main()
