"""``identity.v1.KeyService``: CreateKey, ListKeys, RevokeKey (admin role)."""

from __future__ import annotations

import grpc

from identity.api_keys import ApiKey, ApiKeys, Role
from identity.errors import InvalidArgument
from identity.rpc.convert import timestamp_of
from identity.rpc.status import translate_errors
from identity.v1 import keys_pb2, keys_pb2_grpc

__all__ = ["KeyServicer", "add_to_server", "key_pb", "role_of", "ROLE_NUMBERS"]

ROLE_NUMBERS = {Role.INGEST: keys_pb2.ROLE_INGEST, Role.QUERY: keys_pb2.ROLE_QUERY,
                Role.ADMIN: keys_pb2.ROLE_ADMIN}
_ROLES = {number: role for role, number in ROLE_NUMBERS.items()}


def role_of(number: int, field_path: str) -> Role:
    if number not in _ROLES:
        raise InvalidArgument.field(field_path, "use ROLE_INGEST, ROLE_QUERY or ROLE_ADMIN")
    return _ROLES[number]


def key_pb(key: ApiKey) -> keys_pb2.ApiKey:
    message = keys_pb2.ApiKey(key_id=key.key_id, label=key.label, from_settings=key.from_settings,
                              roles=sorted(ROLE_NUMBERS[r] for r in key.roles))
    if key.created_ms:
        message.created_at.CopyFrom(timestamp_of(key.created_ms))
    if key.revoked_ms:
        message.revoked_at.CopyFrom(timestamp_of(key.revoked_ms))
    return message


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: ApiKeys):
        self.keys = keys

    @translate_errors
    def CreateKey(self, request, context):  # noqa: N802 (gRPC method name)
        roles = [role_of(r, f"roles[{i}]") for i, r in enumerate(request.roles)]
        issued = self.keys.create(roles, request.label)
        return keys_pb2.CreateKeyResponse(key=key_pb(issued.key), secret_key=issued.secret_key)

    @translate_errors
    def ListKeys(self, request, context):  # noqa: N802
        return keys_pb2.ListKeysResponse(keys=[key_pb(k) for k in self.keys.list()])

    @translate_errors
    def RevokeKey(self, request, context):  # noqa: N802
        if not request.key_id:
            raise InvalidArgument.field("key_id", "required")
        return keys_pb2.RevokeKeyResponse(key=key_pb(self.keys.revoke(request.key_id)))


def add_to_server(keys: ApiKeys, server: grpc.Server) -> str:
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(keys), server)
    return keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name
