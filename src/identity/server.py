"""Build the gRPC server apart from running it: tests bind port 0, ``serve`` runs until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from identity.app import App
from identity.rpc import audit_service, identity_service
from identity.rpc import event_service
from identity.rpc import trigger_service
from identity.rpc import segment_service
from identity.rpc import admin_service
from identity.rpc.metrics import RpcObserver
from identity.metrics import MetricsEndpoint
from identity.rpc import key_service
from identity.rpc.auth import Authorizer
from identity.rpc.gate import GatedServer, Layer
from identity.rpc.decoding import DecodeGuard
from identity.transport import check_plaintext_allowed, ensure_dev_key, server_credentials
from identity.gc_policy import tune_for_serving

__all__ = ["CHECK_METHOD", "CHECK_WORKERS", "QUICK_READS", "READ_WORKERS", "call_gate",
           "create_server", "serve"]

log = logging.getLogger(__name__)
GRACE_SECONDS = 5.0
# Python runs a signal handler only when the main thread executes bytecode; a signal the
# kernel hands to another thread would not wake a main thread asleep in an untimed wait.
SIGNAL_POLL_SECONDS = 0.5
# Unary reads that only compute run on a small pool of their own. On the shared pool, a
# dozen of them would hold and hand over the GIL by turns (py-lmdb drops it on every read),
# paying a context switch each time; two threads keep a core busy with no such churn.
# Streams and writes, which wait on clients and commits, keep the shared pool.
READ_WORKERS = 2
QUICK_READS = frozenset({
    "/identity.v1.IdentityService/Resolve",
    "/identity.v1.EventService/GetProfile",
})
# CheckTrigger has a small pool of its own, for the same reason, apart from the quick
# reads: with reserve=true a check waits there for its commit, and waits behind a bulk
# import's commit may hold up other checks for that long, never a Resolve.
CHECK_METHOD = "/identity.v1.TriggerService/CheckTrigger"
CHECK_WORKERS = 2


def _add_health(server: GatedServer, services: list[str]) -> health.HealthServicer:
    servicer = health.HealthServicer()
    for name in ["", *services]:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def call_gate(app: App) -> list[Layer]:
    """What every call passes through, outermost first (see ``identity.rpc.gate``)."""
    return [
        RpcObserver(app.metrics),  # metrics, access log, request id; refused calls counted too
        Authorizer(app.keys),  # API key and role
        DecodeGuard(),  # undecodable requests: INVALID_ARGUMENT, not INTERNAL
    ]


def create_server(app: App, address: str, max_workers: int = 16, gated: bool = True,
                  read_workers: int = READ_WORKERS, check_workers: int = CHECK_WORKERS
                  ) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) server with every service, health and reflection.

    ``QUICK_READS`` run on a pool of ``read_workers`` threads and CheckTrigger on one of
    ``check_workers`` (0: on the shared pool).
    ``gated=False`` leaves out the call gate; only a benchmark does that, to price it."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", app.settings.max_message_bytes),
            ("grpc.max_send_message_length", app.settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    pools = {}
    for methods, workers, name in ((QUICK_READS, read_workers, "read"),
                                   ({CHECK_METHOD}, check_workers, "check")):
        if workers:
            pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
            weakref.finalize(server, pool.shutdown, wait=False)  # its threads go with the server
            pools.update(dict.fromkeys(methods, pool))
    registry = GatedServer(server, call_gate(app) if gated else [], pools)
    services = [identity_service.add_to_server(app, registry)]
    services.append(event_service.add_to_server(app, registry))
    services.append(audit_service.add_to_server(app, registry))
    services.append(trigger_service.add_to_server(app, registry))
    services.append(segment_service.add_to_server(app, registry))
    services.append(admin_service.add_to_server(app, registry))
    services.append(key_service.add_to_server(app.keys, registry))
    _add_health(registry, services)
    reflection.enable_server_reflection(
        [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        registry,
    )
    credentials = server_credentials(app.settings)
    port = (server.add_secure_port(address, credentials) if credentials
            else server.add_insecure_port(address))
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return server, port


def serve(app: App, address: str, metrics_address: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain calls for a grace period and close LMDB."""
    check_plaintext_allowed(app.settings, address)
    dev_key = ensure_dev_key(app, address)
    server, port = create_server(app, address)
    endpoint = MetricsEndpoint(app.metrics, metrics_address) if metrics_address else None
    if endpoint:
        print(f"identity metrics on {endpoint.url}", flush=True)
    stopped = threading.Event()  # handlers before start: a SIGTERM while starting drains too

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tune_for_serving()  # start-up objects frozen, young collections less often (gc_policy)
    server.start()
    host = address.rsplit(":", 1)[0]
    log.info("identity serving on %s:%d, data in %s", host, port, app.store.path)
    print(f"identity serving on {host}:{port} (data: {app.store.path})", flush=True)
    if dev_key:
        print(f"development admin key (also in {dev_key.path}): {dev_key.secret}", flush=True)
    while not stopped.wait(SIGNAL_POLL_SECONDS):
        pass
    server.stop(GRACE_SECONDS).wait()
    if endpoint:
        endpoint.stop()
    app.close()
    log.info("stopped; data closed")
    print("identity stopped; data closed", flush=True)
