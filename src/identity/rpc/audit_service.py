"""``identity.v1.AuditService``: thin adapters over ``identity.audit.Audit``."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from grpc_status import rpc_status

from identity.actions import Action
from identity.app import App
from identity.audit import LoggedLink, PersonGraph
from identity.errors import IdentityError, InvalidArgument
from identity.identifiers import Identifier
from identity.linklog import LinkRecord, Outcome
from identity.report import Finding, ReportSettings, identifier_graph
from identity.rpc.convert import identifier_pb, ms_of, timestamp_of
from identity.rpc.status import status_of, translate_errors
from identity.split import SplitOutcome, Who
from identity.v1 import audit_pb2, audit_pb2_grpc

__all__ = ["AuditServicer", "add_to_server"]

log = logging.getLogger(__name__)


def _streamed(method: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """``translate_errors`` for server-streaming methods: errors raised while iterating."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except IdentityError as exc:
            context.abort_with_status(rpc_status.to_status(status_of(exc)))
        except Exception:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper


def _outcomes(numbers: Iterable[int]) -> list[Outcome]:
    """The outcome filter; an unknown number is the caller's mistake, not ours."""
    known = {int(o) for o in Outcome}
    for i, number in enumerate(numbers):
        if number and number not in known:
            raise InvalidArgument.field(f"outcomes[{i}]", f"unknown outcome {number}")
    return [Outcome(o) for o in numbers if o]


def _evidence(rec: LinkRecord) -> audit_pb2.LinkEvidence:
    return audit_pb2.LinkEvidence(link_seq=rec.seq, source=rec.source,
                                  observed_at=timestamp_of(rec.observed_ms),
                                  request_id=rec.request_id, outcome=int(rec.outcome))


def _logged_pb(item: LoggedLink) -> audit_pb2.LoggedLink:
    known = [identifier_pb(i) for i in item.identifiers if i is not None]
    return audit_pb2.LoggedLink(link=_evidence(item.link), identifiers=known,
                                erased_identifiers=len(item.identifiers) - len(known),
                                detail=item.link.detail, ignored=item.link.ignored,
                                removed_by_action=item.cut_by)


def _split_pb(outcome: SplitOutcome) -> audit_pb2.SplitResponse:
    return audit_pb2.SplitResponse(
        action_seq=outcome.action_seq, person_id_before=outcome.before,
        pieces=[audit_pb2.PersonPiece(person_id=p, identifiers=n) for p, n in outcome.pieces],
        done=outcome.done, total=outcome.total)


def _finding_pb(finding: Finding) -> audit_pb2.Finding:
    return audit_pb2.Finding(kind=int(finding.kind), person_id=finding.person_id,
                             score=finding.score, detail=finding.detail,
                             identifiers=[identifier_pb(i) for i in finding.identifiers],
                             link_seqs=finding.links)


def _graph_pb(person: PersonGraph) -> audit_pb2.PersonGraphResponse:
    g = identifier_graph(person.links)
    return audit_pb2.PersonGraphResponse(
        person_id=person.person_id,
        nodes=[audit_pb2.GraphNode(node=n.node, identifier=identifier_pb(n.identifier))
               for n in person.nodes],
        edges=[audit_pb2.GraphEdge(left=u, right=v, link_seqs=d["links"], source=d["source"])
               for u, v, d in g.edges(data=True)])


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, app: App):
        self.app = app

    def _ident(self, message: Any, field: str) -> Identifier:
        if not message.HasField(field):
            raise InvalidArgument.field(field, "is required")
        value = getattr(message, field)
        return self.app.identifier(value.kind, value.value, field)

    def _target(self, request: Any, field: str = "person") -> tuple[Identifier | None, str]:
        target = getattr(request, field)
        which = target.WhichOneof("target")
        if which == "identifier":
            return self._ident(target, "identifier"), ""
        if which == "person_id":
            return None, target.person_id
        raise InvalidArgument.field(f"{field}.target", "set identifier or person_id")

    def _action_pb(self, action: Action) -> audit_pb2.AdminAction:
        return audit_pb2.AdminAction(
            action_seq=action.seq, kind=int(action.kind), at=timestamp_of(action.at_ms),
            actor=action.actor, reason=action.reason, link_seqs=action.links,
            identifiers=[identifier_pb(i) for i in self.app.audit.identifiers(action.nodes)],
            person_ids=self.app.audit.person_ids(action.roots), source=action.source,
            note=action.note)

    @translate_errors
    def Explain(self, request, context):  # noqa: N802 (gRPC method name)
        found = self.app.audit.explain(self._ident(request, "a"), self._ident(request, "b"))
        return audit_pb2.ExplainResponse(
            same_person=found.same_person, person_id=found.person_id,
            other_person_id=found.other_person_id,
            steps=[audit_pb2.EvidenceStep(left=identifier_pb(s.left.identifier),
                                          right=identifier_pb(s.right.identifier),
                                          link=_evidence(s.link)) for s in found.steps])

    @_streamed
    def MergeLog(self, request, context):  # noqa: N802
        since = ms_of(request, "since") or 0
        for batch in self.app.audit.merge_log(
                since_ms=since, first_seq=request.first_seq or 1, sources=request.sources,
                outcomes=_outcomes(request.outcomes), with_ignored=request.blocked_only):
            yield audit_pb2.MergeLogResponse(links=[_logged_pb(item) for item in batch])
        if request.include_actions:
            actions = self.app.audit.action_log(since_ms=since)
            for i in range(0, len(actions), 512):
                yield audit_pb2.MergeLogResponse(
                    actions=[self._action_pb(a) for a in actions[i : i + 512]])

    @_streamed
    def SuspiciousReport(self, request, context):  # noqa: N802
        defaults = ReportSettings()
        if not (math.isfinite(request.degree_factor) and 0 <= request.degree_factor <= 1e6):
            raise InvalidArgument.field("degree_factor", "must be a number from 0 to 1000000")
        settings = ReportSettings(
            max_size=request.max_size or defaults.max_size,
            min_degree=request.min_degree or defaults.min_degree,
            degree_factor=request.degree_factor or defaults.degree_factor,
            bridge_min_side=request.bridge_min_side or defaults.bridge_min_side,
            limit=request.limit or defaults.limit)
        for item in self.app.audit.report_stream(settings):
            if isinstance(item, list):
                yield audit_pb2.SuspiciousReportResponse(
                    findings=[_finding_pb(f) for f in item], finished=True)
            else:
                stage, done, total = item
                yield audit_pb2.SuspiciousReportResponse(
                    progress=audit_pb2.ReportProgress(stage=stage, done=done, total=total))

    @translate_errors
    def PersonGraph(self, request, context):  # noqa: N802
        identifier, person_id = self._target(request)
        return _graph_pb(self.app.audit.person_graph_of(identifier, person_id))

    @_streamed
    def Split(self, request, context):  # noqa: N802
        who = Who(request.actor, request.reason)
        target = request.WhichOneof("target")
        if target == "link_seq":
            yield _split_pb(self.app.audit.split_link(request.link_seq, who))
        elif target == "identifier":
            yield _split_pb(self.app.audit.split_identifier(self._ident(request, "identifier"),
                                                            who))
        elif target == "source":
            identifier, person_id = (self._target(request) if request.HasField("person")
                                     else (None, ""))
            for outcome in self.app.audit.split_source(request.source, who, identifier,
                                                       person_id):
                yield _split_pb(outcome)
        else:
            raise InvalidArgument.field("target", "set link_seq, identifier or source")

    @translate_errors
    def Block(self, request, context):  # noqa: N802
        result = self.app.audit.block(self._ident(request, "identifier"),
                                      Who(request.actor, request.reason), apply=request.apply)
        return audit_pb2.BlockResponse(action_seq=result.action_seq,
                                       split=_split_pb(result.split) if result.split else None)

    @translate_errors
    def Forget(self, request, context):  # noqa: N802
        identifier, person_id = self._target(request)
        result = self.app.audit.forget(Who(request.actor, request.reason), identifier, person_id)
        return audit_pb2.ForgetResponse(action_seq=result.action_seq,
                                        identifiers=result.identifiers, links=result.links,
                                        events=result.events)


def add_to_server(app: App, server: grpc.Server) -> str:
    """Register the servicer; returns its full service name (for health and reflection)."""
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(app), server)
    return audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
