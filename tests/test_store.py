"""The store: group commit, rollback of a failing job alone, map growth and ordered chains."""

from __future__ import annotations

import threading

import pytest

from identity.errors import ShuttingDown
from identity.store import ChainBroken, Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "db", map_size=1 << 20, max_map_size=1 << 26) as s:
        yield s


def _hold_writer(store: Store) -> threading.Event:
    """Keep the writer busy so the next submissions are committed as one group."""
    release = threading.Event()
    started = threading.Event()

    def wait(_txn):
        started.set()
        release.wait(10)

    store.submit(wait)
    started.wait(10)
    return release


def _fail(_txn):
    raise ValueError("bad job")


def test_a_failing_job_rolls_back_alone_inside_a_group(store: Store) -> None:
    release = _hold_writer(store)
    ok = store.submit(lambda tx: tx.put("meta", b"a", b"1"))
    bad = store.submit(lambda tx: (tx.put("meta", b"b", b"2"), _fail(tx)))
    after = store.submit(lambda tx: tx.put("meta", b"c", b"3"))
    release.set()
    ok.result(10), after.result(10)
    with pytest.raises(ValueError):
        bad.result(10)
    with store.read() as tx:
        assert (tx.get("meta", b"a"), tx.get("meta", b"b"), tx.get("meta", b"c")) == (
            b"1", None, b"3")


def test_a_full_map_grows_and_the_write_is_kept(store: Store) -> None:
    big = [(b"k%08d" % i, b"x" * 1000) for i in range(4000)]  # about 4 MB into a 1 MiB map
    store.write(lambda tx: tx.put_many("meta", big))
    with store.read() as tx:
        assert tx.count("meta") == 4000
    assert store.env.info()["map_size"] > 1 << 20


def test_a_chain_retried_after_map_growth_keeps_the_jobs_before_its_failure(store: Store) -> None:
    chain = store.chain()
    release = _hold_writer(store)
    first = chain.submit(lambda tx: tx.put("meta", b"first", b"1"))
    failing = chain.submit(_fail)
    later = chain.submit(lambda tx: tx.put("meta", b"later", b"1"))
    big = [(b"k%08d" % i, b"x" * 1000) for i in range(4000)]
    grows = store.submit(lambda tx: tx.put_many("meta", big))  # MapFull: the group is retried
    release.set()
    first.result(10)
    grows.result(10)
    with pytest.raises(ValueError):
        failing.result(10)
    with pytest.raises(ChainBroken):
        later.result(10)
    with store.read() as tx:
        assert tx.get("meta", b"first") == b"1"
        assert tx.get("meta", b"later") is None


def test_writes_racing_a_close_are_either_committed_or_refused_never_left_waiting(
        tmp_path) -> None:
    store = Store(tmp_path / "db", map_size=1 << 20, max_map_size=1 << 26)
    outcomes: list[str] = []
    start = threading.Barrier(5)

    def writer(n: int) -> None:
        start.wait()
        for i in range(200):
            try:
                future = store.submit(lambda tx, k=f"{n}-{i}".encode(): tx.put("meta", k, b"1"))
            except ShuttingDown:
                outcomes.append("refused")
                return
            future.result(timeout=10)  # a queued job is always settled: never a hang
            outcomes.append("committed")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    start.wait()
    store.close()
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads)
    committed = outcomes.count("committed")
    reopened = Store(tmp_path / "db", map_size=1 << 20, max_map_size=1 << 26)
    with reopened.read() as tx:
        assert tx.count("meta") >= committed  # every acknowledged write is there
    reopened.close()
    with pytest.raises(ShuttingDown):
        store.write(lambda tx: tx.put("meta", b"late", b"1"))
