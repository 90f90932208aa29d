#!/usr/bin/env python3
"""What a single-key LMDB read costs alone, and next to a thread running pure Python.

py-lmdb releases the GIL around every LMDB call. Alone, that costs little; with another
thread wanting the GIL, each read can hand it over and wait to get it back, which is
what a read RPC meets inside the server (docs/BENCHMARKS.md, "Why a read RPC costs more
in the server than in-process"). Prints the mean time per ``get`` both ways.

    .venv/bin/python scripts/bench_lmdb_gil.py
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import lmdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alone", type=int, default=20_000, help="gets with no other thread")
    parser.add_argument("--contended", type=int, default=2_000,
                        help="gets beside a spinning Python thread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = lmdb.open(folder, map_size=1 << 26)
        with env.begin(write=True) as txn:
            for i in range(1000):
                txn.put(i.to_bytes(8, "big"), b"x" * 40)

        def read(count: int) -> float:
            with env.begin() as txn:
                began = time.perf_counter()
                for i in range(count):
                    txn.get((i % 1000).to_bytes(8, "big"))
                return (time.perf_counter() - began) / count

        alone = read(args.alone)
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                sum(range(100))

        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            contended = read(args.contended)
        finally:
            stop.set()
            spinner.join()
        env.close()
    print(f"py-lmdb {lmdb.__version__}: {alone * 1e6:.2f} µs per get alone, "
          f"{contended * 1e6:,.1f} µs beside a thread running Python "
          f"({contended / alone:,.0f}x)")


if __name__ == "__main__":
    main()
