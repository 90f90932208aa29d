"""API keys and the roles they grant: created, listed and revoked by admins, checked per call.

A key reads ``idk_<key id>_<secret>``. Only the key id and a SHA-256 digest of the secret are
stored (in LMDB, or in the settings file for keys provisioned from outside), so a copy of the
data folder gives no usable key. The secret is 32 random bytes, so a plain digest is enough:
there is nothing to brute-force that a slow hash would protect. Digests are compared in
constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from identity.errors import InvalidArgument, NotFound
from identity.store import Store, Txn

__all__ = ["ApiKey", "ApiKeys", "IssuedKey", "Role", "digest_of", "new_key", "parse_key"]

PREFIX = "idk"
MAX_LABEL_LENGTH = 128
MAX_VERIFIED = 4096  # presented keys remembered as verified (then the memory starts over)
_DUMMY_DIGEST = bytes(32)


class Role(enum.Enum):
    """What a key may do. ``admin`` may do everything; ``ingest`` and ``query`` are separate."""

    INGEST = "ingest"
    QUERY = "query"
    ADMIN = "admin"

    @classmethod
    def parse(cls, text: str, field_path: str = "roles") -> Role:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise InvalidArgument.field(field_path, f"unknown role {text!r} (use {names})") from None


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never its secret."""

    key_id: str
    roles: frozenset[Role]
    digest: bytes
    label: str = ""
    created_ms: int = 0
    revoked_ms: int = 0
    from_settings: bool = False

    @classmethod
    def provisioned(cls, whole_key: str, roles: Iterable[Role], label: str = "") -> ApiKey:
        """The settings-file entry trusting ``whole_key`` (tests and benchmarks make their own)."""
        key_id, secret = parse_key(whole_key) or ("", "")
        if not key_id:
            raise ValueError("not an API key: idk_<key id>_<secret>")
        return cls(key_id, frozenset(roles), digest_of(secret), label, from_settings=True)

    def allows(self, role: Role | None) -> bool:
        """``role`` None means any valid key will do (e.g. server reflection)."""
        if self.revoked_ms:
            return False
        return role is None or Role.ADMIN in self.roles or role in self.roles

    def to_json(self) -> bytes:
        return json.dumps({"roles": sorted(r.value for r in self.roles),
                           "digest": self.digest.hex(), "label": self.label,
                           "created_ms": self.created_ms, "revoked_ms": self.revoked_ms}).encode()

    @classmethod
    def from_json(cls, key_id: str, raw: bytes) -> ApiKey:
        data = json.loads(raw)
        return cls(key_id, frozenset(Role(r) for r in data["roles"]), bytes.fromhex(data["digest"]),
                   data.get("label", ""), data.get("created_ms", 0), data.get("revoked_ms", 0))


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``secret_key`` is shown once and never stored."""

    key: ApiKey
    secret_key: str


def new_key() -> tuple[str, str, str]:
    """A fresh (key id, secret, the whole key as a client sends it)."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return key_id, secret, f"{PREFIX}_{key_id}_{secret}"


def digest_of(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(text: str) -> tuple[str, str] | None:
    """``idk_<id>_<secret>`` -> (id, secret); None when it is not shaped like a key."""
    prefix, sep, rest = text.strip().partition("_")
    key_id, sep2, secret = rest.partition("_")
    if prefix != PREFIX or not sep or not sep2 or not key_id or not secret or len(key_id) > 64:
        return None
    return key_id, secret


class ApiKeys:
    """Keys in the ``api_keys`` sub-database, plus read-only keys from the settings file."""

    def __init__(self, store: Store, provisioned: Iterable[ApiKey] = ()):
        self.store = store
        self.provisioned = {k.key_id: k for k in provisioned}
        # Stored keys as last read, so a call needs no read transaction and no JSON. Every
        # change of a stored key goes through ``revoke`` here, which drops its entry after
        # commit; the generation keeps a read that raced that commit out of the cache.
        self._known: dict[str, ApiKey] = {}
        self._generation = 0
        self._known_lock = threading.Lock()
        # Keys as presented that verified, so a caller's next call skips the digest; dropped
        # with every revocation (a revoked key is verified afresh, and refused).
        self._verified: dict[str, ApiKey] = {}

    def create(self, roles: Iterable[Role], label: str = "") -> IssuedKey:
        roles = frozenset(roles)
        if not roles:
            raise InvalidArgument.field("roles", "give at least one role")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidArgument.field("label", f"longer than {MAX_LABEL_LENGTH} characters")
        key_id, secret, whole = new_key()
        key = ApiKey(key_id, roles, digest_of(secret), label, int(time.time() * 1000))
        self.store.write(lambda tx: tx.put("api_keys", key_id.encode(), key.to_json()))
        return IssuedKey(key, whole)

    def revoke(self, key_id: str) -> ApiKey:
        if key_id in self.provisioned:
            raise InvalidArgument.field("key_id", "this key comes from the settings file; "
                                                  "remove it there")

        def revoke(tx) -> ApiKey:
            key = self._stored(tx, key_id)
            if key is None:
                raise NotFound(f"no API key {key_id!r}")
            if not key.revoked_ms:
                key = ApiKey(key.key_id, key.roles, key.digest, key.label, key.created_ms,
                             int(time.time() * 1000))
                tx.put("api_keys", key_id.encode(), key.to_json())
                tx.on_commit(lambda: self._forget(key_id))
            return key

        return self.store.write(revoke)

    def list(self) -> list[ApiKey]:
        with self.store.read() as tx:
            stored = [ApiKey.from_json(k.decode(), v) for k, v in tx.items("api_keys")]
        return [*self.provisioned.values(), *stored]

    def verify(self, presented: str) -> ApiKey | None:
        """The key ``presented`` names, if its secret matches and it is not revoked."""
        key = self._verified.get(presented)
        if key is not None:
            return key
        generation = self._generation
        key = self._verify(presented)
        if key is not None:
            with self._known_lock:
                if generation == self._generation:  # no revocation committed meanwhile
                    if len(self._verified) >= MAX_VERIFIED:
                        self._verified.clear()
                    self._verified[presented] = key
        return key

    def _verify(self, presented: str) -> ApiKey | None:
        parsed = parse_key(presented)
        key_id, secret = parsed if parsed else ("", presented)
        key = self.provisioned.get(key_id) or self._known.get(key_id)
        if key is None and key_id:
            generation = self._generation
            with self.store.read() as tx:
                key = self._stored(tx, key_id)
            if key is not None:
                with self._known_lock:
                    if generation == self._generation:  # no revocation committed meanwhile
                        self._known[key_id] = key
        # Compare even for an unknown id, so timing does not tell which ids exist.
        matches = hmac.compare_digest(digest_of(secret), key.digest if key else _DUMMY_DIGEST)
        if key is None or not matches or key.revoked_ms:
            return None
        return key

    def _forget(self, key_id: str) -> None:
        with self._known_lock:
            self._generation += 1
            self._known.pop(key_id, None)
            self._verified = {}

    @staticmethod
    def _stored(tx: Txn, key_id: str) -> ApiKey | None:
        raw = tx.get("api_keys", key_id.encode()) if key_id else None
        return ApiKey.from_json(key_id, raw) if raw else None
