"""``identity.v1.IdentityService``: Link, LinkStream, Resolve."""

from __future__ import annotations

from collections import Counter

import grpc

from identity.app import App
from identity.errors import InvalidArgument
from identity.graph import LinkResult
from identity.rpc.convert import fill_person, identifier_pb, link_input
from identity.rpc.limits import throttled
from identity.rpc.status import translate_errors
from identity.v1 import identity_pb2, identity_pb2_grpc

__all__ = ["IdentityServicer", "add_to_server"]

_SUMMARY_FIELDS = {
    1: "created", 2: "added", 3: "merged", 4: "already_linked",
    5: "refused_conflict", 6: "refused_limit", 7: "ignored",
}


def _link_response(result: LinkResult) -> identity_pb2.LinkResponse:
    return identity_pb2.LinkResponse(
        person_id=result.person_id,
        outcome=int(result.outcome),
        detail=result.detail,
        absorbed_person_ids=result.absorbed_person_ids,
        ignored=[identity_pb2.IgnoredIdentifier(identifier=identifier_pb(i), reason=r)
                 for i, r in result.ignored],
        link_seq=result.link_seq,
    )


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, app: App):
        self.app = app

    @translate_errors
    def Link(self, request, context):  # noqa: N802 (gRPC method name)
        return _link_response(self.app.link(link_input(request)))

    @translate_errors
    def LinkStream(self, request_iterator, context):  # noqa: N802
        outcomes: Counter[int] = Counter()
        batches = links = 0
        messages = throttled(request_iterator, self.app.settings.max_stream_items_per_second,
                             lambda m: len(m.links))
        inputs = ([link_input(r) for r in message.links] for message in messages)
        try:
            for results in self.app.link_batches(inputs):
                batches += 1
                links += len(results)
                outcomes.update(r.outcome for r in results)
        except InvalidArgument as exc:
            note = f"{batches} earlier batches were committed; this one and later ones were not"
            raise exc.under(f"batch[{batches}]", note) from None
        return identity_pb2.LinkStreamResponse(
            batches=batches, links=links,
            **{name: outcomes[number] for number, name in _SUMMARY_FIELDS.items()},
        )

    @translate_errors
    def Resolve(self, request, context):  # noqa: N802
        target = request.WhichOneof("target")
        if target == "identifier":
            identifier = self.app.identifier(request.identifier.kind, request.identifier.value)
            person = self.app.resolve(identifier)
        elif target == "person_id":
            person = self.app.resolve_person_id(request.person_id)
        else:
            raise InvalidArgument.field("target", "set identifier or person_id")
        response = identity_pb2.ResolveResponse()
        fill_person(response.person, person)
        return response


def add_to_server(app: App, server: grpc.Server) -> str:
    """Register the servicer; returns its full service name (for health and reflection)."""
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(app), server)
    return identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name
