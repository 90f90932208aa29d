"""Use cases of trigger suppression: check, record a send, filter an audience, rules.

Input is validated and normalised here before any transaction starts. A check
that reserves is decided on a snapshot and re-validated and reserved in one write
transaction (``reservations``), so the decision and its reservation commit
together; every RecordSend is one write transaction; a check that does not reserve
reads one snapshot. An audience stream decides one batch per transaction and
remembers the persons it has decided, so a person reached through two identifiers
(or two segments) is decided once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from identity.errors import InvalidArgument, NotFound
from identity.eventful import EventfulNodes
from identity.graph import LATEST_MS, IdentityGraph, now_ms
from identity.identifiers import Identifier
from identity.reservations import Reservations
from identity.segmentation import Segmentation, Target
from identity.sendlog import SendLog
from identity.store import Store
from identity.suppression import (
    Decision, ReasonCode, SendOutcome, SendReport, Suppression, TriggerCheck, Verdict,
)
from identity.tracking import Tracking
from identity.trigger_rules import MESSAGE_CHANNELS, RuleBook, TriggerKind, TriggerRule, check_rule

__all__ = ["Audience", "Recipient", "Triggers", "MAX_SUBJECTS"]

MAX_SUBJECTS = 1000
SEGMENT_TTL = 30.0  # seconds an exclusion segment's evaluation is reused across checks
MAX_TEXT = 256
Identify = Callable[[int, str, str], Identifier]  # kind, raw value, field path
_CHANNELS = {int(c): c for c in MESSAGE_CHANNELS}  # the channels a message can go out on
_TRIGGER_KINDS = {int(k): k for k in TriggerKind}


def _subjects(values: Sequence[str], path: str) -> tuple[str, ...]:
    """Product ids or categories, stripped; InvalidArgument naming the first bad one."""
    if len(values) > MAX_SUBJECTS:
        raise InvalidArgument.field(path, f"at most {MAX_SUBJECTS}")
    given = tuple(values)  # a protobuf list makes its strings anew on every pass: one pass
    stripped = tuple([value.strip() for value in given])
    if not all(stripped) or max(map(len, given)) > MAX_TEXT:
        for i, value in enumerate(stripped):
            if not value or len(given[i]) > MAX_TEXT:
                raise InvalidArgument.field(f"{path}[{i}]",
                                            f"empty or longer than {MAX_TEXT} characters")
    return stripped


@dataclass(frozen=True)
class Recipient:
    person_id: str
    address: Identifier
    verdict: Verdict
    next_allowed_ms: int | None


@dataclass
class Audience:
    """One FilterAudience stream: its template check, the persons decided, the totals."""

    template: TriggerCheck
    seen: set[int] = field(default_factory=set)
    identifiers: int = 0
    duplicates: int = 0
    send: int = 0
    deferred: int = 0
    suppressed: int = 0
    by_reason: Counter[int] = field(default_factory=Counter)

    @property
    def persons(self) -> int:
        return self.send + self.deferred + self.suppressed


class Triggers:
    """Trigger checks, sends, audiences and rules over one store."""

    def __init__(self, store: Store, graph: IdentityGraph, tracking: Tracking,
                 identify: Identify, config: dict | None = None):
        self.store = store
        self.graph = graph
        self.identify = identify
        self.rules = RuleBook(config)
        self.sends = SendLog()
        self.suppression = Suppression(graph, self.rules, self.sends, tracking.events,
                                       tracking.orders, tracking.profiles)
        # checks on snapshots and audiences skip reading nodes that have no such events
        self.eventful = EventfulNodes(tracking.columns)
        self.reservations = Reservations(store, self.suppression, self.sends, self.eventful)
        self.segments: Segmentation | None = None
        self._segment_cache: dict[tuple[str, int], tuple[float, object]] = {}
        with store.read() as tx:
            self.rules.load(tx)
            self.sends.load(tx)

    # -- CheckTrigger ------------------------------------------------------

    def template(self, *, trigger: int, channel: int, campaign: str = "", scenario: str = "",
                 products: Sequence[str] = (), categories: Sequence[str] = (),
                 now_ms_: int | None = None, event_ms: int | None = None, reserve: bool = False,
                 idempotency_key: str = "", require_trigger: bool = True, prefix: str = "",
                 now_field: str = "now") -> TriggerCheck:
        """A validated check without its identifier (fields named under ``prefix``)."""
        kind = _TRIGGER_KINDS.get(trigger) if trigger else None
        if kind is None and (trigger or require_trigger):
            raise InvalidArgument.field(f"{prefix}trigger", f"unknown trigger kind {trigger}"
                                        if trigger else "is required")
        medium = _CHANNELS.get(channel)
        if medium is None:
            raise InvalidArgument.field(f"{prefix}channel", "must be EMAIL, PUSH or SMS")
        # most checks name a product or two and no category: empty ones cost nothing
        products = _subjects(products, f"{prefix}product_ids") if products else ()
        if categories:
            categories = tuple([c.strip("/")
                                for c in _subjects(categories, f"{prefix}categories")])
        else:
            categories = ()
        if max(len(campaign), len(scenario), len(idempotency_key)) > MAX_TEXT:
            for name, value in (("campaign", campaign), ("scenario", scenario),
                                ("idempotency_key", idempotency_key)):
                if len(value) > MAX_TEXT:
                    raise InvalidArgument.field(f"{prefix}{name}",
                                                f"longer than {MAX_TEXT} characters")
        if now_ms_ is None:
            now_ms_ = now_ms()
        elif not 0 <= now_ms_ <= LATEST_MS:  # calendar days end in 9999
            raise InvalidArgument.field(f"{prefix}{now_field}", "must be between 1970 and 9999")
        if event_ms is not None and not 0 <= event_ms <= LATEST_MS:
            raise InvalidArgument.field(f"{prefix}event_time", "must be between 1970 and 9999")
        return TriggerCheck(None, kind, medium, now_ms_, campaign.strip(), scenario.strip(),
                            products, categories, event_ms, reserve, idempotency_key)

    def check(self, who: tuple[int, str], template: TriggerCheck) -> Decision:
        check = template.about(self.identify(who[0], who[1], "identifier"))
        if check.reserve:  # decided on a snapshot, re-validated and reserved in the writer
            return self.reservations.check(check)
        with self.store.read() as tx:
            self.eventful.refresh()  # after the snapshot opened: it holds all it marks
            return self.suppression.draft(tx, check, self.eventful).decision

    # -- RecordSend --------------------------------------------------------

    def record(self, who: tuple[int, str], template: TriggerCheck, failed: bool
               ) -> SendOutcome:
        report = SendReport(
            self.identify(who[0], who[1], "identifier"), template.trigger, template.channel,
            template.now_ms, template.campaign, template.scenario, template.products,
            template.categories, template.idempotency_key, failed)
        return self.store.write(lambda tx: self.suppression.record(tx, report))

    # -- FilterAudience ----------------------------------------------------

    def audience(self, template: TriggerCheck) -> Audience:
        if not template.campaign:
            raise InvalidArgument.field("settings.campaign", "is required")
        return Audience(template)

    def audience_batch(self, audience: Audience, identifiers: Sequence[tuple[int, str]],
                       segments: Sequence[str] = ()) -> list[Recipient]:
        """Decide the persons of one batch (one transaction); new persons only."""
        roots: list[int] = []
        for i, name in enumerate(segments):
            if self.segments is None:
                raise InvalidArgument.field(f"segments[{i}]", "segments are not available")
            roots += self._members(name, audience.template.now_ms, f"segments[{i}]")
        valid: list[Identifier | int | None] = list(roots)
        for kind, value in identifiers:
            try:
                valid.append(self.identify(kind, value, "identifiers"))
            except InvalidArgument:
                valid.append(None)  # counted as unknown, like an identifier never seen
        audience.identifiers += len(valid)
        if audience.template.reserve:
            return self.store.write(lambda tx: self._decide_batch(tx, audience, valid))
        with self.store.read() as tx:
            self.eventful.refresh()  # after the snapshot opened: it holds all it marks
            return self._decide_batch(tx, audience, valid)

    def _decide_batch(self, tx, audience: Audience, identifiers: list[Identifier | int | None]
                      ) -> list[Recipient]:
        template = audience.template
        rule, _ = self.rules.rule_for(template.trigger, template.campaign)
        out: list[Recipient] = []
        graph = self.graph
        for identifier in identifiers:
            if isinstance(identifier, int):  # a segment member's root
                root = identifier
                identifier = graph.node_info(tx, root).identifier
            else:
                node = graph.node_of(tx, identifier) if identifier is not None else None
                if node is None:
                    audience.suppressed += 1
                    audience.by_reason[ReasonCode.UNKNOWN_IDENTIFIER] += 1
                    continue
                root = graph.root_of(tx, node)
            if root in audience.seen:
                audience.duplicates += 1
                continue
            audience.seen.add(root)
            if template.reserve or template.idempotency_key:  # may reserve or replay
                check = template.about(identifier)
                if template.idempotency_key:
                    person = graph.person_id(tx, root)
                    check = replace(check,
                                    idempotency_key=f"{template.idempotency_key}/{person}")
                decision = self.suppression.check(tx, check)
            else:  # nothing to reserve or replay: straight to the decision
                decision = self.suppression.decide(tx, root, template, rule, self.eventful)[0]
            if decision.verdict is Verdict.SUPPRESS:
                audience.suppressed += 1
                audience.by_reason.update(set(int(r.code) for r in decision.reasons))
                continue
            if decision.verdict is Verdict.SEND:
                audience.send += 1
            else:
                audience.deferred += 1
            assert decision.address is not None
            out.append(Recipient(decision.person_id, decision.address, decision.verdict,
                                 decision.next_allowed_ms))
        return out

    # -- segments ----------------------------------------------------------

    def use_segments(self, segments: Segmentation) -> None:
        """Wire saved segments: rules' exclusion segments and audience segments."""
        self.segments = segments
        self.suppression.in_segment = self._in_segment

    def _evaluated(self, name: str, as_of_ms: int):
        """Members (bool per root) of a saved segment as of a minute, reused for SEGMENT_TTL s."""
        key = (name, as_of_ms // 60_000)
        cached = self._segment_cache.get(key)
        now = time.monotonic()
        if cached is None or cached[0] < now:
            assert self.segments is not None
            members = self.segments.evaluate(Target(name=name), as_of_ms).members
            cached = (now + SEGMENT_TTL, members)
            if len(self._segment_cache) > 1024:
                self._segment_cache.clear()
            self._segment_cache[key] = cached
        return cached[1]

    def _in_segment(self, tx, name: str, root: int, as_of_ms: int) -> bool:
        try:
            members = self._evaluated(name, as_of_ms)
        except NotFound:
            return False  # a rule naming a segment not saved (yet) excludes no one
        return root < len(members) and bool(members[root])

    def _members(self, name: str, as_of_ms: int, path: str) -> list[int]:
        assert self.segments is not None
        try:
            members = self.segments.evaluate(Target(name=name), as_of_ms).members
        except NotFound:
            raise InvalidArgument.field(path, f"no saved segment named {name!r}") from None
        return [int(r) for r in np.flatnonzero(members)]

    # -- rules -------------------------------------------------------------

    def set_rule(self, rule: TriggerRule) -> tuple[TriggerRule, bool]:
        check_rule(rule)
        return rule, self.store.write(lambda tx: self.rules.put(tx, rule))

    def rule_for(self, trigger: int, campaign: str) -> tuple[TriggerRule, str]:
        if trigger and trigger not in _TRIGGER_KINDS:
            raise InvalidArgument.field("trigger", f"unknown trigger kind {trigger}")
        return self.rules.rule_for(_TRIGGER_KINDS[trigger] if trigger else None, campaign.strip())
