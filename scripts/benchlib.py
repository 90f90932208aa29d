"""What the benchmarks share: an API key trusted by their servers, a bare echo baseline.

The key lives in ``$IDENTITY_API_KEY`` (made here if unset), so a server started in a
subprocess trusts the same key its parent's clients send.
"""

from __future__ import annotations

import os
import secrets

import grpc

from identity.api_keys import ApiKey, Role
from identity.client import with_api_key

__all__ = ["BENCH_KEYS", "ECHO_METHOD", "ECHO_ON_POOL_METHOD", "authorized", "start_echo_server"]

os.environ.setdefault("IDENTITY_API_KEY", f"idk_bench_{secrets.token_urlsafe(24)}")
BENCH_KEYS = (ApiKey.provisioned(os.environ["IDENTITY_API_KEY"], [Role.ADMIN], "benchmark"),)


def authorized(channel: grpc.Channel) -> grpc.Channel:
    return with_api_key(channel, os.environ["IDENTITY_API_KEY"])


ECHO_METHOD = "/bench.v1.Echo/Echo"
ECHO_ON_POOL_METHOD = "/bench.v1.Echo/EchoOnPool"  # always on a pool of READ_WORKERS threads


def start_echo_server(max_workers: int, read_workers: int | None = None
                      ) -> tuple[grpc.Server, int]:
    """A bare gRPC server (no services, no interceptors) that echoes requests back.

    It runs in the benchmarked server's process, so the echo's calls/s is the raw speed of
    gRPC here, paying nothing for the credentials the identity server checks. ``Echo``
    runs on a pool of its own as the identity server's quick reads do (``read_workers``,
    by default the server's ``READ_WORKERS``; 0 for the shared pool): that pool makes a
    trivial call cheaper too, so the baseline gets it as well. ``EchoOnPool`` always runs
    on such a pool, for a benchmark that compares with the faster of the two.
    """
    from concurrent import futures

    from identity.rpc.gate import on_pool
    from identity.server import READ_WORKERS

    read_workers = READ_WORKERS if read_workers is None else read_workers
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.so_reuseport", 0)])
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    pooled = on_pool(echo, futures.ThreadPoolExecutor(max_workers=READ_WORKERS))
    if read_workers:
        echo = on_pool(echo, futures.ThreadPoolExecutor(max_workers=read_workers))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.v1.Echo", {"Echo": echo, "EchoOnPool": pooled}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
