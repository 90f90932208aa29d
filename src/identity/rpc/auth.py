"""Who may call what: every RPC needs an API key whose roles cover the method.

The key travels as ``authorization: Bearer idk_...`` metadata. No key, or an unknown or
revoked one, is UNAUTHENTICATED; a valid key without the method's role is
PERMISSION_DENIED. A method missing from ``METHOD_ROLES`` needs the admin role, so a
new RPC is closed until someone decides who may call it. Health checks stay open: load
balancers and orchestrators probe them without credentials, and they reveal nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from identity.api_keys import ApiKeys, Role

__all__ = ["AuthInterceptor", "METHOD_ROLES", "OPEN_SERVICES", "bearer_metadata"]

_INGEST = {
    "identity.v1.IdentityService": ["Link", "LinkStream"],
    "identity.v1.EventService": ["Track", "TrackStream", "RecordPurchase"],
    "identity.v1.SegmentService": ["SetTag"],
    "identity.v1.TriggerService": ["RecordSend"],
}
_QUERY = {
    "identity.v1.IdentityService": ["Resolve"],
    "identity.v1.EventService": ["GetProfile"],
    "identity.v1.SegmentService": [
        "CountSegment", "ExportSegment", "SaveSegment", "GetSegment", "ListSegments",
        "DeleteSegment", "ExplainMembership", "CohortMatrix", "CohortTransitions"],
    "identity.v1.TriggerService": ["CheckTrigger", "FilterAudience", "GetTriggerRule",
                                   "ListTriggerRules"],
}
# Method -> role; None means any valid key. Everything not listed needs ADMIN (audit,
# keys, SetTriggerRule and other configuration).
METHOD_ROLES: dict[str, Role | None] = {
    **{f"/{service}/{m}": Role.INGEST for service, ms in _INGEST.items() for m in ms},
    **{f"/{service}/{m}": Role.QUERY for service, ms in _QUERY.items() for m in ms},
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": None,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": None,
}
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def bearer_metadata(api_key: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {api_key}")


def _presented_key(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
             ) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only aborts (requests stay unread)."""

    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    make: Callable[..., grpc.RpcMethodHandler]
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(refuse)


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, keys: ApiKeys):
        self.keys = keys

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails
                          ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        presented = _presented_key(details.invocation_metadata)
        if not presented:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "send an API key as 'authorization: Bearer idk_...' metadata")
        key = self.keys.verify(presented)
        if key is None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "unknown or revoked API key")
        role = METHOD_ROLES.get(method, Role.ADMIN)
        if not key.allows(role):
            held = ", ".join(sorted(r.value for r in key.roles))
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                            f"{method} needs the {role.value} role; key {key.key_id} has {held}")
        return handler
