"""Many clients at once: links, tracks, resolves and segment counts from eight threads end
in the graph networkx computes from the committed links (replayed in link-log order), with
every tracked event in its person's profile and segment counts that agree with both."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import networkx as nx

from identity.client import IdentityClient, identifier
from identity.identifiers import Kind
from identity.v1 import common_pb2, identity_pb2
from identity.v1 import events_pb2 as ev

THREADS = 8
OPERATIONS = 150  # per thread
SEED = 20260615

# How many values of each kind the threads share: few customer ids, so conflicts happen.
POOL = {"customer_id": 12, "email": 150, "phone": 100, "device_id": 150}
EMAILS = {"reachable": {"kind": "email"}}
VIEWERS = {"event": {"filter": {"type": "view"}}}
LONDONERS = {"attribute": {"name": "city", "equals": "london"}}
TREES = (EMAILS, VIEWERS, LONDONERS)


def value_of(kind: str, n: int) -> str:
    """Values already in normal form, so what the server answers compares as sent."""
    return {"customer_id": f"C-{n}", "email": f"u{n}@example.com", "phone": f"+1415555{n:04d}",
            "device_id": f"d{n}"}[kind]


def random_identifier(rng: random.Random) -> str:
    kind = rng.choices(list(POOL), weights=[1, 4, 3, 4])[0]
    return f"{kind}:{value_of(kind, rng.randrange(POOL[kind]))}"


def label(ident: common_pb2.Identifier) -> str:
    return f"{Kind(ident.kind).label}:{ident.value}"


def view(event_id: str, who: str) -> ev.Event:
    return ev.Event(event_id=event_id, identifier=identifier(who), channel=ev.EVENT_CHANNEL_WEB,
                    view=ev.ProductEvent(product_id="kettle", category="Home", price=20.0))


def lives_in_london(event_id: str, who: str) -> ev.Event:
    return ev.Event(event_id=event_id, identifier=identifier(who), channel=ev.EVENT_CHANNEL_APP,
                    attributes=ev.AttributesEvent(city="London"))


class Traffic:
    """What the threads sent and what came back, gathered under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.links: list[tuple[int, list[str], int]] = []  # link seq, identifiers, outcome
        self.events: dict[str, tuple[str, bool]] = {}  # event id -> (identifier, is attributes)
        self.counts: list[tuple[int, int, int]] = []  # tree index, count, persons
        self.errors: list[str] = []


def client_thread(address: str, number: int, traffic: Traffic, start: threading.Barrier) -> None:
    rng = random.Random(SEED + number)
    known: list[str] = []  # identifiers this thread has seen committed: they must resolve
    with IdentityClient(address) as client:
        start.wait()
        for op in range(OPERATIONS):
            roll = rng.random()
            try:
                if roll < 0.3:
                    who = list(dict.fromkeys(random_identifier(rng)
                                             for _ in range(rng.randint(2, 3))))
                    reply = client.link(*who, source=f"thread-{number}")
                    with traffic.lock:
                        traffic.links.append((reply.link_seq, who, reply.outcome))
                    known.extend(who)
                elif roll < 0.55:
                    batch = []
                    for j in range(rng.randint(1, 3)):
                        who = random_identifier(rng)
                        event_id = f"t{number}-{op}-{j}"
                        attributes = rng.random() < 0.2
                        batch.append((lives_in_london if attributes else view)(event_id, who))
                        with traffic.lock:
                            traffic.events[event_id] = (who, attributes)
                    reply = client.track(batch)
                    assert (reply.stored, reply.duplicates) == (len(batch), 0), reply
                    known.extend(label(e.identifier) for e in batch)
                elif roll < 0.7 and known:
                    who = rng.choice(known)
                    person = client.resolve(who).person
                    assert who in {label(i.identifier) for i in person.identifiers}
                else:
                    tree = rng.randrange(len(TREES))
                    reply = client.count_segment(TREES[tree])
                    assert reply.count <= reply.persons, reply
                    with traffic.lock:
                        traffic.counts.append((tree, reply.count, reply.persons))
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                with traffic.lock:
                    traffic.errors.append(f"thread {number} op {op}: {exc!r}")


def oracle(links: list[tuple[int, list[str], int]], alone: set[str]
           ) -> tuple[list[frozenset[str]], set[int]]:
    """Replay links in log order into networkx, refusing any that would join two customer
    ids; the components and the seqs of the refused links."""
    graph = nx.Graph()
    graph.add_nodes_from(alone)
    refused = set()
    for seq, link, _ in sorted(links):
        graph.add_nodes_from(link)
        components = {frozenset(nx.node_connected_component(graph, node)) for node in link}
        customers = {n for c in components for n in c if n.startswith("customer_id:")}
        if len(customers) <= 1:
            graph.add_edges_from(itertools.pairwise(link))
        else:
            refused.add(seq)
    return [frozenset(c) for c in nx.connected_components(graph)], refused


def persons(client: IdentityClient, identifiers: set[str]) -> dict[str, frozenset[str]]:
    """Person id -> its identifiers, as the server answers for each identifier."""
    found: dict[str, set[str]] = {}
    for who in identifiers:
        person = client.resolve(who).person
        members = {label(i.identifier) for i in person.identifiers}
        assert who in members
        found.setdefault(person.person_id, set()).update(members)
    return {person_id: frozenset(m) for person_id, m in found.items()}


def history(client: IdentityClient, who: str) -> list[str]:
    """Every event id in the profile of ``who``'s person, all pages."""
    ids: list[str] = []
    token = ""
    while True:
        page = client.get_profile(who, page_size=1000, page_token=token)
        ids += [e.event_id for e in page.events]
        token = page.next_page_token
        if not token:
            return ids


def count_of(components: list[frozenset[str]], wanted: Callable[[frozenset[str]], bool]) -> int:
    return sum(1 for c in components if wanted(c))


def test_concurrent_links_tracks_resolves_and_counts_end_in_the_networkx_partition(make_server):
    server = make_server(kind_limits={})
    traffic = Traffic()
    start = threading.Barrier(THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(client_thread, server.address, n, traffic, start)
                       for n in range(THREADS)]:
            future.result()

    assert traffic.errors == []
    assert traffic.links and traffic.events and traffic.counts
    seqs = [seq for seq, _, _ in traffic.links]
    assert len(set(seqs)) == len(seqs), "two links were given one log seq"

    tracked = {who for who, _ in traffic.events.values()}
    expected, refused = oracle(traffic.links, tracked)
    conflicts = {seq for seq, _, outcome in traffic.links
                 if outcome == identity_pb2.LINK_OUTCOME_REFUSED_CONFLICT}
    assert conflicts == refused

    with IdentityClient(server.address) as client:
        everyone = {who for c in expected for who in c}
        found = persons(client, everyone)
        assert sorted(map(sorted, found.values())) == sorted(map(sorted, expected))

        for person_id, members in found.items():
            wanted = {event_id for event_id, (who, _) in traffic.events.items() if who in members}
            got = history(client, next(iter(members)))
            assert len(got) == len(set(got)), f"an event of {person_id} is listed twice"
            assert set(got) == wanted, person_id

        emails = count_of(expected, lambda c: any(w.startswith("email:") for w in c))
        viewers = count_of(expected, lambda c: any(
            not attributes and who in c for who, attributes in traffic.events.values()))
        londoners = count_of(expected, lambda c: any(
            attributes and who in c for who, attributes in traffic.events.values()))
        final = [client.count_segment(tree) for tree in TREES]
        assert [(r.count, r.persons) for r in final] == [
            (emails, len(expected)), (viewers, len(expected)), (londoners, len(expected))]
    assert all(persons_then <= len(everyone) for _, _, persons_then in traffic.counts)
