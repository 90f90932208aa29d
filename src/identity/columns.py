"""Event columns: every stored event as numpy arrays, for vectorised segment evaluation.

Beside the row store (``events``, read one person at a time), each committed batch
appends one packed *column block* to the ``columns`` sub-database in the same write
transaction. At start-up ``EventColumns.load`` maps the blocks into numpy arrays
with ``np.frombuffer`` (a Python step per block, never per event); while serving,
``WriteTxn.on_commit`` appends each batch in memory, so a running server sees an
event in ``snapshot()`` as soon as its write is acknowledged.

Schema: one row per stored event, plus one ``ORDER_LINE`` row per line of an order.
String-valued fields are ids from ``identity.strings.StringDictionary`` (0 = not set);
turn a condition's text into an id with ``StringDictionary.lookup`` (``None``: no
event has it).

    column    dtype    meaning
    node      uint32   graph node (interned identifier) that did the event; map it to
                       a person at query time (the graph's node -> root)
    time      uint32   event time, seconds since 1970 UTC (``// 86400`` gives the day)
    type      uint8    ``identity.events.EventType``; ``ORDER_LINE`` (100) for order lines
    channel   uint8    ``identity.events.Channel``
    action    uint8    ad: ``AdAction``; message: ``MessageAction``; otherwise 0
    product   uint32   product id (product events, order lines, ads)
    category  uint32   full category path, e.g. "Home/Kitchen/Kettles" (product events, lines)
    brand     uint32   brand (product events, lines)
    amount    float32  product events: price x quantity; order: total; line: price x quantity
    quantity  uint16   product events and lines (saturates at 65535); 0 otherwise
    order     uint32   order ref: one number per shop order id, shared by every sighting
                       (site and POS) and by its cancellation; custom event and its
                       PROPERTY rows: the event's seq (low 32 bits); 0 otherwise
    label     uint32   search: phrase (trimmed, lower-cased); ad and message: campaign;
                       custom and its properties: event name; order and its lines: cuisine
    place     uint32   order and its lines: store; ad: advertiser; property: its key
    detail    uint32   ad: ad id; order and its lines: meal type; property: its value
                       (canonical text, see ``property_text``)
    city      uint32   order and its lines: delivery city
    venue     uint32   order and its lines: restaurant

``PROPERTY`` (101) rows carry one property of a custom event each (key in ``place``,
value in ``detail``), beside the event's own row, as ``ORDER_LINE`` rows do for orders.

Recipes. Orders counted once: ``np.unique(order[type == ORDER])``; cancelled ones:
``np.isin(order, order[type == ORDER_CANCELLED])``; a site and a POS sighting of one
order are two ORDER rows with the same ``order`` (keep one per (person, order)).
Events per person in a window: ``np.bincount(person_of_node[node[mask]])``. Segments
read these rows through ``identity.event_index``, which keeps them per type sorted by time.

Block layout (little-endian): ``b"EVC2"``, u32 row count, then each column's values
in schema order. Blocks written before ``detail``, ``city`` and ``venue`` existed
(``b"EVC1"``: the first 13 columns) still load: the new columns read as 0 (their
events match no filter on ad id, meal type, delivery city or property), and their
order rows, whose ``place`` held the store or else the restaurant, copy ``place``
into ``venue`` so a restaurant filter still finds them. Keys are u64 big-endian block
numbers, so blocks load in commit order.
``compact`` merges runs of small blocks (a unary ``Track`` writes one per call); the
service runs it at start-up when small blocks have piled up, before ``load``.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np

from identity.store import Txn, WriteTxn

__all__ = ["COLUMNS", "ORDER_LINE", "PROPERTY", "ROW_DTYPE", "ColumnView", "EventColumns",
           "property_text"]

COLUMNS: tuple[tuple[str, str], ...] = (
    ("node", "<u4"),
    ("time", "<u4"),
    ("type", "u1"),
    ("channel", "u1"),
    ("action", "u1"),
    ("product", "<u4"),
    ("category", "<u4"),
    ("brand", "<u4"),
    ("amount", "<f4"),
    ("quantity", "<u2"),
    ("order", "<u4"),
    ("label", "<u4"),
    ("place", "<u4"),
    ("detail", "<u4"),
    ("city", "<u4"),
    ("venue", "<u4"),
)
ROW_DTYPE = np.dtype(list(COLUMNS))
ORDER_LINE = 100
PROPERTY = 101
COMPACT_ROWS = 1 << 16

_MAGIC = b"EVC2"
_MAGIC_V1, _V1_COLUMNS = b"EVC1", 13
_HEAD = struct.Struct("<4sI")
_BLOCK_KEY = struct.Struct(">Q")
_NEXT_BLOCK = b"next_column_block"
_DTYPES = {name: np.dtype(dtype) for name, dtype in COLUMNS}


def pack_block(rows: Sequence[tuple]) -> bytes:
    """Rows (tuples in schema order) -> one column block."""
    table = np.array(rows, dtype=ROW_DTYPE)
    parts = [_HEAD.pack(_MAGIC, len(table))]
    parts += [np.ascontiguousarray(table[name]).tobytes() for name, _ in COLUMNS]
    return b"".join(parts)


def property_text(value: object) -> str:
    """The text a custom property is indexed (and compared) by: ``true``, ``3``, ``2.5``, text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def unpack_block(data: bytes) -> dict[str, np.ndarray]:
    """One column block -> read-only arrays that share its memory (zeros for columns
    an older block lacks)."""
    magic, count = _HEAD.unpack_from(data)
    if magic not in (_MAGIC, _MAGIC_V1):
        raise ValueError(f"not a column block: {bytes(magic)!r}")
    out, offset = {}, _HEAD.size
    for i, (name, dtype) in enumerate(_DTYPES.items()):
        if magic == _MAGIC_V1 and i >= _V1_COLUMNS:
            out[name] = np.zeros(count, dtype)
            continue
        out[name] = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += count * dtype.itemsize
    if magic == _MAGIC_V1:  # place was "store, else restaurant" for orders and lines
        orders = (out["type"] == 5) | (out["type"] == ORDER_LINE)
        out["venue"] = np.where(orders, out["place"], 0).astype(_DTYPES["venue"])
    return out


class ColumnView(Mapping[str, np.ndarray]):
    """A consistent set of equal-length column arrays; ``view.node``, ``view["type"]``.

    The arrays are views of the live buffers: never write into them.
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        self._arrays = arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def rows(self) -> int:
        return len(self._arrays["node"])


class EventColumns:
    """The in-memory column arrays and their LMDB blocks."""

    def __init__(self, capacity: int = 1 << 16):
        self._lock = threading.Lock()
        self._size = 0
        self._buffers = {name: np.zeros(capacity, dtype) for name, dtype in _DTYPES.items()}

    def __len__(self) -> int:
        return self._size

    def load(self, tx: Txn) -> int:
        """Map every stored block into memory; returns the row count."""
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in _DTYPES}
        for _key, data in tx.items("columns"):
            for name, array in unpack_block(data).items():
                pieces[name].append(array)
        total = sum(len(a) for a in pieces["node"])
        capacity = max(1 << 16, total + total // 8)  # room for appends; _extend doubles
        buffers = {}
        for name, dtype in _DTYPES.items():
            buffer = np.zeros(capacity, dtype)
            if total:
                np.concatenate(pieces[name], out=buffer[:total])
            buffers[name] = buffer
        with self._lock:
            self._buffers, self._size = buffers, total
        return total

    def compact(self, tx: WriteTxn, target_rows: int = COMPACT_ROWS) -> int:
        """Merge runs of small consecutive blocks into blocks of up to ``target_rows`` rows.

        Unary ``Track`` calls append a block per call; merging keeps start-up at a few
        ``np.frombuffer`` calls per block however the events arrived. Row order is kept
        (a merged block takes the key of its first block). Returns blocks removed.
        """
        runs: list[list[bytes]] = [[]]
        rows = 0
        for key, data in tx.items("columns"):
            count = _HEAD.unpack_from(data)[1]
            if runs[-1] and rows + count > target_rows:
                runs.append([])
                rows = 0
            runs[-1].append(key)
            rows += count
        removed = 0
        for run in runs:
            if len(run) < 2:
                continue
            merged: dict[str, list[np.ndarray]] = {name: [] for name in _DTYPES}
            for key in run:
                for name, array in unpack_block(tx.get("columns", key)).items():
                    merged[name].append(array)
            joined = [np.concatenate(merged[name]) for name in _DTYPES]
            block = _HEAD.pack(_MAGIC, len(joined[0])) + b"".join(a.tobytes() for a in joined)
            for key in run[1:]:
                tx.delete("columns", key)
            tx.put("columns", run[0], block)
            removed += len(run) - 1
        return removed

    def append(self, tx: WriteTxn, rows: Sequence[tuple]) -> None:
        """Store ``rows`` as one block in ``tx``; they join the arrays once ``tx`` commits."""
        if not rows:
            return
        block = pack_block(rows)
        raw = tx.get("meta", _NEXT_BLOCK)
        seq = _BLOCK_KEY.unpack(raw)[0] if raw else 1
        tx.put("meta", _NEXT_BLOCK, _BLOCK_KEY.pack(seq + 1))
        tx.put("columns", _BLOCK_KEY.pack(seq), block)
        tx.on_commit(lambda: self._extend(unpack_block(block)))

    def erase(self, tx: WriteTxn, nodes: Collection[int]) -> int:
        """Blank the rows of ``nodes`` in every stored block (forget); returns rows blanked.

        Only ``time`` stays, so rows keep their place and sorted indexes stay valid; every
        other column, the node included, becomes 0, which no event type, filter or person
        matches. Reads every block: seconds at tens of millions of rows, which an erasure
        request can afford. The in-memory buffers are blanked on commit; copies held by
        query indexes keep the rows until restart, under node ids no person maps to.
        """
        wanted = np.fromiter(nodes, dtype=_DTYPES["node"])
        keys = [key for key, _ in tx.items("columns")]
        blanked = 0
        for key in keys:
            arrays = unpack_block(tx.get("columns", key))
            hit = np.isin(arrays["node"], wanted)
            if not hit.any():
                continue
            rows = {name: array.copy() for name, array in arrays.items()}
            _blank(rows, hit)
            tx.put("columns", key, _HEAD.pack(_MAGIC, len(hit))
                   + b"".join(rows[name].tobytes() for name in _DTYPES))
            blanked += int(hit.sum())
        if blanked:
            tx.on_commit(lambda: self._blank_in_memory(wanted))
        return blanked

    def _blank_in_memory(self, wanted: np.ndarray) -> None:
        with self._lock:
            live = {name: buffer[: self._size] for name, buffer in self._buffers.items()}
            _blank(live, np.isin(live["node"], wanted))

    def snapshot(self) -> ColumnView:
        """Every committed row so far; later appends do not change this view."""
        with self._lock:
            size = self._size
            return ColumnView({name: buf[:size] for name, buf in self._buffers.items()})

    def _extend(self, arrays: dict[str, np.ndarray]) -> None:
        count = len(arrays["node"])
        with self._lock:
            size = self._size
            if size + count > len(self._buffers["node"]):
                capacity = 1 << (size + count).bit_length()
                grown = {}
                for name, buffer in self._buffers.items():
                    bigger = np.zeros(capacity, buffer.dtype)
                    bigger[:size] = buffer[:size]
                    grown[name] = bigger
                self._buffers = grown
            for name, array in arrays.items():
                self._buffers[name][size : size + count] = array
            self._size = size + count


def _blank(columns: dict[str, np.ndarray], rows: np.ndarray) -> None:
    """Zero every column but ``time`` at ``rows`` (a boolean mask), in place."""
    for name, column in columns.items():
        if name != "time":
            column[rows] = 0
