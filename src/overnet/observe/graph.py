"""A picture of a topology (observe/topology.py) with Graphviz: one box per host holding its
endpoints, one node per network, and a dashed edge per VXLAN tunnel between two hosts."""

from __future__ import annotations

from typing import Any

FORMATS = ("svg", "png", "dot")
ALIVE, DOWN = "#2e7d32", "#c62828"


def _id(*parts: str) -> str:
    return "/".join(parts)     # not ':', which Graphviz reads as node:port in an edge


def build(topo: dict[str, Any]) -> Any:
    import graphviz
    g = graphviz.Graph("overnet", graph_attr={"rankdir": "LR", "fontname": "Helvetica",
                                              "label": f"overnet cluster (seen from "
                                                       f"{topo.get('seen_from', '?')})",
                                              "labelloc": "t"},
                       node_attr={"fontname": "Helvetica", "fontsize": "10"},
                       edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    for h in topo["hosts"]:
        _host(g, h, [e for e in topo["endpoints"] if e["host"] == h["name"]])
    for n in topo["networks"]:
        label = f"{n['name']}\n{n['driver']}" + (f" vni {n['vni']}" if n.get("vni") else "") \
            + (f"\n{n['subnet']}" if n.get("subnet") else "")
        g.node(_id("net", n["name"]), label, shape="ellipse", style="filled",
               fillcolor="#e3f2fd")
    for e in topo["endpoints"]:
        g.edge(_id("ep", e["host"], e["container"], e["network"]), _id("net", e["network"]),
               color="#90a4ae")
    for t in topo["tunnels"]:
        a, b = t["hosts"]
        g.edge(_id("host", a), _id("host", b), label=f"{t['network']} (vni {t['vni']})",
               style="dashed", color="#6a1b9a", penwidth="2")
    return g


def _host(g: Any, h: dict[str, Any], eps: list[dict[str, Any]]) -> None:
    color = ALIVE if h["alive"] else DOWN
    with g.subgraph(name=f"cluster_{h['name']}") as c:
        c.attr(label=f"{h['name']}", color=color, style="rounded")
        c.node(_id("host", h["name"]), f"{h['name']}\n{h['address']}\n"
               f"{'alive' if h['alive'] else 'DOWN'}", shape="box3d", color=color)
        for e in eps:
            c.node(_id("ep", e["host"], e["container"], e["network"]),
                   f"{e['name']}\n{e['ip']}\n{e['runtime']}", shape="box", style="filled",
                   fillcolor="#fff8e1")


def render(topo: dict[str, Any], fmt: str) -> bytes:
    """The picture as bytes of `fmt` (svg, png or dot source)."""
    g = build(topo)
    if fmt == "dot":
        return g.source.encode()
    return g.pipe(format=fmt)
