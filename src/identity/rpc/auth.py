"""Who may call what: every RPC needs an API key whose roles cover the method.

The key travels as ``authorization: Bearer idk_...`` metadata. No key, or an unknown or
revoked one, is UNAUTHENTICATED; a valid key without the method's role is
PERMISSION_DENIED. A method missing from ``METHOD_ROLES`` needs the admin role, so a
new RPC is closed until someone decides who may call it. Health checks stay open: load
balancers and orchestrators probe them without credentials, and they reveal nothing.
"""

from __future__ import annotations

from typing import Any

import grpc

from identity.api_keys import ApiKeys, Role
from identity.rpc.gate import behavior_of, with_behavior

__all__ = ["Authorizer", "METHOD_ROLES", "OPEN_SERVICES"]

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


def _presented_key(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class Authorizer:
    """The gate's key check (``identity.rpc.gate``): the method's role is looked up once."""

    def __init__(self, keys: ApiKeys):
        self.keys = keys

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(OPEN_SERVICES):
            return handler
        role = METHOD_ROLES.get(method, Role.ADMIN)
        needs = f"{method} needs the {role.value} role" if role else ""
        inner, verify = behavior_of(handler), self.keys.verify

        def authorized(request: Any, context: grpc.ServicerContext) -> Any:
            presented = _presented_key(context.invocation_metadata())
            if not presented:
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "send an API key as 'authorization: Bearer idk_...' metadata")
            key = verify(presented)
            if key is None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
            if not key.allows(role):
                held = ", ".join(sorted(r.value for r in key.roles))
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"{needs}; key {key.key_id} has {held}")
            return inner(request, context)

        return with_behavior(handler, authorized)
