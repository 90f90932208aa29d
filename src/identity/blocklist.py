"""Junk identifier values that must never merge anyone.

A call-centre phone typed into every order, ``test@test.com`` or the string
``"undefined"`` from a broken form would otherwise glue strangers into one person.
Entries are exact values or regular expressions, for one kind or for every kind;
values are compared after normalisation (and case-insensitively).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from identity.identifiers import Identifier, Kind

__all__ = ["Blocklist", "BlockRule", "DEFAULT_RULES"]

_EMPTY_LOOKING = (
    r"(null|\(null\)|nil|none|undefined|anonymous|unknown|n/?a|nan|-1|0+|-+|\.+|\?+|x+|"
    r"\"\"|''|empty|test|default)"
)
_MEMO_SIZE = 262_144  # per kind
_UNSEEN = object()


@dataclass(frozen=True)
class BlockRule:
    """One blocklist entry: an exact value or a pattern, for one kind or all (kind None)."""

    value: str
    kind: Kind | None = None
    is_pattern: bool = False

    def describe(self) -> str:
        scope = self.kind.label if self.kind else "any kind"
        how = "pattern" if self.is_pattern else "exact value"
        return f"blocklisted ({scope}, {how} {self.value!r})"


DEFAULT_RULES: tuple[BlockRule, ...] = (
    BlockRule("test@test.com", Kind.EMAIL),
    BlockRule("test@example.com", Kind.EMAIL),
    BlockRule("a@a.com", Kind.EMAIL),
    BlockRule(r"^(no-?e?mails?|noreply|no-reply|donotreply|none|null|undefined|anonymous|"
              r"unknown|na|n/a|nobody|fake|asdf|qwerty)@", Kind.EMAIL, True),
    # All-same-digit national numbers (+70000000000, +11111111111) and 1234567890.
    BlockRule(r"^\+\d{1,3}?(\d)\1{6,}$", Kind.PHONE, True),
    BlockRule(r"^\+\d{1,3}?0?123456789\d?$", Kind.PHONE, True),
    BlockRule(r"^(\d)\1+$", Kind.LOYALTY_CARD, True),
    BlockRule(r"^[0-]+$", Kind.DEVICE_ID, True),
    BlockRule(f"^{_EMPTY_LOOKING}$", None, True),
)


@dataclass
class Blocklist:
    """Exact values and patterns; ``reason`` says why an identifier is blocked, or None."""

    rules: list[BlockRule] = field(default_factory=lambda: list(DEFAULT_RULES))

    def __post_init__(self) -> None:
        self._compile()

    def _compile(self) -> None:
        # Answers per identifier: the same values come back in every batch, and each
        # otherwise runs every pattern. Rebuilt with the rules.
        # Per kind, value -> reason: strings only, so the collector never walks the memo.
        self._seen: dict[Kind, dict[str, str | None]] = {kind: {} for kind in Kind}
        self._exact: dict[tuple[Kind | None, str], BlockRule] = {}
        self._patterns: list[tuple[BlockRule, re.Pattern[str]]] = []
        for rule in self.rules:
            if rule.is_pattern:
                self._patterns.append((rule, re.compile(rule.value, re.IGNORECASE)))
            else:
                self._exact[(rule.kind, rule.value.casefold())] = rule
        # The patterns that apply to each kind, in rule order: no kind test per pattern.
        self._kind_patterns: dict[Kind, list[tuple[BlockRule, re.Pattern[str]]]] = {
            kind: [(r, p) for r, p in self._patterns if r.kind is None or r.kind is kind]
            for kind in Kind}
        self._any_kind_patterns = [(r, p) for r, p in self._patterns if r.kind is None]

    def add(self, rule: BlockRule) -> None:
        if rule.is_pattern:
            re.compile(rule.value)  # fail early on a bad pattern
        self.rules.append(rule)
        self._compile()

    def reason(self, identifier: Identifier) -> str | None:
        seen = self._seen.get(identifier.kind)
        if seen is None:  # not a Kind: answer without remembering
            return self._reason(identifier)
        value = identifier.value
        answer = seen.get(value, _UNSEEN)
        if answer is not _UNSEEN:
            return answer
        if len(seen) >= _MEMO_SIZE:
            seen.clear()
        answer = seen[value] = self._reason(identifier)
        return answer

    def _reason(self, identifier: Identifier) -> str | None:
        folded = identifier.value.casefold()
        rule = self._exact.get((identifier.kind, folded)) or self._exact.get((None, folded))
        if rule:
            return rule.describe()
        value = identifier.value
        for rule, pattern in self._kind_patterns.get(identifier.kind, self._any_kind_patterns):
            if pattern.search(value):
                return rule.describe()
        return None
