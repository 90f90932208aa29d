"""Server settings: defaults, then a TOML file, then IDENTITY_* environment variables, then flags.

Example file (all keys optional)::

    address = "127.0.0.1:50051"
    data_dir = "var"
    map_size = "4GiB"
    phone_region = "GB"
    fold_email_aliases = true
    [limits]            # at most this many identifiers of a kind per person
    email = 3
    [[blocklist]]       # junk values that never merge anything
    kind = "phone"      # omit for every kind
    value = "+442079460000"
    pattern = false
    [tls]               # serve TLS; with client_ca, clients need certificates (mTLS)
    cert = "server.pem"
    key = "server.key"
    client_ca = "clients-ca.pem"
    [[api_keys]]        # keys provisioned from outside: `identity keys create --print-config`
    id = "3f9c0a1b2c4d"
    roles = ["ingest"]
    sha256 = "<hex SHA-256 of the secret part>"
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from identity.api_keys import ApiKey, Role
from identity.blocklist import DEFAULT_RULES, Blocklist, BlockRule
from identity.graph import MergeRules
from identity.identifiers import Kind
from identity.normalize import NormalizeSettings

__all__ = ["Settings", "DEFAULT_LIMITS", "parse_size"]

DEFAULT_LIMITS: dict[Kind, int] = {
    Kind.EMAIL: 5,
    Kind.PHONE: 5,
    Kind.LOYALTY_CARD: 10,
    Kind.CRM_ID: 5,
    Kind.DEVICE_ID: 30,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from ``1073741824``, ``"512MiB"`` or ``"4G"``."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 512MiB or 4GiB)")
    number, unit = match.groups()
    power = "KMGT".index(unit[0].upper()) + 1 if unit else 0
    return int(number) * 1024**power


@dataclass(frozen=True)
class Settings:
    address: str = "127.0.0.1:50051"
    data_dir: Path = Path("var")
    map_size: int = 1 << 30
    max_map_size: int = 1 << 40
    sync: bool = True
    time_zone: str = "UTC"  # calendar days of segment windows and cohorts (IANA name)
    phone_region: str = "US"
    fold_email_aliases: bool = False
    kind_limits: dict[Kind, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    blocklist: tuple[BlockRule, ...] = DEFAULT_RULES
    triggers: dict = field(default_factory=dict)  # the [triggers] table: identity.trigger_rules
    api_keys: tuple[ApiKey, ...] = ()  # provisioned keys ([[api_keys]]); more live in LMDB
    tls_cert: Path | None = None  # PEM certificate chain; TLS is on when cert and key are set
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA bundle: clients must present a certificate
    insecure: bool = False  # allow plaintext on a non-loopback address
    dev_key: bool = True  # on loopback plaintext, write an admin key to <data_dir>/dev-admin.key
    max_message_bytes: int = 64 * 1024 * 1024
    max_batch_items: int = 10_000  # links or events in one request or stream message
    max_stream_items_per_second: int = 0  # per stream, 0 = unlimited; faster streams are slowed

    def normalize_settings(self) -> NormalizeSettings:
        return NormalizeSettings(default_region=self.phone_region,
                                 fold_email_aliases=self.fold_email_aliases)

    def merge_rules(self) -> MergeRules:
        return MergeRules(kind_limits=dict(self.kind_limits),
                          blocklist=Blocklist(list(self.blocklist)))

    @classmethod
    def load(cls, config_file: str | Path | None = None, env: dict[str, str] | None = None,
             **overrides: object) -> Settings:
        """Defaults < file < environment < explicit overrides (flags); None overrides are skipped."""
        settings = cls()
        if config_file:
            settings = settings._with_file(Path(config_file))
        env = os.environ if env is None else env
        from_env = {
            "address": env.get("IDENTITY_ADDRESS"),
            "data_dir": env.get("IDENTITY_DATA_DIR"),
            "map_size": env.get("IDENTITY_MAP_SIZE"),
            "phone_region": env.get("IDENTITY_PHONE_REGION"),
            "tls_cert": env.get("IDENTITY_TLS_CERT"),
            "tls_key": env.get("IDENTITY_TLS_KEY"),
            "tls_client_ca": env.get("IDENTITY_TLS_CLIENT_CA"),
        }
        settings = settings._with(from_env)
        return settings._with(overrides)

    def _with(self, values: dict[str, object]) -> Settings:
        changes: dict[str, object] = {}
        for key, value in values.items():
            if value is None:
                continue
            if key in ("data_dir", "tls_cert", "tls_key", "tls_client_ca"):
                value = Path(str(value))
            elif key == "max_message_bytes":
                value = parse_size(value)  # type: ignore[arg-type]
            elif key in ("map_size", "max_map_size"):
                value = parse_size(value)  # type: ignore[arg-type]
            elif key == "phone_region":
                value = str(value).upper()
            changes[key] = value
        return replace(self, **changes)  # type: ignore[arg-type]

    def _with_file(self, path: Path) -> Settings:
        data = tomllib.loads(path.read_text())
        limits = dict(self.kind_limits)
        for label, limit in data.pop("limits", {}).items():
            limits[Kind.parse(label)] = int(limit)
        rules = list(self.blocklist)
        for entry in data.pop("blocklist", []):
            kind = Kind.parse(entry["kind"]) if entry.get("kind") else None
            rules.append(BlockRule(str(entry["value"]), kind, bool(entry.get("pattern", False))))
        keys = list(self.api_keys)
        for entry in data.pop("api_keys", []):
            keys.append(ApiKey(str(entry["id"]), frozenset(Role.parse(r) for r in entry["roles"]),
                               bytes.fromhex(entry["sha256"]), str(entry.get("label", "")),
                               from_settings=True))
        tls = data.pop("tls", {})
        data.update({f"tls_{name}": tls[name] for name in ("cert", "key", "client_ca")
                     if name in tls})
        unknown = set(data) - {"address", "data_dir", "map_size", "max_map_size", "sync",
                               "time_zone", "phone_region", "fold_email_aliases", "triggers",
                               "tls_cert", "tls_key", "tls_client_ca", "insecure", "dev_key",
                               "max_message_bytes", "max_batch_items",
                               "max_stream_items_per_second"}
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        settings = replace(self, kind_limits=limits, blocklist=tuple(rules), api_keys=tuple(keys))
        return settings._with(data)
