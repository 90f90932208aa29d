"""Requests whose bytes do not decode are the caller's mistake: INVALID_ARGUMENT, not INTERNAL.

gRPC answers INTERNAL ("Exception deserializing request!") when a request fails to parse,
e.g. a segment tree nested deeper than protobuf's limit of 100 levels, or the bytes of
another message. This interceptor wraps each method's request decoder so such a request
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


class DecodeGuard(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[..., Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer

        def safe(raw: bytes) -> Any:
            try:
                return decode(raw)
            except Exception as exc:  # noqa: BLE001 (any parse failure is the caller's)
                return _Undecodable(str(exc) or type(exc).__name__)

        options = {"request_deserializer": safe,
                   "response_serializer": handler.response_serializer}
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _guard_stream(handler.stream_stream), **options)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                _guard_stream(handler.stream_unary), **options)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _guard_unary(handler.unary_stream), **options)
        return grpc.unary_unary_rpc_method_handler(_guard_unary(handler.unary_unary), **options)
