"""How the serving process runs Python's garbage collector.

The collector exists for reference cycles, which the request paths hardly make,
yet its default settings cost a busy link stream about a tenth of its CPU: a
young collection every 700 container allocations (a batch of links allocates
tens of thousands, most of them alive until the batch commits, so they are
promoted and walked again), and full collections that walk every object built
at start-up (modules, loaded indexes) over and over. Serving therefore freezes
what start-up built (it lives until exit anyway) and collects the young
generation less often. Cycles are still collected, only later.
"""

from __future__ import annotations

import gc

__all__ = ["tune_for_serving", "YOUNG_THRESHOLD"]

YOUNG_THRESHOLD = 10_000  # allocations between young collections (Python's default: 700)


def tune_for_serving() -> None:
    """Call once start-up is done, before serving: freeze its objects, collect less often."""
    gc.collect()  # start-up garbage goes now, not into the frozen generation
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
