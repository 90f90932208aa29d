"""Reserving checks decided on a snapshot: what changed before the write job is re-checked.

The store's writer is held busy so that checks are decided on their snapshots and
queued; what other jobs write in between must be seen when the check's job runs.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from identity.client import IdentityClient
from test_triggers import NOON, SEND, SUPPRESS, codes


class HeldWriter:
    """Blocks the store's writer thread until released; counts jobs waiting behind it."""

    def __init__(self, server):
        self.store = server.app.store
        self.gate = threading.Event()
        running = threading.Event()

        def hold(tx) -> None:
            running.set()
            self.gate.wait(10)

        self.store.submit(hold)
        assert running.wait(10)  # the writer is inside it: later jobs wait in the queue

    def wait_queued(self, jobs: int) -> None:
        deadline = time.monotonic() + 10
        while self.store._queue.qsize() < jobs:
            assert time.monotonic() < deadline, "jobs never reached the writer"
            time.sleep(0.005)

    def release(self) -> None:
        self.gate.set()


def check(address: str, device: str, **extra):
    with IdentityClient(address) as own:
        return own.check_trigger(device, "abandoned_cart", "push", products=["K-42"], now=NOON,
                                 reserve=True, **extra)


def test_two_checks_decided_on_one_snapshot_reserve_once(server, client: IdentityClient):
    client.link("customer_id:C-21", "device_id:r1", "device_id:r2", observed_at=NOON - 60_000)
    held = HeldWriter(server)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(check, server.address, "device_id:r1")
        held.wait_queued(1)
        second = pool.submit(check, server.address, "device_id:r2")
        held.wait_queued(2)  # both decided SEND on snapshots without the other's send
        held.release()
        replies = sorted([first.result(), second.result()], key=lambda r: r.verdict)
    assert [r.verdict for r in replies] == [SEND, SUPPRESS]
    assert codes(replies[1]) == ["duplicate"]
    stats = server.app.triggers.reservations.stats
    assert (stats.validated, stats.redecided) == (1, 1)


def test_merge_between_snapshot_and_reservation_counts_the_other_identifiers_send(
        server, client: IdentityClient):
    client.link("customer_id:C-22", "device_id:m1", observed_at=NOON - 60_000)
    client.link("email:m2@example.com", "device_id:m2", observed_at=NOON - 120_000)
    held = HeldWriter(server)
    with ThreadPoolExecutor(3) as pool:
        on_two = pool.submit(check, server.address, "device_id:m2")
        held.wait_queued(1)
        merge = pool.submit(client.link, "customer_id:C-22", "email:m2@example.com")
        held.wait_queued(2)
        on_one = pool.submit(check, server.address, "device_id:m1")
        held.wait_queued(3)  # decided before the merge: two persons, nothing sent to either
        held.release()
        assert on_two.result().verdict == SEND
        merge.result()
        assert on_one.result().verdict == SUPPRESS  # one person now, and it got the push
    assert server.app.triggers.reservations.stats.redecided == 1


def test_retry_with_the_same_key_while_the_first_waits_replays_it(server, client: IdentityClient):
    client.link("customer_id:C-23", "device_id:k1", observed_at=NOON - 60_000)
    held = HeldWriter(server)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(check, server.address, "device_id:k1", idempotency_key="cart:e-9")
        held.wait_queued(1)
        retry = pool.submit(check, server.address, "device_id:k1", idempotency_key="cart:e-9")
        held.wait_queued(2)
        held.release()
        first, retry = first.result(), retry.result()
    assert first.verdict == retry.verdict == SEND
    assert first.reserved and retry.replayed and not first.replayed


def test_audience_reads_orders_opt_outs_and_events_tracked_between_batches(
        client: IdentityClient):
    from identity.rpc.convert import timestamp_of
    from identity.v1 import events_pb2 as ev
    from identity.v1 import triggers_pb2 as tr
    from test_triggers import HOUR, KETTLE, event

    for n in range(1, 6):
        client.link(f"customer_id:A-{n}", f"device_id:a{n}", observed_at=NOON - HOUR)
    client.track([
        event("o1", "customer_id:A-1", NOON - HOUR, order=ev.OrderEvent(
            order_id="AO-1", lines=[ev.OrderLine(product_id="K-42", price=39.99)])),
        event("u2", "device_id:a2", NOON - HOUR, channel=ev.EVENT_CHANNEL_PUSH,
              message=ev.MessageEvent(action=ev.MESSAGE_ACTION_UNSUBSCRIBED)),
        event("t3", "customer_id:A-3", NOON - HOUR,
              attributes=ev.AttributesEvent(time_zone="Pacific/Auckland")),  # midnight there
        event("v5", "device_id:a5", NOON - HOUR, view=ev.ProductEvent(**KETTLE)),
    ])
    settings = tr.AudienceSettings(trigger=tr.TRIGGER_KIND_PRICE_DROP, product_ids=["K-42"],
                                   channel=ev.EVENT_CHANNEL_PUSH, campaign="drop",
                                   now=timestamp_of(NOON))

    def batches():
        yield ["device_id:a1", "device_id:a2", "device_id:a3"]
        client.track([event("o4", "customer_id:A-4", NOON - HOUR, order=ev.OrderEvent(
            order_id="AO-4", lines=[ev.OrderLine(product_id="K-42", price=39.99)]))])
        yield ["device_id:a4", "device_id:a5"]

    replies = list(client.filter_audience(settings, batches()))
    verdicts = {r.person_id: r.verdict for reply in replies for r in reply.recipients}
    assert verdicts == {"A-3": tr.VERDICT_DEFER, "A-5": SEND}
    summary = replies[-1].summary
    assert sorted((c.code, c.count) for c in summary.suppressed_by_reason) == [
        (tr.REASON_CODE_PURCHASED, 2), (tr.REASON_CODE_OPTED_OUT, 1)]
