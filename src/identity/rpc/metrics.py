"""The RPC observer: the call gate's layer that times, counts and logs every call.

For each call it records the method, the status code and the time into
``identity.metrics.Metrics``, counts what Link, LinkStream, Track, TrackStream and
RecordPurchase replied (outcomes, merges, refusals, events), and writes one access-log
line (logger ``identity.rpc.access``) with method, code, duration_ms, peer and
request_id. The request id is the client's ``x-request-id`` metadata (cut to 128
characters) or a generated one, and goes back to the client in the trailing metadata
``x-request-id`` on success and on error alike, so a caller can quote it.

Its cost is a few microseconds per call: instruments are bound to their labels once
per method, and the log line is only built when INFO is enabled.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from identity.metrics import Metrics, RpcMetrics
from identity.rpc.gate import behavior_of, with_behavior
from identity.v1 import events_pb2, identity_pb2

__all__ = ["ACCESS_LOG", "REQUEST_ID_KEY", "RpcObserver", "request_id"]

ACCESS_LOG = logging.getLogger("identity.rpc.access")
REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_LINE = "%s %s %.3fms peer=%s request_id=%s"  # the access log line as text
_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED
_CODE_NAMES = {code: code.name for code in grpc.StatusCode}  # (an enum's name is slow)
_PREFIX = secrets.token_hex(4)  # unique per process, so ids stay unique across restarts
_SEQUENCE = itertools.count(1)
# (LinkOutcome number, the LinkStreamResponse field counting it): created, merged, ...
_STREAM_OUTCOMES = [
    (number, field) for name, number in identity_pb2.LinkOutcome.items()
    if (field := name.removeprefix("LINK_OUTCOME_").lower())
    in identity_pb2.LinkStreamResponse.DESCRIPTOR.fields_by_name]


def request_id(metadata: Any) -> str:
    """The caller's ``x-request-id``, or a new id (process prefix + sequence number)."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and value:
            return str(value)[:MAX_REQUEST_ID_LENGTH]
    return f"{_PREFIX}-{next(_SEQUENCE):x}"


def _reply_counters(metrics: Metrics) -> dict[type, Callable[[Any], None]]:
    """What each reply type says happened, fed into the domain counters."""
    links, events = metrics.count_links, metrics.count_events

    def link_stream(r: identity_pb2.LinkStreamResponse) -> None:
        for number, field in _STREAM_OUTCOMES:
            links(number, getattr(r, field))

    def purchase(r: events_pb2.RecordPurchaseResponse) -> None:
        events(1 if r.recorded else 0, 0 if r.recorded else 1)
        links(r.link_outcome)

    return {
        identity_pb2.LinkResponse: lambda r: links(r.outcome),
        identity_pb2.LinkStreamResponse: link_stream,
        events_pb2.TrackResponse: lambda r: events(r.stored, r.duplicates),
        events_pb2.TrackStreamResponse: lambda r: events(r.stored, r.duplicates),
        events_pb2.RecordPurchaseResponse: purchase,
    }


class RpcObserver:
    """The gate's outermost layer (``identity.rpc.gate``): times, counts and logs every call
    (see the module docstring); instruments are bound to each method once."""

    def __init__(self, metrics: Metrics, access_log: logging.Logger = ACCESS_LOG):
        self.metrics = metrics
        self.log = access_log
        self._replies = _reply_counters(metrics)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rpc = self.metrics.rpc(method)
        observe = self._streamed if handler.response_streaming else self._single
        return with_behavior(handler, observe(method, rpc, behavior_of(handler)))

    def finish(self, method: str, rpc: RpcMetrics, rid: str, code: grpc.StatusCode,
               seconds: float, context: grpc.ServicerContext) -> None:
        context.set_trailing_metadata((*(context.trailing_metadata() or ()),
                                       (REQUEST_ID_KEY, rid)))
        rpc.done(_CODE_NAMES[code], seconds)
        log = self.log
        if log.isEnabledFor(logging.INFO):
            ms = round(seconds * 1000, 3)
            peer = context.peer()
            # The record is made directly: Logger.info would also walk the stack to find
            # the caller's file and line, for a line that always comes from here.
            log.handle(log.makeRecord(
                log.name, logging.INFO, __file__, 0, _LINE, (method, code.name, ms, peer, rid),
                None, extra={"method": method, "code": code.name, "duration_ms": ms,
                             "peer": peer, "request_id": rid}))

    def _single(self, method: str, rpc: RpcMetrics, behavior: Callable) -> Callable:
        """A behaviour with one reply (unary-unary, stream-unary)."""
        finish, replies = self.finish, self._replies

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            rid = request_id(context.invocation_metadata())
            start = time.perf_counter()
            code = _UNKNOWN
            try:
                reply = behavior(request, context)
                code = context.code() or _OK
                count = replies.get(type(reply))
                if count is not None and code is _OK:
                    count(reply)
                return reply
            except BaseException:
                code = context.code() or _UNKNOWN
                raise
            finally:
                finish(method, rpc, rid, code, time.perf_counter() - start, context)

        return observed

    def _streamed(self, method: str, rpc: RpcMetrics, behavior: Callable) -> Callable:
        """A behaviour that yields replies (unary-stream, stream-stream); timed to the last."""
        finish = self.finish

        def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            rid = request_id(context.invocation_metadata())
            start = time.perf_counter()
            code = _UNKNOWN
            try:
                yield from behavior(request, context)
                code = context.code() or _OK
            except GeneratorExit:  # the client went away mid-stream
                code = _CANCELLED
                raise
            except BaseException:
                code = context.code() or _UNKNOWN
                raise
            finally:
                finish(method, rpc, rid, code, time.perf_counter() - start, context)

        return observed
