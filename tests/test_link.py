"""Linking and resolving over gRPC: merges, refusals, limits, the blocklist and person ids."""

from __future__ import annotations

import grpc
import pytest

from identity.client import IdentityClient, link_request
from identity.identifiers import Kind
from identity.v1 import identity_pb2

OUTCOME = identity_pb2.LinkOutcome


def identifiers_of(client: IdentityClient, who: str) -> set[str]:
    person = client.resolve(who).person
    return {f"{Kind(i.identifier.kind).label}:{i.identifier.value}" for i in person.identifiers}


def test_resolve_by_every_kind_of_identifier_returns_the_same_person(client) -> None:
    client.link("customer_id:C-1", "email:anna@example.com", "crm_id:crm-7", source="web")
    client.link("email:anna@example.com", "phone:+447700900123", source="app")
    client.link("phone:+447700900123", "loyalty_card:4000123456", source="pos")
    client.link("device_id:dev-1", "email:ANNA@example.com", source="app")
    everyone = ["customer_id:C-1", "email:anna@example.com", "phone:+447700900123",
                "loyalty_card:4000 1234 56", "crm_id:crm-7", "device_id:dev-1"]
    answers = {client.resolve(who).person.person_id for who in everyone}
    assert answers == {"C-1"}
    assert identifiers_of(client, "device_id:dev-1") == {
        "customer_id:C-1", "email:anna@example.com", "phone:+447700900123",
        "loyalty_card:4000123456", "crm_id:crm-7", "device_id:dev-1"}
    assert client.resolve("device_id:dev-1").person.customer_id == "C-1"


def test_outcomes_say_what_happened(client) -> None:
    assert client.link("email:a@example.com", "device_id:d1").outcome == OUTCOME.LINK_OUTCOME_CREATED
    assert client.link("email:a@example.com", "phone:+14155552671").outcome == OUTCOME.LINK_OUTCOME_ADDED
    assert client.link("device_id:d1", "phone:+14155552671").outcome == OUTCOME.LINK_OUTCOME_ALREADY_LINKED
    client.link("email:b@example.com", "device_id:d2")
    merged = client.link("device_id:d2", "device_id:d1")
    assert merged.outcome == OUTCOME.LINK_OUTCOME_MERGED
    assert len(merged.absorbed_person_ids) == 1


def test_second_customer_id_is_refused_and_recorded_as_a_conflict(client) -> None:
    client.link("customer_id:C-1", "email:anna@example.com")
    client.link("customer_id:C-2", "phone:+447700900123")
    reply = client.link("email:anna@example.com", "phone:+447700900123", source="call-centre")
    assert reply.outcome == OUTCOME.LINK_OUTCOME_REFUSED_CONFLICT
    assert "'C-1'" in reply.detail and "'C-2'" in reply.detail
    assert reply.link_seq > 0
    assert client.resolve("email:anna@example.com").person.person_id == "C-1"
    assert client.resolve("phone:+447700900123").person.person_id == "C-2"
    new_customer = client.link("customer_id:C-3", "email:anna@example.com")
    assert new_customer.outcome == OUTCOME.LINK_OUTCOME_REFUSED_CONFLICT
    assert client.resolve("customer_id:C-3").person.person_id == "C-3"


def test_same_customer_id_twice_is_no_conflict(client) -> None:
    client.link("customer_id:C-1", "email:anna@example.com")
    client.link("customer_id:C-1", "phone:+447700900123")
    assert client.link("email:anna@example.com", "phone:+447700900123").outcome == (
        OUTCOME.LINK_OUTCOME_ALREADY_LINKED)


def test_per_kind_limit_refuses_the_merge_that_would_exceed_it(make_server) -> None:
    server = make_server(kind_limits={Kind.EMAIL: 2})
    with IdentityClient(server.address) as client:
        client.link("customer_id:C-1", "email:a@example.com", "email:b@example.com")
        reply = client.link("customer_id:C-1", "email:c@example.com")
        assert reply.outcome == OUTCOME.LINK_OUTCOME_REFUSED_LIMIT
        assert "limit 2" in reply.detail
        assert identifiers_of(client, "customer_id:C-1") == {
            "customer_id:C-1", "email:a@example.com", "email:b@example.com"}
        assert client.resolve("email:c@example.com").person.person_id != "C-1"


@pytest.mark.parametrize("junk", ["email:test@test.com", "email:noemail@shop.com",
                                  "phone:+70000000000", "phone:+11111111111",
                                  "customer_id:undefined", "device_id:null", "crm_id:-1",
                                  "device_id:00000000-0000-0000-0000-000000000000",
                                  "customer_id:anonymous"])
def test_blocklisted_identifiers_never_merge_anyone(client, junk: str) -> None:
    first = client.link("email:anna@example.com", junk, source="web")
    second = client.link("email:boris@example.com", junk, source="web")
    assert [i.reason.startswith("blocklisted") for i in first.ignored] == [True]
    assert second.ignored[0].reason == first.ignored[0].reason
    assert client.resolve("email:anna@example.com").person.person_id != (
        client.resolve("email:boris@example.com").person.person_id)
    with pytest.raises(grpc.RpcError) as err:
        client.resolve(junk)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_link_of_only_junk_is_ignored(client) -> None:
    reply = client.link("email:test@test.com", "customer_id:null")
    assert reply.outcome == OUTCOME.LINK_OUTCOME_IGNORED
    assert reply.person_id == ""
    assert len(reply.ignored) == 2


def test_configured_blocklist_entry_stops_a_call_centre_number(tmp_path, make_server) -> None:
    config = tmp_path / "identity.toml"
    config.write_text('[[blocklist]]\nkind = "phone"\nvalue = "+442079460000"\n')
    from identity.config import Settings
    blocklist = Settings.load(config, env={}).blocklist
    server = make_server(blocklist=blocklist)
    with IdentityClient(server.address) as client:
        client.link("customer_id:C-1", "phone:+44 20 7946 0000")
        client.link("customer_id:C-2", "phone:+44 20 7946 0000")
        assert client.resolve("customer_id:C-2").person.person_id == "C-2"
        assert identifiers_of(client, "customer_id:C-1") == {"customer_id:C-1"}


def test_customer_id_survives_a_merge_and_retired_ids_stay_resolvable(client) -> None:
    small = client.link("email:anna@example.com", "device_id:d1").person_id
    big = client.link("phone:+447700900123", "device_id:d2", "device_id:d3").person_id
    assert small.startswith("P") and big.startswith("P")
    merged = client.link("device_id:d1", "device_id:d2")
    assert merged.person_id == big  # the larger side's id survives
    assert list(merged.absorbed_person_ids) == [small]
    assert client.resolve_person(small).person.person_id == big
    with_customer = client.link("customer_id:C-7", "email:anna@example.com")
    assert with_customer.person_id == "C-7"
    for old in (small, big, "C-7"):
        assert client.resolve_person(old).person.person_id == "C-7"


def test_unknown_person_id_and_identifier_are_not_found(client) -> None:
    for call in (lambda: client.resolve_person("P999"), lambda: client.resolve_person("nobody"),
                 lambda: client.resolve("email:ghost@example.com")):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_first_and_last_seen_follow_observed_times(client) -> None:
    client.link("email:anna@example.com", observed_at=2_000_000)
    client.link("email:anna@example.com", "phone:+447700900123", observed_at=1_000_000)
    client.link("email:anna@example.com", observed_at=3_000_000)
    [email] = [i for i in client.resolve("email:anna@example.com").person.identifiers
               if i.identifier.kind == Kind.EMAIL]
    assert (email.first_seen.seconds, email.last_seen.seconds) == (1000, 3000)


def test_link_stream_commits_each_batch_and_sums_outcomes(client) -> None:
    batches = [
        [link_request(f"customer_id:C-{i}", f"email:p{i}@example.com") for i in range(100)],
        [link_request(f"email:p{i}@example.com", f"phone:+1415555{i:04d}") for i in range(100)],
        [link_request("customer_id:C-1", "phone:+14155550002")],
    ]
    summary = client.link_stream(batches)
    assert (summary.batches, summary.links) == (3, 201)
    assert (summary.created, summary.added, summary.refused_conflict) == (100, 100, 1)
    assert client.resolve("phone:+14155550042").person.person_id == "C-42"


def test_link_stream_batch_with_one_bad_link_writes_nothing_of_that_batch(client) -> None:
    good = [link_request("customer_id:C-1", "email:a@example.com")]
    bad = [link_request("customer_id:C-2", "email:b@example.com"),
           link_request("customer_id:C-3", "phone:not a phone")]
    with pytest.raises(grpc.RpcError) as err:
        client.link_stream([good, bad])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch[1].links[1].identifiers[1].value" in err.value.details()
    assert "1 earlier batches were committed" in err.value.details()
    assert client.resolve("email:a@example.com").person.person_id == "C-1"
    with pytest.raises(grpc.RpcError):
        client.resolve("customer_id:C-2")


def test_empty_link_and_missing_resolve_target_are_invalid(client) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.link(source="web")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "identifiers" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.identity.Resolve(identity_pb2.ResolveRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_links_survive_a_restart(make_server) -> None:
    server = make_server()
    with IdentityClient(server.address) as client:
        client.link("customer_id:C-1", "email:anna@example.com", source="web")
        client.link("email:anna@example.com", "phone:+447700900123", source="app")
    server = server.restart()
    with IdentityClient(server.address) as client:
        assert client.resolve("phone:+447700900123").person.person_id == "C-1"
        assert client.link("customer_id:C-2", "email:new@example.com").outcome == (
            OUTCOME.LINK_OUTCOME_CREATED)
