"""Domain errors, mapped to gRPC status codes in exactly one place (rpc/status.py).

    IdentityError
    ├── InvalidArgument      bad input; carries field violations  -> INVALID_ARGUMENT
    ├── NotFound             no such identifier or person          -> NOT_FOUND
    ├── StorageFull          the LMDB map cannot grow further       -> RESOURCE_EXHAUSTED
    └── ShuttingDown         the store closed; nothing was written  -> UNAVAILABLE

Domain code raises these before anything is written, so a rejected request
leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FieldViolation", "IdentityError", "InvalidArgument", "NotFound", "ShuttingDown",
           "StorageFull"]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (``links[3].identifiers[0].value``) and why."""

    field: str
    reason: str


class IdentityError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidArgument(IdentityError):
    """The request is malformed; nothing of it was written."""

    def __init__(self, violations: list[FieldViolation] | FieldViolation, note: str = ""):
        self.violations = [violations] if isinstance(violations, FieldViolation) else violations
        self.note = note
        message = "; ".join(f"{v.field}: {v.reason}" for v in self.violations)
        super().__init__(f"{message} ({note})" if note else message)

    @classmethod
    def field(cls, field: str, reason: str) -> InvalidArgument:
        return cls(FieldViolation(field, reason))

    def under(self, prefix: str, note: str = "") -> InvalidArgument:
        """The same violations with their paths nested under ``prefix``."""
        return InvalidArgument(
            [FieldViolation(f"{prefix}.{v.field}" if v.field else prefix, v.reason)
             for v in self.violations],
            note or self.note,
        )


class NotFound(IdentityError):
    """The identifier or person is unknown."""


class StorageFull(IdentityError):
    """The LMDB map is full and may not grow past its configured ceiling."""


class ShuttingDown(IdentityError):
    """The store is closing: the write was not taken, so a retry elsewhere is safe."""
