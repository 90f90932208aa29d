"""Reserving checks: decide on a read snapshot, re-validate inside the write job.

A reserving ``CheckTrigger`` must be atomic with its reservation: two concurrent
checks for one person and trigger can never both say SEND. Deciding inside the
store's single writer gives that, but then every decision (graph, orders, message
events, consents, send log: ~100 us of Python) runs serially on the writer thread
while the group waits for its synced commit. Here the decision is made on a read
snapshot in the caller's thread, in parallel with other calls; the write job only
re-reads what a concurrent reservation (or a link) could have changed since the
snapshot, and falls back to a full decision inside the transaction if anything did:

- the idempotency key: not remembered at the snapshot, still not remembered now;
- the person: the same root with the same member nodes (a merge or split since the
  snapshot brings in, or takes away, other identifiers' sends);
- the send log: the same send keys for those nodes since the decision's horizon
  (the oldest moment any cap or dedupe window reaches back to).

Why that is enough: everything else the decision read (orders, message events,
consents, time zone) is written by transactions that do not read the send log, so
the check can be ordered just before them, at its snapshot; the only writes it must
see are the ones that would have to see *it*, other reservations and recorded sends
of the same person, and those are exactly what is re-validated. Write jobs run one
at a time, so the re-validation and the reservation are atomic, and the answer is
handed back only after the group commit is durable, as before.

SUPPRESS and DEFER reserve nothing (and are not kept under an idempotency key), so a
reserving check that does not say SEND answers from the snapshot alone; so do
replays of a key already remembered, and unknown identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass

from identity.decisions import Decision, Draft, Reading, TriggerCheck, Verdict
from identity.errors import NotFound
from identity.eventful import EventfulNodes
from identity.sendlog import SendLog
from identity.store import Store, WriteTxn
from identity.suppression import Suppression

__all__ = ["Reservations", "ReservationStats"]


@dataclass
class ReservationStats:
    """How reserving checks were settled (for tests and benchmarks; not persisted).

    ``validated`` and ``redecided`` are counted on the writer thread, so exactly;
    ``from_snapshot`` by request threads, so only approximately under concurrency."""

    from_snapshot: int = 0  # answered without a write job (not SEND, replay, unknown)
    validated: int = 0  # SEND decided on the snapshot, still valid in the write job
    redecided: int = 0  # something changed since the snapshot: decided again in the job


class Reservations:
    """Reserving checks over one store; stateless apart from the counters."""

    def __init__(self, store: Store, suppression: Suppression, sends: SendLog,
                 eventful: EventfulNodes | None = None):
        self.store = store
        self.suppression = suppression
        self.sends = sends
        self.eventful = eventful  # skips event reads on the snapshot (never in the job)
        self.stats = ReservationStats()

    def check(self, check: TriggerCheck) -> Decision:
        """Decide and, on SEND, reserve; returns once the reservation is durable."""
        assert check.reserve
        with self.store.read() as tx:
            draft = self.suppression.draft(tx, check, _caught_up(self.eventful))
        if draft.reading is None or draft.decision.verdict is not Verdict.SEND:
            self.stats.from_snapshot += 1
            return draft.decision
        reserved = self.suppression.reserved_form(check, draft)  # its JSON, off the writer
        return self.store.write(lambda tx: self._settle(tx, check, draft, reserved))

    def _settle(self, tx: WriteTxn, check: TriggerCheck, draft: Draft,
                reserved: tuple[Decision, bytes]) -> Decision:
        assert draft.reading is not None
        if self._unchanged(tx, check, draft.reading):
            self.stats.validated += 1
            return self.suppression.reserve(tx, check, draft, reserved)
        self.stats.redecided += 1
        return self.suppression.check(tx, check)  # the whole decision, in this transaction

    def _unchanged(self, tx: WriteTxn, check: TriggerCheck, reading: Reading) -> bool:
        if check.idempotency_key and self.sends.remembered(tx, check.idempotency_key):
            return False  # remembered since the snapshot: the full check replays it
        try:
            members = tuple(self.suppression.graph.members(tx, reading.root))
        except NotFound:  # the root was merged away
            return False
        if members != reading.members:
            return False
        return self.sends.keys_since(tx, members, reading.horizon_ms) == reading.send_keys


def _caught_up(eventful: EventfulNodes | None) -> EventfulNodes | None:
    """``eventful`` refreshed now, after the snapshot opened (so it marks nothing unseen)."""
    if eventful is not None:
        eventful.refresh()
    return eventful
