"""``identity.v1.SegmentService``: count, export, save, explain, cohorts, tags.

Trees are handed to the domain in their JSON form (``MessageToDict`` with proto
field names), the same form files and the CLI use, so there is one validator.
"""

from __future__ import annotations

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict

from identity.app import App
from identity.errors import InvalidArgument
from identity.rpc.convert import ms_of, timestamp_of
from identity.rpc.status import translate_errors
from identity.segment_book import SavedSegment
from identity.segmentation import Target
from identity.v1 import segments_pb2, segments_pb2_grpc

__all__ = ["SegmentServicer", "add_to_server", "condition_dict", "condition_pb"]


def condition_dict(condition: segments_pb2.Condition) -> dict:
    return MessageToDict(condition, preserving_proto_field_name=True)


def condition_pb(tree: dict) -> segments_pb2.Condition:
    return ParseDict(tree, segments_pb2.Condition())


def _target(message: segments_pb2.SegmentTarget, field: str = "segment") -> Target:
    which = message.WhichOneof("target")
    if which == "condition":
        return Target(condition=condition_dict(message.condition))
    if which == "name":
        return Target(name=message.name)
    raise InvalidArgument.field(field, "set condition or name")


def _saved(segment: SavedSegment) -> segments_pb2.SavedSegment:
    return segments_pb2.SavedSegment(name=segment.name, condition=condition_pb(segment.condition),
                                     description=segment.description,
                                     updated_at=timestamp_of(segment.updated_ms))


class SegmentServicer(segments_pb2_grpc.SegmentServiceServicer):
    def __init__(self, app: App):
        self.app = app
        self.segments = app.segments

    @translate_errors
    def CountSegment(self, request, context):  # noqa: N802 (gRPC method name)
        result = self.segments.count(_target(request.segment), ms_of(request, "as_of"))
        return segments_pb2.CountSegmentResponse(count=result.count, persons=result.persons,
                                                 micros=result.micros)

    def ExportSegment(self, request, context):  # noqa: N802
        try:
            if request.batch_size > 100_000:
                raise InvalidArgument.field("batch_size", "at most 100000")
            batches = self.segments.export(
                _target(request.segment), ms_of(request, "as_of"), int(request.channel),
                request.reachable_only, request.batch_size or 1000)
            first = next(batches, None)
        except Exception as exc:  # errors before the first message get a proper status
            _abort(context, exc)
            return
        if first is None:
            return
        yield _members(first)
        for batch in batches:
            yield _members(batch)

    @translate_errors
    def SaveSegment(self, request, context):  # noqa: N802
        segment, replaced = self.segments.save(request.name, condition_dict(request.condition),
                                               request.description)
        return segments_pb2.SaveSegmentResponse(segment=_saved(segment), replaced=replaced)

    @translate_errors
    def GetSegment(self, request, context):  # noqa: N802
        return segments_pb2.GetSegmentResponse(segment=_saved(self.segments.get(request.name)))

    @translate_errors
    def ListSegments(self, request, context):  # noqa: N802
        return segments_pb2.ListSegmentsResponse(
            segments=[_saved(s) for s in self.segments.list()])

    @translate_errors
    def DeleteSegment(self, request, context):  # noqa: N802
        return segments_pb2.DeleteSegmentResponse(deleted=self.segments.delete(request.name))

    @translate_errors
    def ExplainMembership(self, request, context):  # noqa: N802
        if not request.person_id.strip():
            raise InvalidArgument.field("person_id", "is empty")
        result = self.segments.explain(request.person_id, _target(request.segment),
                                       ms_of(request, "as_of"))
        return segments_pb2.ExplainMembershipResponse(
            person_id=result.person_id, member=result.member,
            nodes=[segments_pb2.ExplainedNode(path=p, value=v, measured=m)
                   for p, v, m in result.nodes])

    @translate_errors
    def CohortMatrix(self, request, context):  # noqa: N802
        cells, without = self.segments.cohort_matrix(ms_of(request, "as_of"))
        return segments_pb2.CohortMatrixResponse(
            cells=[segments_pb2.CohortCell(name=n, count=c) for n, c in cells],
            without_orders=without)

    @translate_errors
    def CohortTransitions(self, request, context):  # noqa: N802
        start = ms_of(request, "from_time")
        if start is None:
            raise InvalidArgument.field("from_time", "is required")
        moves = self.segments.cohort_transitions(start, ms_of(request, "to_time"),
                                                 request.from_cell, request.to_cell)
        return segments_pb2.CohortTransitionsResponse(transitions=[
            segments_pb2.CohortTransition(person_id=p, from_cell=a, to_cell=b)
            for p, a, b in moves])

    @translate_errors
    def SetTag(self, request, context):  # noqa: N802
        if request.HasField("identifier"):
            who = self.app.identifier(request.identifier.kind, request.identifier.value)
        elif request.person_id.strip():
            who = request.person_id.strip()
        else:
            raise InvalidArgument.field("person_id", "give a person id or an identifier")
        person = self.segments.set_tag(who, request.tag, request.value, ms_of(request, "at"),
                                       request.clear)
        return segments_pb2.SetTagResponse(person_id=person)


def _members(batch: list[tuple[str, str]]) -> segments_pb2.ExportSegmentResponse:
    return segments_pb2.ExportSegmentResponse(
        members=[segments_pb2.SegmentMember(person_id=p, address=a) for p, a in batch])


@translate_errors
def _raise(_self: object, exc: Exception, _context: grpc.ServicerContext) -> None:
    raise exc


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    _raise(None, exc, context)


def add_to_server(app: App, server: grpc.Server) -> str:
    """Register the servicer; returns its full service name (for health and reflection)."""
    segments_pb2_grpc.add_SegmentServiceServicer_to_server(SegmentServicer(app), server)
    return segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name
