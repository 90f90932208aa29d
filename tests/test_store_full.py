"""A full LMDB map: writes below the ceiling grow it, past it they are refused and nothing breaks.

Refused means RESOURCE_EXHAUSTED with nothing of the request written; reads go on, the
data written before stays intact, and a restart with a higher ceiling takes writes again.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import grpc
import pytest
from lmdb.verify import verify

from conftest import RunningServer, start_server
from identity.client import IdentityClient, link_request
from identity.errors import StorageFull
from identity.store import Store

KiB = 1024
BATCH = 100


def _batch(b: int) -> list:
    return [link_request(f"customer_id:B{b}-{i}", f"email:b{b}-{i}@example.com",
                         f"phone:+4477009{b:02d}{i:03d}", source="fill") for i in range(BATCH)]


def _fill(client: IdentityClient) -> tuple[int, grpc.RpcError]:
    """Send one batch per call until one is refused; how many were acknowledged, and why."""
    for b in range(100):  # bounded: a 1 MiB map holds far fewer
        try:
            client.link_stream([_batch(b)])
        except grpc.RpcError as exc:
            return b, exc
    raise AssertionError("a 1 MiB map took 10,000 links")


def _small_map(like: RunningServer, data_dir: Path, **sizes: int) -> RunningServer:
    """A server like the fixture's (same settings and keys) over a small map in ``data_dir``."""
    settings = dataclasses.replace(like.settings, data_dir=data_dir, **sizes)
    return start_server(settings, like._started)


def _assert_not_found(client: IdentityClient, who: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.resolve(who)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_full_map_grows_up_to_its_ceiling_then_refuses_writes_and_keeps_its_data(
        server, tmp_path: Path) -> None:
    server = _small_map(server, tmp_path / "full", map_size=256 * KiB, max_map_size=1024 * KiB)
    with IdentityClient(server.address) as client:
        acknowledged, refusal = _fill(client)
        assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal
        assert acknowledged >= 2
        assert server.app.store.env.info()["map_size"] == 1024 * KiB  # grew to the ceiling
        _assert_not_found(client, f"email:b{acknowledged}-0@example.com")  # nothing of it
        with pytest.raises(grpc.RpcError) as again:  # refused again, not broken
            client.link_stream([_batch(acknowledged)])
        assert again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for b in range(acknowledged):  # reads still work, earlier data intact
            for i in (0, BATCH // 2, BATCH - 1):
                person = client.resolve(f"phone:+4477009{b:02d}{i:03d}").person
                assert person.person_id == f"B{b}-{i}"
    server.stop()
    assert verify(str(server.settings.data_dir)) == []

    bigger = dataclasses.replace(server.settings, max_map_size=64 * 1024 * KiB)
    server = start_server(bigger, server._started)
    with IdentityClient(server.address) as client:
        summary = client.link_stream([_batch(acknowledged), _batch(acknowledged + 1)])
        assert summary.created == 2 * BATCH
        for b in range(acknowledged + 2):
            assert client.resolve(f"email:b{b}-7@example.com").person.person_id == f"B{b}-7"
    assert server.app.store.env.info()["map_size"] > 1024 * KiB


def test_reads_during_map_growth_keep_answering(server, tmp_path: Path) -> None:
    server = _small_map(server, tmp_path / "growing", map_size=256 * KiB,
                        max_map_size=64 * 1024 * KiB)
    with IdentityClient(server.address) as client:
        client.link_stream([_batch(0)])
        failures: list[grpc.RpcError] = []
        done = threading.Event()

        def read() -> None:
            with IdentityClient(server.address) as reader:
                for _ in range(100_000):  # bounded; stops when the writer is done
                    if done.is_set():
                        return
                    try:
                        assert reader.resolve("email:b0-5@example.com").person.person_id == "B0-5"
                    except grpc.RpcError as exc:
                        failures.append(exc)
                        return

        readers = [threading.Thread(target=read) for _ in range(2)]
        for thread in readers:
            thread.start()
        try:
            grown = server.app.store.env.info()["map_size"]
            for b in range(1, 40):  # each doubling remaps while the readers read
                client.link_stream([_batch(b)])
        finally:
            done.set()
            for thread in readers:
                thread.join(60)
        assert server.app.store.env.info()["map_size"] >= 8 * grown
        assert failures == []


def test_the_store_refuses_a_write_past_its_ceiling_and_a_larger_one_takes_it(tmp_path) -> None:
    big = [(b"k%06d" % i, b"x" * 1000) for i in range(600)]  # about 0.6 MB a write
    with Store(tmp_path / "db", map_size=256 * KiB, max_map_size=1024 * KiB) as store:
        store.write(lambda tx: tx.put_many("meta", big))
        ran: list[str] = []

        def too_much(tx):
            tx.on_commit(lambda: ran.append("hook"))
            tx.put_many("meta", [(b"more%06d" % i, v) for i, (_, v) in enumerate(big)])

        with pytest.raises(StorageFull):
            store.write(too_much)
        assert ran == []  # never committed, so no view saw it
        store.write(lambda tx: tx.put("meta", b"small", b"1"))  # what fits still goes in
        with store.read() as tx:
            assert tx.count("meta") == 601 and tx.get("meta", b"more000000") is None
    assert verify(str(tmp_path / "db")) == []
    with Store(tmp_path / "db", map_size=256 * KiB, max_map_size=4096 * KiB) as store:
        store.write(too_much)
        with store.read() as tx:
            assert tx.count("meta") == 1201


def test_a_map_growth_waits_for_a_read_in_progress(tmp_path) -> None:
    with Store(tmp_path / "db", map_size=256 * KiB, max_map_size=8192 * KiB) as store:
        store.write(lambda tx: tx.put("meta", b"a", b"1"))
        seen: list[bytes | None] = []
        reading = threading.Event()

        def read() -> None:
            with store.read() as tx:
                seen.append(tx.get("meta", b"a"))
                reading.set()
                for _ in range(10_000):  # until the growing write waits for this read
                    if store._growing:
                        break
                    time.sleep(0.001)
                seen.append(tx.get("meta", b"a"))  # the snapshot is still valid

        reader = threading.Thread(target=read)
        reader.start()
        assert reading.wait(10)
        store.write(lambda tx: tx.put_many("meta", [(b"k%06d" % i, b"x" * 1000)
                                                    for i in range(1000)]))
        reader.join(30)
        assert seen == [b"1", b"1"]
        assert store.env.info()["map_size"] > 256 * KiB
