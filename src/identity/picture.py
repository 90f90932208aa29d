"""A picture of one person's identity graph, for the admin who would rather look than read.

Identifiers are nodes coloured by kind, links are edges labelled by source;
PNG or SVG by the file's suffix, drawn with matplotlib's Agg backend (no display).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import networkx as nx

__all__ = ["KIND_COLOURS", "render"]

KIND_COLOURS = {
    "customer_id": "#d62728",
    "email": "#1f77b4",
    "phone": "#ff7f0e",
    "loyalty_card": "#2ca02c",
    "crm_id": "#9467bd",
    "device_id": "#8c564b",
}


def render(path: str | Path, title: str, nodes: Sequence[tuple[int, str, str]],
           edges: Sequence[tuple[int, int, str]]) -> Path:
    """Draw ``nodes`` (id, kind label, text) and ``edges`` (left, right, source) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    g = nx.Graph()
    for node, kind, text in nodes:
        g.add_node(node, kind=kind, text=text)
    for left, right, source in edges:
        g.add_edge(left, right, source=source)
    size = min(40.0, 6.0 + 0.25 * len(g))
    fig, ax = plt.subplots(figsize=(size, size * 0.75))
    pos = nx.spring_layout(g, seed=7, method="force") if len(g) else {}
    colours = [KIND_COLOURS.get(g.nodes[n]["kind"], "#7f7f7f") for n in g]
    nx.draw_networkx_edges(g, pos, ax=ax, edge_color="#999999")
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=500)
    if len(g) <= 300:
        nx.draw_networkx_labels(g, pos, ax=ax, font_size=7,
                                labels={n: g.nodes[n]["text"] for n in g})
        nx.draw_networkx_edge_labels(g, pos, ax=ax, font_size=6,
                                     edge_labels=nx.get_edge_attributes(g, "source"))
    for kind, colour in KIND_COLOURS.items():
        ax.scatter([], [], c=colour, label=kind)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    ax.set_axis_off()
    fig.savefig(path, format=path.suffix.lstrip(".").lower() or "png", bbox_inches="tight")
    plt.close(fig)
    return path
