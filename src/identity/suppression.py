"""Trigger decisions: SEND, SUPPRESS or DEFER, with every reason that applies.

A decision is made for the *person*, at send time, from the current graph: the
orders, message events, consents and sends of every identifier the person is known
by count, wherever they came from (site, app, till). Orders count by event time,
not arrival: one that reaches us late still suppresses. Reasons are gathered, not
short-circuited, so a caller sees all of them; any reason but quiet hours
suppresses, quiet hours alone defer to the end of the window.

A reserving check is drafted on a read snapshot (``draft``, returning what it read)
and reserved in a write job after re-validation (``reservations``); ``check`` inside
``Store.write`` decides and reserves in one write transaction, the fallback when
something changed. Write jobs run one at a time, so two concurrent checks for one
person and trigger cannot both see "nothing sent yet". A key that reserved a send
replays that decision; SUPPRESS and DEFER are not kept under the key, so a deferred
trigger retried later is decided afresh. The values asked and answered live in
``decisions``.

Message events (``MESSAGE_ACTION_SENT``) count against caps like recorded sends;
give such an event the send's idempotency key as its event id and it counts once.
Transactional rules skip caps and consent, and their sends do not count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

from identity.decisions import (
    Decision, Draft, Reading, Reason, ReasonCode, SendOutcome, SendReport, TriggerCheck, Verdict,
)
from identity.event_store import CONSENT_SLOT, EventStore
from identity.eventful import EventfulNodes
from identity.events import Channel, EventType, MessageAction, StoredEvent
from identity.graph import IdentityGraph
from identity.identifiers import Identifier, Kind
from identity.local_time import period_bounds, quiet_until, zone
from identity.orders import OrderBook
from identity.profiles import ProfileReader
from identity.sendlog import RESERVED, SENT, Send, SendLog, subject_of
from identity.store import Txn, WriteTxn
from identity.trigger_rules import Cap, CapScope, PurchaseMatch, RuleBook, TriggerRule

__all__ = ["Decision", "Draft", "Reading", "Reason", "ReasonCode", "SendOutcome", "SendReport",
           "Suppression", "TriggerCheck", "Verdict", "ADDRESS_KIND"]

ADDRESS_KIND = {Channel.EMAIL: Kind.EMAIL, Channel.SMS: Kind.PHONE, Channel.PUSH: Kind.DEVICE_ID}
_ALL = 1 << 30  # history page size meaning "every matching event"
_MESSAGES = frozenset({EventType.MESSAGE})
_MESSAGES_AND_ORDERS = frozenset({EventType.MESSAGE, EventType.ORDER})
_LABELS = {channel: channel.name.lower() for channel in Channel}  # (an enum's name is slow)
# Module globals: an enum member looked up on its class costs ten times a global's lookup.
_SEND, _SUPPRESS, _DEFER = Verdict.SEND, Verdict.SUPPRESS, Verdict.DEFER
_PER_CHANNEL, _BY_CATEGORY, _NO_MATCH = CapScope.CHANNEL, PurchaseMatch.CATEGORY, PurchaseMatch.NONE
_QUARTER_HOUR = 15 * 60_000
MAX_CALENDAR = 4096  # calendar windows remembered (``Suppression._windows``)


class _Sent(NamedTuple):  # a tuple: one per send or message event a decision weighs
    """A send as caps and dedupe see it, from the send log or a message event."""

    time_ms: int
    channel: int
    campaign: str
    subject: int | None
    transactional: bool


def _iso(ms: int) -> str:
    """UTC time as ISO 8601 to the second (``datetime.isoformat``'s form, at half its cost)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ms // 1000))


class Suppression:
    """Decides inside the caller's transaction; knows nothing of gRPC."""

    def __init__(self, graph: IdentityGraph, rules: RuleBook, sends: SendLog,
                 events: EventStore, orders: OrderBook, profiles: ProfileReader):
        self.graph = graph
        self.rules = rules
        self.sends = sends
        self.events = events
        self.orders = orders
        self.profiles = profiles
        # (tx, segment name, root, as of ms) -> is the person a member; set by the wiring.
        self.in_segment: Callable[[Txn, str, int, int], bool] | None = None
        # (rule id, channel, campaign or not, zone, quarter hour) -> the rule, its caps,
        # their calendar windows and the oldest start, None without caps (``_windows``)
        self._calendar: dict[tuple, tuple[TriggerRule, tuple[Cap, ...],
                                          tuple[tuple[int, int], ...], int | None]] = {}

    # -- one trigger -------------------------------------------------------

    def check(self, tx: Txn, check: TriggerCheck) -> Decision:
        """Decide; with ``check.reserve`` (``tx`` must then be a WriteTxn) record a SEND."""
        draft = self.draft(tx, check)
        if check.reserve and draft.reading is not None and draft.decision.verdict is \
                Verdict.SEND and isinstance(tx, WriteTxn):
            return self.reserve(tx, check, draft)
        return draft.decision

    def draft(self, tx: Txn, check: TriggerCheck,
              eventful: EventfulNodes | None = None) -> Draft:
        """The decision without reserving, and what it read (none for replays, unknowns).

        ``eventful`` as for ``decide``; only for read snapshots, never inside a write job
        (the event columns learn of a write only once its group has committed)."""
        if check.idempotency_key:
            seen = self.sends.remembered(tx, check.idempotency_key)
            if seen is not None and seen.decision:
                return Draft(replace(Decision.from_json(seen.decision), replayed=True))
        rule, _ = self.rules.rule_for(check.trigger, check.campaign)
        assert check.identifier is not None
        node = self.graph.node_of(tx, check.identifier)
        if node is None:
            return Draft(Decision(Verdict.SUPPRESS, (Reason(
                ReasonCode.UNKNOWN_IDENTIFIER, f"{check.identifier} is not known"),),
                rule=rule.name))
        root, seen = self.graph.locate(tx, node)
        decision, address_node, reading = self.decide(tx, root, check, rule, eventful, seen)
        return Draft(decision, rule, address_node, reading)

    def reserve(self, tx: WriteTxn, check: TriggerCheck, draft: Draft,
                reserved: tuple[Decision, bytes] | None = None) -> Decision:
        """Record the SEND of ``draft`` as a reservation (and under its idempotency key).

        ``reserved`` is ``reserved_form(check, draft)`` when the caller made it ahead,
        outside the write job."""
        assert draft.rule is not None
        decision, as_json = reserved or self.reserved_form(check, draft)
        key = self.sends.append(
            tx, draft.address_node, check.now_ms, status=RESERVED, channel=int(check.channel),
            trigger=int(check.trigger or 0), transactional=draft.rule.transactional,
            subject=check.subject, campaign=check.campaign)
        if check.idempotency_key:
            self.sends.remember(tx, check.idempotency_key, key, as_json)
        return decision

    @staticmethod
    def reserved_form(check: TriggerCheck, draft: Draft) -> tuple[Decision, bytes]:
        """The decision once reserved, and its JSON for the idempotency key (if any)."""
        decision = replace(draft.decision, reserved=True)
        return decision, decision.to_json() if check.idempotency_key else b""

    def decide(self, tx: Txn, root: int, check: TriggerCheck, rule: TriggerRule,
               eventful: EventfulNodes | None = None, seen: tuple[int, bytes] | None = None
               ) -> tuple[Decision, int, Reading]:
        """The decision for the person rooted at ``root``, the node of its address, and
        what it read that a concurrent reservation could change.

        ``eventful``, when given, picks the nodes that may have an order, a message event
        or an attribute statement: only theirs are read (the event columns know the rest
        have none, which saves most of the reads), and only as far back as an order or a
        send can matter, but for the few nodes that ever unsubscribed.
        ``seen``: a member node already read (``IdentityGraph.locate``)."""
        person = self.graph.reach(tx, root, ADDRESS_KIND[check.channel], seen)
        nodes = person.identifiers
        members = tuple(nodes)
        read = nodes if eventful is None else eventful.pick(nodes)
        attributes, consents = self.profiles.attributes(tx, read) if read else ({}, {})
        tz_name = attributes.get("time_zone") or self.rules.shop_time_zone
        try:
            tz = zone(tz_name)
        except ValueError:
            tz_name = self.rules.shop_time_zone
            tz = zone(tz_name)
        # One newest-first pass over the person's events serves purchases and caps, back to
        # the oldest moment either reaches (``since``, ``horizon``); unsubscribes count
        # however old, so they are read apart, for the nodes with one (without the
        # columns' word on which those are, the one pass reads every event instead).
        since = self._purchases_since(check, rule)
        horizon, caps, bounds = self._windows(check, rule, tz)
        types = _MESSAGES if since is None else _MESSAGES_AND_ORDERS
        oldest = None if eventful is None else horizon if since is None else min(since, horizon)
        events = self.events.history(tx, read, types=types, since_ms=oldest, limit=_ALL)[0] \
            if read else []
        messages = [e for e in events if e.type == EventType.MESSAGE] if events else events
        if eventful is None:
            unsubscribes = messages
        else:
            quitters = eventful.unsubscribed(read) if read else read
            unsubscribes = self.events.history(tx, quitters, types=_MESSAGES, limit=_ALL)[0] \
                if quitters else []
        reasons: list[Reason] = []
        if since is not None and events:
            orders = [e for e in events if e.type == EventType.ORDER and e.time_ms >= since]
            if orders:
                reasons += self._purchases(tx, orders, check, rule)
        if not rule.transactional:
            reasons += self._consent(tx, nodes, consents, unsubscribes, check.channel, rule)
        address = person.latest  # (node, identifier): the newest seen of the channel's kind
        if address is None:
            reasons.append(Reason(ReasonCode.UNREACHABLE,
                                  f"no {ADDRESS_KIND[check.channel].label} for "
                                  f"{_LABELS[check.channel]}"))
        for name in rule.exclusion_segments:
            if self.in_segment is not None and self.in_segment(tx, name, root, check.now_ms):
                reasons.append(Reason(ReasonCode.EXCLUDED_SEGMENT, f"in segment {name!r}",
                                      attributes=(("segment", name),)))
        sends = self.sends.recent(tx, nodes, horizon)
        reasons += self._history(tx, sends, messages, check, rule, horizon, caps, bounds)
        window = rule.quiet_window(check.channel)
        quiet = quiet_until(check.now_ms, tz, window) if window else None
        if quiet is not None:
            reasons.append(Reason(
                ReasonCode.QUIET_HOURS, f"quiet hours {window} in {tz_name} until {_iso(quiet)}",
                quiet, (("window", str(window)), ("time_zone", tz_name))))
        if not reasons:
            verdict, next_allowed = _SEND, None
        elif quiet is None or len(reasons) > 1:  # any reason but quiet hours suppresses
            verdict, next_allowed = _SUPPRESS, None
        else:
            verdict, next_allowed = _DEFER, quiet
        kept = address[1] if address and verdict is not _SUPPRESS else None
        decision = Decision(verdict, tuple(reasons), person.person_id, kept, next_allowed,
                            rule=rule.name)
        reading = Reading(root, members, horizon, tuple([s.key for s in sends]) if sends else ())
        return decision, (address[0] if address else root), reading

    # -- the reasons -------------------------------------------------------

    @staticmethod
    def _purchases_since(check: TriggerCheck, rule: TriggerRule) -> int | None:
        """From when orders suppress this trigger; None when no order can."""
        match = rule.purchase_match
        categories = check.categories if match is _BY_CATEGORY else ()
        if match is _NO_MATCH or not (check.products or categories):
            return None
        return check.event_ms if check.event_ms is not None else \
            check.now_ms - rule.purchase_lookback_ms

    def _purchases(self, tx: Txn, orders: list[StoredEvent], check: TriggerCheck,
                   rule: TriggerRule) -> list[Reason]:
        categories = check.categories if rule.purchase_match is PurchaseMatch.CATEGORY else ()
        products = set(check.products)
        reasons = []
        for event in orders:
            hit = _matching_line(event.payload.lines, products, categories)
            if hit is None:
                continue  # (its order record is read only for a matching order)
            if self.orders.is_cancelled(tx, event.payload.order_id):
                continue
            what, value = hit
            at, order_id, identifier = _iso(event.time_ms), event.payload.order_id, \
                str(event.identifier)
            reasons.append(Reason(
                ReasonCode.PURCHASED,
                f"ordered {value} in order {order_id} at {at} ({identifier})", None,
                (("order_id", order_id), ("ordered_at", at), (what, value),
                 ("identifier", identifier))))
        return reasons

    def _consent(self, tx: Txn, nodes: dict[int, Identifier], consents: dict[int, bool],
                 messages: list[StoredEvent], channel: Channel, rule: TriggerRule
                 ) -> list[Reason]:
        consent = consents.get(int(channel)) if consents else None
        label = _LABELS[channel]
        if consent is False:
            return [Reason(ReasonCode.OPTED_OUT, f"withdrew consent to {label}")]
        unsubscribed = [e for e in messages if e.channel == channel
                        and e.payload.action == MessageAction.UNSUBSCRIBED] if messages else ()
        if unsubscribed:  # newest first; it counts unless consent was granted after it
            event = unsubscribed[0]
            stated = [self.events.node_attributes(tx, n).get(CONSENT_SLOT + int(channel))
                      for n in nodes]
            granted_ms = max((s[0] for s in stated if s is not None), default=None)
            if granted_ms is None or event.time_ms >= granted_ms:
                return [Reason(ReasonCode.OPTED_OUT,
                               f"unsubscribed from {label} at {_iso(event.time_ms)}",
                               attributes=(("campaign", event.payload.campaign),))]
        if consent is not True and channel in rule.consent_required:
            return [Reason(ReasonCode.NO_CONSENT, f"no consent to {label} on record")]
        return []

    def _windows(self, check: TriggerCheck, rule: TriggerRule, tz
                 ) -> tuple[int, tuple[Cap, ...], tuple[tuple[int, int], ...]]:
        """The caps that apply, their [start, end) windows, and the oldest time any
        window (or the dedupe window) reaches back to: sends before it cannot matter.

        Calendar windows are the same for every check of a quarter hour (local
        midnights fall on quarter hours of UTC), so they are worked out once per rule,
        channel, zone and quarter hour; rolling ones end at ``now`` and are not kept."""
        now = check.now_ms
        key = (id(rule), check.channel, bool(check.campaign), tz, now // _QUARTER_HOUR)
        known = self._calendar.get(key)  # (an entry holds its rule: no other takes its id)
        if known is None:
            caps = rule.caps_for(check.channel, bool(check.campaign))
            bounds = tuple([period_bounds(now, tz, c.period, c.rolling) for c in caps])
            known = (rule, caps, bounds, min([start for start, _ in bounds], default=None))
            if not any(c.rolling for c in caps):
                if len(self._calendar) >= MAX_CALENDAR:
                    self._calendar.clear()
                self._calendar[key] = known
        _, caps, bounds, oldest = known
        return min(now if oldest is None else oldest, now - rule.dedupe_window_ms), caps, bounds

    def _history(self, tx: Txn, sends: list[Send], messages: list[StoredEvent],
                 check: TriggerCheck, rule: TriggerRule, horizon: int, caps: tuple[Cap, ...],
                 bounds: tuple[tuple[int, int], ...]) -> list[Reason]:
        """Dedupe and caps, over the send log and message events of every identifier."""
        now = check.now_ms
        sent = self._sent(tx, sends, messages, horizon) if sends or messages else []
        if not sent and all(cap.limit for cap in caps):
            return []  # nothing went out in any window: no duplicate, no cap reached
        reasons = []
        if rule.dedupe_window_ms and check.trigger:
            subject, opened = check.subject, now - rule.dedupe_window_ms
            last = None  # the newest send of the same subject in the window (first of ties)
            for s in sent:
                if s.subject == subject and opened < s.time_ms <= now and (
                        last is None or s.time_ms > last.time_ms):
                    last = s
            if last is not None:
                at, channel = _iso(last.time_ms), _LABELS[last.channel]
                reasons.append(Reason(
                    ReasonCode.DUPLICATE, f"the same trigger went out on {channel} at {at}",
                    last.time_ms + rule.dedupe_window_ms,
                    (("sent_at", at), ("channel", channel), ("campaign", last.campaign))))
        countable = [s for s in sent if not s.transactional]  # transactional sends never count
        for cap, (start, end) in zip(caps, bounds):
            if len(countable) < cap.limit:
                continue  # not enough sends in all to reach it
            channel, per_channel = cap.channel, cap.scope is _PER_CHANNEL
            if per_channel:
                counted = [s.time_ms for s in countable
                           if s.channel == channel and start <= s.time_ms < end]
            else:
                campaign = check.campaign
                counted = [s.time_ms for s in countable if s.campaign == campaign and (
                    channel is None or s.channel == channel) and start <= s.time_ms < end]
            if len(counted) < cap.limit:
                continue
            until = end
            if cap.rolling:  # the window frees when enough of the counted sends age out
                counted.sort()
                until = counted[len(counted) - cap.limit] + cap.period.ms if cap.limit else end
            code, what = (ReasonCode.CHANNEL_CAP, _LABELS[check.channel]) if per_channel \
                else (ReasonCode.CAMPAIGN_CAP, f"campaign {check.campaign!r}")
            kind, period = ("rolling ", "true") if cap.rolling else ("", "false")
            label = cap.period.label
            reasons.append(Reason(
                code, f"{len(counted)} of {cap.limit} {what} messages this {kind}{label}", until,
                (("limit", str(cap.limit)), ("count", str(len(counted))), ("period", label),
                 ("rolling", period))))
        return reasons

    def _sent(self, tx: Txn, sends: list[Send], messages: list[StoredEvent], since_ms: int
              ) -> list[Send | _Sent]:
        """The sends, and the message events that are not one of them (both have the fields
        caps and dedupe read)."""
        sent: list[Send | _Sent] = list(sends)
        logged = None
        for event in messages:
            if event.time_ms < since_ms:
                break  # newest first: the rest are older still
            if event.payload.action != MessageAction.SENT:
                continue
            if sends:  # the same send, counted already under its idempotency key?
                if logged is None:
                    logged = {s.key for s in sends}
                seen = self.sends.remembered(tx, event.event_id)
                if seen is not None and seen.send_key in logged:
                    continue
            sent.append(_Sent(event.time_ms, event.channel, event.payload.campaign, None, False))
        return sent

    # -- reported sends ----------------------------------------------------

    def record(self, tx: WriteTxn, report: SendReport) -> SendOutcome:
        """Count a send (once per idempotency key), confirm or release a reservation."""
        from identity.errors import NotFound

        node = self.graph.node_of(tx, report.identifier)
        if node is None:
            raise NotFound(f"unknown identifier {report.identifier}")
        person_id = self.graph.person_id(tx, self.graph.root_of(tx, node))
        key = report.idempotency_key
        seen = self.sends.remembered(tx, key) if key else None
        if seen is not None and seen.send_key:
            if report.failed:
                released = self.sends.release(tx, seen.send_key)
                self.sends.forget_key(tx, key)
                return SendOutcome(False, released, person_id)
            return SendOutcome(False, self.sends.confirm(tx, seen.send_key), person_id)
        if report.failed:
            return SendOutcome(False, False, person_id)
        rule, _ = self.rules.rule_for(report.trigger, report.campaign)
        subject = subject_of(int(report.trigger or 0), report.scenario, report.products,
                             report.categories)
        send_key = self.sends.append(
            tx, node, report.sent_ms, status=SENT, channel=int(report.channel),
            trigger=int(report.trigger or 0), transactional=rule.transactional,
            subject=subject, campaign=report.campaign)
        if key:
            self.sends.remember(tx, key, send_key, b"")
        return SendOutcome(True, False, person_id)


def _matching_line(lines, products: set[str], categories: tuple[str, ...]
                   ) -> tuple[str, str] | None:
    for line in lines:
        if line.product_id in products:
            return "product_id", line.product_id
    for line in lines:
        for category in categories:
            if line.category == category or line.category.startswith(category + "/"):
                return "category", category
    return None
