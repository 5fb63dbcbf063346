"""The lab as a picture, in the course's style: each node a box with its name and underlay IP,
the pod network inside it (bridge cni0, Calico's routed veths or flannel.1) with its CIDR and
gateway, each pod with its name and IP; below them each underlay segment its own switch (a rack),
with the router joining them; the inter-node mechanism drawn under it (host-gw routes, VXLAN
tunnels, BGP sessions, fabric routes), one row per route; collisions in red; the outside host
beside the router and, under everything, one row per Service with its ClusterIP, NodePorts and
endpoints.

What is drawn is what the plan builds (`of_plan`: its routes, the blocks BGP must learn) or, for
a running lab, what the kernel holds (`kernel_hops`); a kernel test holds the two to each other.
Written as SVG directly rather than through Graphviz: the layout is the slides', it needs
nothing installed, and the tests can read it as XML. `--format dot` and `mermaid` give the same
graph as text; a PNG is the DOT rendered by Graphviz's `dot`. Pure: no kernel, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from ipaddress import ip_network
from typing import Mapping, Protocol, Sequence

from cni_lab import names
from cni_lab.cluster import Lab, Node
from cni_lab.errors import LabError
from cni_lab.plan import Plan
from cni_lab.steps import AddRoute, WaitBgp


class Route(Protocol):
    """A route as read from the kernel (kernel/inspect.Route)."""

    dst: str
    gateway: str | None
    dev: str | None
    proto: str
    type: str

NODE_W, POD_H, GAP = 250, 34, 40
COLORS = {"node": "#e8f0fe", "pod": "#ffffff", "bridge": "#d2e3fc", "edge": "#1a73e8", "bad": "#d93025",
          "underlay": "#f1f3f4", "tunnel": "#188038", "bgp": "#9334e6"}
ROUTER = "router"


@dataclass(frozen=True)
class Hop:
    """A route of a node (or of the router) toward other pods, as the plan has it or the kernel shows it."""

    dst: str  # a CIDR
    gateway: str | None
    dev: str | None
    proto: str = "boot"  # "bird": learned over BGP


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


def planned_hops(plan: Plan) -> dict[str, list[Hop]]:
    """node (or "router") → the routes the plan gives it, and for BGP the blocks each node must
    learn from its peers (BIRD installs those, the plan waits for them)."""
    lab = plan.lab
    owner = {names.node_netns(lab.name, n.name): n.name for n in lab.nodes}
    owner[names.router_netns(lab.name)] = ROUTER
    node_ip = {n.name: n.ip for n in lab.nodes}
    hops: dict[str, list[Hop]] = {}
    for step in plan.steps:
        if isinstance(step, AddRoute) and step.netns in owner and step.dst.prefixlen:
            hops.setdefault(owner[step.netns], []).append(
                Hop(str(step.dst), None if step.via is None else str(step.via), step.dev))
        elif isinstance(step, WaitBgp):
            for block in step.learned:
                holder = next((n for n in lab.nodes if any(c.version == block.version and c.overlaps(block)  # type: ignore[arg-type]
                                                           for c in n.pod_cidrs)), None)
                if holder is not None:
                    via = node_ip[holder.name] if block.version == 4 else holder.ip6
                    hops.setdefault(step.node, []).append(Hop(str(block), str(via), names.NODE_UPLINK, "bird"))
    return hops


def kernel_hops(routes: Mapping[str, Sequence[Route]]) -> dict[str, list[Hop]]:
    """node (or "router") → its routes as read from the kernel (explain.routing)."""
    return {holder: [Hop(r.dst, r.gateway, r.dev, r.proto) for r in found if r.dst != "default" and r.type == "unicast"]
            for holder, found in routes.items()}


def of_plan(plan: Plan) -> Topology:
    """A scenario's picture: what its plan builds."""
    return build(plan.lab, planned_hops(plan))


def build(lab: Lab, hops: dict[str, list[Hop]]) -> Topology:
    """The picture of `lab` whose nodes (and router) route as `hops` says: from the plan
    (`planned_hops`) for a scenario, from the kernel for a running lab."""
    topo = Topology(lab)
    for i, a in enumerate(lab.nodes):
        for b in lab.nodes[i + 1 :]:
            if a.pod_cidr.overlaps(b.pod_cidr):
                topo.collisions |= {a.name, b.name}
                for pa in a.pods:
                    for pb in b.pods:
                        if pa.ip == pb.ip:
                            topo.collisions |= {pa.id, pb.id}
    by_ip = {str(ip): n.name for n in lab.nodes for ip in n.ips}
    sessions: set[tuple[str, str]] = set()
    for holder in [n.name for n in lab.nodes] + [ROUTER]:
        for hop in hops.get(holder, []):
            dst = ip_network(hop.dst, strict=False)
            target = [n.name for n in lab.nodes if n.name != holder
                      and any(c.version == dst.version and c.overlaps(dst) for c in n.pod_cidrs)]  # type: ignore[arg-type]
            if len(target) != 1:
                continue  # a route to its own pods, or to a CIDR nodes share: no one node it leads to
            other = target[0]
            if holder == ROUTER:
                topo.links.append(Link(ROUTER, other, f"{hop.dst} via {hop.gateway}", "fabric"))
            elif hop.dev in (names.FLANNEL_DEVICE, names.FLANNEL_DEVICE6):
                topo.links.append(Link(holder, other, f"VXLAN VNI {names.VXLAN_VNI} → {hop.dst}", "tunnel"))
            elif hop.dev == names.CALICO_VXLAN:  # Calico's VXLAN (Always, or CrossSubnet across subnets)
                topo.links.append(Link(holder, other, f"VXLAN VNI {names.CALICO_VXLAN_VNI} ({names.CALICO_VXLAN}) → {hop.dst}",
                                       "tunnel"))
            elif hop.dev == names.CALICO_IPIP:
                topo.links.append(Link(holder, other, f"IPIP ({names.CALICO_IPIP}) → {hop.dst}", "tunnel"))
            elif hop.dev == names.CILIUM_HOST:  # ebpf tunnel mode: cil_from_host tunnels it, as pods' packets are
                topo.links.append(Link(holder, other, f"{names.CILIUM_VXLAN} (BPF tunnel key) → {hop.dst}", "tunnel"))
            elif hop.proto == "bird":
                pair = (min(holder, other), max(holder, other))
                if pair not in sessions:
                    sessions.add(pair)
                    topo.links.append(Link(pair[0], pair[1], f"iBGP AS {lab.scenario.as_number}", "bgp"))
            elif hop.gateway in by_ip:
                topo.links.append(Link(holder, by_ip[hop.gateway], f"{hop.dst} via {hop.gateway}", "route"))
    return topo


def _services(lab: Lab) -> list[tuple[str, list[str]]]:
    """Each Service as one line of text and its endpoint pods' ids (empty when the lab has none
    or its Services cannot be resolved)."""
    try:
        found = lab.services
    except LabError:  # a picture still draws a lab whose Services are refused
        return []
    rows = []
    for svc in found:
        ports = ", ".join(f"{p.port}/{p.protocol}" + (f" NodePort :{p.node_port}" if p.node_port else "")
                          for p in svc.spec.ports)
        policy = f" ({svc.spec.external_traffic_policy})" if svc.spec.node_port else ""
        ends = ", ".join(p.id for p in svc.endpoints) or "no endpoints"
        rows.append((f"Service {svc.qualified} · ClusterIP {svc.cluster_ip} · {ports}{policy} → {ends}",
                     [p.id for p in svc.endpoints]))
    return rows


SERVICES_HOW: dict[object, str] = {"cilium-bpf": "every node's BPF maps (Cilium's kube-proxy replacement) DNAT them "
                                                  "to their endpoints"}
MASQUERADE_HOW: dict[object, str] = {"calico": "pods masqueraded by Calico natOutgoing",
                                     "cilium-bpf": "pods masqueraded in BPF (Cilium bpf.masquerade)"}


def _outside(lab: Lab) -> str | None:
    if lab.scenario.outside_ip is None:
        return None
    how = ("no masquerade" if not lab.scenario.masquerade else
           MASQUERADE_HOW.get(lab.capabilities.masquerade, "pods masqueraded by flannel --ip-masq"))
    return f"outside {lab.scenario.outside_ip} (the internet) · {how}"


def _pod_network(topo: Topology) -> str:
    if topo.lab.capabilities.pods_meet == "routed":
        return "cali* veths"  # routed, no bridge; the gateway, 169.254.1.1, on the next line
    if topo.lab.capabilities.pods_meet == "bpf-redirect":
        return "lxc* veths, tc BPF"  # no bridge either; the router IP on cilium_host
    return f"bridge {names.CNI_BRIDGE}"


def _layout(lab: Lab) -> tuple[list[tuple[float, Node]], dict[str, tuple[float, float]]]:
    """Nodes left to right, rack by rack: (x, node) each, and each segment's span (x from, x to)."""
    placed: list[tuple[float, Node]] = []
    spans: dict[str, tuple[float, float]] = {}
    x = GAP
    for segment in lab.segments:
        members = [n for n in lab.nodes if n.segment.name == segment.name]
        if not members:
            continue
        start = x
        for node in members:
            placed.append((x, node))
            x += NODE_W + GAP
        spans[segment.name] = (start - GAP / 4, x - GAP + GAP / 4)
        x += GAP  # racks stand apart
    return placed, spans


def svg(topo: Topology) -> str:
    lab = topo.lab
    racks = len(lab.segments) > 1
    placed, spans = _layout(lab)
    most = max((len(n.pods) for n in lab.nodes), default=0)
    node_h = 120 + POD_H * max(most, 1)
    width = max(int(max((x for x, _ in placed), default=0) + NODE_W + GAP), 600)
    top = 70
    lan_y = top + node_h + 60
    router_y = lan_y + 70
    links_y = (router_y + 60) if lab.has_router else lan_y + 60
    drawn = topo.links
    service_rows = _services(lab)
    outside = _outside(lab)
    # room for the longest Service row and the outside host's label (about 7 px a character)
    width = max(width, *(2 * GAP + 24 + 7 * len(text) for text, _ in service_rows),
                int(width / 2 + 190 + 7.5 * len(outside or "")) if lab.has_router else 0)
    services_y = links_y + 26 * len(drawn) + (30 if service_rows else 0)
    height = services_y + 24 * len(service_rows) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
           "<defs>" + "".join(f'<marker id="arrow-{kind}" markerWidth="10" markerHeight="7" refX="10" refY="3.5" '
                              f'orient="auto"><polygon points="0 0, 10 3.5, 0 7" fill="{COLORS[kind]}"/></marker>'
                              for kind in ("edge", "tunnel")) + "</defs>",
           f'<title>cni-lab {escape(lab.name)}</title>',
           f'<text x="{GAP}" y="30" font-size="18" font-weight="bold">lab {escape(lab.name)} · {escape(lab.dataplane)}'
           f' · cluster CIDR {lab.scenario.cluster_cidr}</text>']
    centers: dict[str, float] = {}
    for x, node in placed:
        centers[node.name] = x + NODE_W / 2
        bad = node.name in topo.collisions
        stroke = COLORS["bad"] if bad else "#5f6368"
        cls = "node collision" if bad else "node"
        title = f"{node.name} · {node.segment.name}" if racks else node.name
        out.append(f'<g class="{cls}" id="node-{escape(node.name)}">')
        out.append(f'<rect x="{x}" y="{top}" width="{NODE_W}" height="{node_h}" rx="10" fill="{COLORS["node"]}" '
                   f'stroke="{stroke}" stroke-width="{3 if bad else 1.5}"/>')
        out.append(f'<text x="{x + 12}" y="{top + 22}" font-weight="bold">{escape(title)}</text>')
        out.append(f'<text x="{x + NODE_W - 12}" y="{top + 22}" text-anchor="end">eth0 {node.ip}</text>')
        net_y = top + 36
        net_h = node_h - 48
        out.append(f'<rect x="{x + 10}" y="{net_y}" width="{NODE_W - 20}" height="{net_h}" rx="6" '
                   f'fill="{COLORS["bridge"]}" stroke="{stroke if bad else "#8ab4f8"}"/>')
        gateway = {"proxy-arp": f"{names.CALICO_GATEWAY} (proxy ARP)",
                   "cilium_host": f"router IP {node.gateway} ({names.CILIUM_HOST})"}.get(lab.capabilities.pod_gateway, f"gateway {node.gateway}")
        out.append(f'<text x="{x + 18}" y="{net_y + 18}">{escape(_pod_network(topo))} · {node.pod_cidr}</text>')
        out.append(f'<text x="{x + 18}" y="{net_y + 34}" fill="#5f6368">{escape(gateway)}</text>')
        device = lab.capabilities.tunnel.device if lab.capabilities.tunnel is not None else ""
        if device in (names.FLANNEL_DEVICE, names.CALICO_VXLAN, names.CALICO_IPIP):  # a device with an address
            out.append(f'<text x="{x + 18}" y="{net_y + 50}" fill="{COLORS["tunnel"]}">{device} '
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
    # the underlay: each segment its own switch (a bridge in the underlay namespace) under its nodes
    for segment in lab.segments:
        if segment.name not in spans:
            continue
        x1, x2 = spans[segment.name]
        label = f"{segment.name} {segment.cidr} · switch {names.segment_bridge(segment.name)}" if racks else \
            f"underlay {segment.cidr} · switch {names.segment_bridge(segment.name)}"
        out.append(f'<g class="underlay" id="segment-{escape(segment.name)}"><rect x="{x1}" y="{lan_y}" '
                   f'width="{x2 - x1}" height="26" rx="6" fill="{COLORS["underlay"]}" stroke="#5f6368"/>'
                   f'<text x="{x1 + 10}" y="{lan_y + 18}">{escape(label)}</text></g>')
    if lab.has_router:
        legs = [(spans[s.name], s) for s in lab.segments if s.name in spans]
        # between the racks, so that no node stands right above it
        gaps = [(a[1] + b[0]) / 2 for (a, _), (b, _) in zip(legs, legs[1:])]
        rx = sum(gaps) / len(gaps) if gaps else (legs[0][0][0] + legs[0][0][1]) / 2 if legs else width / 2
        centers[ROUTER] = rx
        out.append('<g class="router">')
        for (x1, x2), segment in legs:
            sx = (x1 + x2) / 2
            out.append(f'<polyline points="{sx},{lan_y + 26} {sx},{router_y + 15} {rx},{router_y + 15}" fill="none" '
                       f'stroke="#5f6368" stroke-width="2"/><text x="{sx + 6}" y="{lan_y + 44}" font-size="11" '
                       f'fill="#5f6368">{segment.name} .{int(segment.cidr.network_address + 1) & 255}</text>')
        out.append(f'<rect x="{rx - 70}" y="{router_y}" width="140" height="30" rx="15" fill="#fef7e0" stroke="#5f6368"/>'
                   f'<text x="{rx}" y="{router_y + 20}" text-anchor="middle">router</text></g>')
        if outside is not None:
            out.append(f'<g class="outside"><line x1="{rx + 70}" y1="{router_y + 15}" x2="{rx + 100}" y2="{router_y + 15}" '
                       f'stroke="#5f6368" stroke-width="2"/><text x="{rx + 106}" y="{router_y + 20}" '
                       f'font-weight="bold">{escape(outside)}</text></g>')
    # inter-node mechanism: one row per link under the underlay (and the router), an arrow from
    # whoever holds the route to the node it leads to
    for row, link in enumerate(drawn):
        x1, x2 = centers[link.src], centers[link.dst]
        kind = link.kind if link.kind in ("tunnel", "bgp") else "edge"
        y = links_y + 26 * row
        dash = ' stroke-dasharray="6 4"' if link.kind in ("tunnel", "bgp", "fabric") else ""
        marker = "" if link.kind == "bgp" else f' marker-end="url(#arrow-{kind})"'
        start, end = (x1 + 8, x2 - 8) if x2 > x1 else (x1 - 8, x2 + 8)
        out.append(f'<g class="link {link.kind}"><line x1="{start}" y1="{y}" x2="{end}" y2="{y}" stroke="{COLORS[kind]}" '
                   f'stroke-width="1.5"{dash}{marker}/><circle cx="{x1}" cy="{y}" r="3" fill="{COLORS[kind]}"/>'
                   f'<text x="{(x1 + x2) / 2}" y="{y - 4}" text-anchor="middle" font-size="11" fill="{COLORS[kind]}">'
                   f'{escape(link.src)}: {escape(link.label)}</text></g>')
    if drawn:
        for name, cx in centers.items():
            y0 = router_y + 30 if name == ROUTER else lan_y + 26
            out.append(f'<line x1="{cx}" y1="{y0}" x2="{cx}" y2="{links_y + 26 * (len(drawn) - 1) + 6}" '
                       'stroke="#dadce0" stroke-dasharray="2 3"/>')
    legend = {"route": "host-gw routes", "tunnel": "VXLAN tunnels", "bgp": "BGP sessions", "fabric": "fabric routes"}
    kinds = ", ".join(legend[k] for k in sorted({link.kind for link in topo.links}))
    if kinds:
        out.append(f'<text x="{GAP}" y="{links_y - 14}" font-size="11" fill="#5f6368">between nodes: {kinds}</text>')
    if service_rows:
        how = SERVICES_HOW.get(lab.capabilities.services, "kube-proxy's table on every node DNATs them to their endpoints")
        out.append(f'<text x="{GAP}" y="{services_y - 12}" font-size="11" fill="#5f6368">Services: {escape(how, quote=False)}</text>')
        for row, (text, _) in enumerate(service_rows):
            out.append(f'<g class="service"><rect x="{GAP}" y="{services_y + 24 * row}" width="{width - 2 * GAP}" '
                       f'height="20" rx="10" fill="#fce8e6" stroke="#c5221f"/><text x="{GAP + 12}" '
                       f'y="{services_y + 24 * row + 15}" font-size="12">{escape(text)}</text></g>')
    if topo.collisions:
        out.append(f'<text x="{GAP}" y="52" fill="{COLORS["bad"]}" font-weight="bold">'
                   "collision: nodes share a pod CIDR, pods share addresses (red)</text>")
    out.append("</svg>")
    return "\n".join(out)


def _pairs(topo: Topology) -> list[tuple[str, str, str, list[str]]]:
    """The links between two nodes merged, both directions on one edge: (a, b, kind, label lines).
    One label per pair keeps Graphviz from printing labels over one another."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for link in topo.links:
        a, b = sorted((link.src, link.dst)) if link.src != ROUTER else (link.src, link.dst)
        lines = merged.setdefault((a, b, link.kind), [])
        lines.append(link.label if link.kind in ("bgp", "fabric") else f"{link.src}: {link.label}")
    return [(a, b, kind, sorted(set(lines))) for (a, b, kind), lines in merged.items()]


def _segment_id(name: str) -> str:
    return f"segment {name}"


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
    # each segment its own switch; the router joins them
    for segment in lab.segments:
        lines.append(f'  "{_segment_id(segment.name)}" [shape=underline, label="{segment.name} {segment.cidr}\\n'
                     f'switch {names.segment_bridge(segment.name)}"];')
    for node in lab.nodes:
        lines.append(f'  "{node.name}" -> "{_segment_id(node.segment.name)}" [arrowhead=none];')
    if lab.has_router:
        lines.append(f'  "{ROUTER}" [shape=oval];')
        for segment in lab.segments:
            lines.append(f'  "{_segment_id(segment.name)}" -> "{ROUTER}" [arrowhead=none];')
    if lab.has_router and _outside(lab):
        lines.append(f'  "outside" [shape=oval, label="{_outside(lab)}"];')
        lines.append(f'  "{ROUTER}" -> "outside" [arrowhead=none];')
    for i, (text, ends) in enumerate(_services(lab)):
        lines.append(f'  "service {i}" [shape=component, color=red3, label="{text}"];')
        lines += [f'  "service {i}" -> "{pod}" [style=dotted, color=red3];' for pod in ends]
    for a, b, kind, label in _pairs(topo):
        style = "dashed" if kind in ("tunnel", "bgp", "fabric") else "solid"
        both = "" if kind == "fabric" else ", dir=both" if kind != "bgp" else ", dir=none"
        text = "\\n".join(label)
        lines.append(f'  "{a}" -> "{b}" [label="{text}", style={style}{both}, constraint=false];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid_id(text: str) -> str:
    """A node's, pod's or segment's id in the Mermaid text (Mermaid ids take no / - . or space)."""
    return text.replace("/", "__").replace("-", "_").replace(".", "_").replace(" ", "_")


def mermaid(topo: Topology) -> str:
    lab = topo.lab
    ident = mermaid_id
    lines = ["flowchart TB"]
    for node in lab.nodes:
        lines.append(f'  subgraph {ident(node.name)}_box["{node.name} · eth0 {node.ip} · {node.pod_cidr}"]')
        lines.append(f'    {ident(node.name)}(["{_pod_network(topo)}"])')
        for pod in node.pods:
            lines.append(f'    {ident(pod.id)}["{pod.name} {pod.ip}"]')
            lines.append(f"    {ident(node.name)} --- {ident(pod.id)}")
        lines.append("  end")
    for segment in lab.segments:
        lines.append(f'  {ident(_segment_id(segment.name))}[["{segment.name} {segment.cidr} · '
                     f'switch {names.segment_bridge(segment.name)}"]]')
    for node in lab.nodes:
        lines.append(f"  {ident(node.name)}_box --- {ident(_segment_id(node.segment.name))}")
    if lab.has_router:
        lines.append(f"  {ROUTER}([router])")
        for segment in lab.segments:
            lines.append(f"  {ident(_segment_id(segment.name))} --- {ROUTER}")
    if lab.has_router and _outside(lab):
        lines.append(f'  outside(["{_outside(lab)}"])')
        lines.append(f"  {ROUTER} --- outside")
    for i, (text, ends) in enumerate(_services(lab)):
        lines.append(f'  service_{i}{{{{"{text}"}}}}')
        lines += [f"  service_{i} -.-> {ident(pod)}" for pod in ends]
    for a, b, kind, label in _pairs(topo):
        arrow = "-.-" if kind == "bgp" else "<-.->" if kind == "tunnel" else "-.->" if kind == "fabric" else "<-->"
        lines.append(f'  {ident(a)} {arrow}|"{"<br>".join(label)}"| {ident(b)}')
    for cid in sorted(topo.collisions):
        lines.append(f"  style {ident(cid)}{'_box' if '/' not in cid else ''} stroke:#d93025,stroke-width:3px")
    return "\n".join(lines) + "\n"
