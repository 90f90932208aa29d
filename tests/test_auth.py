"""Every RPC needs an API key whose roles cover it; keys are created, listed and revoked by admins."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from identity.api_keys import digest_of, parse_key
from identity.client import IdentityClient, identifier, link_request
from identity.config import Settings
from identity.rpc.auth import METHOD_ROLES
from identity.v1 import (
    admin_pb2, audit_pb2, events_pb2, identity_pb2, keys_pb2, segments_pb2, triggers_pb2,
)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    return caught.value.code()


def _key(client: IdentityClient, *roles: str) -> str:
    return client.create_key(*roles, label="test").secret_key


def test_a_call_without_a_key_is_unauthenticated_and_writes_nothing(server) -> None:
    with IdentityClient(server.address, api_key="") as anonymous:
        assert _code(lambda: anonymous.link("email:anna@example.com")) == \
            grpc.StatusCode.UNAUTHENTICATED
        batch = [link_request("email:bob@example.com")]
        assert _code(lambda: anonymous.link_stream([batch])) == \
            grpc.StatusCode.UNAUTHENTICATED
    with IdentityClient(server.address) as admin:
        assert _code(lambda: admin.resolve("email:anna@example.com")) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("presented", [
    "idk_nosuchkey_c2VjcmV0", "not-a-key", "idk_testadmin_wrong-secret", "idk__", "x" * 5000,
])
def test_unknown_or_malformed_keys_are_unauthenticated(server, presented: str) -> None:
    with IdentityClient(server.address, api_key=presented) as client:
        assert _code(lambda: client.resolve("email:anna@example.com")) == \
            grpc.StatusCode.UNAUTHENTICATED


def test_health_checks_need_no_key(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_roles_decide_what_a_key_may_call(client, server) -> None:
    client.link("customer_id:C-1", "email:anna@example.com")
    with IdentityClient(server.address, api_key=_key(client, "ingest")) as ingest, \
            IdentityClient(server.address, api_key=_key(client, "query")) as query:
        assert ingest.link("email:anna@example.com", "phone:+447700900123").person_id == "C-1"
        assert ingest.track([events_pb2.Event(
            identifier=identifier("email:anna@example.com"),
            event_id="e1", view=events_pb2.ProductEvent(product_id="kettle"))]).stored == 1
        assert _code(lambda: ingest.resolve("email:anna@example.com")) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: ingest.explain("email:anna@example.com", "customer_id:C-1")) == \
            grpc.StatusCode.PERMISSION_DENIED

        assert query.resolve("phone:+447700900123").person.person_id == "C-1"
        viewed = {"event": {"filter": {"type": "view"},
                            "window": {"from_days_ago": 1, "to_days_ago": 0}}}
        assert query.count_segment(viewed).count == 1
        assert _code(lambda: query.link("email:bob@example.com")) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: query.create_key("admin")) == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError):
        client.resolve("email:bob@example.com")  # the refused link wrote nothing


def test_a_refusal_names_the_role_the_method_needs(client, server) -> None:
    with IdentityClient(server.address, api_key=_key(client, "query")) as query:
        with pytest.raises(grpc.RpcError) as caught:
            query.link("email:anna@example.com")
    assert "needs the ingest role" in caught.value.details()


def test_a_key_with_two_roles_may_do_both(client, server) -> None:
    with IdentityClient(server.address, api_key=_key(client, "ingest", "query")) as both:
        both.link("customer_id:C-2", "email:bo@example.com")
        assert both.resolve("email:bo@example.com").person.person_id == "C-2"


def test_a_revoked_key_fails_at_once_and_listing_never_shows_secrets(client, server) -> None:
    issued = client.create_key("query", label="dashboard")
    key_id = issued.key.key_id
    assert issued.secret_key.startswith(f"idk_{key_id}_")
    with IdentityClient(server.address, api_key=issued.secret_key) as dashboard:
        dashboard.list_segments()
        listed = {k.key_id: k for k in client.list_keys().keys}
        assert listed[key_id].label == "dashboard"
        assert list(listed[key_id].roles) == [keys_pb2.ROLE_QUERY]
        assert not listed[key_id].HasField("revoked_at")
        assert listed["testadmin"].from_settings
        assert issued.secret_key.split("_", 2)[2] not in str(client.list_keys())

        assert client.revoke_key(key_id).key.HasField("revoked_at")
        assert _code(lambda: dashboard.list_segments()) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: client.revoke_key("nosuchkey")) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: client.revoke_key("testadmin")) == grpc.StatusCode.INVALID_ARGUMENT


def test_keys_are_stored_as_digests_only(client, server) -> None:
    issued = client.create_key("ingest")
    _, secret = parse_key(issued.secret_key)
    with server.app.store.read() as tx:
        stored = b"".join(k + v for k, v in tx.items("api_keys"))
    assert secret.encode() not in stored
    assert digest_of(secret).hex().encode() in stored


def test_creating_a_key_without_a_role_is_refused(client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.keys.CreateKey(keys_pb2.CreateKeyRequest(roles=[]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "roles" in caught.value.details()


def test_every_rpc_has_a_role_or_needs_admin() -> None:
    """METHOD_ROLES names only real methods, and admin-only methods are the ones meant."""
    methods = {f"/{service.full_name}/{method.name}"
               for module in (identity_pb2, events_pb2, segments_pb2, triggers_pb2, audit_pb2,
                              keys_pb2, admin_pb2)
               for service in module.DESCRIPTOR.services_by_name.values()
               for method in service.methods}
    listed = {m for m in METHOD_ROLES if not m.startswith("/grpc.")}
    assert listed <= methods, listed - methods
    admin_only = {m.rsplit("/", 1)[1] for m in methods - listed}
    assert admin_only == {"Explain", "MergeLog", "SuspiciousReport", "PersonGraph", "Split",
                          "Block", "Forget", "SetTriggerRule", "CreateKey", "ListKeys",
                          "RevokeKey", "GetStats"}


def test_a_key_provisioned_in_the_settings_file_works(tmp_path, make_server) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "identity.cli", "keys", "create", "--role", "query",
         "--label", 'the "pos" team', "--print-config"],
        check=True, capture_output=True, text=True).stdout
    key = printed.splitlines()[0].rsplit(" ", 1)[1]
    config = tmp_path / "identity.toml"
    config.write_text(printed)
    keys = Settings.load(config, env={}).api_keys
    running = make_server(api_keys=keys)
    with IdentityClient(running.address, api_key=key) as pos:
        assert pos.list_segments() is not None
        assert _code(lambda: pos.link("email:anna@example.com")) == \
            grpc.StatusCode.PERMISSION_DENIED
    with IdentityClient(running.address, api_key=os.environ["IDENTITY_API_KEY"]) as old:
        assert _code(lambda: old.list_segments()) == grpc.StatusCode.UNAUTHENTICATED


def test_the_keys_command_creates_lists_and_revokes(server, capsys) -> None:
    from identity.cli import main

    assert main(["keys", "create", "--role", "ingest", "--label", "pos",
                 "--address", server.address]) == 0
    created = capsys.readouterr().out
    assert '"secret_key": "idk_' in created
    assert main(["keys", "list", "--address", server.address]) == 0
    assert '"label": "pos"' in capsys.readouterr().out
    key_id = created.split('"key_id": "')[1].split('"')[0]
    assert main(["keys", "revoke", key_id, "--address", server.address]) == 0
    assert '"revoked_at"' in capsys.readouterr().out
    assert main(["keys", "list", "--address", server.address, "--api-key", "idk_x_y"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_reflection_needs_a_key_of_any_role(client, server) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        assert _code(lambda: stub.ServerReflectionInfo(iter([request]), timeout=5)) == \
            grpc.StatusCode.UNAUTHENTICATED
        ingest = [("authorization", f"Bearer {_key(client, 'ingest')}")]
        [reply] = stub.ServerReflectionInfo(iter([request]), timeout=5, metadata=ingest)
        assert "identity.v1.KeyService" in {s.name for s in reply.list_services_response.service}


def test_created_keys_survive_a_restart(make_server) -> None:
    running = make_server()
    with IdentityClient(running.address) as admin:
        key = admin.create_key("query").secret_key
    running = running.restart()
    with IdentityClient(running.address, api_key=key) as query:
        assert query.list_segments() is not None
