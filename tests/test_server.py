"""The running service: health checking, reflection, and durability of acknowledged writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from identity.client import IdentityClient
from identity.rpc.identity_service import IdentityServicer
from identity.rpc.trigger_service import TriggerServicer
from identity.server import QUICK_READS
from identity.v1 import events_pb2, identity_pb2, triggers_pb2


def test_health_reports_serving_for_the_server_and_each_service(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "identity.v1.IdentityService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_identity_service(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        key = [("authorization", f"Bearer {os.environ['IDENTITY_API_KEY']}")]
        [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=5, metadata=key))
        names = {s.name for s in reply.list_services_response.service}
        assert "identity.v1.IdentityService" in names


def test_quick_reads_are_unary_methods_that_exist() -> None:
    """A misspelt name in QUICK_READS would silently leave that read on the shared pool."""
    methods = {f"/{service.full_name}/{method.name}": method
               for module in (identity_pb2, events_pb2, triggers_pb2)
               for service in module.DESCRIPTOR.services_by_name.values()
               for method in service.methods}
    for name in QUICK_READS:
        assert name in methods, name
        assert not methods[name].client_streaming and not methods[name].server_streaming


def test_quick_reads_and_checks_run_on_pools_of_their_own_and_writes_on_the_shared_one(
        make_server) -> None:
    ran_on: dict[str, str] = {}
    originals = {(cls, m): getattr(cls, m) for cls, m in (
        (IdentityServicer, "Resolve"), (IdentityServicer, "Link"),
        (TriggerServicer, "CheckTrigger"))}

    def spy(method: str, inner):  # noqa: ANN001, ANN202
        def on_thread(self, request, context):  # noqa: ANN001, ANN202
            ran_on[method] = threading.current_thread().name
            return inner(self, request, context)
        return on_thread

    for (cls, method), inner in originals.items():  # before the server binds the servicers
        setattr(cls, method, spy(method, inner))
    try:
        with IdentityClient(make_server().address) as client:
            client.link("email:pool@example.com", "phone:+12025550188")
            client.resolve("email:pool@example.com")
            client.check_trigger("email:pool@example.com", "abandoned_cart", "email")
    finally:
        for (cls, method), inner in originals.items():
            setattr(cls, method, inner)
    assert ran_on["Resolve"].startswith("read"), ran_on
    assert ran_on["CheckTrigger"].startswith("check"), ran_on
    assert ran_on["Link"].startswith("rpc"), ran_on


def _start(data: Path) -> tuple[subprocess.Popen, str, str]:
    """A server process on loopback; its address and the development key it wrote."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "identity.cli", "serve", "--address", "127.0.0.1:0",
         "--data", str(data), "--map-size", "64MiB"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving on" in line, line
    address = line.split("serving on ")[1].split()[0]
    return proc, address, (data / "dev-admin.key").read_text().strip()


def test_a_killed_server_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    proc, address, key = _start(tmp_path / "data")
    acknowledged = []
    try:
        with IdentityClient(address, api_key=key) as client:
            deadline = time.monotonic() + 30
            while len(acknowledged) < 300 and time.monotonic() < deadline:
                n = len(acknowledged)
                client.link(f"customer_id:C-{n}", f"email:p{n}@example.com", source="web")
                acknowledged.append(n)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert len(acknowledged) == 300
    proc, address, key = _start(tmp_path / "data")
    try:
        with IdentityClient(address, api_key=key) as client:
            for n in acknowledged:
                assert client.resolve(f"email:p{n}@example.com").person.person_id == f"C-{n}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        proc.stdout.close()  # type: ignore[union-attr]
