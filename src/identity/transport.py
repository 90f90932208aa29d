"""How the server is reached: TLS (optionally mutual) or plaintext on loopback only.

Plaintext is for a developer's own machine: ``scripts/run`` binds 127.0.0.1 and writes a
development admin key next to the data, so the quick start needs no set-up. Any other
address needs TLS, or an explicit ``--insecure`` (e.g. behind a TLS-terminating proxy).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from identity.api_keys import Role
from identity.app import App
from identity.config import Settings

__all__ = ["DevKey", "DEV_KEY_FILE", "check_plaintext_allowed", "ensure_dev_key",
           "is_loopback", "server_credentials", "tls_enabled"]

DEV_KEY_FILE = "dev-admin.key"


@dataclass(frozen=True)
class DevKey:
    path: Path
    secret: str


def tls_enabled(settings: Settings) -> bool:
    return bool(settings.tls_cert or settings.tls_key)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files; None for plaintext."""
    if not tls_enabled(settings):
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def is_loopback(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext_allowed(settings: Settings, address: str) -> None:
    if not tls_enabled(settings) and not is_loopback(address) and not settings.insecure:
        raise SystemExit(f"refusing to serve {address} without TLS: give --tls-cert and "
                         "--tls-key, or --insecure if a proxy in front terminates TLS")


def ensure_dev_key(app: App, address: str) -> DevKey | None:
    """On loopback plaintext: the admin key in ``<data_dir>/dev-admin.key``, made if needed."""
    if tls_enabled(app.settings) or not is_loopback(address) or not app.settings.dev_key:
        return None
    path = Path(app.store.path) / DEV_KEY_FILE
    if path.exists():
        secret = path.read_text().strip()
        if app.keys.verify(secret):
            return DevKey(path, secret)
    issued = app.keys.create([Role.ADMIN], "development key (loopback, plaintext)")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(issued.secret_key + "\n")
    return DevKey(path, issued.secret_key)
