"""The graph agrees with an independent oracle: networkx connected components with the
customer-id rule applied, before and after a server restart."""

from __future__ import annotations

import itertools

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.client import IdentityClient
from identity.identifiers import Kind

KINDS = ["customer_id", "email", "phone", "device_id", "loyalty_card", "crm_id"]


def value_of(kind: str, n: int, world: int) -> str:
    if kind == "email":
        return f"u{n}.w{world}@example.com"
    if kind == "phone":
        return f"+1415{world % 1000:03d}{n:04d}"
    if kind == "loyalty_card":
        return f"9{world:05d}{n:04d}"
    return f"{kind[0]}{n}-w{world}"


identifier_refs = st.tuples(st.sampled_from(KINDS), st.integers(0, 7))
link_sequences = st.lists(st.lists(identifier_refs, min_size=1, max_size=4), min_size=1,
                          max_size=25)


def oracle(links: list[list[str]]) -> list[frozenset[str]]:
    """Replay links into networkx, refusing any that would join two customer ids."""
    graph = nx.Graph()
    for link in links:
        graph.add_nodes_from(link)
        components = {frozenset(nx.node_connected_component(graph, node)) for node in link}
        customers = {n for c in components for n in c if n.startswith("customer_id:")}
        if len(customers) <= 1:
            graph.add_edges_from(itertools.pairwise(link))
    return [frozenset(c) for c in nx.connected_components(graph)]


def partition(client: IdentityClient, identifiers: set[str]) -> list[frozenset[str]]:
    by_person: dict[str, set[str]] = {}
    for who in identifiers:
        person = client.resolve(who).person
        members = {f"{Kind(i.identifier.kind).label}:{i.identifier.value}"
                   for i in person.identifiers}
        assert who in members
        by_person.setdefault(person.person_id, set()).update(members)
    return [frozenset(m) for m in by_person.values()]


def test_random_link_sequences_match_networkx_components_before_and_after_restart(make_server):
    server = make_server(kind_limits={})
    worlds: list[tuple[set[str], list[frozenset[str]]]] = []
    counter = itertools.count()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(link_sequences)
    def check(sequence):
        world = next(counter)
        links = [list(dict.fromkeys(f"{k}:{value_of(k, n, world)}" for k, n in link))
                 for link in sequence]
        with IdentityClient(server.address) as client:
            for link in links:
                client.link(*link, source="property")
            identifiers = {i for link in links for i in link}
            expected = oracle(links)
            assert sorted(map(sorted, partition(client, identifiers))) == sorted(
                map(sorted, expected))
        worlds.append((identifiers, expected))

    check()
    server = server.restart()
    with IdentityClient(server.address) as client:
        for identifiers, expected in worlds:
            assert sorted(map(sorted, partition(client, identifiers))) == sorted(
                map(sorted, expected))
