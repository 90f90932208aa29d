"""A small typed client over the gRPC stubs; the CLI and the tests use it.

    with IdentityClient("127.0.0.1:50051") as client:
        client.link("customer_id:C-1", "email:anna@example.com", source="web")
        person = client.resolve("email:Anna@Example.com").person
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Union

import grpc

from identity.identifiers import Kind
from identity.rpc.convert import timestamp_of
from identity.v1 import common_pb2, identity_pb2, identity_pb2_grpc
from identity.v1 import events_pb2, events_pb2_grpc
from identity.v1 import audit_pb2, audit_pb2_grpc
from identity.v1 import triggers_pb2, triggers_pb2_grpc
from identity.v1 import segments_pb2, segments_pb2_grpc
from identity.v1 import admin_pb2, admin_pb2_grpc
from identity.v1 import keys_pb2, keys_pb2_grpc

__all__ = ["IdentityClient", "IdentifierLike", "identifier", "link_request", "person_target",
           "trigger_kind", "message_channel", "packed_events", "with_api_key"]

IdentifierLike = Union[str, tuple[Union[str, Kind, int], str], common_pb2.Identifier]
When = Union[datetime, int, None]
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def identifier(value: IdentifierLike) -> common_pb2.Identifier:
    """``"email:anna@example.com"``, ``("phone", "+44...")`` or a message -> a message."""
    if isinstance(value, common_pb2.Identifier):
        return value
    if isinstance(value, str):
        kind, sep, raw = value.partition(":")
        if not sep:
            raise ValueError(f"write identifiers as kind:value, not {value!r}")
    else:
        kind, raw = value
    if isinstance(kind, str):
        kind = Kind.parse(kind)
    return common_pb2.Identifier(kind=int(kind), value=raw)


def _timestamp(when: When):
    if when is None:
        return None
    ms = int(when.timestamp() * 1000) if isinstance(when, datetime) else int(when)
    return timestamp_of(ms)


_PACKED_COLUMNS = ("identifier", "type", "time_ms", "channel", "source", "product_id", "category",
                   "brand", "price", "quantity", "phrase", "results_count", "action", "campaign")


def packed_events(events: Sequence[events_pb2.Event]) -> events_pb2.PackedEvents:
    """The columnar form of view, cart, wishlist, search and message events (see
    ``PackedEvents`` in events.proto): the same events at a fraction of the server's work.
    An event without a time (or at exactly 1970-01-01T00:00:00Z) gets the server's clock."""
    texts: dict[str, int] = {"": 0}
    people: dict[tuple[int, str], int] = {}
    text = lambda value: texts.setdefault(value, len(texts))  # noqa: E731
    columns: dict[str, list] = {name: [] for name in _PACKED_COLUMNS}
    zero = dict.fromkeys(_PACKED_COLUMNS, 0)
    event_ids = []
    for e in events:
        case = e.WhichOneof("payload")
        row = dict(zero, identifier=people.setdefault((e.identifier.kind, e.identifier.value),
                                                      len(people)),
                   type=events_pb2.EventType.Value(f"EVENT_TYPE_{(case or '').upper()}")
                   if case else 0,
                   time_ms=e.time.ToMilliseconds() if e.HasField("time") else 0,
                   channel=e.channel, source=text(e.source))
        if case in ("view", "add_to_cart", "remove_from_cart", "wishlist"):
            p = getattr(e, case)
            row.update(product_id=text(p.product_id), category=text(p.category),
                       brand=text(p.brand), price=p.price, quantity=p.quantity)
        elif case == "search":
            row.update(phrase=text(e.search.phrase), results_count=e.search.results_count)
        elif case == "message":
            row.update(action=e.message.action, campaign=text(e.message.campaign))
        else:
            raise ValueError(f"{case or 'no payload'} events have no packed form; send them "
                             "one by one")
        event_ids.append(e.event_id)
        for name, value in row.items():
            columns[name].append(value)
    return events_pb2.PackedEvents(
        texts=list(texts), event_ids=event_ids, **columns,
        identifier_kinds=[k for k, _ in people], identifier_values=[v for _, v in people])


def link_request(*identifiers: IdentifierLike, source: str = "", observed_at: When = None,
                 request_id: str = "") -> identity_pb2.LinkRequest:
    return identity_pb2.LinkRequest(
        identifiers=[identifier(i) for i in identifiers], source=source,
        observed_at=_timestamp(observed_at), request_id=request_id,
    )


class _Keyed:
    """A multi-callable that adds fixed metadata (the API key) to every call.

    Cheaper than a client interceptor (``grpc.intercept_channel``), which cost unary calls
    about a quarter of their rate here; the stubs never know the difference."""

    __slots__ = ("inner", "metadata")

    def __init__(self, inner: Any, metadata: tuple[tuple[str, str], ...]):
        self.inner = inner
        self.metadata = metadata

    def _with(self, kwargs: dict) -> dict:
        kwargs["metadata"] = (*self.metadata, *(kwargs.get("metadata") or ()))
        return kwargs

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        return self.inner(request, **self._with(kwargs))

    def with_call(self, request: Any, **kwargs: Any) -> Any:
        return self.inner.with_call(request, **self._with(kwargs))

    def future(self, request: Any, **kwargs: Any) -> Any:
        return self.inner.future(request, **self._with(kwargs))


class _KeyedChannel:
    """A channel whose every call carries the API key (see ``with_api_key``)."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]):
        self.channel = channel
        self.metadata = metadata

    def unary_unary(self, *args: Any, **kwargs: Any) -> _Keyed:
        return _Keyed(self.channel.unary_unary(*args, **kwargs), self.metadata)

    def unary_stream(self, *args: Any, **kwargs: Any) -> _Keyed:
        return _Keyed(self.channel.unary_stream(*args, **kwargs), self.metadata)

    def stream_unary(self, *args: Any, **kwargs: Any) -> _Keyed:
        return _Keyed(self.channel.stream_unary(*args, **kwargs), self.metadata)

    def stream_stream(self, *args: Any, **kwargs: Any) -> _Keyed:
        return _Keyed(self.channel.stream_stream(*args, **kwargs), self.metadata)

    def __getattr__(self, name: str) -> Any:  # subscribe, close, ...: the channel's own
        return getattr(self.channel, name)


def with_api_key(channel: grpc.Channel, api_key: str) -> grpc.Channel:
    """``channel`` sending ``authorization: Bearer <api_key>`` on every call."""
    return _KeyedChannel(channel, (("authorization", f"Bearer {api_key.strip()}"),))  # type: ignore[return-value]


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class IdentityClient:
    """One channel to an identity server, with a method per RPC.

    ``api_key`` defaults to ``$IDENTITY_API_KEY``. With ``tls_ca`` (the CA that signed the
    server's certificate) the channel uses TLS; add ``tls_cert`` and ``tls_key`` for mTLS.
    """

    def __init__(self, target: str = "127.0.0.1:50051", timeout: float | None = 30.0,
                 api_key: str | None = None, tls_ca: str | Path | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 tls_server_name: str | None = None):
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls_ca or tls_cert:
            credentials = grpc.ssl_channel_credentials(_read(tls_ca), _read(tls_key),
                                                       _read(tls_cert))
            channel = grpc.secure_channel(target, credentials, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        api_key = os.environ.get("IDENTITY_API_KEY", "") if api_key is None else api_key
        self._raw_channel = channel
        self.channel = with_api_key(channel, api_key) if api_key else channel
        self.timeout = timeout
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)
        self.triggers = triggers_pb2_grpc.TriggerServiceStub(self.channel)
        self.segments = segments_pb2_grpc.SegmentServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channel)

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> IdentityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def link(self, *identifiers: IdentifierLike, source: str = "", observed_at: When = None,
             request_id: str = "") -> identity_pb2.LinkResponse:
        request = link_request(*identifiers, source=source, observed_at=observed_at,
                               request_id=request_id)
        return self.identity.Link(request, timeout=self.timeout)

    def link_stream(self, batches: Iterable[Sequence[identity_pb2.LinkRequest]]
                    ) -> identity_pb2.LinkStreamResponse:
        """Send each batch as one stream message (one commit per batch)."""
        messages = (identity_pb2.LinkStreamRequest(links=batch) for batch in batches)
        return self.identity.LinkStream(messages, timeout=None)

    def resolve(self, who: IdentifierLike) -> identity_pb2.ResolveResponse:
        request = identity_pb2.ResolveRequest(identifier=identifier(who))
        return self.identity.Resolve(request, timeout=self.timeout)

    def resolve_person(self, person_id: str) -> identity_pb2.ResolveResponse:
        request = identity_pb2.ResolveRequest(person_id=person_id)
        return self.identity.Resolve(request, timeout=self.timeout)

    # -- events and profiles -------------------------------------------------

    def track(self, events: Sequence[events_pb2.Event]) -> events_pb2.TrackResponse:
        """Store a batch of events atomically (one commit)."""
        return self.events.Track(events_pb2.TrackRequest(events=events), timeout=self.timeout)

    def track_stream(self, batches: Iterable[Sequence[events_pb2.Event]]
                     ) -> events_pb2.TrackStreamResponse:
        """Send each batch as one stream message (one commit per batch)."""
        messages = (events_pb2.TrackStreamRequest(events=batch) for batch in batches)
        return self.events.TrackStream(messages, timeout=None)

    def track_stream_packed(self, batches: Iterable[events_pb2.PackedEvents]
                            ) -> events_pb2.TrackStreamResponse:
        """Send each columnar batch (``packed_events``) as one stream message."""
        messages = (events_pb2.TrackStreamRequest(packed=batch) for batch in batches)
        return self.events.TrackStream(messages, timeout=None)

    def record_purchase(self, order: events_pb2.OrderEvent, *, loyalty_card: str = "",
                        phone: str = "", customer_id: str = "", store: str = "",
                        time: When = None) -> events_pb2.RecordPurchaseResponse:
        request = events_pb2.RecordPurchaseRequest(
            order=order, loyalty_card=loyalty_card, phone=phone, customer_id=customer_id,
            store=store, time=_timestamp(time))
        return self.events.RecordPurchase(request, timeout=self.timeout)

    def get_profile(self, who: IdentifierLike, *, types: Sequence[int] = (), since: When = None,
                    until: When = None, page_size: int = 0, page_token: str = ""
                    ) -> events_pb2.GetProfileResponse:
        request = events_pb2.GetProfileRequest(
            identifier=identifier(who), types=types, since=_timestamp(since),
            until=_timestamp(until), page_size=page_size, page_token=page_token)
        return self.events.GetProfile(request, timeout=self.timeout)

    # -- audit (admin) -------------------------------------------------------

    def explain(self, a: IdentifierLike, b: IdentifierLike) -> audit_pb2.ExplainResponse:
        request = audit_pb2.ExplainRequest(a=identifier(a), b=identifier(b))
        return self.audit.Explain(request, timeout=self.timeout)

    def merge_log(self, *, since: When = None, first_seq: int = 0, sources: Sequence[str] = (),
                  outcomes: Sequence[int] = (), blocked_only: bool = False,
                  include_actions: bool = False) -> Iterator[audit_pb2.MergeLogResponse]:
        request = audit_pb2.MergeLogRequest(
            since=_timestamp(since), first_seq=first_seq, sources=sources, outcomes=outcomes,
            blocked_only=blocked_only, include_actions=include_actions)
        return self.audit.MergeLog(request, timeout=None)

    def suspicious_report(self, **thresholds: float) -> Iterator[audit_pb2.SuspiciousReportResponse]:
        """Progress messages, then one with ``finished`` and the findings."""
        request = audit_pb2.SuspiciousReportRequest(**thresholds)  # type: ignore[arg-type]
        return self.audit.SuspiciousReport(request, timeout=None)

    def person_graph(self, who: IdentifierLike | None = None, *, person_id: str = ""
                     ) -> audit_pb2.PersonGraphResponse:
        request = audit_pb2.PersonGraphRequest(person=person_target(who, person_id))
        return self.audit.PersonGraph(request, timeout=self.timeout)

    def split(self, *, link_seq: int = 0, identifier_: IdentifierLike | None = None,
              source: str = "", person: IdentifierLike | None = None, person_id: str = "",
              actor: str, reason: str) -> Iterator[audit_pb2.SplitResponse]:
        """One message per person split; give exactly one of link_seq, identifier_, source."""
        request = audit_pb2.SplitRequest(actor=actor, reason=reason)
        if link_seq:
            request.link_seq = link_seq
        elif identifier_ is not None:
            request.identifier.CopyFrom(identifier(identifier_))
        elif source:
            request.source = source
            if person is not None or person_id:
                request.person.CopyFrom(person_target(person, person_id))
        return self.audit.Split(request, timeout=None)

    def block(self, value: IdentifierLike, *, actor: str, reason: str, apply: bool = False
              ) -> audit_pb2.BlockResponse:
        request = audit_pb2.BlockRequest(identifier=identifier(value), actor=actor,
                                         reason=reason, apply=apply)
        return self.audit.Block(request, timeout=self.timeout)

    def forget(self, who: IdentifierLike | None = None, *, person_id: str = "", actor: str,
               reason: str) -> audit_pb2.ForgetResponse:
        request = audit_pb2.ForgetRequest(person=person_target(who, person_id), actor=actor,
                                          reason=reason)
        return self.audit.Forget(request, timeout=self.timeout)

    # -- triggers ------------------------------------------------------------

    def check_trigger(self, who: IdentifierLike, trigger: str | int, channel: str | int, *,
                      products: Sequence[str] = (), categories: Sequence[str] = (),
                      campaign: str = "", scenario: str = "", now: When = None,
                      event_time: When = None, reserve: bool = False,
                      idempotency_key: str = "") -> triggers_pb2.CheckTriggerResponse:
        """Ask before sending: ``check_trigger("email:a@x.com", "abandoned_cart", "email")``."""
        request = triggers_pb2.CheckTriggerRequest(
            identifier=identifier(who), trigger=trigger_kind(trigger),
            channel=message_channel(channel), product_ids=products, categories=categories,
            campaign=campaign, scenario=scenario, now=_timestamp(now),
            event_time=_timestamp(event_time), reserve=reserve, idempotency_key=idempotency_key)
        return self.triggers.CheckTrigger(request, timeout=self.timeout)

    def record_send(self, who: IdentifierLike, channel: str | int, *, trigger: str | int = 0,
                    products: Sequence[str] = (), categories: Sequence[str] = (),
                    campaign: str = "", scenario: str = "", sent_at: When = None,
                    idempotency_key: str = "", failed: bool = False
                    ) -> triggers_pb2.RecordSendResponse:
        request = triggers_pb2.RecordSendRequest(
            identifier=identifier(who), trigger=trigger_kind(trigger),
            channel=message_channel(channel), product_ids=products, categories=categories,
            campaign=campaign, scenario=scenario, sent_at=_timestamp(sent_at),
            idempotency_key=idempotency_key, failed=failed)
        return self.triggers.RecordSend(request, timeout=self.timeout)

    def filter_audience(self, settings: triggers_pb2.AudienceSettings,
                        batches: Iterable[Sequence[IdentifierLike]] = (),
                        segments: Sequence[str] = ()
                        ) -> Iterator[triggers_pb2.FilterAudienceResponse]:
        """Stream identifier batches (and segment names, with the first message) in."""
        def messages() -> Iterator[triggers_pb2.FilterAudienceRequest]:
            first = triggers_pb2.FilterAudienceRequest(settings=settings, segments=segments)
            for batch in batches:
                first.identifiers.extend(identifier(i) for i in batch)
                yield first
                first = triggers_pb2.FilterAudienceRequest()
            if first.HasField("settings"):
                yield first

        return self.triggers.FilterAudience(messages(), timeout=None)

    def set_trigger_rule(self, rule: triggers_pb2.TriggerRule
                         ) -> triggers_pb2.SetTriggerRuleResponse:
        request = triggers_pb2.SetTriggerRuleRequest(rule=rule)
        return self.triggers.SetTriggerRule(request, timeout=self.timeout)

    def get_trigger_rule(self, trigger: str | int = 0, campaign: str = ""
                         ) -> triggers_pb2.GetTriggerRuleResponse:
        request = triggers_pb2.GetTriggerRuleRequest(trigger=trigger_kind(trigger),
                                                     campaign=campaign)
        return self.triggers.GetTriggerRule(request, timeout=self.timeout)

    def list_trigger_rules(self) -> triggers_pb2.ListTriggerRulesResponse:
        return self.triggers.ListTriggerRules(triggers_pb2.ListTriggerRulesRequest(),
                                              timeout=self.timeout)

    # -- operations (admin) ----------------------------------------------------

    def stats(self) -> admin_pb2.GetStatsResponse:
        """Persons, identifiers per kind, links, events, LMDB sizes and uptime."""
        return self.admin.GetStats(admin_pb2.GetStatsRequest(), timeout=self.timeout)

    # -- segments (a tree is its JSON form as a dict, or a Condition message) --

    def count_segment(self, tree: SegmentLike = None, *, name: str = "", as_of: When = None
                      ) -> segments_pb2.CountSegmentResponse:
        request = segments_pb2.CountSegmentRequest(segment=segment_target(tree, name),
                                                   as_of=_timestamp(as_of))
        return self.segments.CountSegment(request, timeout=self.timeout)

    def export_segment(self, tree: SegmentLike = None, *, name: str = "", as_of: When = None,
                       channel: str | int = 0, reachable_only: bool = False,
                       batch_size: int = 0) -> Iterator[segments_pb2.SegmentMember]:
        """Every member once, with the address on ``channel`` (an identifier kind)."""
        kind = Kind.parse(channel) if isinstance(channel, str) and channel else int(channel or 0)
        request = segments_pb2.ExportSegmentRequest(
            segment=segment_target(tree, name), as_of=_timestamp(as_of), channel=int(kind),
            reachable_only=reachable_only, batch_size=batch_size)
        for message in self.segments.ExportSegment(request, timeout=None):
            yield from message.members

    def save_segment(self, name: str, tree: SegmentLike, description: str = ""
                     ) -> segments_pb2.SaveSegmentResponse:
        request = segments_pb2.SaveSegmentRequest(name=name, condition=condition(tree),
                                                  description=description)
        return self.segments.SaveSegment(request, timeout=self.timeout)

    def get_segment(self, name: str) -> segments_pb2.GetSegmentResponse:
        return self.segments.GetSegment(segments_pb2.GetSegmentRequest(name=name),
                                        timeout=self.timeout)

    def list_segments(self) -> segments_pb2.ListSegmentsResponse:
        return self.segments.ListSegments(segments_pb2.ListSegmentsRequest(), timeout=self.timeout)

    def delete_segment(self, name: str) -> segments_pb2.DeleteSegmentResponse:
        return self.segments.DeleteSegment(segments_pb2.DeleteSegmentRequest(name=name),
                                           timeout=self.timeout)

    def explain_membership(self, person_id: str, tree: SegmentLike = None, *, name: str = "",
                           as_of: When = None) -> segments_pb2.ExplainMembershipResponse:
        request = segments_pb2.ExplainMembershipRequest(
            person_id=person_id, segment=segment_target(tree, name), as_of=_timestamp(as_of))
        return self.segments.ExplainMembership(request, timeout=self.timeout)

    def cohort_matrix(self, as_of: When = None) -> segments_pb2.CohortMatrixResponse:
        request = segments_pb2.CohortMatrixRequest(as_of=_timestamp(as_of))
        return self.segments.CohortMatrix(request, timeout=self.timeout)

    def cohort_transitions(self, from_time: When, to_time: When = None, *, from_cell: str = "",
                           to_cell: str = "") -> segments_pb2.CohortTransitionsResponse:
        request = segments_pb2.CohortTransitionsRequest(
            from_time=_timestamp(from_time), to_time=_timestamp(to_time), from_cell=from_cell,
            to_cell=to_cell)
        return self.segments.CohortTransitions(request, timeout=self.timeout)

    def set_tag(self, who: IdentifierLike | None = None, tag: str = "", value: str = "", *,
                person_id: str = "", at: When = None, clear: bool = False
                ) -> segments_pb2.SetTagResponse:
        request = segments_pb2.SetTagRequest(
            person_id=person_id, identifier=identifier(who) if who is not None else None,
            tag=tag, value=value, at=_timestamp(at), clear=clear)
        return self.segments.SetTag(request, timeout=self.timeout)

    # -- API keys (admin role) ---------------------------------------------

    def create_key(self, *roles: str, label: str = "") -> keys_pb2.CreateKeyResponse:
        """A new key with ``roles`` ("ingest", "query", "admin"); its secret is in the reply."""
        numbers = [keys_pb2.Role.Value("ROLE_" + r.strip().upper()) for r in roles]
        return self.keys.CreateKey(keys_pb2.CreateKeyRequest(roles=numbers, label=label),
                                   timeout=self.timeout)

    def list_keys(self) -> keys_pb2.ListKeysResponse:
        return self.keys.ListKeys(keys_pb2.ListKeysRequest(), timeout=self.timeout)

    def revoke_key(self, key_id: str) -> keys_pb2.RevokeKeyResponse:
        return self.keys.RevokeKey(keys_pb2.RevokeKeyRequest(key_id=key_id), timeout=self.timeout)


def trigger_kind(value: str | int) -> int:
    """``"abandoned_cart"`` or a number -> the ``TriggerKind`` number (0: any/unset)."""
    if isinstance(value, int):
        return value
    return triggers_pb2.TriggerKind.Value("TRIGGER_KIND_" + value.strip().upper())


def message_channel(value: str | int) -> int:
    """``"email"``, ``"push"``, ``"sms"`` or a number -> the ``EventChannel`` number."""
    if isinstance(value, int):
        return value
    return events_pb2.EventChannel.Value("EVENT_CHANNEL_" + value.strip().upper())


def person_target(who: IdentifierLike | None = None, person_id: str = "") -> audit_pb2.PersonTarget:
    """A person by one of its identifiers or by its person id."""
    if who is not None:
        return audit_pb2.PersonTarget(identifier=identifier(who))
    return audit_pb2.PersonTarget(person_id=person_id)


SegmentLike = Union[dict, "segments_pb2.Condition", None]


def condition(tree: SegmentLike) -> segments_pb2.Condition:
    """A tree's JSON form (dict) or a ``Condition`` message -> a message."""
    if isinstance(tree, segments_pb2.Condition):
        return tree
    from google.protobuf.json_format import ParseDict

    return ParseDict(tree or {}, segments_pb2.Condition())


def segment_target(tree: SegmentLike = None, name: str = "") -> segments_pb2.SegmentTarget:
    """An ad-hoc tree, or a saved segment by name."""
    if name:
        return segments_pb2.SegmentTarget(name=name)
    return segments_pb2.SegmentTarget(condition=condition(tree))
