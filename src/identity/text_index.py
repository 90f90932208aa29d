"""Interned-string ids by normalised text, for segment filters on strings.

A condition names a category, a phrase, a campaign as text; the event columns hold
interned-string ids (``identity.strings``). This index finds the ids whose text matches
("equals", "exact": trimmed and case-folded; "under": a category or anything below it;
"phrase" and "contains": case- and space-insensitive), scanning each string once per
condition text and only the strings interned since on later calls.
"""

from __future__ import annotations

import threading

import numpy as np

from identity.strings import StringDictionary

__all__ = ["TextIndex"]


class TextIndex:
    """Interned-string ids by normalised text, scanned incrementally as the dictionary grows."""

    def __init__(self, strings: StringDictionary):
        self.strings = strings
        self._scans: dict[tuple[str, str], tuple[int, list[int]]] = {}
        self._lock = threading.Lock()

    def ids(self, how: str, text: str) -> np.ndarray:
        """Ids whose text ``how``-matches ``text``: equals, under (category), phrase, contains."""
        key = (how, text)
        with self._lock:
            done, found = self._scans.get(key, (1, []))
            found = list(found)
            want = _norm(how, text)
            end = len(self.strings)
            i = done
            while i < end:
                try:
                    candidate = self.strings.text(i)
                except KeyError:
                    break
                if _matches(how, _norm(how, candidate), want):
                    found.append(i)
                i += 1
            self._scans[key] = (i, found)
            return np.array(found, dtype=np.uint32)


def _norm(how: str, text: str) -> str:
    if how in ("phrase", "contains"):
        return "".join(text.casefold().split())
    return text.strip().casefold()


def _matches(how: str, candidate: str, want: str) -> bool:
    if how == "under":
        return candidate == want or candidate.startswith(want.rstrip("/") + "/")
    if how == "contains":
        return want in candidate
    return candidate == want
