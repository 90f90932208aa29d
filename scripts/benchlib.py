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

__all__ = ["BENCH_KEYS", "ECHO_METHOD", "authorized", "start_echo_server"]

os.environ.setdefault("IDENTITY_API_KEY", f"idk_bench_{secrets.token_urlsafe(24)}")
BENCH_KEYS = (ApiKey.provisioned(os.environ["IDENTITY_API_KEY"], [Role.ADMIN], "benchmark"),)


def authorized(channel: grpc.Channel) -> grpc.Channel:
    return with_api_key(channel, os.environ["IDENTITY_API_KEY"])


ECHO_METHOD = "/bench.v1.Echo/Echo"


def start_echo_server(max_workers: int) -> tuple[grpc.Server, int]:
    """A bare gRPC server (no services, no interceptors) that echoes requests back.

    It runs in the benchmarked server's process, so the echo's calls/s is the raw speed of
    gRPC here, paying nothing for the credentials the identity server checks.
    """
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.so_reuseport", 0)])
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.v1.Echo", {"Echo": echo}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
