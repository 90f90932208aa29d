"""Erasure on request: forget a person, and keep a late replay from bringing them back.

Forgetting deletes the person's identifiers, nodes and person record, turns
each of their links into a tombstone without personal data, and keeps for each
erased identifier only a keyed hash (BLAKE2b, salt in ``meta``) with the
erasure time. The graph asks ``Erasures.replayed`` about new identifiers only:
evidence observed before the erasure is left out, evidence observed after it
starts a fresh person.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from identity.identifiers import Identifier
from identity.store import Txn, WriteTxn

__all__ = ["Erasures", "ForgetResult", "EraseEvents"]

_SALT_KEY = b"erasure_salt"
_AT = struct.Struct("<q")

# The event store's hook: (tx, erased node ids) -> events erased.
EraseEvents = Callable[[WriteTxn, list[int]], int]


@dataclass(frozen=True)
class ForgetResult:
    """What a forget removed (counts only: nothing personal is returned or kept)."""

    action_seq: int
    identifiers: int
    links: int
    events: int


class Erasures:
    """Salted hashes of erased identifiers; cheap to ask when nothing was ever erased."""

    def __init__(self) -> None:
        self._salt: bytes | None = None

    def load(self, tx: Txn) -> None:
        """Pick up the salt at start (only if something was erased, the check is armed)."""
        salt = tx.get("meta", _SALT_KEY)
        self._salt = bytes(salt) if salt and tx.count("erased") else None

    @staticmethod
    def _digest(salt: bytes, identifier: Identifier) -> bytes:
        data = bytes((identifier.kind,)) + identifier.value.encode()
        return hashlib.blake2b(data, key=salt, digest_size=16).digest()

    def record(self, tx: WriteTxn, identifiers: Iterable[Identifier], at_ms: int) -> None:
        """Keep a hash and the erasure time of each identifier; arm the check after commit."""
        salt = tx.get("meta", _SALT_KEY)
        if salt is None:
            salt = os.urandom(32)
            tx.put("meta", _SALT_KEY, salt)
        salt = bytes(salt)
        for identifier in identifiers:
            tx.put("erased", self._digest(salt, identifier), _AT.pack(at_ms))

        def arm() -> None:
            self._salt = salt

        tx.on_commit(arm)

    def replayed(self, tx: Txn, identifier: Identifier, observed_ms: int) -> bool:
        """True when ``identifier`` was erased at or after ``observed_ms``: leave it out."""
        salt = self._salt
        if salt is None:
            return False
        raw = tx.get("erased", self._digest(salt, identifier))
        return raw is not None and observed_ms <= _AT.unpack(raw)[0]
