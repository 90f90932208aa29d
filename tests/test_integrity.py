"""The integrity check: silent on a graph the server built, loud on each kind of broken record."""

from __future__ import annotations

import struct
import subprocess
import sys
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import pytest

from identity.cli import main
from identity.client import IdentityClient, identifier
from identity.integrity import check
from identity.linklog import Outcome
from identity.store import SUBDATABASES, read_only
from identity.v1 import events_pb2 as ev

T0 = 1_767_225_600_000
U64 = struct.Struct(">Q")
NODE = struct.Struct("<QBqq")  # root, kind, first seen, last seen; the value follows
PERSON = struct.Struct("<QI6I")  # customer node, size, counts per kind; members follow


def build_graph(client: IdentityClient) -> None:
    """Merges, a refused conflict, events, a split and a forget: every writer of the graph."""
    client.link("customer_id:C-ANNA", "email:anna@example.com", source="web", observed_at=T0)
    client.link("email:anna@example.com", "phone:+447700900123", source="app", observed_at=T0 + 1)
    client.link("device_id:tablet-1", "phone:+447700900123", source="app", observed_at=T0 + 2)
    client.link("device_id:bob-phone", source="app", observed_at=T0)  # seen before he signs up
    client.link("customer_id:C-BOB", "device_id:bob-phone", source="web", observed_at=T0 + 1)
    for refused in [client.link("device_id:bob-phone", "device_id:tablet-1", "phone:+447700900999",
                                source="app", observed_at=T0 + 3),
                    client.link("customer_id:C-BOB", "email:anna@example.com", source="crm")]:
        assert refused.outcome == Outcome.REFUSED_CONFLICT  # a new identifier stands alone
    client.link("email:carol@example.com", "device_id:carol-1", source="web", observed_at=T0)
    client.link("email:dave@example.com", "device_id:dave-1", source="web", observed_at=T0)
    client.link("email:dave@example.com", "email:carol@example.com", source="crm",
                observed_at=T0 + 5)
    client.track([ev.Event(event_id=f"e-{i}", identifier=identifier(who),
                           search=ev.SearchEvent(phrase="kettle"))
                  for i, who in enumerate(["device_id:new-1", "email:carol@example.com"])])
    client.link("email:eve@example.com", "phone:+447700900555", source="shared", observed_at=T0)
    client.link("email:frank@example.com", "phone:+447700900555", source="shared",
                observed_at=T0)
    list(client.split(identifier_="phone:+447700900555", actor="ann", reason="call centre"))
    client.link("email:zed@example.com", "device_id:zed-1", source="web", observed_at=T0)
    client.forget("email:zed@example.com", actor="dpo", reason="erasure request")


@pytest.fixture
def data_dir(make_server) -> Path:
    """A data folder the server built and then closed."""
    server = make_server()
    with IdentityClient(server.address) as client:
        build_graph(client)
    server.stop()
    return Path(server.settings.data_dir)


@contextmanager
def raw_lmdb(data_dir: Path) -> Iterator[tuple[lmdb.Transaction, dict]]:
    """A write transaction straight on the LMDB files, bypassing every invariant."""
    env = lmdb.open(str(data_dir), max_dbs=64)
    try:
        with env.begin(write=True) as txn:
            dbs = {name: env.open_db(name.encode(), txn=txn, **flags)
                   for name, flags in SUBDATABASES.items()}
            yield txn, dbs
    finally:
        env.close()


def problems_in(data_dir: Path) -> list[str]:
    with read_only(data_dir) as tx:
        return [str(p) for p in check(tx)]


def node_of(txn: lmdb.Transaction, dbs: dict, kind: int, value: str) -> int:
    return U64.unpack(txn.get(bytes((kind,)) + value.encode(), db=dbs["ids"]))[0]


def root_of(txn: lmdb.Transaction, dbs: dict, node: int) -> int:
    return NODE.unpack_from(txn.get(U64.pack(node), db=dbs["nodes"]))[0]


def person(txn: lmdb.Transaction, dbs: dict, root: int) -> tuple[list[int], array]:
    raw = txn.get(U64.pack(root), db=dbs["persons"])
    members = array("Q")
    members.frombytes(raw[PERSON.size :])
    return list(PERSON.unpack_from(raw)), members


def put_person(txn: lmdb.Transaction, dbs: dict, root: int, head: list[int], members: array
               ) -> None:
    txn.put(U64.pack(root), PERSON.pack(*head) + members.tobytes(), db=dbs["persons"])


def set_root(txn: lmdb.Transaction, dbs: dict, node: int, root: int) -> None:
    raw = txn.get(U64.pack(node), db=dbs["nodes"])
    txn.put(U64.pack(node), struct.pack("<Q", root) + raw[8:], db=dbs["nodes"])


def test_graph_built_through_the_server_has_no_problems(data_dir: Path):
    assert problems_in(data_dir) == []


def test_check_beside_a_running_server_reads_without_blocking_it(server, client):
    build_graph(client)
    result = subprocess.run([sys.executable, "-m", "identity.cli", "audit", "check", "--data",
                             str(server.settings.data_dir)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stdout.startswith("ok: no problems")) == (0, True)
    assert client.link("email:after@example.com", "device_id:after").outcome == Outcome.CREATED


def test_root_that_is_not_a_root_is_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):
        email = node_of(txn, dbs, 2, "anna@example.com")
        carol = node_of(txn, dbs, 2, "carol@example.com")
        not_a_root = next(n for n in (email, carol) if root_of(txn, dbs, n) != n)
        set_root(txn, dbs, node_of(txn, dbs, 6, "new-1"), not_a_root)
    problems = problems_in(data_dir)
    assert any(p.startswith("root:") and "is missing or not a root" in p for p in problems)


def test_node_missing_from_its_root_member_list_is_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):
        phone = node_of(txn, dbs, 3, "+447700900123")
        root = root_of(txn, dbs, phone)
        head, members = person(txn, dbs, root)
        members.remove(phone)
        head[1] -= 1
        head[2 + 3 - 1] -= 1  # keep size and counts consistent: only the list is wrong
        put_person(txn, dbs, root, head, members)
    assert problems_in(data_dir) == [f"members: node {phone} is missing from its root's member list"]


def test_member_pointing_at_another_root_is_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):
        phone = node_of(txn, dbs, 3, "+447700900123")
        carol_root = root_of(txn, dbs, node_of(txn, dbs, 2, "carol@example.com"))
        set_root(txn, dbs, phone, carol_root)
    assert f"member {phone} points at root {carol_root}" in " ".join(problems_in(data_dir))


def test_recorded_size_that_differs_from_the_members_is_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):
        root = root_of(txn, dbs, node_of(txn, dbs, 2, "anna@example.com"))
        head, members = person(txn, dbs, root)
        head[1] += 1
        put_person(txn, dbs, root, head, members)
    assert problems_in(data_dir) == [
        f"person: person {root}: size {len(members) + 1} but {len(members)} members"]


def test_counts_per_kind_that_differ_from_the_members_are_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):
        root = root_of(txn, dbs, node_of(txn, dbs, 2, "anna@example.com"))
        head, members = person(txn, dbs, root)
        head[2 + 2 - 1] -= 1  # one e-mail fewer
        put_person(txn, dbs, root, head, members)
    assert [p.split(":")[0] for p in problems_in(data_dir)] == ["person"]


def test_person_holding_two_customer_ids_is_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):  # move Bob's customer id into Anna, consistently
        bob = node_of(txn, dbs, 1, "C-BOB")
        anna_root = root_of(txn, dbs, node_of(txn, dbs, 1, "C-ANNA"))
        bob_root = root_of(txn, dbs, bob)
        assert bob_root != bob  # his device roots his person, which stays behind
        head, members = person(txn, dbs, bob_root)
        members.remove(bob)
        head[0], head[1], head[2] = 0, head[1] - 1, head[2] - 1
        put_person(txn, dbs, bob_root, head, members)
        head, members = person(txn, dbs, anna_root)
        members.append(bob)
        head[1], head[2] = head[1] + 1, head[2] + 1
        put_person(txn, dbs, anna_root, head, members)
        set_root(txn, dbs, bob, anna_root)
    problems = problems_in(data_dir)
    assert any("holds 2 customer ids" in p for p in problems)


def test_identifier_without_its_node_and_node_without_its_identifier_are_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):
        node = node_of(txn, dbs, 6, "carol-1")
        txn.delete(bytes((6,)) + b"carol-1", db=dbs["ids"])
        txn.put(bytes((6,)) + b"ghost", U64.pack(10**9), db=dbs["ids"])
    problems = problems_in(data_dir)
    assert f"ids: node {node}: its identifier has no ids entry" in problems
    assert any("maps to missing node 1000000000" in p for p in problems)


def test_link_missing_from_the_node_index_is_found(data_dir: Path):
    with raw_lmdb(data_dir) as (txn, dbs):
        node = node_of(txn, dbs, 2, "carol@example.com")
        cursor = txn.cursor(db=dbs["node_links"])
        assert cursor.set_key(U64.pack(node))
        seqs = [U64.unpack(v)[0] for v in cursor.iternext_dup()]
        txn.delete(U64.pack(node), U64.pack(seqs[0]), db=dbs["node_links"])
    assert problems_in(data_dir) == [
        f"link-log: link {seqs[0]} names node {node} but the node index misses it"]


def test_audit_check_command_lists_problems_and_exits_with_1(data_dir: Path, capsys):
    assert main(["audit", "check", "--data", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith("ok: no problems")
    with raw_lmdb(data_dir) as (txn, dbs):
        root = root_of(txn, dbs, node_of(txn, dbs, 2, "anna@example.com"))
        head, members = person(txn, dbs, root)
        put_person(txn, dbs, root, [head[0], head[1] + 2, *head[2:]], members)
    assert main(["audit", "check", "--data", str(data_dir)]) == 1
    assert f"person {root}: size" in capsys.readouterr().out
