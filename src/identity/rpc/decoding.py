"""Requests whose bytes do not decode are the caller's mistake: INVALID_ARGUMENT, not INTERNAL.

gRPC answers INTERNAL ("Exception deserializing request!") when a request fails to parse,
e.g. a segment tree nested deeper than protobuf's limit of 100 levels, or the bytes of
another message. This gate layer wraps each method's request decoder so such a request
is refused as INVALID_ARGUMENT naming ``request`` (or the stream message it was), through
the same error mapping as every other refusal. Nothing reaches the servicer, so nothing
is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from grpc_status import rpc_status

from identity.errors import InvalidArgument
from identity.rpc.gate import behavior_of, with_behavior
from identity.rpc.status import status_of

__all__ = ["DecodeGuard"]


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _refusal(field: str, reason: str) -> InvalidArgument:
    return InvalidArgument.field(field, f"not a valid request message ({reason})")


def _checked(messages: Iterator[Any]) -> Iterator[Any]:
    """A client stream that raises InvalidArgument at its first undecodable message."""
    for index, message in enumerate(messages):
        if isinstance(message, _Undecodable):
            raise _refusal(f"request[{index}]", message.reason)
        yield message


def _guard_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            context.abort_with_status(rpc_status.to_status(
                status_of(_refusal("request", request.reason))))
        return behavior(request, context)

    return guarded


def _guard_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        return behavior(_checked(requests), context)

    return guarded


class DecodeGuard:
    """The gate's decoding layer (``identity.rpc.gate``)."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer

        def safe(raw: bytes) -> Any:
            try:
                return decode(raw)
            except Exception as exc:  # noqa: BLE001 (any parse failure is the caller's)
                return _Undecodable(str(exc) or type(exc).__name__)

        guard = _guard_stream if handler.request_streaming else _guard_unary
        return with_behavior(handler, guard(behavior_of(handler)))._replace(
            request_deserializer=safe)
