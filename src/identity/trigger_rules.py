"""Trigger rules: caps, dedupe window, quiet hours, exclusions and purchase matching.

A rule is a declarative spec keyed by (trigger kind, campaign), validated once.
The most specific rule applies *whole*: (trigger, campaign), then (any trigger,
campaign), then (trigger, any campaign), then the default. Rules come from the
``[triggers]`` table of the server's config file (each inheriting the fields it
leaves out from ``[triggers.default]``) and from ``SetTriggerRule``, which stores
them in LMDB; a stored rule wins over a configured one with the same key.

    [triggers]
    shop_time_zone = "Europe/London"
    [triggers.default]
    dedupe_window = "72h"
    quiet_hours = { push = "22:00-09:00", sms = "21:00-09:00" }
    caps = [{ scope = "channel", channel = "push", limit = 2, period = "day" }]
    [[triggers.rule]]
    trigger = "abandoned_cart"
    purchase_match = "category"
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import cached_property
from typing import Any

from identity.errors import InvalidArgument
from identity.events import Channel
from identity.local_time import Period, QuietWindow, zone
from identity.store import Txn, WriteTxn

__all__ = ["Cap", "CapScope", "PurchaseMatch", "RuleBook", "TriggerKind", "TriggerRule",
           "DEFAULT_RULE", "MESSAGE_CHANNELS", "parse_duration", "rule_from_dict"]

MESSAGE_CHANNELS = (Channel.EMAIL, Channel.PUSH, Channel.SMS)
MAX_CAMPAIGN_LENGTH = 128
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000, None: 1000}
_HOUR = 3_600_000


class TriggerKind(IntEnum):
    """Numbers shared with ``identity.v1.TriggerKind``; 0 in a rule means any kind."""

    ABANDONED_VIEW = 1
    ABANDONED_CART = 2
    ABANDONED_SEARCH = 3
    PRICE_DROP = 4
    BACK_IN_STOCK = 5
    WISHLIST = 6
    REVIEW_REQUEST = 7
    REACTIVATION = 8
    COHORT_SCENARIO = 9
    CUSTOM = 10


class CapScope(IntEnum):
    CHANNEL = 1
    CAMPAIGN = 2


class PurchaseMatch(IntEnum):
    PRODUCTS = 1
    CATEGORY = 2
    NONE = 3


def _enum(cls: type[IntEnum], value: Any, what: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return cls(value)
    try:
        return cls[str(value).strip().upper()]
    except KeyError:
        names = ", ".join(m.name.lower() for m in cls if m.value)
        raise ValueError(f"unknown {what} {value!r} (one of {names})") from None


def parse_duration(value: str | int) -> int:
    """Milliseconds from ``"72h"``, ``"30d"``, ``"90m"`` or a number of seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1000
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (try 72h, 30d or 90m)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` sends per window, counted per person."""

    scope: CapScope
    channel: Channel | None
    limit: int
    period: Period
    rolling: bool = False

    def applies_to(self, channel: Channel) -> bool:
        return self.channel is None or self.channel == channel


@dataclass(frozen=True)
class TriggerRule:
    trigger: TriggerKind | None = None
    campaign: str = ""
    transactional: bool = False
    caps: tuple[Cap, ...] = ()
    dedupe_window_ms: int = 0
    quiet_hours: tuple[tuple[Channel, QuietWindow], ...] = ()
    exclusion_segments: tuple[str, ...] = ()
    purchase_match: PurchaseMatch = PurchaseMatch.PRODUCTS
    purchase_lookback_ms: int = 30 * 24 * _HOUR
    consent_required: frozenset[Channel] = field(default_factory=frozenset)

    @property
    def key(self) -> bytes:
        return bytes((int(self.trigger or 0),)) + self.campaign.encode()

    # A rule never changes once made, so what every decision asks of it is worked out once
    # per rule (``cached_property`` keeps it beside the fields, outside equality and hash).

    @cached_property
    def name(self) -> str:
        """``abandoned_cart/*``, ``*/spring-sale``, ``*/*`` (the default)."""
        kind = self.trigger.name.lower() if self.trigger else "*"
        return f"{kind}/{self.campaign or '*'}"

    @cached_property
    def _per_channel(self) -> dict[tuple[Channel, bool], tuple[tuple[Cap, ...],
                                                              QuietWindow | None]]:
        return {(channel, campaign): (
            () if self.transactional else tuple(
                c for c in self.caps if c.applies_to(channel)
                and (c.scope is CapScope.CHANNEL or campaign)),
            next((w for c, w in self.quiet_hours if c == channel), None))
            for channel in Channel for campaign in (False, True)}

    def caps_for(self, channel: Channel, campaign: bool) -> tuple[Cap, ...]:
        """The caps a message on ``channel`` counts against: campaign caps only for a
        message of a campaign, none at all under a transactional rule."""
        return self._per_channel[channel, campaign][0]

    def quiet_window(self, channel: Channel) -> QuietWindow | None:
        return self._per_channel[channel, False][1]

    def to_dict(self) -> dict[str, Any]:
        """The config-file form (also the stored form)."""
        return {
            "trigger": self.trigger.name.lower() if self.trigger else "",
            "campaign": self.campaign,
            "transactional": self.transactional,
            "caps": [{"scope": c.scope.name.lower(),
                      "channel": c.channel.name.lower() if c.channel else "",
                      "limit": c.limit, "period": c.period.label, "rolling": c.rolling}
                     for c in self.caps],
            "dedupe_window": f"{self.dedupe_window_ms}ms",
            "quiet_hours": {c.name.lower(): str(w) for c, w in self.quiet_hours},
            "exclusion_segments": list(self.exclusion_segments),
            "purchase_match": self.purchase_match.name.lower(),
            "purchase_lookback": f"{self.purchase_lookback_ms}ms",
            "consent_required": sorted(c.name.lower() for c in self.consent_required),
        }


def _channel(value: Any, optional: bool = False) -> Channel | None:
    if optional and value in ("", None, 0):
        return None
    channel = _enum(Channel, value, "channel")
    if channel not in MESSAGE_CHANNELS:
        raise ValueError(f"channel {value!r} carries no messages (email, push or sms)")
    return channel


def _cap(data: dict[str, Any]) -> Cap:
    unknown = set(data) - {"scope", "channel", "limit", "period", "rolling"}
    if unknown:
        raise ValueError(f"unknown cap fields {sorted(unknown)}")
    scope = _enum(CapScope, data.get("scope", "channel"), "cap scope")
    channel = _channel(data.get("channel"), optional=scope is CapScope.CAMPAIGN)
    limit = int(data["limit"])
    if limit < 0:
        raise ValueError("cap limit is negative")
    period = _enum(Period, data.get("period", "day"), "cap period")
    return Cap(scope, channel, limit, period, bool(data.get("rolling", False)))


def rule_from_dict(data: dict[str, Any], base: TriggerRule) -> TriggerRule:
    """A rule from its config form; fields left out come from ``base``. ValueError if bad."""
    unknown = set(data) - set(base.to_dict())
    if unknown:
        raise ValueError(f"unknown rule fields {sorted(unknown)}")
    changes: dict[str, Any] = {"trigger": None, "campaign": ""}
    if data.get("trigger"):
        changes["trigger"] = _enum(TriggerKind, data["trigger"], "trigger kind")
    if "campaign" in data:
        changes["campaign"] = str(data["campaign"]).strip()
    if "transactional" in data:
        changes["transactional"] = bool(data["transactional"])
    if "caps" in data:
        changes["caps"] = tuple(_cap(c) for c in data["caps"])
    if "dedupe_window" in data:
        changes["dedupe_window_ms"] = parse_duration(data["dedupe_window"])
    if "quiet_hours" in data:
        changes["quiet_hours"] = tuple(sorted(
            ((_channel(c), QuietWindow.parse(w)) for c, w in data["quiet_hours"].items()),
            key=lambda pair: pair[0]))
    if "exclusion_segments" in data:
        changes["exclusion_segments"] = tuple(str(s) for s in data["exclusion_segments"])
    if "purchase_match" in data:
        changes["purchase_match"] = _enum(PurchaseMatch, data["purchase_match"], "purchase match")
    if "purchase_lookback" in data:
        changes["purchase_lookback_ms"] = parse_duration(data["purchase_lookback"])
    if "consent_required" in data:
        changes["consent_required"] = frozenset(_channel(c) for c in data["consent_required"])
    return check_rule(replace(base, **changes))


def check_rule(rule: TriggerRule, prefix: str = "rule") -> TriggerRule:
    """Raise InvalidArgument naming the field when ``rule`` cannot be applied."""
    if len(rule.campaign) > MAX_CAMPAIGN_LENGTH:
        raise InvalidArgument.field(f"{prefix}.campaign",
                                    f"longer than {MAX_CAMPAIGN_LENGTH} characters")
    for i, cap in enumerate(rule.caps):
        if cap.scope is CapScope.CHANNEL and cap.channel is None:
            raise InvalidArgument.field(f"{prefix}.caps[{i}].channel",
                                        "a channel cap needs its channel")
    if rule.dedupe_window_ms < 0 or rule.purchase_lookback_ms < 0:
        raise InvalidArgument.field(f"{prefix}.dedupe_window", "negative duration")
    if len({c for c, _ in rule.quiet_hours}) != len(rule.quiet_hours):
        raise InvalidArgument.field(f"{prefix}.quiet_hours", "one window per channel")
    for i, name in enumerate(rule.exclusion_segments):
        if not name.strip():
            raise InvalidArgument.field(f"{prefix}.exclusion_segments[{i}]", "is empty")
    return rule


# The safe defaults (documented in the README): a person gets at most 2 pushes a day
# and 5 a week, 2 e-mails a day and 7 a week, 1 text a day and 3 a week, and one
# message of a campaign a day; no trigger twice for the same products within 3 days;
# no pushes 22:00-09:00 and no texts 21:00-09:00 local time; e-mail and SMS need
# consent (an opt-out stops every channel); orders of the products suppress.
DEFAULT_RULE = TriggerRule(
    caps=(
        Cap(CapScope.CHANNEL, Channel.PUSH, 2, Period.DAY),
        Cap(CapScope.CHANNEL, Channel.PUSH, 5, Period.WEEK),
        Cap(CapScope.CHANNEL, Channel.EMAIL, 2, Period.DAY),
        Cap(CapScope.CHANNEL, Channel.EMAIL, 7, Period.WEEK),
        Cap(CapScope.CHANNEL, Channel.SMS, 1, Period.DAY),
        Cap(CapScope.CHANNEL, Channel.SMS, 3, Period.WEEK),
        Cap(CapScope.CAMPAIGN, None, 1, Period.DAY),
    ),
    dedupe_window_ms=72 * _HOUR,
    quiet_hours=((Channel.PUSH, QuietWindow.parse("22:00-09:00")),
                 (Channel.SMS, QuietWindow.parse("21:00-09:00"))),
    consent_required=frozenset({Channel.EMAIL, Channel.SMS}),
)


MAX_FOUND = 4096  # (trigger, campaign) lookups remembered by a RuleBook


class RuleBook:
    """The default, the configured and the stored rules; safe to read from any thread."""

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        unknown = set(config) - {"shop_time_zone", "default", "rule"}
        if unknown:
            raise ValueError(f"[triggers]: unknown settings {sorted(unknown)}")
        self.shop_time_zone = str(config.get("shop_time_zone", "UTC"))
        zone(self.shop_time_zone)  # fail at start-up, not at the first check
        try:
            self.default = rule_from_dict(dict(config.get("default", {})), DEFAULT_RULE)
            self.default = replace(self.default, trigger=None, campaign="")
            self._configured = {
                r.key: r for r in (rule_from_dict(dict(d), self.default)
                                   for d in config.get("rule", []))}
        except InvalidArgument as exc:
            raise ValueError(f"[triggers]: {exc}") from None
        self._stored: dict[bytes, TriggerRule] = {}
        # (trigger, campaign) -> what rule_for found; a new one whenever the stored rules
        # change (set after them, so a lookup that sees it sees the rules it was made for).
        self._found: dict[tuple[TriggerKind | None, str], tuple[TriggerRule, str]] = {}
        self._lock = threading.Lock()

    def load(self, tx: Txn) -> None:
        """Read the rules stored by SetTriggerRule (once at start-up)."""
        stored = {}
        for key, value in tx.items("trigger_rules"):
            stored[bytes(key)] = rule_from_dict(json.loads(value), self.default)
        with self._lock:
            self._stored = stored
            self._found = {}

    def rule_for(self, trigger: TriggerKind | None, campaign: str) -> tuple[TriggerRule, str]:
        """The rule that applies and its origin: ``stored``, ``config`` or ``default``."""
        found = self._found
        hit = found.get((trigger, campaign))
        if hit is None:
            hit = self._lookup(trigger, campaign)
            if len(found) >= MAX_FOUND:
                found.clear()
            found[trigger, campaign] = hit
        return hit

    def _lookup(self, trigger: TriggerKind | None, campaign: str) -> tuple[TriggerRule, str]:
        kind = bytes((int(trigger or 0),))
        keys = [kind + campaign.encode(), b"\0" + campaign.encode(), kind, b"\0"]
        if not campaign:
            keys = keys[2:]
        stored, configured = self._stored, self._configured
        for key in keys:
            if key in stored:
                return stored[key], "stored"
            if key in configured:
                return configured[key], "config"
        return self.default, "default"

    def put(self, tx: WriteTxn, rule: TriggerRule) -> bool:
        """Store ``rule`` under its key; True when it replaced a stored one."""
        check_rule(rule)
        replaced = tx.get("trigger_rules", rule.key) is not None
        tx.put("trigger_rules", rule.key, json.dumps(rule.to_dict()).encode())

        def publish() -> None:
            with self._lock:
                self._stored = {**self._stored, rule.key: rule}
                self._found = {}

        tx.on_commit(publish)
        return replaced

    def rules(self) -> list[TriggerRule]:
        """Every configured and stored rule (stored ones win), in key order."""
        merged = {**self._configured, **self._stored}
        return [merged[k] for k in sorted(merged)]
