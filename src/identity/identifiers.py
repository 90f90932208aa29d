"""What an identifier is: a kind and a normalised value.

Kinds share their numbers with ``identity.v1.IdentifierKind`` so conversion is a cast.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

__all__ = ["Identifier", "Kind"]


class Kind(IntEnum):
    CUSTOMER_ID = 1
    EMAIL = 2
    PHONE = 3
    LOYALTY_CARD = 4
    CRM_ID = 5
    DEVICE_ID = 6

    @property
    def label(self) -> str:
        """The lower-case name used in configs, logs and the CLI (``loyalty_card``)."""
        return _LABELS[self]  # made once below: an enum's name is slow to reach

    @classmethod
    def parse(cls, label: str) -> Kind:
        try:
            return cls[label.strip().upper()]
        except KeyError:
            names = ", ".join(k.label for k in cls)
            raise ValueError(f"unknown identifier kind {label!r} (one of {names})") from None


_LABELS = {kind: kind.name.lower() for kind in Kind}


class Identifier(NamedTuple):
    """A normalised identifier; equal identifiers are the same graph node."""

    kind: Kind
    value: str

    def __str__(self) -> str:
        return f"{self.kind.label}:{self.value}"
