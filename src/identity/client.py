"""A small typed client over the gRPC stubs; the CLI and the tests use it.

    with IdentityClient("127.0.0.1:50051") as client:
        client.link("customer_id:C-1", "email:anna@example.com", source="web")
        person = client.resolve("email:Anna@Example.com").person
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Union

import grpc

from identity.identifiers import Kind
from identity.rpc.convert import timestamp_of
from identity.v1 import common_pb2, identity_pb2, identity_pb2_grpc

__all__ = ["IdentityClient", "IdentifierLike", "identifier", "link_request"]

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


def link_request(*identifiers: IdentifierLike, source: str = "", observed_at: When = None,
                 request_id: str = "") -> identity_pb2.LinkRequest:
    return identity_pb2.LinkRequest(
        identifiers=[identifier(i) for i in identifiers], source=source,
        observed_at=_timestamp(observed_at), request_id=request_id,
    )


class IdentityClient:
    """One channel to an identity server, with a method per RPC."""

    def __init__(self, target: str = "127.0.0.1:50051", timeout: float | None = 30.0):
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ])
        self.timeout = timeout
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

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
