"""A progress bar for long admin commands, on stderr and only when stderr is a terminal.

Scripts that pipe the output see nothing extra; a person at a terminal sees
how far a report over millions of identifiers or a bulk split has got.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``update(stage, done, total)`` redraws at most ten times a second; ``close`` ends the line."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, force: bool = False):
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.width = width
        self._last = 0.0
        self._drawn = False

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{stage:<10} [{bar}] {done}/{total} {share:6.1%}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
