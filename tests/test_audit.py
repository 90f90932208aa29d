"""The admins' tools: a shared phone glues two households; the report finds it, split undoes it."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from identity.client import IdentityClient
from identity.identifiers import Kind
from identity.linklog import Outcome
from identity.report import FindingKind

PHONE = "phone:+447700900123"
ANNA = ["customer_id:C-ANNA", "email:anna@example.com", "crm_id:crm-anna", "loyalty_card:40001234"]
BOB = ["email:bob@example.org", "device_id:bob-laptop"]
T0 = 1_767_225_600_000  # 2026-01-01


def ids(person) -> set[str]:
    return {f"{Kind(i.identifier.kind).label}:{i.identifier.value}" for i in person.identifiers}


def glue_two_households(client: IdentityClient, background: int = 12) -> None:
    """Anna's four identifiers, each typed with her household phone; Bob once gave it too."""
    for i in range(background):  # ordinary persons: a customer id, an e-mail, a device
        client.link(f"customer_id:C-{i}", f"email:p{i}@example.net", source="web")
        client.link(f"email:p{i}@example.net", f"device_id:dev-{i}", source="app")
    client.link(ANNA[0], ANNA[1], source="web", observed_at=T0, request_id="signup-anna")
    client.link(ANNA[1], ANNA[2], source="crm", observed_at=T0 + 1000)
    client.link(ANNA[2], ANNA[3], source="pos", observed_at=T0 + 2000)
    for n, identifier in enumerate(ANNA):
        client.link(identifier, PHONE, source="orders", observed_at=T0 + 10_000 + n,
                    request_id=f"order-{n}")
    client.link(PHONE, BOB[0], source="callcentre", observed_at=T0 + 20_000,
                request_id="call-77")
    client.link(BOB[0], BOB[1], source="app", observed_at=T0 + 30_000)


def report(client: IdentityClient, **thresholds):
    messages = list(client.suspicious_report(**thresholds))
    assert messages[-1].finished and all(not m.finished for m in messages[:-1])
    return list(messages[-1].findings)


def test_report_flags_the_shared_phone_as_high_degree_and_its_link_as_a_bridge(client):
    glue_two_households(client)
    findings = report(client)

    high = [f for f in findings if f.kind == FindingKind.HIGH_DEGREE]
    assert [(f.person_id, f.identifiers[0].value) for f in high] == [("C-ANNA", "+447700900123")]
    assert "linked to 5 identifiers" in high[0].detail
    bridges = [f for f in findings if f.kind == FindingKind.BRIDGE]
    assert len(bridges) == 1
    assert {i.value for i in bridges[0].identifiers} == {"+447700900123", "bob@example.org"}
    call = next(m.links[0] for m in client.merge_log(sources=["callcentre"]))
    assert list(bridges[0].link_seqs) == [call.link.link_seq]
    assert all(f.person_id == "C-ANNA" for f in findings)  # the background is not flagged


def test_split_by_the_phone_gives_back_the_two_persons_and_a_later_resolve_shows_them_apart(
        client, server):
    glue_two_households(client)
    assert client.resolve(BOB[1]).person.person_id == "C-ANNA"
    heard: list[tuple[int, int]] = []
    server.app.graph.listeners.append(heard.extend)

    replies = list(client.split(identifier_=PHONE, actor="ann", reason="household phone"))

    assert len(replies) == 1
    assert replies[0].person_id_before == "C-ANNA"
    assert sorted(p.identifiers for p in replies[0].pieces) == [1, 2, 4]
    anna, bob = client.resolve(ANNA[3]).person, client.resolve(BOB[1]).person
    assert anna.person_id == "C-ANNA" and ids(anna) == set(ANNA)
    assert bob.person_id != "C-ANNA" and ids(bob) == set(BOB)
    assert ids(client.resolve(PHONE).person) == {PHONE}
    bob_root = int(bob.person_id[1:])
    assert {root for _, root in heard} >= {bob_root}  # views heard of the relabelled nodes
    assert not [f for f in report(client) if f.kind == FindingKind.HIGH_DEGREE]


def test_split_by_the_bridge_link_keeps_the_phone_with_anna(client):
    glue_two_households(client)
    bridge = next(f for f in report(client) if f.kind == FindingKind.BRIDGE)

    (reply,) = client.split(link_seq=bridge.link_seqs[0], actor="ann", reason="one call")

    assert ids(client.resolve(PHONE).person) == set(ANNA) | {PHONE}
    assert ids(client.resolve(BOB[0]).person) == set(BOB)
    assert {p.person_id for p in reply.pieces} == {"C-ANNA", client.resolve(BOB[0]).person.person_id}


def test_split_by_source_removes_every_link_from_it(client):
    glue_two_households(client)
    (reply,) = client.split(source="callcentre", person="email:anna@example.com",
                            actor="ann", reason="call centre typed its own phone")
    assert len(reply.pieces) == 2 and reply.done == reply.total == 1
    assert ids(client.resolve(BOB[0]).person) == set(BOB)
    log = [item for m in client.merge_log(sources=["callcentre"]) for item in m.links]
    assert [item.removed_by_action for item in log] == [reply.action_seq]


def test_a_new_link_after_a_split_merges_again(client):
    glue_two_households(client)
    list(client.split(identifier_=PHONE, actor="ann", reason="household phone"))
    reply = client.link(ANNA[1], BOB[0], source="web")
    assert reply.outcome == Outcome.MERGED
    assert ids(client.resolve(BOB[1]).person) == set(ANNA) | set(BOB)


def test_explain_returns_the_shortest_chain_with_source_time_and_request_id(client):
    glue_two_households(client)
    reply = client.explain("customer_id:C-ANNA", "device_id:bob-laptop")
    assert reply.same_person and reply.person_id == "C-ANNA"
    chain = [(s.left.value, s.right.value, s.link.source, s.link.request_id,
              s.link.observed_at.ToMilliseconds()) for s in reply.steps]
    assert chain == [
        ("C-ANNA", "+447700900123", "orders", "order-0", T0 + 10_000),
        ("+447700900123", "bob@example.org", "callcentre", "call-77", T0 + 20_000),
        ("bob@example.org", "bob-laptop", "app", "", T0 + 30_000),
    ]
    assert all(s.link.outcome in (Outcome.ADDED, Outcome.MERGED) for s in reply.steps)


def test_explain_after_a_split_says_they_are_not_one_person(client):
    glue_two_households(client)
    list(client.split(identifier_=PHONE, actor="ann", reason="household phone"))
    reply = client.explain(ANNA[0], BOB[0])
    assert not reply.same_person and not reply.steps
    assert reply.person_id == "C-ANNA" and reply.other_person_id.startswith("P")


def test_block_with_apply_splits_and_stops_later_merges_even_after_restart(make_server):
    server = make_server()
    with IdentityClient(server.address) as client:
        glue_two_households(client)
        reply = client.block(PHONE, actor="ann", reason="call centre", apply=True)
        assert sorted(p.identifiers for p in reply.split.pieces) == [1, 2, 4]
    server = server.restart()
    with IdentityClient(server.address) as client:
        later = client.link(PHONE, "email:carol@example.com", source="orders")
        assert later.outcome == Outcome.CREATED and [i.identifier.value for i in later.ignored] == [
            "+447700900123"]
        assert ids(client.resolve("email:carol@example.com").person) == {"email:carol@example.com"}
        blocked = [i for m in client.merge_log(blocked_only=True) for i in m.links]
        assert [b.link.link_seq for b in blocked] == [later.link_seq]


def test_block_without_apply_leaves_what_is_already_glued(client):
    glue_two_households(client)
    reply = client.block(PHONE, actor="ann", reason="call centre")
    assert not reply.HasField("split")
    assert client.resolve(BOB[0]).person.person_id == "C-ANNA"


def test_merge_log_filters_by_outcome_and_lists_actions_with_who_and_why(client):
    glue_two_households(client, background=2)
    refused = client.link("customer_id:C-OTHER", ANNA[1], source="crm")
    assert refused.outcome == Outcome.REFUSED_CONFLICT
    list(client.split(identifier_=PHONE, actor="ann", reason="household phone"))

    batches = list(client.merge_log(outcomes=[Outcome.REFUSED_CONFLICT], include_actions=True))
    links = [i for b in batches for i in b.links]
    actions = [a for b in batches for a in b.actions]
    assert [i.link.link_seq for i in links] == [refused.link_seq]
    assert "C-ANNA" in links[0].detail
    assert [(a.actor, a.reason, a.kind) for a in actions] == [("ann", "household phone", 3)]
    assert [i.value for i in actions[0].identifiers] == ["+447700900123"]
    assert "C-ANNA" in actions[0].person_ids
    since = [i.link for b in client.merge_log(since=T0 + 20_000) for i in b.links]
    assert "call-77" in {link.request_id for link in since}
    assert "order-0" not in {link.request_id for link in since}
    assert all(link.observed_at.ToMilliseconds() >= T0 + 20_000 for link in since)


def test_changes_need_an_actor_and_a_reason_and_write_nothing_without(client):
    glue_two_households(client, background=0)
    with pytest.raises(grpc.RpcError) as caught:
        list(client.split(identifier_=PHONE, actor="ann", reason=" "))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = rpc_status.from_call(caught.value).details[0]
    bad = error_details_pb2.BadRequest()
    details.Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["reason"]
    assert client.resolve(BOB[0]).person.person_id == "C-ANNA"
    with pytest.raises(grpc.RpcError) as caught:
        client.split(link_seq=999, actor="ann", reason="x").next()
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_person_graph_lists_identifiers_and_links_by_source(client):
    glue_two_households(client, background=0)
    graph = client.person_graph(person_id="C-ANNA")
    assert len(graph.nodes) == 7 and len(graph.edges) == 9
    assert sorted({e.source for e in graph.edges}) == ["app", "callcentre", "crm", "orders",
                                                      "pos", "web"]


def test_split_by_the_shared_phone_gives_each_person_their_events_orders_and_segments(client):
    from segment_world import event_pb

    glue_two_households(client)
    now_s = T0 // 1000 + 86_400
    client.track([event_pb({"id": f"tv-{who}", "who": who, "type": "view", "time": now_s - 3600,
                            "product": "tv-55", "category": "Electronics/TV"})
                  for who in (ANNA[1], BOB[1])]
                 + [event_pb({"id": "anna-order", "who": ANNA[3], "type": "order",
                              "time": now_s - 1800, "order_id": "O-1", "amount": 499.0,
                              "lines": [{"product": "tv-55", "category": "Electronics/TV",
                                         "price": 499.0}]})])
    viewed_tvs = {"event": {"filter": {"type": "view", "category": "Electronics/TV"},
                            "window": {"from_days_ago": 7, "to_days_ago": 0}}}
    assert client.count_segment(viewed_tvs, as_of=now_s * 1000).count == 1  # glued: one person

    list(client.split(identifier_=PHONE, actor="ann", reason="household phone"))

    assert client.count_segment(viewed_tvs, as_of=now_s * 1000).count == 2
    members = {m.person_id for m in client.export_segment(viewed_tvs, as_of=now_s * 1000)}
    assert members == {"C-ANNA", client.resolve(BOB[1]).person.person_id}
    anna, bob = client.get_profile(ANNA[0]), client.get_profile(BOB[0])
    assert sorted(e.event_id for e in anna.events) == ["anna-order", f"tv-{ANNA[1]}"]
    assert [e.event_id for e in bob.events] == [f"tv-{BOB[1]}"]
    assert (anna.aggregates.orders_count, bob.aggregates.orders_count) == (1, 0)
