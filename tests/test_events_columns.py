"""Event columns and interned strings: committed batches become numpy arrays, now and later."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from identity.columns import COLUMNS, ORDER_LINE, EventColumns, pack_block, unpack_block
from identity.store import Store
from identity.strings import StringDictionary


def _row(node: int, time_s: int, kind: int, **values: float) -> tuple:
    row = {name: 0 for name, _ in COLUMNS}
    row.update(node=node, time=time_s, type=kind, **values)
    return tuple(row[name] for name, _ in COLUMNS)


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "data", map_size=1 << 24) as s:
        yield s


def test_block_round_trip_keeps_every_column():
    rows = [_row(7, 1_700_000_000, 1, amount=19.5, quantity=2, product=3),
            _row(8, 1_700_000_001, ORDER_LINE, order=4, label=9, place=11)]
    arrays = unpack_block(pack_block(rows))
    assert arrays["node"].tolist() == [7, 8]
    assert arrays["type"].tolist() == [1, ORDER_LINE]
    assert arrays["amount"].tolist() == [19.5, 0.0]
    assert arrays["order"].tolist() == [0, 4]
    assert arrays["place"].tolist() == [0, 11]


def test_committed_batch_is_in_the_snapshot_at_once(store: Store):
    columns = EventColumns(capacity=2)
    store.write(lambda tx: columns.append(tx, [_row(1, 10, 1), _row(2, 20, 5)]))
    store.write(lambda tx: columns.append(tx, [_row(3, 30, 7)]))
    view = columns.snapshot()
    assert view.rows == 3
    assert view.node.tolist() == [1, 2, 3]
    assert view["time"].tolist() == [10, 20, 30]


def test_rolled_back_batch_leaves_no_rows(store: Store):
    columns = EventColumns()

    def failing(tx):
        columns.append(tx, [_row(1, 10, 1)])
        raise ValueError("bad batch")

    with pytest.raises(ValueError):
        store.write(failing)
    assert columns.snapshot().rows == 0
    with store.read() as tx:
        assert EventColumns().load(tx) == 0


def test_earlier_snapshot_does_not_change_when_more_rows_arrive(store: Store):
    columns = EventColumns(capacity=1)
    store.write(lambda tx: columns.append(tx, [_row(1, 10, 1)]))
    before = columns.snapshot()
    store.write(lambda tx: columns.append(tx, [_row(2, 20, 1)] * 100))
    assert before.rows == 1 and before.node.tolist() == [1]
    assert columns.snapshot().rows == 101


def test_load_maps_every_block_back_in_commit_order(tmp_path: Path):
    path = tmp_path / "data"
    with Store(path, map_size=1 << 24) as store:
        columns = EventColumns()
        for i in range(5):
            store.write(lambda tx, i=i: columns.append(tx, [_row(i, i, 1, amount=i / 2)] * (i + 1)))
        expected = {name: columns.snapshot()[name].copy() for name, _ in COLUMNS}
    with Store(path, map_size=1 << 24) as store, store.read() as tx:
        loaded = EventColumns()
        assert loaded.load(tx) == 15
    view = loaded.snapshot()
    for name, _ in COLUMNS:
        np.testing.assert_array_equal(view[name], expected[name])


def test_interned_ids_survive_restart_and_rollback(tmp_path: Path):
    path = tmp_path / "data"
    with Store(path, map_size=1 << 24) as store:
        strings = StringDictionary()
        kettle = store.write(lambda tx: strings.intern(tx, "Home/Kitchen/Kettles"))
        assert store.write(lambda tx: strings.intern(tx, "Home/Kitchen/Kettles")) == kettle

        def failing(tx):
            strings.intern(tx, "never stored")
            raise ValueError("rolled back")

        with pytest.raises(ValueError):
            store.write(failing)
        assert strings.lookup("never stored") is None
        brand = store.write(lambda tx: strings.intern(tx, "Bosch"))
    with Store(path, map_size=1 << 24) as store, store.read() as tx:
        again = StringDictionary()
        again.load(tx)
    assert again.lookup("Home/Kitchen/Kettles") == kettle
    assert again.text(brand) == "Bosch"
    assert again.lookup("never stored") is None
    assert brand == kettle + 1


def test_compaction_merges_small_blocks_and_keeps_row_order(tmp_path: Path):
    path = tmp_path / "data"
    with Store(path, map_size=1 << 24) as store:
        columns = EventColumns()
        for i in range(10):
            store.write(lambda tx, i=i: columns.append(tx, [_row(i, i, 1)] * 3))
        removed = store.write(lambda tx: columns.compact(tx, target_rows=12))
        assert removed == 10 - 3  # runs of 4, 4 and 2 blocks
        with store.read() as tx:
            assert tx.count("columns") == 3
            loaded = EventColumns()
            assert loaded.load(tx) == 30
        assert loaded.snapshot().node.tolist() == [i for i in range(10) for _ in range(3)]
        assert store.write(lambda tx: columns.compact(tx, target_rows=12)) == 0


def test_blocks_written_before_the_new_columns_still_load():
    old = [(7, 1_700_000_000, 5, 2, 0, 0, 0, 0, 12.5, 0, 4, 9, 11),  # an order: place 11
           (8, 1_700_000_001, 1, 2, 0, 3, 5, 6, 1.0, 1, 0, 0, 0)]
    names = [name for name, _ in COLUMNS][:13]
    table = np.array(old, dtype=[(name, dtype) for name, dtype in COLUMNS[:13]])
    block = b"EVC1" + len(old).to_bytes(4, "little") + b"".join(
        np.ascontiguousarray(table[name]).tobytes() for name in names)
    arrays = unpack_block(block)
    assert arrays["amount"].tolist() == [12.5, 1.0]
    assert arrays["detail"].tolist() == [0, 0] and arrays["city"].tolist() == [0, 0]
    assert arrays["venue"].tolist() == [11, 0]  # the order's store-or-restaurant
    assert arrays["place"].tolist() == [11, 0]
