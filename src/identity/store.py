"""The one owner of the LMDB environment: sub-databases, transactions, group commit.

Every write goes through ``Store.write(fn)``: ``fn`` runs inside a write
transaction and its result is handed back only after that transaction has
committed with a synced flush, so an acknowledged write survives a crash.
Concurrent writers are grouped: one writer thread drains the queue, runs each
job in a nested transaction (a failing job is rolled back alone) and commits
the group once, which multiplies synced-write throughput without weakening it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from identity.errors import ShuttingDown, StorageFull

__all__ = ["Store", "Snapshot", "Txn", "WriteTxn", "Chain", "ChainBroken", "SUBDATABASES",
           "StoreUsage", "MAX_DBS", "read_only"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Every named sub-database, in one place, with its LMDB flags.
SUBDATABASES: dict[str, dict[str, bool]] = {
    "meta": {},  # counters and settings: name -> value
    "ids": {},  # kind byte + normalised value -> node id
    "nodes": {},  # node id -> root id, kind, first/last seen, value
    "persons": {},  # root id -> customer node, counts per kind, member node ids
    "links": {},  # link seq -> the append-only link log record
    "node_links": {"dupsort": True, "dupfixed": True},  # node id -> link seqs
    "events": {},  # node u32 + inverted time ms + inverted event seq -> compact event record
    "event_ids": {},  # blake2b-96 of the client's event id -> event seq (idempotence)
    "strings": {},  # interned string -> u32 id (products, categories, brands, campaigns...)
    "string_ids": {},  # u32 id -> interned string
    "columns": {},  # block seq -> packed column block of one committed batch (segments)
    "orders": {},  # order ref u32 -> order record (total, time, cancelled, line categories)
    "order_ids": {},  # the shop's order id -> order ref: a site and a POS sighting are one
    "node_orders": {"dupsort": True, "dupfixed": True},  # node -> order refs it was seen in
    "attributes": {},  # node u32 -> latest profile attribute values that node reported
    "actions": {},  # action seq -> admin action (split, block, forget): who, why, what
    "cuts": {},  # b"L"+link seq or b"N"+node -> action seq: evidence an admin removed
    "blocked": {},  # kind byte + value -> action seq: values blocked at run time
    "erased": {},  # salted hash of a forgotten identifier -> erasure time (ms)
    "segments": {},  # saved segment name -> JSON record (condition tree, description, time)
    "tags": {},  # node u32 + tag + seq u64 -> behaviour tag setting (time ms, cleared, value)
    "sends": {},  # node u64 + time ms + seq -> a reserved or recorded message send (caps)
    "send_keys": {},  # blake2b-128 of an idempotency key -> its send and first trigger decision
    "trigger_rules": {},  # trigger kind byte + campaign -> trigger rule set by SetTriggerRule
    "api_keys": {},  # key id -> roles, label, SHA-256 of the secret, created/revoked times
}

MAX_GROUP = 256
MAX_DBS = 64  # named sub-databases the environment can hold; every opener must agree
GROW_WAIT_SECONDS = 5.0  # how long a map growth waits for open reads before cutting them off


class Txn:
    """A transaction over named sub-databases: the narrow surface domain code uses."""

    __slots__ = ("_txn", "_dbs")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]):
        self._txn = txn
        self._dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[db])

    def items(self, db: str, start: bytes = b"", prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Key/value pairs from ``start`` (or ``prefix``) on, in key order."""
        cursor = self._txn.cursor(self._dbs[db])
        if not cursor.set_range(start or prefix):
            return
        for key, value in cursor:
            if prefix and not key.startswith(prefix):
                return
            yield key, value

    def duplicates(self, db: str, key: bytes) -> list[bytes]:
        """All values stored under ``key`` in a dupsort sub-database."""
        cursor = self._txn.cursor(self._dbs[db])
        if not cursor.set_key(key):
            return []
        return list(cursor.iternext_dup())

    def count(self, db: str) -> int:
        return self._txn.stat(self._dbs[db])["entries"]

    def last_key(self, db: str) -> bytes | None:
        cursor = self._txn.cursor(self._dbs[db])
        return cursor.key() if cursor.last() else None


class WriteTxn(Txn):
    """A write transaction; ``on_commit`` callbacks run once the group is durable."""

    __slots__ = ("_hooks",)

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]):
        super().__init__(txn, dbs)
        self._hooks: list[Callable[[], None]] = []

    def put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        return self._txn.put(key, value, db=self._dbs[db], overwrite=overwrite)

    def put_many(self, db: str, items: list[tuple[bytes, bytes]], *, overwrite: bool = True
                 ) -> int:
        """Put ``items`` (sorted is fastest); returns how many keys were added."""
        return self._txn.cursor(self._dbs[db]).putmulti(items, overwrite=overwrite)[1]

    def delete(self, db: str, key: bytes, value: bytes | None = None) -> bool:
        if value is None:
            return self._txn.delete(key, db=self._dbs[db])
        return self._txn.delete(key, value, db=self._dbs[db])

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after commit (for in-memory views); never run if rolled back."""
        self._hooks.append(hook)


class Snapshot:
    """``Store.read``'s context: counts the open read (a map growth waits for it) around one
    read-only LMDB transaction. A class, not a generator: every read RPC opens one."""

    __slots__ = ("_store", "_txn")

    def __init__(self, store: Store):
        self._store = store

    def __enter__(self) -> Txn:
        store = self._store
        with store._gate_lock:
            while store._growing:
                store._gate.wait()
            store._reading += 1
        try:
            self._txn = store.env.begin()
        except BaseException:
            self._release()
            raise
        return Txn(self._txn, store._dbs)

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._txn.abort()  # a read-only transaction has nothing to commit
        finally:
            self._release()

    def _release(self) -> None:
        store = self._store
        with store._gate_lock:
            store._reading -= 1
            if store._growing and not store._reading:  # only a growth waits for this
                store._gate.notify_all()


class ChainBroken(RuntimeError):
    """A chained job was not applied because an earlier job of its chain failed."""


class Chain:
    """Write jobs that apply in submission order and stop at the first failure.

    A bulk stream submits its next batch while earlier ones are still waiting for the
    writer, so batches queued together share one synced commit (each batch still in its
    own nested transaction, all or nothing). Once a job fails, every later job of the
    chain raises ``ChainBroken`` instead of running: exactly what stopping at the first
    failure would have written, and nothing after it.
    """

    __slots__ = ("_store", "_submitted", "_failed_at")

    def __init__(self, store: Store):
        self._store = store
        self._submitted = 0
        self._failed_at: int | None = None  # position of the first job that failed

    def submit(self, fn: Callable[[WriteTxn], T]) -> Future:
        position = self._submitted
        self._submitted += 1

        def run(txn: WriteTxn) -> T:
            # Compared by position, not a plain flag: when a group is retried in a larger
            # map, the jobs before the failed one must run again as they did the first time.
            if self._failed_at is not None and position > self._failed_at:
                raise ChainBroken("an earlier job of this chain failed")
            try:
                return fn(txn)
            except lmdb.MapFullError:  # the group is retried in a larger map
                raise
            except BaseException:
                self._fail(position)
                raise

        future = self._store.submit(run)
        # A failed commit fails the job too; futures are settled on the writer thread
        # before it starts the next group, so later groups see the failure.
        future.add_done_callback(lambda f: f.exception() is not None and self._fail(position))
        return future

    def _fail(self, position: int) -> None:
        if self._failed_at is None or position < self._failed_at:
            self._failed_at = position


@dataclass(frozen=True)
class StoreUsage:
    """How big the environment is and what it holds (``Store.usage``)."""

    map_size: int  # bytes the map may hold before it is doubled
    used_bytes: int  # pages in use, times the page size
    file_bytes: int  # data.mdb on disk
    entries: dict[str, int]  # sub-database -> entries


@dataclass
class _Job:
    fn: Callable[[WriteTxn], Any]
    future: Future = field(default_factory=Future)


class Store:
    """The LMDB environment of one data folder."""

    def __init__(
        self,
        path: str | Path,
        *,
        map_size: int = 1 << 30,
        max_map_size: int = 1 << 40,
        sync: bool = True,
    ):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_map_size = max_map_size
        self.env = lmdb.open(
            str(self.path), map_size=map_size, max_dbs=MAX_DBS, max_readers=1024,
            sync=sync, metasync=sync, writemap=False, readahead=False,
        )
        self.env.reader_check()
        with self.env.begin(write=True) as txn:
            self._dbs = {
                name: self.env.open_db(name.encode(), txn=txn, **flags)
                for name, flags in SUBDATABASES.items()
            }
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._gate_lock = threading.Lock()  # taken directly by reads: cheaper than the condition
        self._gate = threading.Condition(self._gate_lock)  # a map growth waits for reads
        self._reading = 0
        self._growing = False
        self._writer = threading.Thread(target=self._drain, name="lmdb-writer", daemon=True)
        self._writer.start()
        self._closed = False
        self._closing = threading.Lock()

    def read(self) -> Snapshot:
        """A read snapshot (``with store.read() as tx``); cheap, never blocks writers (a map
        growth waits). Keep it short."""
        return Snapshot(self)

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in a write transaction; return its result once durably committed.

        If ``fn`` raises, its changes are rolled back and the exception re-raised here.
        """
        return self.submit(fn).result()

    def submit(self, fn: Callable[[WriteTxn], T]) -> Future:
        job = _Job(fn)
        with self._closing:  # a job is queued before close's stop marker, or not at all
            if self._closed:
                raise ShuttingDown("the server is shutting down; nothing was written")
            self._queue.put(job)
        return job.future

    def chain(self) -> Chain:
        """Jobs applied in order that stop at the first failure (see ``Chain``)."""
        return Chain(self)

    def usage(self, tx: Txn | None = None) -> StoreUsage:
        """Sizes and entries per sub-database, counted in ``tx`` (else a fresh snapshot).

        LMDB keeps the counts, so this costs microseconds: fit for every metrics scrape.
        """
        if tx is None:
            with self.read() as fresh:
                return self.usage(fresh)
        info = self.env.info()
        page = self.env.stat()["psize"]
        try:
            file_bytes = (self.path / "data.mdb").stat().st_size
        except OSError:
            file_bytes = 0
        return StoreUsage(info["map_size"], (info["last_pgno"] + 1) * page, file_bytes,
                          {name: tx.count(name) for name in self._dbs})

    def close(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._writer.join()
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread -------------------------------------------------

    def _drain(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            group = [job]
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._commit_group(group)
                    return
                group.append(more)
            self._commit_group(group)

    def _commit_group(self, group: list[_Job]) -> None:
        while True:
            try:
                outcomes = self._run_group(group)
                break
            except lmdb.MapFullError:
                if not self._grow():
                    error = StorageFull(f"LMDB map is full at {self.env.info()['map_size']} bytes")
                    for job in group:
                        job.future.set_exception(error)
                    return
            except BaseException as exc:  # a storage failure: nothing was committed
                log.exception("write group failed")
                for job in group:
                    job.future.set_exception(exc)
                return
        for job, result, error, hooks in outcomes:
            for hook in hooks:
                try:
                    hook()
                except Exception:  # a view failing must not un-acknowledge a commit
                    log.exception("on_commit hook failed")
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    def _run_group(self, group: list[_Job]) -> list[tuple[_Job, Any, BaseException | None, list]]:
        outcomes = []
        parent = self.env.begin(write=True)
        try:
            if len(group) == 1:
                txn = WriteTxn(parent, self._dbs)
                try:
                    result = group[0].fn(txn)
                except lmdb.MapFullError:
                    raise
                except Exception as exc:
                    parent.abort()
                    return [(group[0], None, exc, [])]
                outcomes.append((group[0], result, None, txn._hooks))
            else:
                for job in group:
                    child = self.env.begin(write=True, parent=parent)
                    txn = WriteTxn(child, self._dbs)
                    try:
                        result = job.fn(txn)
                    except lmdb.MapFullError:
                        child.abort()
                        raise
                    except Exception as exc:
                        child.abort()
                        outcomes.append((job, None, exc, []))
                        continue
                    child.commit()
                    outcomes.append((job, result, None, txn._hooks))
            parent.commit()
        except BaseException:
            parent.abort()
            raise
        return outcomes

    def _grow(self) -> bool:
        current = self.env.info()["map_size"]
        if current >= self.max_map_size:
            return False
        new_size = min(current * 2, self.max_map_size)
        log.warning("growing LMDB map from %d to %d bytes", current, new_size)
        # Remapping invalidates every open read transaction: wait for the open reads to end
        # (new ones wait for the remap); a read held past GROW_WAIT_SECONDS is cut off.
        with self._gate:
            self._growing = True
            try:
                self._gate.wait_for(lambda: not self._reading, GROW_WAIT_SECONDS)
                self.env.set_mapsize(new_size)
            finally:
                self._growing = False
                self._gate.notify_all()
        return True


@contextmanager
def read_only(path: str | Path) -> Iterator[Txn]:
    """One read snapshot of an existing data folder that writes nothing: offline audits, or
    beside a running server in another process (LMDB readers never block its writer)."""
    if not (Path(path) / "data.mdb").is_file():
        raise FileNotFoundError(f"no LMDB data in {path}")
    env = lmdb.open(str(path), readonly=True, create=False, max_dbs=MAX_DBS, readahead=False)
    try:
        with env.begin() as txn:
            dbs = {name: env.open_db(name.encode(), txn=txn, create=False, **flags)
                   for name, flags in SUBDATABASES.items() if txn.get(name.encode()) is not None}
            yield Txn(txn, dbs)
    finally:
        env.close()
