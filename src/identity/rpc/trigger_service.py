"""``identity.v1.TriggerService``: CheckTrigger, RecordSend, FilterAudience and rules."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from identity.app import App
from identity.errors import IdentityError, InvalidArgument
from identity.events import Channel
from identity.local_time import Period, QuietWindow
from identity.rpc.convert import ms_of, set_ms
from identity.rpc.status import status_of, translate_errors
from identity.suppression import Decision
from identity.trigger_rules import Cap, CapScope, PurchaseMatch, TriggerKind, TriggerRule
from identity.triggers import Audience, Recipient
from identity.v1 import triggers_pb2, triggers_pb2_grpc

__all__ = ["TriggerServicer", "add_to_server", "rule_of", "rule_pb"]


def _decision_pb(decision: Decision) -> triggers_pb2.CheckTriggerResponse:
    reply = triggers_pb2.CheckTriggerResponse(
        verdict=decision.verdict, person_id=decision.person_id,
        reserved=decision.reserved, replayed=decision.replayed, rule=decision.rule)
    add = reply.reasons.add
    for reason in decision.reasons:
        message = add(code=reason.code, detail=reason.detail)
        attributes = message.attributes
        for key, value in reason.attributes:  # (a third cheaper than a dict or ``update``)
            attributes[key] = value
        if reason.until_ms is not None:
            set_ms(message.until, reason.until_ms)
    if decision.address is not None:
        address = reply.address
        address.kind, address.value = decision.address
    if decision.next_allowed_ms is not None:
        set_ms(reply.next_allowed, decision.next_allowed_ms)
    return reply


def _recipient_pb(r: Recipient) -> triggers_pb2.Recipient:
    message = triggers_pb2.Recipient(person_id=r.person_id, verdict=int(r.verdict))
    message.address.kind = int(r.address.kind)
    message.address.value = r.address.value
    if r.next_allowed_ms is not None:
        set_ms(message.next_allowed, r.next_allowed_ms)
    return message


def _summary_pb(a: Audience) -> triggers_pb2.AudienceSummary:
    return triggers_pb2.AudienceSummary(
        identifiers=a.identifiers, persons=a.persons, duplicates=a.duplicates, send=a.send,
        deferred=a.deferred, suppressed=a.suppressed,
        suppressed_by_reason=[triggers_pb2.ReasonCount(code=c, count=n)
                              for c, n in sorted(a.by_reason.items())])


def _duration_ms(message: duration_pb2.Duration) -> int:
    return message.seconds * 1000 + message.nanos // 1_000_000


def _duration(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def rule_of(message: triggers_pb2.TriggerRule, path: str = "rule") -> TriggerRule:
    """A domain rule from its message; InvalidArgument naming the field when malformed."""
    def enum(cls, value: int, where: str):
        try:
            return cls(value)
        except ValueError:
            raise InvalidArgument.field(f"{path}.{where}", f"unknown value {value}") from None

    caps = []
    for i, cap in enumerate(message.caps):
        where = f"caps[{i}]"
        channel = enum(Channel, cap.channel, f"{where}.channel") if cap.channel else None
        caps.append(Cap(enum(CapScope, cap.scope or 1, f"{where}.scope"), channel, cap.limit,
                        enum(Period, cap.period or 1, f"{where}.period"), cap.rolling))
    quiet = []
    for i, q in enumerate(message.quiet_hours):
        try:
            quiet.append((enum(Channel, q.channel, f"quiet_hours[{i}].channel"),
                          QuietWindow.parse(q.window)))
        except ValueError as exc:
            raise InvalidArgument.field(f"{path}.quiet_hours[{i}].window", str(exc)) from None
    return TriggerRule(
        trigger=enum(TriggerKind, message.trigger, "trigger") if message.trigger else None,
        campaign=message.campaign.strip(),
        transactional=message.transactional,
        caps=tuple(caps),
        dedupe_window_ms=_duration_ms(message.dedupe_window),
        quiet_hours=tuple(sorted(quiet, key=lambda pair: pair[0])),
        exclusion_segments=tuple(s.strip() for s in message.exclusion_segments),
        purchase_match=enum(PurchaseMatch, message.purchase_match or 1, "purchase_match"),
        purchase_lookback_ms=_duration_ms(message.purchase_lookback),
        consent_required=frozenset(enum(Channel, c, f"consent_required[{i}]")
                                   for i, c in enumerate(message.consent_required)),
    )


def rule_pb(rule: TriggerRule) -> triggers_pb2.TriggerRule:
    return triggers_pb2.TriggerRule(
        trigger=int(rule.trigger or 0), campaign=rule.campaign,
        transactional=rule.transactional,
        caps=[triggers_pb2.FrequencyCap(scope=int(c.scope), channel=int(c.channel or 0),
                                        limit=c.limit, period=int(c.period), rolling=c.rolling)
              for c in rule.caps],
        dedupe_window=_duration(rule.dedupe_window_ms),
        quiet_hours=[triggers_pb2.QuietHours(channel=int(c), window=str(w))
                     for c, w in rule.quiet_hours],
        exclusion_segments=list(rule.exclusion_segments),
        purchase_match=int(rule.purchase_match),
        purchase_lookback=_duration(rule.purchase_lookback_ms),
        consent_required=sorted(int(c) for c in rule.consent_required),
    )


class TriggerServicer(triggers_pb2_grpc.TriggerServiceServicer):
    def __init__(self, app: App):
        self.triggers = app.triggers

    def _template(self, request, prefix: str = "", *, require_trigger: bool = True,
                  now_field: str = "now", reserve: bool = False):
        return self.triggers.template(
            trigger=request.trigger, channel=request.channel, campaign=request.campaign,
            scenario=request.scenario, products=request.product_ids,  # read, not kept
            categories=request.categories, now_ms_=ms_of(request, now_field),
            event_ms=ms_of(request, "event_time") if now_field == "now" else None,
            reserve=reserve, idempotency_key=request.idempotency_key,
            require_trigger=require_trigger, prefix=prefix, now_field=now_field)

    @translate_errors
    def CheckTrigger(self, request, context):  # noqa: N802 (gRPC method name)
        template = self._template(request, reserve=request.reserve)
        who = (request.identifier.kind, request.identifier.value)
        return _decision_pb(self.triggers.check(who, template))

    @translate_errors
    def RecordSend(self, request, context):  # noqa: N802
        template = self._template(request, require_trigger=False, now_field="sent_at")
        who = (request.identifier.kind, request.identifier.value)
        outcome = self.triggers.record(who, template, request.failed)
        return triggers_pb2.RecordSendResponse(
            recorded=outcome.recorded, matched_reservation=outcome.matched_reservation,
            person_id=outcome.person_id)

    def FilterAudience(self, request_iterator, context):  # noqa: N802
        return _filter_audience(self, request_iterator, context)

    @translate_errors
    def SetTriggerRule(self, request, context):  # noqa: N802
        rule, replaced = self.triggers.set_rule(rule_of(request.rule))
        return triggers_pb2.SetTriggerRuleResponse(rule=rule_pb(rule), replaced=replaced)

    @translate_errors
    def GetTriggerRule(self, request, context):  # noqa: N802
        rule, origin = self.triggers.rule_for(request.trigger, request.campaign)
        return triggers_pb2.GetTriggerRuleResponse(rule=rule_pb(rule), matched=rule.name,
                                                   origin=origin)

    @translate_errors
    def ListTriggerRules(self, request, context):  # noqa: N802
        book = self.triggers.rules
        return triggers_pb2.ListTriggerRulesResponse(
            default_rule=rule_pb(book.default), rules=[rule_pb(r) for r in book.rules()],
            shop_time_zone=book.shop_time_zone)


def _filter_audience(servicer: TriggerServicer, request_iterator, context):
    """A generator servicer: errors abort through the same mapping as unary calls."""
    audience = None
    batches = 0
    try:
        for message in request_iterator:
            if audience is None:
                if not message.HasField("settings"):
                    raise InvalidArgument.field("settings", "required in the first message")
                s = message.settings
                template = servicer.triggers.template(
                    trigger=s.trigger, channel=s.channel, campaign=s.campaign,
                    scenario=s.scenario, products=list(s.product_ids),
                    categories=list(s.categories), now_ms_=ms_of(s, "now"),
                    event_ms=ms_of(s, "event_time"), reserve=s.reserve,
                    idempotency_key=s.idempotency_key, require_trigger=False,
                    prefix="settings.")
                audience = servicer.triggers.audience(template)
            elif message.HasField("settings"):
                raise InvalidArgument.field(f"batch[{batches}].settings",
                                            "only the first message carries settings")
            try:
                recipients = servicer.triggers.audience_batch(
                    audience, [(i.kind, i.value) for i in message.identifiers],
                    list(message.segments))
            except InvalidArgument as exc:
                raise exc.under(f"batch[{batches}]") from None
            batches += 1
            yield triggers_pb2.FilterAudienceResponse(
                recipients=[_recipient_pb(r) for r in recipients])
        if audience is None:
            raise InvalidArgument.field("settings", "the stream carried no message")
        yield triggers_pb2.FilterAudienceResponse(summary=_summary_pb(audience))
    except IdentityError as exc:
        context.abort_with_status(rpc_status.to_status(status_of(exc)))


def add_to_server(app: App, server: grpc.Server) -> str:
    """Register the servicer; returns its full service name (for health and reflection)."""
    triggers_pb2_grpc.add_TriggerServiceServicer_to_server(TriggerServicer(app), server)
    return triggers_pb2.DESCRIPTOR.services_by_name["TriggerService"].full_name
