#!/usr/bin/env python3
"""Crash test: SIGKILL the server mid-import, restart it, and prove nothing acknowledged was lost.

Client processes (``--clients``, default 3) stream links (``LinkStream``) and events
(``TrackStream``, per-event and packed forms in turn) into a server subprocess while
this script kills it with SIGKILL at random moments (``--kills``, default 20) and
restarts it on the same data folder. Every batch is generated from (client, batch
number) and carries unique markers, so afterwards each one can be looked up:

- links: every link of a batch adds a new marker device to a hub e-mail of a family
  (some also join two hubs of the family, or the family's customer id, so merges
  happen), and every identifier of a link must end up in one person;
- events: every event id is unique, and half of a batch's events come from a device
  new to that batch, so the batch also creates a node.

At the end it checks that every batch of a stream the server acknowledged is wholly
present (links resolve to one person over RPC and in the data; acknowledged events,
sent again, are all reported as duplicates), that every unacknowledged batch is
wholly present or wholly absent, and that ``identity.integrity`` finds no problem,
after every kill and at the end. It prints a report and exits with 1 on any failure.

    .venv/bin/python scripts/crash_test.py                    # 20 kills, 3 clients
    .venv/bin/python scripts/crash_test.py --kills 3 --clients 2 --up 0.2 0.8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

T0 = 1_767_225_600_000  # event times: 2026-01-01, plus the batch and event number
FAMILY_HUBS = 4  # hub e-mails per family; a family only ever joins its own hubs
TRANSIENT = {"UNAVAILABLE", "CANCELLED", "UNKNOWN", "UNAUTHENTICATED"}  # server gone or starting


@dataclass(frozen=True)
class Workload:
    links_per_batch: int = 40
    events_per_batch: int = 40
    batches_per_stream: int = 4
    families: int = 64  # per client


# -- what each batch holds: a pure function of (client, batch number) --------------------

def hub(client: int, family: int, k: int) -> str:
    return f"email:h{client}-{family}-{k}@crash.example"


def link_batch(w: Workload, client: int, seq: int) -> list[list[str]]:
    """The identifiers of each link of batch ``seq``; the first is the link's marker."""
    rng = random.Random(f"links-{client}-{seq}")
    links = []
    for i in range(w.links_per_batch):
        family = rng.randrange(w.families)
        ids = [f"device_id:m-{client}-{seq}-{i}", hub(client, family, rng.randrange(FAMILY_HUBS))]
        if rng.random() < 0.2:  # join a second hub of the family: merges two persons
            ids.append(hub(client, family, rng.randrange(FAMILY_HUBS)))
        if rng.random() < 0.1:  # the family's one customer id
            ids.append(f"customer_id:CR-{client}-{family}")
        links.append(list(dict.fromkeys(ids)))
    return links


def event_batch(w: Workload, client: int, seq: int) -> list[tuple[str, str, int]]:
    """(event id, identifier, time ms) of each event of batch ``seq``."""
    rng = random.Random(f"events-{client}-{seq}")
    events = []
    for j in range(w.events_per_batch):
        who = (f"device_id:ev-{client}-{seq}" if j % 2 else
               hub(client, rng.randrange(w.families), rng.randrange(FAMILY_HUBS)))
        events.append((f"ev-{client}-{seq}-{j}", who, T0 + seq * 1000 + j))
    return events


def event_messages(w: Workload, client: int, seq: int) -> list:
    from identity.client import identifier
    from identity.v1 import events_pb2 as ev

    return [ev.Event(event_id=eid, identifier=identifier(who), channel=ev.EVENT_CHANNEL_WEB,
                     time=_timestamp(at), search=ev.SearchEvent(phrase=f"kettle {seq}"))
            for eid, who, at in event_batch(w, client, seq)]


def _timestamp(ms: int):
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def normal(text: str):
    """``kind:value`` as the server stores it."""
    from identity.identifiers import Kind
    from identity.normalize import Normalizer

    kind, _, value = text.partition(":")
    return Normalizer().normalize(Kind.parse(kind), value)


def connect(address: str, data_dir: Path):
    """A client with the server's development admin key when it wrote one."""
    from identity.client import IdentityClient

    key_file = data_dir / "dev-admin.key"
    key = key_file.read_text().strip() if key_file.exists() else ""
    return IdentityClient(address, api_key=key) if key else IdentityClient(address)


# -- client processes ------------------------------------------------------------------

def client_main(client: int, address: str, data_dir: str, journal: str, w: Workload,
                stop, answered) -> None:
    """Stream link and event batches until ``stop``; journal which batches were acknowledged."""
    import grpc

    from identity.client import link_request, packed_events

    done: dict[str, list[int]] = {"link_acked": [], "link_unacked": [], "event_acked": [],
                                  "event_unacked": []}
    codes: Counter[str] = Counter()
    next_seq = {"link": 0, "event": 0}
    rpc = None
    streams = 0
    while not stop.is_set():
        kind = "link" if streams % 2 == 0 else "event"
        first = next_seq[kind]
        seqs = list(range(first, first + w.batches_per_stream))
        next_seq[kind] += w.batches_per_stream
        try:
            if rpc is None:
                rpc = connect(address, Path(data_dir))
            if kind == "link":
                reply = rpc.link_stream([link_request(*ids, source=f"crash-{client}")
                                         for ids in link_batch(w, client, s)] for s in seqs)
            elif streams % 4 == 1:
                reply = rpc.track_stream(event_messages(w, client, s) for s in seqs)
            else:
                reply = rpc.track_stream_packed(packed_events(event_messages(w, client, s))
                                                for s in seqs)
            if reply.batches != len(seqs):
                codes[f"OK with {reply.batches} of {len(seqs)} batches"] += 1
                done[f"{kind}_unacked"] += seqs
            else:
                done[f"{kind}_acked"] += seqs
            codes["OK"] += 1
            with answered.get_lock():
                answered.value += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1
            done[f"{kind}_unacked"] += seqs
            if rpc is not None:
                rpc.close()
                rpc = None
            time.sleep(0.2)  # the server is down or starting: do not spin
        streams += 1
    if rpc is not None:
        rpc.close()
    Path(journal).write_text(json.dumps({**done, "codes": codes}))


# -- the server ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The ``identity serve`` subprocess, started again on the same data folder after a kill."""

    def __init__(self, data_dir: Path, port: int, config: Path, logs: Path, map_size: str):
        self.data_dir, self.port, self.config, self.logs = data_dir, port, config, logs
        self.map_size = map_size
        self.address = f"127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "identity.cli", "serve", "--data", str(self.data_dir),
                   "--address", self.address, "--config", str(self.config),
                   "--map-size", self.map_size]
        log = self.logs / f"server-{self.starts}.log"
        self.starts += 1
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while b"identity serving on" not in log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log}:\n{log.read_text()[-2000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- checks ----------------------------------------------------------------------------

@dataclass
class Report:
    kills: int = 0
    seconds: float = 0.0
    link_batches: Counter = field(default_factory=Counter)
    event_batches: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    integrity_runs: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)
        elif len(self.problems) == 200:
            self.problems.append("... more problems not listed")


def integrity(data_dir: Path, report: Report, when: str) -> None:
    from identity.integrity import check
    from identity.store import read_only

    with read_only(data_dir) as tx:
        found = check(tx)
    report.integrity_runs += 1
    for problem in found:
        report.problem(f"integrity ({when}): {problem}")


def check_over_rpc(server: Server, w: Workload, journals: list[dict], report: Report,
                   rng: random.Random, sample: int) -> None:
    """Acknowledged links resolve to one person; acknowledged events, sent again, are duplicates."""
    import grpc

    with connect(server.address, server.data_dir) as rpc:
        acked = [(c, s) for c, j in enumerate(journals) for s in j["link_acked"]]
        for c, s in rng.sample(acked, min(sample, len(acked))):
            links = link_batch(w, c, s)
            ids = links[rng.randrange(len(links))]
            report.counts["links resolved over RPC"] += 1
            try:
                person = rpc.resolve(ids[0]).person
            except grpc.RpcError as exc:
                report.problem(f"link batch {c}/{s}: resolving {ids[0]} over RPC: "
                               f"{exc.code().name}")
                continue
            known = {(i.identifier.kind, i.identifier.value) for i in person.identifiers}
            missing = [i for i in ids if (int(normal(i).kind), normal(i).value) not in known]
            if missing:
                report.problem(f"link batch {c}/{s}: {missing} not in the person of {ids[0]}")
        for c, j in enumerate(journals):
            for s in j["event_acked"]:
                reply = rpc.track(event_messages(w, c, s))
                report.counts["acknowledged events re-sent"] += reply.stored + reply.duplicates
                if reply.stored or reply.duplicates != w.events_per_batch:
                    report.problem(f"event batch {c}/{s} was acknowledged but {reply.stored} "
                                   "of its events were missing")


def check_data(data_dir: Path, w: Workload, journals: list[dict], report: Report) -> None:
    """Every batch in the data: acknowledged ones whole, the others whole or absent."""
    from identity.event_store import event_digest
    from identity.graph import IdentityGraph
    from identity.store import read_only

    graph = IdentityGraph()

    def node(tx, text: str) -> int | None:
        return graph.node_of(tx, normal(text))

    with read_only(data_dir) as tx:
        for c, journal in enumerate(journals):
            for status in ("acked", "unacked"):
                for s in journal[f"link_{status}"]:
                    links = link_batch(w, c, s)
                    present = 0
                    for ids in links:
                        nodes = [node(tx, i) for i in ids]
                        if nodes[0] is None:  # the marker: this link was not applied
                            continue
                        present += 1
                        roots = {graph.root_of(tx, n) if n else None for n in nodes}
                        if len(roots) != 1 or None in roots:
                            report.problem(f"link batch {c}/{s}: {ids} are not one person")
                    verdict = _verdict(report, "link", c, s, status, present, len(links))
                    report.link_batches[f"{status} {verdict}"] += 1
                    if verdict == "present" and status == "acked":
                        report.counts["acknowledged links verified"] += present
                for s in journal[f"event_{status}"]:
                    events = event_batch(w, c, s)
                    present = sum(tx.get("event_ids", event_digest(eid)) is not None
                                  for eid, _, _ in events)
                    device = node(tx, f"device_id:ev-{c}-{s}")
                    if (device is not None) != (present > 0):
                        report.problem(f"event batch {c}/{s}: {present} events stored but its "
                                       f"new device {'exists' if device else 'does not'}")
                    verdict = _verdict(report, "event", c, s, status, present, len(events))
                    report.event_batches[f"{status} {verdict}"] += 1
                    if verdict == "present" and status == "acked":
                        report.counts["acknowledged events verified"] += present


def _verdict(report: Report, what: str, c: int, s: int, status: str, present: int,
             total: int) -> str:
    if present == total:
        return "present"
    if present == 0 and status == "unacked":
        return "absent"
    if present == 0:
        report.problem(f"{what} batch {c}/{s} was acknowledged but is missing")
        return "missing"
    report.problem(f"{what} batch {c}/{s} ({status}) is half-applied: {present} of {total}")
    return "half-applied"


# -- the run ---------------------------------------------------------------------------

def run(args: argparse.Namespace) -> Report:
    w = Workload(args.links_per_batch, args.events_per_batch, args.batches_per_stream)
    rng = random.Random(args.seed)
    work = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="identity-crash-"))
    data_dir, logs = work / "data", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config = work / "crash.toml"
    # Limits high enough that no link of the workload is refused: each must land whole.
    config.write_text("[limits]\nemail = 1000000\ndevice_id = 1000000\n")
    server = Server(data_dir, free_port(), config, logs, args.map_size)
    report = Report()
    started = time.monotonic()
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    answered = spawn.Value("q", 0)  # streams answered OK, all clients together
    journals = [work / f"client-{c}.json" for c in range(args.clients)]
    clients = [spawn.Process(target=client_main, args=(c, server.address, str(data_dir),
                                                       str(journals[c]), w, stop, answered))
               for c in range(args.clients)]
    try:
        for p in clients:  # they start while the server does, and retry until it serves
            p.start()
        server.start()
        time.sleep(args.warmup)
        for kill in range(args.kills):
            time.sleep(rng.uniform(*args.up))
            server.kill()
            report.kills += 1
            if args.check_every_kill:
                integrity(data_dir, report, f"after kill {kill + 1}")
            time.sleep(rng.uniform(0, args.down))
            server.start()
            print(f"kill {kill + 1}/{args.kills}: restarted", file=sys.stderr, flush=True)
        before, deadline = answered.value, time.monotonic() + 60
        while answered.value < before + args.clients and time.monotonic() < deadline:
            time.sleep(0.05)  # the restarted server takes writes again before the clients stop
        if answered.value < before + args.clients:
            report.problem("the clients got few or no streams through after the last restart")
        time.sleep(args.tail)
        stop.set()
        for p in clients:
            p.join(timeout=120)
            if p.exitcode != 0:
                report.problem(f"client process {p.pid} ended with exit code {p.exitcode}")
        loaded = [json.loads(path.read_text()) for path in journals if path.exists()]
        if len(loaded) != len(journals):
            report.problem("a client left no journal")
        for journal in loaded:
            report.codes.update(journal["codes"])
        for code in report.codes:
            if code != "OK" and code not in TRANSIENT:
                report.problem(f"clients saw {report.codes[code]} streams end with {code}")
        check_data(data_dir, w, loaded, report)  # a read-only snapshot beside the idle server
        check_over_rpc(server, w, loaded, report, rng, args.resolve_sample)  # (stores lost events)
        server.stop()
        integrity(data_dir, report, "at the end")
    finally:
        stop.set()
        for p in clients:
            if p.is_alive():
                p.terminate()
        server.stop()
        report.seconds = time.monotonic() - started
        if not args.data and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def print_report(report: Report, args: argparse.Namespace) -> None:
    def batches(counter: Counter, status: str) -> str:
        parts = [f"{counter[k]} {k.split(' ', 1)[1]}" for k in sorted(counter)
                 if k.startswith(status + " ")]
        return ", ".join(parts) or "none"

    c = report.counts
    print(f"crash test: {report.kills} SIGKILLs, {args.clients} clients, seed {args.seed}, "
          f"{report.seconds:.1f} s")
    print(f"  link batches ({args.links_per_batch} links each): acknowledged "
          f"{sum(v for k, v in report.link_batches.items() if k.startswith('acked '))} "
          f"({batches(report.link_batches, 'acked')}); unacknowledged "
          f"{batches(report.link_batches, 'unacked')}")
    print(f"  acknowledged links verified in the data: {c['acknowledged links verified']}; "
          f"resolved over RPC (sample): {c['links resolved over RPC']}")
    print(f"  event batches ({args.events_per_batch} events each): acknowledged "
          f"{sum(v for k, v in report.event_batches.items() if k.startswith('acked '))} "
          f"({batches(report.event_batches, 'acked')}); unacknowledged "
          f"{batches(report.event_batches, 'unacked')}")
    print(f"  acknowledged events verified in the data: {c['acknowledged events verified']}; "
          f"re-sent over RPC: {c['acknowledged events re-sent']}")
    print(f"  streams: {', '.join(f'{k} {v}' for k, v in report.codes.most_common())}")
    print(f"  integrity checks: {report.integrity_runs}")
    print(f"  problems: {len(report.problems) or 'none'}")
    for problem in report.problems:
        print(f"    {problem}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs [20]")
    p.add_argument("--clients", type=int, default=3, help="client processes [3]")
    p.add_argument("--links-per-batch", type=int, default=40)
    p.add_argument("--events-per-batch", type=int, default=40)
    p.add_argument("--batches-per-stream", type=int, default=4)
    p.add_argument("--up", type=float, nargs=2, default=(0.5, 2.5), metavar=("MIN", "MAX"),
                   help="seconds the server runs before each kill, uniform [0.5 2.5]")
    p.add_argument("--down", type=float, default=0.3, help="at most this long down [0.3 s]")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before the first kill")
    p.add_argument("--tail", type=float, default=1.0, help="seconds after the last restart")
    p.add_argument("--resolve-sample", type=int, default=300,
                   help="acknowledged links resolved over RPC at the end [300]")
    p.add_argument("--no-check-every-kill", dest="check_every_kill", action="store_false",
                   help="run the integrity check only at the end")
    p.add_argument("--map-size", default="1MiB",
                   help="initial LMDB map, small so that it grows (and retries) under load [1MiB]")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    p.add_argument("--data", help="work folder to use and keep [a temporary one]")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = p.parse_args(argv)
    report = run(args)
    print_report(report, args)
    return 1 if report.problems or report.kills < args.kills else 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    sys.exit(main())
