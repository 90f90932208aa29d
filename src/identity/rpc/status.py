"""Domain errors -> gRPC status codes, in exactly one place.

INVALID_ARGUMENT carries a ``google.rpc.BadRequest`` detail with one field
violation per bad field, so clients can point at the exact input.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from identity.errors import IdentityError, InvalidArgument, NotFound, ShuttingDown, StorageFull

__all__ = ["translate_errors", "status_of"]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_CODES: list[tuple[type[IdentityError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (StorageFull, code_pb2.RESOURCE_EXHAUSTED),
    (ShuttingDown, code_pb2.UNAVAILABLE),
]


# The status travels in trailing metadata, which gRPC caps (8 KiB by default; the message's
# non-ASCII bytes are percent-encoded there, three bytes each). An error quoting a very long
# input would turn into RESOURCE_EXHAUSTED, so texts are shortened to fit, in UTF-8 bytes.
MAX_MESSAGE = 600  # bytes of the status message
MAX_FIELD_TEXT = 200  # bytes of one violation's field path or reason
MAX_DETAIL_TEXT = 800  # bytes of all violations together (the first one always goes)


def _short(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "\u2026"


def _violations(error: InvalidArgument) -> list[error_details_pb2.BadRequest.FieldViolation]:
    kept, budget = [], MAX_DETAIL_TEXT
    for v in error.violations:
        field, reason = _short(v.field, MAX_FIELD_TEXT), _short(v.reason, MAX_FIELD_TEXT)
        budget -= len(field.encode()) + len(reason.encode())
        if kept and budget < 0:
            break
        kept.append(error_details_pb2.BadRequest.FieldViolation(field=field, description=reason))
    return kept


def status_of(error: IdentityError) -> status_pb2.Status:
    code = next((c for cls, c in _CODES if isinstance(error, cls)), code_pb2.FAILED_PRECONDITION)
    status = status_pb2.Status(code=code, message=_short(str(error), MAX_MESSAGE))
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=_violations(error)))
        status.details.append(detail)
    return status


def translate_errors(method: F) -> F:
    """Abort the call with the status of a domain error; log and hide anything unexpected."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:  # the caller gave up while it queued
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call ran")
        try:
            return method(self, request, context)
        except IdentityError as exc:
            context.abort_with_status(rpc_status.to_status(status_of(exc)))
        except Exception:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper  # type: ignore[return-value]
