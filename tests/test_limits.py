"""Request limits: batch sizes, message size and stream rate, each with a clear status."""

from __future__ import annotations

import grpc
import pytest

from identity.client import IdentityClient, identifier, link_request
from identity.rpc.limits import throttled
from identity.rpc.status import translate_errors
from identity.v1 import events_pb2


def _view(i: int) -> events_pb2.Event:
    return events_pb2.Event(event_id=f"e{i}", identifier=identifier(f"device_id:d{i % 7}"),
                            view=events_pb2.ProductEvent(product_id="kettle"))


def test_a_link_batch_over_the_limit_is_refused_whole(make_server) -> None:
    running = make_server(max_batch_items=5)
    with IdentityClient(running.address) as client:
        ok = [link_request(f"email:p{i}@example.com") for i in range(5)]
        too_many = [link_request(f"email:q{i}@example.com") for i in range(6)]
        with pytest.raises(grpc.RpcError) as caught:
            client.link_stream([ok, too_many])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "batch[1].links: at most 5 links per batch" in caught.value.details()
        assert client.resolve("email:p4@example.com").person.person_id
        with pytest.raises(grpc.RpcError):
            client.resolve("email:q0@example.com")


def test_an_event_batch_over_the_limit_is_refused_whole(make_server) -> None:
    running = make_server(max_batch_items=5)
    with IdentityClient(running.address) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.track([_view(i) for i in range(6)])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 5 events" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            client.track_stream([[_view(i) for i in range(3)], [_view(i) for i in range(3, 9)]])
        assert "batch[1].events" in caught.value.details()
        assert client.track([_view(i) for i in range(3)]).duplicates == 3  # batch 0 committed
        assert client.track([_view(i) for i in range(3, 5)]).stored == 2  # batch 1 did not


def test_a_message_over_the_size_limit_is_resource_exhausted(make_server) -> None:
    running = make_server(max_message_bytes="64KiB")
    with IdentityClient(running.address) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.link("customer_id:C-1", source="x" * 100_000)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError):
            client.resolve("customer_id:C-1")


class _Aborted(Exception):
    pass


class _LateContext:
    """A servicer context whose caller's deadline has already passed."""

    def time_remaining(self) -> float:
        return 0.0

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


def test_a_call_whose_deadline_passed_while_it_queued_is_not_run() -> None:
    ran = []

    @translate_errors
    def handler(_self, request, context):
        ran.append(request)

    with pytest.raises(_Aborted) as caught:
        handler(None, "link", _LateContext())
    assert caught.value.args[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ran == []


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_stream_faster_than_its_rate_is_slowed_to_it() -> None:
    clock = _Clock()
    passed = list(throttled(iter([100] * 10), 200, lambda n: n, clock, clock.sleep))
    assert passed == [100] * 10  # nothing dropped
    # a burst of one second's worth (200) passes at once; the other 800 items take 4 s
    assert clock.slept == pytest.approx([0.5] * 8)


def test_a_stream_within_its_rate_never_waits() -> None:
    clock = _Clock()
    for _message in throttled(iter([10] * 5), 100, lambda n: n, clock, clock.sleep):
        clock.now += 0.2  # 10 items every 0.2 s is 50/s
    assert clock.slept == []


def test_no_rate_means_no_waiting() -> None:
    assert list(throttled(iter([10**9]), 0, lambda n: n, time_never_read, time_never_read)) \
        == [10**9]


def time_never_read(*_args: object) -> float:
    raise AssertionError("an unlimited stream must not read the clock or sleep")
