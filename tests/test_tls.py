"""TLS and mutual TLS; plaintext only on loopback, where a development key is written."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from identity.app import App
from identity.client import IdentityClient
from identity.config import Settings
from identity.transport import check_plaintext_allowed, ensure_dev_key, is_loopback


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(folder: Path, name: str, issuer: tuple | None, *, ca: bool = False,
           server: bool = False) -> tuple:
    """A key and certificate in ``folder/name.{key,pem}``, signed by ``issuer`` (or itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    issuer_key, issuer_cert = issuer or (key, None)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(name))
               .issuer_name(issuer_cert.subject if issuer_cert else _name(name))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (folder / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA; a server certificate for 127.0.0.1; a client certificate; a stranger's."""
    folder = tmp_path_factory.mktemp("pki")
    ca = _issue(folder, "ca", None, ca=True)
    _issue(folder, "server", ca, server=True)
    _issue(folder, "client", ca)
    _issue(folder, "stranger", _issue(folder, "other-ca", None, ca=True))
    return folder


def _tls_server(make_server, pki: Path, mutual: bool):
    return make_server(tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                       tls_client_ca=pki / "ca.pem" if mutual else None)


def test_a_tls_server_answers_clients_that_trust_its_ca(make_server, pki) -> None:
    running = _tls_server(make_server, pki, mutual=False)
    with IdentityClient(running.address, tls_ca=pki / "ca.pem") as client:
        assert client.link("customer_id:C-1", "email:anna@example.com").person_id == "C-1"
    with IdentityClient(running.address, timeout=3) as plaintext:
        with pytest.raises(grpc.RpcError) as caught:
            plaintext.resolve("email:anna@example.com")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_trusted_ca(make_server, pki) -> None:
    running = _tls_server(make_server, pki, mutual=True)
    with IdentityClient(running.address, tls_ca=pki / "ca.pem", tls_cert=pki / "client.pem",
                        tls_key=pki / "client.key") as client:
        assert client.link("customer_id:C-1", "email:anna@example.com").person_id == "C-1"
    for cert in (None, "stranger"):
        with IdentityClient(running.address, timeout=3, tls_ca=pki / "ca.pem",
                            tls_cert=pki / f"{cert}.pem" if cert else None,
                            tls_key=pki / f"{cert}.key" if cert else None) as refused:
            with pytest.raises(grpc.RpcError) as caught:
                refused.resolve("email:anna@example.com")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_does_not_replace_the_api_key(make_server, pki) -> None:
    running = _tls_server(make_server, pki, mutual=False)
    with IdentityClient(running.address, api_key="", tls_ca=pki / "ca.pem") as anonymous:
        with pytest.raises(grpc.RpcError) as caught:
            anonymous.resolve("email:anna@example.com")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:50051", True), ("localhost:1", True), ("[::1]:50051", True),
    ("127.0.0.9:1", True), ("0.0.0.0:50051", False), ("[::]:50051", False),
    ("10.0.0.5:50051", False), ("shop.example.com:443", False),
])
def test_only_loopback_addresses_count_as_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_plaintext_beyond_loopback_needs_tls_or_an_explicit_flag(tmp_path, pki) -> None:
    with pytest.raises(SystemExit, match="without TLS"):
        check_plaintext_allowed(Settings(), "0.0.0.0:50051")
    check_plaintext_allowed(Settings(insecure=True), "0.0.0.0:50051")
    check_plaintext_allowed(Settings(tls_cert=pki / "server.pem", tls_key=pki / "server.key"),
                            "0.0.0.0:50051")
    refused = subprocess.run(
        [sys.executable, "-m", "identity.cli", "serve", "--address", "0.0.0.0:0",
         "--data", str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "without TLS" in refused.stderr


def test_loopback_plaintext_writes_a_private_development_key_and_reuses_it(tmp_path) -> None:
    settings = Settings.load(env={}, data_dir=tmp_path / "data", map_size="64MiB")
    app = App.open(settings)
    try:
        first = ensure_dev_key(app, "127.0.0.1:50051")
        assert first is not None and app.keys.verify(first.secret) is not None
        assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o600
        assert first.path.read_text().strip() == first.secret
        assert ensure_dev_key(app, "127.0.0.1:50051") == first
        assert ensure_dev_key(app, "0.0.0.0:50051") is None
        app.keys.revoke(first.secret.split("_")[1])
        again = ensure_dev_key(app, "127.0.0.1:50051")
        assert again is not None and again.secret != first.secret
    finally:
        app.close()
