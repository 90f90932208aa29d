"""The call gate: what every call passes through, fitted to each method once.

Each layer (metrics and access log, API key and role, the decoding guard) wraps a method's
handler when the services are registered, and does its per-call work inside the call, on
the worker thread that runs it. gRPC's own server interceptors would run once per call on
the server's single event-polling thread instead, ahead of every call's worker; with three
of them, Resolve lost about a quarter of its calls/s on this machine
(scripts/bench_call_gate.py measures the gate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

import grpc

__all__ = ["GatedServer", "Layer", "behavior_of", "on_pool", "with_behavior"]

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class Layer(Protocol):
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` for ``method`` (``/package.Service/Method``) with this layer around it."""


def behavior_of(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    """The one behaviour a method handler carries, whatever its streaming kind."""
    return next(getattr(handler, kind) for kind in _KINDS if getattr(handler, kind))


def with_behavior(handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]
                  ) -> grpc.RpcMethodHandler:
    kind = next(kind for kind in _KINDS if getattr(handler, kind))
    return handler._replace(**{kind: behavior})  # type: ignore[attr-defined]


def on_pool(handler: grpc.RpcMethodHandler, pool: Executor) -> grpc.RpcMethodHandler:
    """``handler`` run on ``pool`` instead of the server's own thread pool.

    gRPC looks for an ``experimental_thread_pool`` attribute on the behaviour (its own
    health service uses it); the behaviour is wrapped once so the attribute is ours."""
    behavior = behavior_of(handler)

    def pooled(request: Any, context: grpc.ServicerContext) -> Any:
        return behavior(request, context)

    pooled.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return with_behavior(handler, pooled)


class _GatedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped the first time each is asked for."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[..., Any]):
        self.inner = inner
        self.wrap = wrap
        self.wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method not in self.wrapped:
            handler = self.inner.service(details)
            self.wrapped[method] = self.wrap(method, handler) if handler else None
        return self.wrapped[method]


class GatedServer:
    """A ``grpc.Server`` stand-in for registering services: their handlers come out gated."""

    def __init__(self, server: grpc.Server, layers: Sequence[Layer],
                 pools: Mapping[str, Executor] | None = None):
        self.server = server
        self.layers = list(layers)  # outermost first
        self.pools = dict(pools or {})  # method -> the pool it runs on, if not the server's

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for layer in reversed(self.layers):
            handler = layer.wrap(method, handler)
        pool = self.pools.get(method)
        return on_pool(handler, pool) if pool is not None else handler

    def add_registered_method_handlers(self, service: str,
                                       handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.server.add_registered_method_handlers(
            service, {name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()})

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_GatedGeneric(h, self.wrap) for h in handlers))

    def __getattr__(self, name: str) -> Any:  # everything else is the server's own
        return getattr(self.server, name)
