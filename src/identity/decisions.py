"""What a trigger check asks and what it answers: checks, verdicts, reasons, decisions.

Plain values shared by the decision logic (``suppression``), the optimistic
reservation path (``reservations``), the use cases (``triggers``) and the gRPC
servicer; kept apart so that each of those modules holds behaviour only. A
``Decision`` round-trips through JSON because an idempotency key stores the first
decision it gave and replays it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from identity.events import Channel
from identity.identifiers import Identifier, Kind
from identity.sendlog import subject_of
from identity.trigger_rules import TriggerKind, TriggerRule

__all__ = ["Decision", "Draft", "Reading", "Reason", "ReasonCode", "SendOutcome", "SendReport",
           "TriggerCheck", "Verdict"]


class Verdict(IntEnum):
    SEND = 1
    SUPPRESS = 2
    DEFER = 3


class ReasonCode(IntEnum):
    """Numbers shared with ``identity.v1.ReasonCode``."""

    PURCHASED = 1
    DUPLICATE = 2
    CHANNEL_CAP = 3
    CAMPAIGN_CAP = 4
    QUIET_HOURS = 5
    OPTED_OUT = 6
    NO_CONSENT = 7
    UNREACHABLE = 8
    EXCLUDED_SEGMENT = 9
    UNKNOWN_IDENTIFIER = 10


@dataclass(frozen=True, init=False)
class Reason:
    code: ReasonCode
    detail: str
    until_ms: int | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    def __init__(self, code: ReasonCode, detail: str, until_ms: int | None = None,
                 attributes: tuple[tuple[str, str], ...] = ()):
        # By hand, as TriggerCheck's: a suppressed check builds one per reason.
        self.__dict__.update({"code": code, "detail": detail, "until_ms": until_ms,
                              "attributes": attributes})


@dataclass(frozen=True, init=False)
class Decision:
    verdict: Verdict
    reasons: tuple[Reason, ...] = ()
    person_id: str = ""
    address: Identifier | None = None
    next_allowed_ms: int | None = None
    reserved: bool = False
    replayed: bool = False
    rule: str = ""

    def __init__(self, verdict: Verdict, reasons: tuple[Reason, ...] = (), person_id: str = "",
                 address: Identifier | None = None, next_allowed_ms: int | None = None,
                 reserved: bool = False, replayed: bool = False, rule: str = ""):
        # By hand, as TriggerCheck's: every check builds one.
        self.__dict__.update({
            "verdict": verdict, "reasons": reasons, "person_id": person_id, "address": address,
            "next_allowed_ms": next_allowed_ms, "reserved": reserved, "replayed": replayed,
            "rule": rule})

    def to_json(self) -> bytes:
        return json.dumps({
            "v": int(self.verdict), "p": self.person_id, "n": self.next_allowed_ms,
            "a": [int(self.address.kind), self.address.value] if self.address else None,
            "r": [[int(r.code), r.detail, r.until_ms, list(r.attributes)] for r in self.reasons],
            "s": self.reserved, "rule": self.rule,
        }).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Decision:
        d = json.loads(raw)
        address = Identifier(Kind(d["a"][0]), d["a"][1]) if d["a"] else None
        reasons = tuple(Reason(ReasonCode(c), t, u, tuple(tuple(a) for a in attrs))
                        for c, t, u, attrs in d["r"])
        return cls(Verdict(d["v"]), reasons, d["p"], address, d["n"], d["s"], False, d["rule"])


class Reading(NamedTuple):  # a tuple: every check makes one
    """What a decision read that a concurrent reservation can change: the person's
    member nodes and the keys of their sends since ``horizon_ms`` (older ones match no
    window). Unchanged at commit time, the decision still holds (see ``reservations``)."""

    root: int
    members: tuple[int, ...]
    horizon_ms: int
    send_keys: tuple[bytes, ...]


class Draft(NamedTuple):  # a tuple: every check makes one
    """A decision not yet reserved; ``reading`` is None for replays and unknown identifiers."""

    decision: Decision
    rule: TriggerRule | None = None
    address_node: int = 0
    reading: Reading | None = None


@dataclass(frozen=True, init=False)
class TriggerCheck:
    """One trigger to one person (or, with ``identifier`` unused, an audience template)."""

    identifier: Identifier | None
    trigger: TriggerKind | None
    channel: Channel
    now_ms: int
    campaign: str = ""
    scenario: str = ""
    products: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    event_ms: int | None = None
    reserve: bool = False
    idempotency_key: str = ""

    def __init__(self, identifier: Identifier | None, trigger: TriggerKind | None,
                 channel: Channel, now_ms: int, campaign: str = "", scenario: str = "",
                 products: tuple[str, ...] = (), categories: tuple[str, ...] = (),
                 event_ms: int | None = None, reserve: bool = False, idempotency_key: str = ""):
        # Written by hand: a frozen dataclass's generated __init__ sets each field through
        # object.__setattr__, and every check builds one of these. Filling __dict__ at once
        # takes half the time. A new field must be added here too.
        self.__dict__.update({
            "identifier": identifier, "trigger": trigger, "channel": channel, "now_ms": now_ms,
            "campaign": campaign, "scenario": scenario, "products": products,
            "categories": categories, "event_ms": event_ms, "reserve": reserve,
            "idempotency_key": idempotency_key})

    @property
    def subject(self) -> int:
        return subject_of(int(self.trigger or 0), self.scenario, self.products, self.categories)

    def about(self, identifier: Identifier) -> TriggerCheck:
        """This check for ``identifier``: what ``dataclasses.replace`` gives, at a tenth of
        its cost (a copy of the fields; no re-validation to do, the template was checked)."""
        check = object.__new__(TriggerCheck)
        check.__dict__.update(self.__dict__)
        check.__dict__["identifier"] = identifier
        return check


@dataclass(frozen=True)
class SendReport:
    """A message that went out (or, ``failed``, one whose reservation must be released)."""

    identifier: Identifier
    trigger: TriggerKind | None
    channel: Channel
    sent_ms: int
    campaign: str = ""
    scenario: str = ""
    products: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    idempotency_key: str = ""
    failed: bool = False


@dataclass(frozen=True)
class SendOutcome:
    recorded: bool
    matched_reservation: bool
    person_id: str
