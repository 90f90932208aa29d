"""SIGTERM drains the server: calls in flight finish OK, new calls are refused, LMDB closes.

The server runs as ``identity serve`` in its own process, as it runs in production.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
from lmdb.verify import verify

from identity.client import IdentityClient, identifier, link_request, with_api_key
from identity.v1 import identity_pb2, identity_pb2_grpc

BATCH = 50


class _Server:
    """``identity serve`` on a loopback port over ``data``; its address and development key."""

    def __init__(self, data: Path):
        script = Path(sys.executable).with_name("identity")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "identity.cli"]
        self.log = open(data.parent / f"{data.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*command, "serve", "--data", str(data), "--address", "127.0.0.1:0",
             "--map-size", "64MiB"],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "serving on" in line, line
        self.address = line.split("serving on ")[1].split()[0]
        key_file = data / "dev-admin.key"  # written before the line above, once auth is on
        self.key = key_file.read_text().strip() if key_file.exists() else None

    def client(self) -> IdentityClient:
        if self.key:
            return IdentityClient(self.address, api_key=self.key)  # type: ignore[call-arg]
        return IdentityClient(self.address)

    def wait(self) -> tuple[int, str]:
        """Exit code and the rest of stdout."""
        out, _ = self.proc.communicate(timeout=60)
        self.log.close()
        return self.proc.returncode, out

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)
        self.log.close()


def _links(batch: int) -> list[identity_pb2.LinkRequest]:
    return [link_request(f"customer_id:S{batch}-{i}", f"email:s{batch}-{i}@example.com",
                         source="stream") for i in range(BATCH)]


def _until_refused(server: _Server) -> None:
    """Make new calls, each over a new connection, until the server's port refuses one.

    A call that reaches the server just as it begins to stop, before a handler takes it,
    is cancelled by gRPC instead (never run); anything else is a failure. Each probe
    channel keeps its own connection: gRPC otherwise shares one between channels to the
    same address, and calls on it would not test the port."""
    nobody = identity_pb2.ResolveRequest(identifier=identifier("email:nobody@example.com"))
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 30  # the grace period is 5 s; a draining server refuses
    while time.monotonic() < deadline:
        with grpc.insecure_channel(server.address,
                                   options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(with_api_key(channel, server.key or ""))
            try:
                stub.Resolve(nobody, timeout=10)
            except grpc.RpcError as exc:
                seen[exc.code().name] += 1
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    return
                assert exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.CANCELLED), exc
    raise AssertionError(f"the server kept accepting new calls 30 s after SIGTERM: {dict(seen)}"
                         f"\nits log ends:\n{server.log_tail()}")


class _Unary(threading.Thread):
    """Links one pair after another until a call fails; keeps the acknowledged ones."""

    def __init__(self, server: _Server, name: str):
        super().__init__(daemon=True)
        self.server, self.name_ = server, name
        self.acknowledged: list[int] = []
        self.failure: grpc.StatusCode | None = None
        self.started_one = threading.Event()

    def run(self) -> None:
        with self.server.client() as client:
            for n in range(100_000):  # bounded; the server stops long before
                try:
                    client.link(f"customer_id:{self.name_}-{n}",
                                f"email:{self.name_}-{n}@example.com", source="unary")
                except grpc.RpcError as exc:
                    self.failure = exc.code()
                    return
                self.acknowledged.append(n)
                self.started_one.set()


def test_sigterm_finishes_calls_in_flight_refuses_new_ones_and_exits_cleanly(tmp_path: Path
                                                                             ) -> None:
    data = tmp_path / "data"
    server = _Server(data)
    try:
        client = server.client()
        batches: queue.Queue[list | None] = queue.Queue()

        def stream() -> Iterator[identity_pb2.LinkStreamRequest]:
            while (links := batches.get(timeout=60)) is not None:
                yield identity_pb2.LinkStreamRequest(links=links)

        call = client.identity.LinkStream.future(stream(), timeout=120)
        batches.put(_links(0))
        for _ in range(10_000):  # the stream is in flight once its first batch is committed
            try:
                client.resolve("email:s0-0@example.com")
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        unary = [_Unary(server, f"U{k}") for k in range(3)]
        for thread in unary:
            thread.start()
        for thread in unary:
            assert thread.started_one.wait(60)

        server.proc.send_signal(signal.SIGTERM)
        _until_refused(server)
        for batch in range(1, 4):  # the stream goes on after new calls are refused
            batches.put(_links(batch))
        batches.put(None)
        summary = call.result(timeout=120)
        assert (summary.batches, summary.links, summary.created) == (4, 4 * BATCH, 4 * BATCH)
        for thread in unary:
            thread.join(60)
            # Refused: by the closed port, or cancelled by gRPC when it arrived just as the
            # server began to stop, before any handler took it (checked below: never run).
            assert thread.failure in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        client.close()

        code, out = server.wait()
        assert code == 0
        assert "data closed" in out
    finally:
        server.kill()

    assert verify(str(data)) == []
    server = _Server(data)
    try:
        with server.client() as client:
            for batch in range(4):
                for i in range(BATCH):
                    person = client.resolve(f"email:s{batch}-{i}@example.com").person
                    assert person.person_id == f"S{batch}-{i}"
            for thread in unary:
                for n in thread.acknowledged:
                    person = client.resolve(f"email:{thread.name_}-{n}@example.com").person
                    assert person.person_id == f"{thread.name_}-{n}"
                refused = f"email:{thread.name_}-{len(thread.acknowledged)}@example.com"
                try:
                    client.resolve(refused)
                    raise AssertionError(f"the refused link of {refused} was written")
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait()[0] == 0
    finally:
        server.kill()
