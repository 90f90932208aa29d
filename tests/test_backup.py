"""Hot backup beside a live server, and a restore that a new server serves from.

The backup runs as ``identity backup`` in its own process, as an operator runs it: LMDB
must not be opened twice in one process, and the server under test lives in this one.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc
from lmdb.verify import verify

from conftest import RunningServer, start_server
from identity.backup import read_manifest
from identity.cli import main
from identity.client import IdentityClient


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "identity.cli", *args],
                          check=False, capture_output=True, text=True, timeout=120)


def _serve_folder(like: RunningServer, data_dir: Path) -> RunningServer:
    """A server like ``like`` (same settings and keys) over another data folder."""
    return start_server(dataclasses.replace(like.settings, data_dir=data_dir), like._started)


class _Writer(threading.Thread):
    """Links customer_id:C-n with email:pn@example.com until told to stop; keeps what was OK."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.address = address
        self.acknowledged: list[int] = []
        self.progress = threading.Condition()
        self.stop = threading.Event()
        self.error: grpc.RpcError | None = None

    def run(self) -> None:
        try:
            with IdentityClient(self.address) as client:
                for n in range(20_000):  # bounded: the test stops it long before
                    if self.stop.is_set():
                        return
                    client.link(f"customer_id:C-{n}", f"email:p{n}@example.com", source="web")
                    with self.progress:
                        self.acknowledged.append(n)
                        self.progress.notify_all()
        except grpc.RpcError as exc:  # reported by the test
            self.error = exc

    def wait_for(self, count: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: len(self.acknowledged) >= count
                                          or self.error is not None, timeout=60)
        assert self.error is None, self.error


def _backup_of(server: RunningServer, dest: Path) -> list[int]:
    """Back up ``server``'s data while a writer links through it; what was acknowledged before."""
    writer = _Writer(server.address)
    writer.start()
    try:
        writer.wait_for(50)
        with writer.progress:
            before = list(writer.acknowledged)
        done = _cli("backup", str(dest), "--data", str(server.settings.data_dir))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["txn_id"] > 0
        writer.wait_for(len(before) + 1)  # the server kept serving the writer throughout
    finally:
        writer.stop.set()
        writer.join(60)
    assert writer.error is None, writer.error
    return before


def test_a_backup_taken_while_writing_restores_everything_acknowledged_before_it(
        server, tmp_path: Path) -> None:
    before = _backup_of(server, tmp_path / "backup")
    manifest = read_manifest(tmp_path / "backup")
    assert manifest.entries["links"] >= len(before)
    assert manifest.source == str(server.settings.data_dir.absolute())

    restored = tmp_path / "restored"
    assert main(["restore", str(tmp_path / "backup"), "--data", str(restored)]) == 0
    assert verify(str(restored)) == []  # every page of the copy is sound
    again = _serve_folder(server, restored)
    with IdentityClient(again.address) as client:
        for n in before:
            assert client.resolve(f"email:p{n}@example.com").person.person_id == f"C-{n}"
        linked = client.link("customer_id:C-new", "email:new@example.com", source="web")
        assert linked.person_id == "C-new"  # the restored folder takes writes too


def test_restore_refuses_a_folder_that_is_not_empty_unless_forced(server, tmp_path: Path,
                                                                  capsys) -> None:
    before = _backup_of(server, tmp_path / "backup")
    target = tmp_path / "target"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    assert main(["restore", str(tmp_path / "backup"), "--data", str(target)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]

    assert main(["restore", str(tmp_path / "backup"), "--data", str(target), "--force"]) == 0
    again = _serve_folder(server, target)
    with IdentityClient(again.address) as client:
        n = before[-1]
        assert client.resolve(f"email:p{n}@example.com").person.person_id == f"C-{n}"


def test_restore_refuses_a_folder_a_server_has_open_even_when_forced(server, tmp_path: Path
                                                                    ) -> None:
    _backup_of(server, tmp_path / "backup")
    with IdentityClient(server.address) as client:
        client.link("customer_id:C-live", "email:live@example.com", source="web")
    # In its own process: this one holds the server's LMDB locks on that folder.
    refused = _cli("restore", str(tmp_path / "backup"), "--data",
                   str(server.settings.data_dir), "--force")
    assert refused.returncode == 1
    assert "a server has" in refused.stderr
    with IdentityClient(server.address) as client:  # the live data is untouched
        assert client.resolve("email:live@example.com").person.person_id == "C-live"


def test_restore_refuses_a_damaged_copy_and_leaves_the_target_alone(server, tmp_path: Path,
                                                                   capsys) -> None:
    _backup_of(server, tmp_path / "backup")
    data = tmp_path / "backup" / "data.mdb"
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    data.write_bytes(bytes(damaged))
    target = tmp_path / "target"
    assert main(["restore", str(tmp_path / "backup"), "--data", str(target)]) == 1
    assert "does not match its manifest" in capsys.readouterr().err
    assert not (target / "data.mdb").exists()


def test_backup_refuses_a_destination_with_files_and_restore_a_folder_without_manifest(
        server, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "other").write_text("x")
    refused = _cli("backup", str(dest), "--data", str(server.settings.data_dir))
    assert refused.returncode == 1 and "not an empty folder" in refused.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["other"]
    assert main(["restore", str(dest), "--data", str(tmp_path / "target")]) == 1
    assert "manifest.json is missing" in capsys.readouterr().err
