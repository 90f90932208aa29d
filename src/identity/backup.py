"""Hot backup and restore of a data folder: a compact LMDB copy and a manifest restore checks.

A backup opens the environment read-only in its own process, beside a running server
(LMDB's lock file lets the two share it, and a reader never blocks the writer), and
copies one read snapshot compactly: the copy holds every write committed, so every
write acknowledged, before the backup began, and nothing half-written. The manifest
beside the copy records when, from where, how big and a SHA-256; restore refuses a
copy that does not match it, and refuses to overwrite data that a server has open.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lmdb

from identity.store import MAX_DBS, SUBDATABASES

__all__ = ["DATA_FILE", "MANIFEST_FILE", "BackupError", "Manifest", "backup", "in_use",
           "read_manifest", "restore"]

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
MANIFEST_FILE = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore was refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    """What a backup holds; written beside the copy, checked before a restore."""

    created_at: str  # ISO 8601, UTC, when the snapshot was taken
    source: str  # the data folder copied (absolute)
    host: str
    txn_id: int  # the LMDB transaction the copy shows: every commit up to it
    data_bytes: int  # size of the compact copy
    sha256: str  # of the copy's data file
    source_used_bytes: int  # pages in use in the source when copied
    source_map_bytes: int  # the source's map size (restore needs no more than data_bytes)
    entries: dict[str, int] = field(default_factory=dict)  # sub-database -> entries
    lmdb_version: str = ""
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise BackupError(f"unknown backup format {data.get('format')!r} (expected {FORMAT})")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def backup(source: str | Path, dest: str | Path) -> Manifest:
    """Copy the data folder ``source`` into the new or empty folder ``dest``, live.

    Safe while a server serves ``source``: the copy is one consistent snapshot.
    """
    source, dest = Path(source).absolute(), Path(dest).absolute()
    if not (source / DATA_FILE).is_file():
        raise BackupError(f"no LMDB data in {source}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty folder; give a new folder")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        manifest = _copy(source, dest)
        _write_atomically(dest / MANIFEST_FILE, manifest.to_json().encode())
    except BaseException:
        for name in (DATA_FILE, MANIFEST_FILE):
            (dest / name).unlink(missing_ok=True)
        if created:
            dest.rmdir()
        raise
    return manifest


def _copy(source: Path, dest: Path) -> Manifest:
    # Opened as Store opens it, but read-only: lock=True so the server's writer sees our
    # reader and never reuses the pages of the snapshot being copied; map_size=0 adopts
    # the size the server has grown the map to.
    try:
        env = lmdb.open(str(source), readonly=True, create=False, lock=True, map_size=0,
                        max_dbs=MAX_DBS, readahead=False)
    except lmdb.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from exc
    try:
        txn = _begin(env)
        try:
            entries = _entries(env, txn)
            used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
            map_size = env.info()["map_size"]
            created_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            try:
                env.copy(str(dest), compact=True, txn=txn)  # exactly the snapshot counted
            except TypeError:  # an LMDB build without copy-from-transaction
                env.copy(str(dest), compact=True)
            txn_id = txn.id()
        finally:
            txn.abort()
    finally:
        env.close()
    data = dest / DATA_FILE
    _fsync(data)
    _fsync(dest)
    return Manifest(created_at=created_at, source=str(source), host=socket.gethostname(),
                    txn_id=txn_id, data_bytes=data.stat().st_size, sha256=_sha256(data),
                    source_used_bytes=used, source_map_bytes=map_size, entries=entries,
                    lmdb_version=".".join(map(str, lmdb.version())))


def _begin(env: lmdb.Environment) -> lmdb.Transaction:
    for _ in range(10):
        try:
            return env.begin()
        except lmdb.MapResizedError:  # the server grew the map since we opened it
            env.set_mapsize(0)
    raise BackupError("the map kept growing while the backup started; try again")


def _entries(env: lmdb.Environment, txn: lmdb.Transaction) -> dict[str, int]:
    """Entries per named sub-database, read from the main database (every name in the file)."""
    names = [key.decode() for key, _ in txn.cursor()]
    counts = {}
    for name in names:
        db = env.open_db(name.encode(), txn=txn, create=False, **SUBDATABASES.get(name, {}))
        counts[name] = txn.stat(db)["entries"]
    return counts


def read_manifest(backup_dir: str | Path) -> Manifest:
    path = Path(backup_dir) / MANIFEST_FILE
    try:
        return Manifest.from_json(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{path} is missing: not a backup, or an unfinished one") from None
    except (ValueError, TypeError) as exc:
        raise BackupError(f"{path} is not a readable manifest: {exc}") from None


def restore(backup_dir: str | Path, target: str | Path, *, force: bool = False) -> Manifest:
    """Put the backup in ``backup_dir`` into the data folder ``target``.

    Refuses a non-empty ``target`` unless ``force`` (its data file is then replaced),
    a target a server has open (whatever ``force`` says), and a copy whose size,
    checksum, structure or counts differ from its manifest; a refused restore leaves
    ``target`` as it was.
    """
    backup_dir, target = Path(backup_dir), Path(target).absolute()
    manifest = read_manifest(backup_dir)
    if not (backup_dir / DATA_FILE).is_file():
        raise BackupError(f"{backup_dir / DATA_FILE} is missing")
    if target.exists() and not target.is_dir():
        raise BackupError(f"{target} is not a folder")
    if in_use(target):
        raise BackupError(f"a server has {target} open; stop it before restoring")
    if target.exists() and any(target.iterdir()) and not force:
        raise BackupError(f"{target} is not empty; --force replaces its data")
    target.mkdir(parents=True, exist_ok=True)
    with _exclusive(target):  # a server starting now waits until the data is in place
        staged = target / f".{DATA_FILE}.restoring"
        try:
            digest = _copy_file(backup_dir / DATA_FILE, staged)
            if digest != manifest.sha256 or staged.stat().st_size != manifest.data_bytes:
                raise BackupError(f"{backup_dir / DATA_FILE} does not match its manifest "
                                  "(size or SHA-256): the copy is damaged")
            _check_structure(staged, manifest)
            os.replace(staged, target / DATA_FILE)
            _fsync(target)
        finally:
            staged.unlink(missing_ok=True)
    return manifest


def _check_structure(data_file: Path, manifest: Manifest) -> None:
    """Walk every page of the staged file, then compare its counts with the manifest."""
    try:
        from lmdb.verify import verify  # a pure-Python page walker (py-lmdb 3)
    except ImportError:  # older py-lmdb: the counts below still have to open and match
        verify = None
    if verify is not None:
        problems = verify(str(data_file), subdir=False)
        if problems:
            raise BackupError(f"the copy is damaged: {'; '.join(problems[:5])}")
    # lock=False: no lock file beside the staged file, and we hold the folder's lock.
    env = lmdb.open(str(data_file), subdir=False, readonly=True, lock=False, map_size=0,
                    max_dbs=MAX_DBS, readahead=False)
    try:
        with env.begin() as txn:
            entries = _entries(env, txn)
    finally:
        env.close()
    if entries != manifest.entries:
        raise BackupError(f"the copy's entries {entries} differ from its manifest's "
                          f"{manifest.entries}")


def in_use(data_dir: str | Path) -> bool:
    """Whether some process has the LMDB environment in ``data_dir`` open.

    Every process with the environment open holds a shared lock on the first byte of
    its lock file for as long as it is open; a free folder lets us take it exclusively.
    Only ask about folders this process has not opened: closing our descriptor would
    drop this process's own LMDB locks on that file.
    """
    try:
        with _exclusive(Path(data_dir), create=False):
            return False
    except BackupError:
        return True


@contextmanager
def _exclusive(data_dir: Path, *, create: bool = True) -> Iterator[None]:
    """Hold the lock every LMDB opener takes shared, exclusively (LMDB waits for it)."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        yield  # no lock file: nothing has opened the environment
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BackupError(f"a server has {data_dir} open; stop it first") from None
            raise
        yield
    finally:
        os.close(fd)  # releases the lock


def _copy_file(source: Path, dest: Path) -> str:
    """Copy ``source`` to ``dest`` durably; the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
