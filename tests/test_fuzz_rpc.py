"""Bad input on every RPC: the server answers OK or a clear error, keeps serving, and a
rejected request writes nothing.

Each RPC of every service in ``protos/identity/v1`` is fuzzed with requests built from
its descriptor (``fuzz_strategies.message_of``) against a server that already holds a
few persons, events, a saved segment and a trigger rule. For each example:

- the status is OK or a deliberate error (never INTERNAL, UNKNOWN or a timeout), and
  INVALID_ARGUMENT names the bad field;
- a follow-up Resolve still answers;
- when the request was rejected, a digest of every LMDB sub-database is unchanged
  (a client stream rejected at ``batch[k]`` keeps its first k batches, as documented).

CI runs ``IDENTITY_FUZZ_EXAMPLES`` (default 25) examples per RPC; set it higher for a
campaign, and ``IDENTITY_FUZZ_REPORT=FILE`` to count the requests each RPC was sent:
``IDENTITY_FUZZ_EXAMPLES=300 IDENTITY_FUZZ_REPORT=tried.tsv scripts/test tests/test_fuzz_rpc.py``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzz_strategies import SEEDED_IDENTIFIERS, condition_json, conditions_pb, message_of, stream_of
from identity.client import IdentityClient
from identity.store import SUBDATABASES
from identity.v1 import audit_pb2, common_pb2, events_pb2, identity_pb2, keys_pb2, segments_pb2
from identity.v1 import segments_pb2 as sg
from identity.v1 import triggers_pb2 as tr

EXAMPLES = int(os.environ.get("IDENTITY_FUZZ_EXAMPLES", "25"))
CALL_TIMEOUT = 30.0
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.DEADLINE_EXCEEDED}
_BATCH = re.compile(r"^batch\[(\d+)\]")

PROTOS = Path(__file__).resolve().parents[1] / "protos" / "identity" / "v1"
# Every service of every .proto, found by file: a new service is fuzzed without an edit here.
METHODS: list[d.MethodDescriptor] = [
    method
    for proto in sorted(PROTOS.glob("*.proto"))
    for service in importlib.import_module(f"identity.v1.{proto.stem}_pb2")
    .DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


TRIED: Counter[str] = Counter()  # requests sent per RPC in this run


@pytest.fixture(scope="module", autouse=True)
def report_tried() -> Iterator[None]:
    """With ``IDENTITY_FUZZ_REPORT=path``, write how many requests each RPC was sent."""
    yield
    path = os.environ.get("IDENTITY_FUZZ_REPORT")
    if path:
        Path(path).write_text("".join(f"{name}\t{n}\n" for name, n in sorted(TRIED.items())))


def fuzz_settings(factor: float = 1.0) -> settings:
    return settings(max_examples=max(1, int(EXAMPLES * factor)), deadline=None,
                    suppress_health_check=list(HealthCheck))


# -- the server under fuzz ---------------------------------------------------------------

def seed(client: IdentityClient) -> None:
    """A few persons, events, a purchase, a saved segment, a tag and a trigger rule."""
    client.link("customer_id:C-1001", "email:anna.petrova@example.com", source="web")
    client.link("phone:+447700900123", "email:anna.petrova@example.com", source="app")
    client.link("loyalty_card:4000 1234 5678", "phone:+447700900123", source="pos:store-17")
    client.link("customer_id:C-2002", "email:bob@example.com", "device_id:tablet-7", source="web")
    client.track([
        events_pb2.Event(event_id="e-1", identifier=identifier_of(2, "bob@example.com"),
                         channel=events_pb2.EVENT_CHANNEL_APP,
                         search=events_pb2.SearchEvent(phrase="kettle")),
        events_pb2.Event(event_id="e-2", identifier=identifier_of(1, "C-1001"),
                         view=events_pb2.ProductEvent(product_id="P-1",
                                                      category="Electronics/TV", price=10)),
    ])
    client.record_purchase(events_pb2.OrderEvent(
        order_id="O-1", lines=[events_pb2.OrderLine(product_id="P-1", price=10, quantity=1)],
        total=10, currency="USD"), loyalty_card="400012345678")
    client.save_segment("tv-viewers", {"event": {"filter": {"type": "view"}}})
    client.set_tag("customer_id:C-1001", "vip")
    client.set_trigger_rule(tr.TriggerRule(trigger=tr.TRIGGER_KIND_ABANDONED_VIEW,
                                           campaign="spring"))


def identifier_of(kind: int, value: str) -> common_pb2.Identifier:
    return common_pb2.Identifier(kind=kind, value=value)


def digest(server) -> dict[str, str]:
    """A hash of every key and value of every LMDB sub-database, read in-process."""
    out = {}
    with server.app.store.read() as tx:
        for name in SUBDATABASES:
            h = hashlib.blake2b(digest_size=16)
            for key, value in tx.items(name):
                h.update(len(key).to_bytes(4, "little") + key)
                h.update(len(value).to_bytes(4, "little") + value)
            out[name] = h.hexdigest()
    return out


@dataclass
class Fuzzed:
    server: object
    client: IdentityClient

    def call(self, method: d.MethodDescriptor, request: Message | list[Message]
             ) -> grpc.RpcError | None:
        """Send one request (or a client stream), read every reply; the error, if any."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        serialize = _serializer
        deserialize = _deserializer(method.output_type)
        metadata = None  # the client's channel adds its API key
        channel = self.client.channel
        try:
            if method.client_streaming and method.server_streaming:
                call = channel.stream_stream(path, serialize, deserialize)
                list(call(iter(request), timeout=CALL_TIMEOUT, metadata=metadata))
            elif method.client_streaming:
                channel.stream_unary(path, serialize, deserialize)(
                    iter(request), timeout=CALL_TIMEOUT, metadata=metadata)
            elif method.server_streaming:
                list(channel.unary_stream(path, serialize, deserialize)(
                    request, timeout=CALL_TIMEOUT, metadata=metadata))
            else:
                channel.unary_unary(path, serialize, deserialize)(
                    request, timeout=CALL_TIMEOUT, metadata=metadata)
        except grpc.RpcError as error:
            return error
        return None


def _serializer(message: Message | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _deserializer(descriptor: d.Descriptor) -> Callable[[bytes], Message]:
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(descriptor)
    return cls.FromString


@pytest.fixture
def fuzzed(make_server) -> Iterator[Fuzzed]:
    server = make_server(sync=False)
    with IdentityClient(server.address) as client:
        seed(client)
        yield Fuzzed(server, client)


# -- the property ------------------------------------------------------------------------

def check(fuzzed: Fuzzed, method: d.MethodDescriptor, request: Message | list[Message]) -> None:
    before = digest(fuzzed.server)
    TRIED[f"{method.containing_service.name}.{method.name}"] += 1
    error = fuzzed.call(method, request)
    if error is not None:
        code = error.code()
        assert code not in FORBIDDEN, f"{method.name}: {code.name} {error.details()}"
        violations = _violations(error)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert violations, f"{method.name}: INVALID_ARGUMENT names no field: {error.details()}"
        committed = _committed_batches(violations) if method.client_streaming else 0
        if committed == 0:
            assert digest(fuzzed.server) == before, f"{method.name} rejected but wrote"
    try:  # still serving (a fuzzed Forget may have erased the seeded person: NOT_FOUND)
        fuzzed.client.resolve(f"customer_id:{SEEDED_IDENTIFIERS[0][1]}")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, f"after {method.name}: {error}"


def _violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return fields


def _committed_batches(violations: list[str]) -> int:
    """A client stream rejected at ``batch[k]`` has committed its first k batches."""
    for field in violations:
        match = _BATCH.match(field)
        if match:
            return int(match.group(1))
    return 0


def request_of(method: d.MethodDescriptor) -> st.SearchStrategy[Message | list[Message]]:
    if method.client_streaming:
        return stream_of(method.input_type)
    return message_of(method.input_type)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_every_rpc_answers_bad_input_with_a_clear_status_and_writes_nothing_when_refused(
        fuzzed: Fuzzed, method: d.MethodDescriptor) -> None:
    @fuzz_settings()
    @given(request=request_of(method))
    def run(request: Message | list[Message]) -> None:
        check(fuzzed, method, request)

    run()


@pytest.mark.parametrize("rpc", ["CountSegment", "SaveSegment", "ExplainMembership"])
def test_segment_trees_of_any_shape_get_a_clear_answer(fuzzed: Fuzzed, rpc: str) -> None:
    method = segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].methods_by_name[rpc]

    def wrap(tree: sg.Condition) -> Message:
        if rpc == "SaveSegment":
            return sg.SaveSegmentRequest(name="fuzzed", condition=tree)
        target = sg.SegmentTarget(condition=tree)
        if rpc == "ExplainMembership":
            return sg.ExplainMembershipRequest(person_id="C-1001", segment=target)
        return sg.CountSegmentRequest(segment=target)

    @fuzz_settings()
    @given(tree=conditions_pb())
    def run(tree: sg.Condition) -> None:
        check(fuzzed, method, wrap(tree))

    run()


@fuzz_settings(factor=8)
@given(tree=condition_json())
def test_condition_trees_with_wrong_types_are_refused_by_field(tree: object) -> None:
    from identity import conditions
    from identity.errors import InvalidArgument

    try:
        conditions.parse(tree, cells=("Champions", "Loyal"))
    except InvalidArgument as exc:
        assert exc.violations and all(v.field.startswith("root") for v in exc.violations)


def _nested(depth: int) -> bytes:
    """A CountSegmentRequest whose tree nests ``depth`` groups: past protobuf's parse limit."""
    def wrap(field: int, payload: bytes) -> bytes:
        size, varint = len(payload), b""
        while True:
            byte, size = size & 0x7F, size >> 7
            varint += bytes([byte | 0x80 if size else byte])
            if not size:
                return bytes([field << 3 | 2]) + varint + payload

    tree = wrap(10, wrap(1, b"vip"))  # a tag leaf
    for _ in range(depth):
        tree = wrap(1, tree)  # all: [tree]
    return wrap(1, wrap(1, tree))  # CountSegmentRequest.segment.condition


BY_NAME = {f"{m.containing_service.name}.{m.name}": m for m in METHODS}


@fuzz_settings(factor=2)
@given(case=st.tuples(st.sampled_from(sorted(BY_NAME)), st.binary(max_size=256)))
@example(case=("SegmentService.CountSegment", _nested(120)))
@example(case=("SegmentService.CountSegment", b"\xff\xff\xff"))
@example(case=("IdentityService.LinkStream", b"\x0a\x05\x0a\x03\x08"))
def test_requests_that_do_not_decode_are_refused_as_invalid_argument(fuzzed: Fuzzed,
                                                                      case: tuple[str, bytes]
                                                                      ) -> None:
    name, raw = case
    method = BY_NAME[name]
    check(fuzzed, method, [raw] if method.client_streaming else raw)


def _one_of_every_rpc() -> st.SearchStrategy[tuple[str, Message | list[Message]]]:
    return st.sampled_from(sorted(BY_NAME)).flatmap(
        lambda name: st.tuples(st.just(name), request_of(BY_NAME[name])))


_FAR_FUTURE = {"seconds": 9_223_372_036_854_775, "nanos": 999_999_999}  # year 292,277,026
_FAR_FUTURE_LINK = identity_pb2.LinkRequest(identifiers=[identifier_of(1, "C-1001")],
                                            observed_at=_FAR_FUTURE)


# Each @example is a request that once made the server answer INTERNAL (see the Bad input
# section of docs/RELIABILITY.md); the random cases keep fuzzing all RPCs together.
@fuzz_settings()
@given(case=_one_of_every_rpc())
@example(case=("AuditService.MergeLog", audit_pb2.MergeLogRequest(outcomes=[8])))
@example(case=("SegmentService.GetSegment", sg.GetSegmentRequest(name="")))
@example(case=("SegmentService.DeleteSegment", sg.DeleteSegmentRequest(name="x" * 600)))
@example(case=("SegmentService.CountSegment",
               sg.CountSegmentRequest(segment=sg.SegmentTarget(name="x" * 600))))
@example(case=("AuditService.SuspiciousReport",
               audit_pb2.SuspiciousReportRequest(degree_factor=1e308)))
@example(case=("AuditService.SuspiciousReport",
               audit_pb2.SuspiciousReportRequest(degree_factor=float("nan"))))
@example(case=("SegmentService.SetTag", sg.SetTagRequest(
    identifier=identifier_of(1, "C-1001"), tag="vip", at={"seconds": 2**63 - 1})))
@example(case=("KeyService.RevokeKey", keys_pb2.RevokeKeyRequest(key_id="\U0010ffff" * 70_000)))
@example(case=("IdentityService.Link", _FAR_FUTURE_LINK))
@example(case=("IdentityService.LinkStream", [identity_pb2.LinkStreamRequest(
    links=[_FAR_FUTURE_LINK])]))
@example(case=("TriggerService.CheckTrigger", tr.CheckTriggerRequest(
    identifier=identifier_of(1, "C-1001"), trigger=1, channel=5, now=_FAR_FUTURE)))
@example(case=("TriggerService.RecordSend", tr.RecordSendRequest(
    identifier=identifier_of(1, "C-1001"), channel=5, sent_at=_FAR_FUTURE)))
def test_bad_input_that_once_crashed_the_server_is_refused(
        fuzzed: Fuzzed, case: tuple[str, Message | list[Message]]) -> None:
    name, request = case
    check(fuzzed, BY_NAME[name], request)
