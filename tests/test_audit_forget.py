"""Forget: erasure on request leaves no trace, and a late replay does not bring the person back."""

from __future__ import annotations

import time

import grpc
import lmdb
import pytest

from identity.client import IdentityClient
from identity.linklog import Outcome

ANNA = ["customer_id:C-ANNA", "email:anna.erased@example.com", "phone:+447700900777",
        "loyalty_card:4000 5555 6666"]
SECRETS = [b"C-ANNA", b"anna.erased@example.com", b"447700900777", b"400055556666",
           b"order-anna"]
T0 = 1_767_225_600_000


def scan(data_dir) -> dict[bytes, list[str]]:
    """Every sub-database of the LMDB folder searched, keys and values, for each secret."""
    found: dict[bytes, list[str]] = {secret: [] for secret in [*SECRETS, b"bob@example.org"]}
    env = lmdb.open(str(data_dir), readonly=True, lock=False, max_dbs=256)
    try:
        with env.begin() as txn:
            names = [key for key, _ in txn.cursor()]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                for key, value in txn.cursor(db=db):
                    for secret in found:
                        if secret in key or secret in value:
                            found[secret].append(name.decode())
    finally:
        env.close()
    return found


def anna_and_bob(client: IdentityClient) -> None:
    client.link(ANNA[0], ANNA[1], source="web", observed_at=T0, request_id="order-anna-1")
    client.link(ANNA[1], ANNA[2], ANNA[3], source="pos", observed_at=T0 + 1000,
                request_id="order-anna-2")
    client.link(ANNA[2], source="app", observed_at=T0 + 500, request_id="order-anna-seen")
    client.link("email:bob@example.org", "customer_id:C-BOB", source="web", observed_at=T0)
    refused = client.link("customer_id:C-BOB", ANNA[1], source="crm", observed_at=T0 + 2000,
                          request_id="order-anna-3")
    assert refused.outcome == Outcome.REFUSED_CONFLICT  # its detail names C-ANNA


def test_forget_leaves_no_trace_of_the_person_in_any_sub_database(make_server):
    server = make_server()
    with IdentityClient(server.address) as client:
        anna_and_bob(client)
        reply = client.forget(person_id="C-ANNA", actor="dpo", reason="erasure request 17")
        assert (reply.identifiers, reply.links) == (4, 4)
        with pytest.raises(grpc.RpcError) as caught:
            client.resolve(ANNA[1])
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert client.resolve("email:bob@example.org").person.person_id == "C-BOB"
    server.stop()

    found = scan(server.settings.data_dir)

    assert found.pop(b"bob@example.org")  # the scan does see what is still there
    assert found == {secret: [] for secret in SECRETS}


def test_the_log_keeps_tombstones_and_the_forget_itself_without_personal_data(client):
    anna_and_bob(client)
    client.forget(ANNA[2], actor="dpo", reason="erasure request 17")
    links = [item for batch in client.merge_log(include_actions=True) for item in batch.links]
    tombstones = [item for item in links if item.detail == "erased on request"]
    assert len(tombstones) == 4
    assert all(not t.link.request_id and t.erased_identifiers == 0 for t in tombstones)
    (action,) = [a for batch in client.merge_log(include_actions=True) for a in batch.actions]
    assert (action.actor, action.reason, action.kind) == ("dpo", "erasure request 17", 5)
    assert "erased 4 identifiers" in action.note


def test_a_replayed_old_link_does_not_bring_the_person_back(client):
    anna_and_bob(client)
    client.forget(person_id="C-ANNA", actor="dpo", reason="erasure request 17")

    everything_erased = client.link(ANNA[0], ANNA[1], source="web", observed_at=T0)
    partly = client.link(ANNA[1], "device_id:old-tablet", source="app", observed_at=T0 + 5000)

    assert everything_erased.outcome == Outcome.IGNORED
    assert partly.outcome == Outcome.CREATED
    person = client.resolve("device_id:old-tablet").person
    assert [i.identifier.value for i in person.identifiers] == ["old-tablet"]
    for identifier in ANNA:
        with pytest.raises(grpc.RpcError):
            client.resolve(identifier)


def test_a_new_link_after_forget_starts_a_fresh_person(client):
    anna_and_bob(client)
    client.forget(person_id="C-ANNA", actor="dpo", reason="erasure request 17")
    later = int(time.time() * 1000) + 1000

    reply = client.link(ANNA[1], ANNA[2], source="web", observed_at=later)

    assert reply.outcome == Outcome.CREATED
    person = client.resolve(ANNA[2]).person
    assert person.person_id != "C-ANNA" and not person.customer_id
    assert {i.identifier.value for i in person.identifiers} == {"anna.erased@example.com",
                                                               "+447700900777"}
    assert client.explain(ANNA[1], ANNA[2]).steps[0].link.link_seq == reply.link_seq


def test_forget_blanks_the_persons_segment_column_rows_and_keeps_everyone_elses(make_server):
    from segment_world import event_pb

    from identity.columns import EventColumns
    from identity.identifiers import Identifier, Kind
    from identity.store import Store

    server = make_server()
    with IdentityClient(server.address) as client:
        anna_and_bob(client)
        client.track([event_pb({"id": f"v-{who}", "who": who, "type": "view",
                                "time": T0 // 1000 + n, "product": f"tv-{n}",
                                "category": "Electronics/TV"})
                      for n, who in enumerate([ANNA[1], ANNA[2], "email:bob@example.org"])])
        with server.app.store.read() as tx:
            anna = server.app.graph.resolve(tx, Identifier(Kind.CUSTOMER_ID, "C-ANNA"))
            anna_nodes = [n.node for n in anna.identifiers]
            bob = server.app.graph.resolve(tx, Identifier(Kind.CUSTOMER_ID, "C-BOB"))
            bob_nodes = [n.node for n in bob.identifiers]
        client.forget(person_id="C-ANNA", actor="dpo", reason="erasure request 17")
    server.stop()

    with Store(server.settings.data_dir) as store, store.read() as tx:
        columns = EventColumns()
        columns.load(tx)
    stored = columns.snapshot()
    assert not set(stored.node.tolist()) & set(anna_nodes)
    assert set(stored.node.tolist()) & set(bob_nodes)
    blank = stored.node == 0
    assert int(blank.sum()) == 2
    assert not stored.product[blank].any() and not stored.type[blank].any()
