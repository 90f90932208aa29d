"""The bulk link path is a faster spelling of the one-link path, never a different one.

``IdentityGraph.link_many`` (one counter read, one log write per batch) must store
exactly the bytes and answer exactly the results of one ``link`` call per link, and
a stream's chained batches must stop at the first failure.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from identity.app import App, LinkInput
from identity.config import Settings
from identity.errors import InvalidArgument
from identity.identifiers import Kind
from identity.store import SUBDATABASES, ChainBroken, Store


def _random_links(seed: int, count: int) -> list[LinkInput]:
    rng = random.Random(seed)

    def identifier() -> tuple[int, str]:
        n = rng.randrange(40)
        return rng.choice([
            (1, f"C{n}"), (2, f"u{n}@example.com"), (2, f"U{n}@Example.COM"),
            (2, "test@test.com"), (3, f"+1 202 555 {n:04d}"), (3, f"(202) 555-{n:04d}"),
            (4, f"4000 {n:04d}"), (5, f"crm{n}"), (6, f"dev{n}"), (6, "undefined"),
        ])

    return [
        LinkInput([identifier() for _ in range(rng.choice([1, 2, 2, 3, 4]))],
                  source=rng.choice(["web", "pos"]), request_id=f"r{i}",
                  observed_ms=1_700_000_000_000 + rng.randrange(10**9))
        for i in range(count)
    ]


def _open(path: Path, limits: bool) -> App:
    settings = Settings.load(env={}, data_dir=path, map_size="64MiB")
    if limits:
        settings = replace(settings, kind_limits={Kind.EMAIL: 2, Kind.PHONE: 2})
    return App.open(settings)


def _contents(app: App) -> dict[str, list[tuple[bytes, bytes]]]:
    with app.store.env.begin() as txn:
        return {name: list(txn.cursor(app.store._dbs[name]).iternext())
                for name in ("meta", "ids", "nodes", "persons", "links", "node_links")}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_link_many_stores_and_answers_exactly_what_one_link_call_per_link_does(
        tmp_path: Path, seed: int) -> None:
    links = _random_links(seed, 150)
    one_by_one = _open(tmp_path / "single", limits=seed % 2 == 1)
    batched = _open(tmp_path / "batched", limits=seed % 2 == 1)
    heard_single: dict[int, int] = {}
    heard_batched: dict[int, int] = {}
    one_by_one.graph.listeners.append(heard_single.update)
    batched.graph.listeners.append(heard_batched.update)
    try:
        single_results = [one_by_one.link(link) for link in links]
        batched_results = [r for start in range(0, len(links), 37)
                           for r in batched.link_batch(links[start : start + 37])]
        outcomes = {r.outcome for r in single_results}
        assert {"merged", "refused_conflict", "ignored"} <= {o.label for o in outcomes}
        assert batched_results == single_results
        assert _contents(batched) == _contents(one_by_one)
        assert heard_batched == heard_single  # listeners end with the same node -> root map
    finally:
        one_by_one.close()
        batched.close()


def test_chained_jobs_after_a_failure_are_skipped_and_write_nothing(tmp_path: Path) -> None:
    assert "meta" in SUBDATABASES
    with Store(tmp_path / "data", map_size=1 << 24) as store:
        chain = store.chain()

        def put(key: bytes):
            return lambda tx: tx.put("meta", key, b"1")

        def fail(tx):
            tx.put("meta", b"failed", b"1")
            raise InvalidArgument.field("links", "bad batch")

        futures = [chain.submit(put(b"first")), chain.submit(fail), chain.submit(put(b"third"))]
        assert futures[0].result() is True
        with pytest.raises(InvalidArgument):
            futures[1].result()
        with pytest.raises(ChainBroken):
            futures[2].result()
        with store.read() as tx:
            assert tx.get("meta", b"first") == b"1"
            assert tx.get("meta", b"failed") is None
            assert tx.get("meta", b"third") is None
