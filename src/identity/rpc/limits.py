"""Per-stream rate limits: a bulk client faster than the limit is slowed, never dropped.

Slowing (by not reading its next message) is back-pressure the client feels through
gRPC flow control, so an import keeps going at the allowed pace instead of failing
half-way and having to work out what to resend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["throttled"]

M = TypeVar("M")


def throttled(messages: Iterable[M], items_per_second: int, items: Callable[[M], int],
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[M]:
    """``messages`` at most ``items_per_second`` items a second (0: as they come).

    A token bucket holding one second of items: a burst up to the limit passes at once,
    then each message waits until the items it carries have been earned.
    """
    if items_per_second <= 0:
        yield from messages
        return
    tokens = float(items_per_second)
    last = clock()
    for message in messages:
        now = clock()
        tokens = min(float(items_per_second), tokens + (now - last) * items_per_second)
        last = now
        tokens -= items(message)
        if tokens < 0:
            sleep(-tokens / items_per_second)
        yield message
