"""The lab as a picture, in the course's style: each node a box with its name and underlay IP,
the pod network inside it (bridge cni0, Calico's routed veths or flannel.1) with its CIDR and
gateway, each pod with its name and IP; the underlay (switches, router) below; the inter-node
mechanism drawn on it (host-gw routes, VXLAN tunnels, BGP sessions, fabric routes); collisions
in red.

Written as SVG directly rather than through Graphviz: the layout is the slides' (nodes side by
side on one LAN), it needs nothing installed, and the tests can read it as XML. `--format dot`
and `mermaid` give the same graph as text; a PNG is the DOT rendered by Graphviz's `dot`.
Pure: builds from a Lab (and, for a running lab, routes read from the kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from cni_lab.ipam import Lab

NODE_W, POD_H, GAP = 250, 34, 40
COLORS = {"node": "#e8f0fe", "pod": "#ffffff", "bridge": "#d2e3fc", "edge": "#1a73e8", "bad": "#d93025",
          "underlay": "#f1f3f4", "tunnel": "#188038", "bgp": "#9334e6"}


@dataclass(frozen=True)
class Link:
    src: str  # node name (or "router")
    dst: str
    label: str
    kind: str  # route | tunnel | bgp | fabric


@dataclass
class Topology:
    lab: Lab
    links: list[Link] = field(default_factory=list)
    collisions: set[str] = field(default_factory=set)  # ids (node or node/pod) drawn in red

    @property
    def dataplane(self) -> str:
        return self.lab.dataplane


def build(lab: Lab, routes: dict[str, list[tuple[str, str | None, str | None]]] | None = None) -> Topology:
    """From the plan's model; `routes` (node → (dst, gateway, dev) read from the kernel) replaces
    the planned inter-node routes for a running lab."""
    topo = Topology(lab)
    by_ip = {str(n.ip): n.name for n in lab.nodes}
    cidr_owner = {str(n.pod_cidr): n.name for n in lab.nodes}
    for i, a in enumerate(lab.nodes):
        for b in lab.nodes[i + 1 :]:
            if a.pod_cidr.overlaps(b.pod_cidr):
                topo.collisions |= {a.name, b.name}
                for pa in a.pods:
                    for pb in b.pods:
                        if pa.ip == pb.ip:
                            topo.collisions |= {pa.id, pb.id}
    routing = lab.routing
    for node in lab.nodes:
        if routes is not None:
            for dst, gateway, dev in routes.get(node.name, []):
                owner = cidr_owner.get(dst)
                if owner is None or owner == node.name:
                    continue
                if dev == "flannel.1":
                    topo.links.append(Link(node.name, owner, f"VXLAN VNI 1 → {dst}", "tunnel"))
                elif gateway in by_ip:
                    kind = "bgp" if routing == "bgp" else "route"
                    topo.links.append(Link(node.name, by_ip[gateway], f"{dst} via {gateway}", kind))
            continue
        for other in lab.nodes:
            if other is node or other.pod_cidr.overlaps(node.pod_cidr):
                continue
            if routing == "host-gw":
                topo.links.append(Link(node.name, other.name, f"{other.pod_cidr} via {other.ip}", "route"))
            elif routing == "vxlan":
                topo.links.append(Link(node.name, other.name, f"VXLAN VNI 1 → {other.pod_cidr}", "tunnel"))
            elif routing == "bgp" and node.name < other.name:
                topo.links.append(Link(node.name, other.name, "iBGP AS " + str(lab.scenario.as_number), "bgp"))
    if routing == "fabric":
        topo.links += [Link("router", n.name, f"{n.pod_cidr} via {n.ip}", "fabric") for n in lab.nodes]
    return topo


def _pod_network(topo: Topology) -> str:
    if topo.dataplane == "bgp":
        return "routed veths (cali*), gateway 169.254.1.1"
    return "bridge cni0"


def svg(topo: Topology) -> str:
    lab = topo.lab
    most = max((len(n.pods) for n in lab.nodes), default=0)
    node_h = 120 + POD_H * max(most, 1)
    width = max(len(lab.nodes) * (NODE_W + GAP) + GAP, 600)
    top = 70
    lan_y = top + node_h + 60
    links_y = lan_y + (120 if lab.has_router else 60)
    drawn = [lk for lk in topo.links if lk.kind != "fabric"]
    height = links_y + 26 * len(drawn) + (40 if lab.has_router and not drawn else 20)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
           "<defs><marker id=\"arrow\" markerWidth=\"10\" markerHeight=\"7\" refX=\"10\" refY=\"3.5\" orient=\"auto\">"
           f"<polygon points=\"0 0, 10 3.5, 0 7\" fill=\"{COLORS['edge']}\"/></marker></defs>",
           f'<title>cni-lab {escape(lab.name)}</title>',
           f'<text x="{GAP}" y="30" font-size="18" font-weight="bold">lab {escape(lab.name)} · {escape(lab.dataplane)}'
           f' · cluster CIDR {lab.scenario.cluster_cidr}</text>']
    centers: dict[str, float] = {}
    for i, node in enumerate(lab.nodes):
        x = GAP + i * (NODE_W + GAP)
        centers[node.name] = x + NODE_W / 2
        bad = node.name in topo.collisions
        stroke = COLORS["bad"] if bad else "#5f6368"
        cls = "node collision" if bad else "node"
        out.append(f'<g class="{cls}" id="node-{escape(node.name)}">')
        out.append(f'<rect x="{x}" y="{top}" width="{NODE_W}" height="{node_h}" rx="10" fill="{COLORS["node"]}" '
                   f'stroke="{stroke}" stroke-width="{3 if bad else 1.5}"/>')
        out.append(f'<text x="{x + 12}" y="{top + 22}" font-weight="bold">{escape(node.name)}</text>')
        out.append(f'<text x="{x + NODE_W - 12}" y="{top + 22}" text-anchor="end">eth0 {node.ip}</text>')
        net_y = top + 36
        net_h = node_h - 48
        out.append(f'<rect x="{x + 10}" y="{net_y}" width="{NODE_W - 20}" height="{net_h}" rx="6" '
                   f'fill="{COLORS["bridge"]}" stroke="{stroke if bad else "#8ab4f8"}"/>')
        gateway = "169.254.1.1 (proxy ARP)" if lab.dataplane == "bgp" else f"gateway {node.gateway}"
        out.append(f'<text x="{x + 18}" y="{net_y + 18}">{escape(_pod_network(topo))} · {node.pod_cidr}</text>')
        out.append(f'<text x="{x + 18}" y="{net_y + 34}" fill="#5f6368">{escape(gateway)}</text>')
        if lab.routing == "vxlan":
            out.append(f'<text x="{x + 18}" y="{net_y + 50}" fill="{COLORS["tunnel"]}">flannel.1 '
                       f'{node.pod_cidr.network_address}/32, mtu {lab.overlay_mtu}</text>')
        for j, pod in enumerate(node.pods):
            py = net_y + 62 + j * POD_H
            pbad = pod.id in topo.collisions
            out.append(f'<g class="pod{" collision" if pbad else ""}" id="pod-{escape(pod.id)}">'
                       f'<rect x="{x + 24}" y="{py}" width="{NODE_W - 48}" height="{POD_H - 6}" rx="4" '
                       f'fill="{COLORS["pod"]}" stroke="{COLORS["bad"] if pbad else "#5f6368"}" '
                       f'stroke-width="{2.5 if pbad else 1}"/>'
                       f'<text x="{x + 34}" y="{py + 19}">{escape(pod.name)}</text>'
                       f'<text x="{x + NODE_W - 34}" y="{py + 19}" text-anchor="end" '
                       f'fill="{COLORS["bad"] if pbad else "#202124"}">{pod.ip}</text></g>')
        out.append(f'<line x1="{centers[node.name]}" y1="{top + node_h}" x2="{centers[node.name]}" y2="{lan_y}" '
                   'stroke="#5f6368" stroke-width="2"/>')
        out.append("</g>")
    # the underlay: one bar per segment, the router below joining them
    out.append(f'<g class="underlay"><rect x="{GAP / 2}" y="{lan_y}" width="{width - GAP}" height="26" rx="6" '
               f'fill="{COLORS["underlay"]}" stroke="#5f6368"/>')
    segments = ", ".join(f"{s.name} {s.cidr}" for s in lab.segments)
    out.append(f'<text x="{GAP}" y="{lan_y + 18}">underlay: {escape(segments)}</text></g>')
    if lab.has_router:
        rx = width / 2
        centers["router"] = rx
        out.append(f'<g class="router"><line x1="{rx}" y1="{lan_y + 26}" x2="{rx}" y2="{lan_y + 60}" stroke="#5f6368"/>'
                   f'<rect x="{rx - 70}" y="{lan_y + 60}" width="140" height="30" rx="15" fill="#fef7e0" stroke="#5f6368"/>'
                   f'<text x="{rx}" y="{lan_y + 80}" text-anchor="middle">router</text></g>')
    # inter-node mechanism: arcs above the node boxes
    for k, link in enumerate(topo.links):
        if link.src not in centers or link.dst not in centers:
            continue
        x1, x2 = centers[link.src], centers[link.dst]
        color = COLORS["tunnel" if link.kind == "tunnel" else "bgp" if link.kind == "bgp" else "edge"]
        if link.kind == "fabric":
            y1, y2 = lan_y + 60, top + node_h
            out.append(f'<g class="link {link.kind}"><line x1="{x1}" y1="{y1}" x2="{x2 + 12}" y2="{y2}" stroke="{color}" '
                       f'stroke-dasharray="4 3" marker-end="url(#arrow)"/><text x="{x2 + 16}" '
                       f'y="{y2 + 16}" font-size="11" fill="{color}">{escape(link.label)}</text></g>')
            continue
        # one row per link under the underlay, an arrow from the node that holds it to the node it leads to
        row = drawn.index(link)
        y = links_y + 26 * row
        dash = ' stroke-dasharray="6 4"' if link.kind in ("tunnel", "bgp") else ""
        marker = "" if link.kind == "bgp" else ' marker-end="url(#arrow)"'
        start, end = (x1 + 8, x2 - 8) if x2 > x1 else (x1 - 8, x2 + 8)
        out.append(f'<g class="link {link.kind}"><line x1="{start}" y1="{y}" x2="{end}" y2="{y}" stroke="{color}" '
                   f'stroke-width="1.5"{dash}{marker}/><circle cx="{x1}" cy="{y}" r="3" fill="{color}"/>'
                   f'<text x="{(x1 + x2) / 2}" y="{y - 4}" text-anchor="middle" font-size="11" fill="{color}">'
                   f'{escape(link.src)}: {escape(link.label)}</text></g>')
    if drawn:
        for name, cx in centers.items():
            if name != "router":
                out.append(f'<line x1="{cx}" y1="{lan_y + 26}" x2="{cx}" y2="{links_y + 26 * (len(drawn) - 1) + 6}" '
                           'stroke="#dadce0" stroke-dasharray="2 3"/>')
    legend = {"route": "host-gw routes", "tunnel": "VXLAN tunnels", "bgp": "BGP sessions", "fabric": "fabric routes"}
    kinds = ", ".join(legend[k] for k in sorted({link.kind for link in topo.links}))
    if kinds:
        out.append(f'<text x="{GAP}" y="{lan_y + 44}" font-size="11" fill="#5f6368">between nodes: {kinds}</text>')
    if topo.collisions:
        out.append(f'<text x="{GAP}" y="52" fill="{COLORS["bad"]}" font-weight="bold">'
                   "collision: nodes share a pod CIDR, pods share addresses (red)</text>")
    out.append("</svg>")
    return "\n".join(out)


def dot(topo: Topology) -> str:
    lab = topo.lab
    lines = [f'digraph "{lab.name}" {{', "  compound=true; rankdir=TB; node [shape=box, fontname=sans];",
             f'  label="lab {lab.name} · {lab.dataplane}"; labelloc=t;']
    for node in lab.nodes:
        bad = node.name in topo.collisions
        lines.append(f'  subgraph "cluster_{node.name}" {{ label="{node.name}\\neth0 {node.ip}\\n'
                     f'{_pod_network(topo)} {node.pod_cidr}"; color="{"red" if bad else "gray40"}";')
        lines.append(f'    "{node.name}" [label="{node.name} {node.ip}", shape=ellipse];')
        for pod in node.pods:
            color = "red" if pod.id in topo.collisions else "black"
            lines.append(f'    "{pod.id}" [label="{pod.name}\\n{pod.ip}", color={color}];')
            lines.append(f'    "{node.name}" -> "{pod.id}" [arrowhead=none];')
        lines.append("  }")
    lines.append('  "underlay" [shape=underline, label="underlay ' + ", ".join(str(s.cidr) for s in lab.segments) + '"];')
    for node in lab.nodes:
        lines.append(f'  "{node.name}" -> "underlay" [arrowhead=none];')
    if lab.has_router:
        lines.append('  "router" [shape=oval]; "underlay" -> "router" [arrowhead=none];')
    for link in topo.links:
        style = "dashed" if link.kind in ("tunnel", "bgp") else "solid"
        lines.append(f'  "{link.src}" -> "{link.dst}" [label="{link.label}", style={style}, constraint=false];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid(topo: Topology) -> str:
    lab = topo.lab

    def ident(text: str) -> str:
        return text.replace("/", "__").replace("-", "_").replace(".", "_")

    lines = ["flowchart TB"]
    for node in lab.nodes:
        lines.append(f'  subgraph {ident(node.name)}_box["{node.name} · eth0 {node.ip} · {node.pod_cidr}"]')
        lines.append(f'    {ident(node.name)}(["{_pod_network(topo)}"])')
        for pod in node.pods:
            lines.append(f'    {ident(pod.id)}["{pod.name} {pod.ip}"]')
            lines.append(f"    {ident(node.name)} --- {ident(pod.id)}")
        lines.append("  end")
    lines.append('  underlay[["underlay ' + ", ".join(str(s.cidr) for s in lab.segments) + '"]]')
    for node in lab.nodes:
        lines.append(f"  {ident(node.name)}_box --- underlay")
    for link in topo.links:
        arrow = "-.->" if link.kind in ("tunnel", "bgp") else "-->"
        lines.append(f'  {ident(link.src)} {arrow}|"{link.label}"| {ident(link.dst)}')
    for cid in sorted(topo.collisions):
        lines.append(f"  style {ident(cid)}{'_box' if '/' not in cid else ''} stroke:#d93025,stroke-width:3px")
    return "\n".join(lines) + "\n"
