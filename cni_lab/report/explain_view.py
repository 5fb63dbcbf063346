"""`explain` rendered: the rich tree of each node and the JSON document (`explain --json`, the
HTML report's per-node facts). The facts and what they mean come from lesson/explain.py."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.dataplanes.ebpf_policy import labels_by_identity
from cni_lab.kernel import bpf
from cni_lab.kernel.readback import NetnsView, Route
from cni_lab.lesson.explain import BpfFacts, NodeFacts, calico_paths, calico_status, datapath_story, meaning
from cni_lab.report import cilium_view


def _addresses(view: NetnsView, ifname: str) -> list[str]:
    """Every address of the link, IPv4 first, IPv6 link-local ones left out."""
    link = view.link(ifname)
    return [str(a) for a in [*link.addresses, *(a for a in link.addresses6 if not a.is_link_local)]] if link else []


def _addr(view: NetnsView, ifname: str) -> str:
    return ", ".join(_addresses(view, ifname)) or "no address"


def view(lab: Lab, facts: list[NodeFacts]) -> RenderableType:
    trees = []
    for nf in facts:
        node = lab.node(nf.name)
        tree = Tree(Text.assemble((f"node {nf.name}", "bold"), f"  underlay {_addr(nf.view, 'eth0')}",
                                  ("  (ip_forward on)" if nf.view.forwarding else "  (ip_forward OFF)", "dim")))
        tree.add(f"eth0 {_addr(nf.view, 'eth0')} ⇄ veth pair ⇄ {nf.underlay_port or '?'} on the underlay switch")
        bridge = nf.view.link("cni0")
        if bridge is not None:
            cidrs = " and ".join(str(c) for c in node.pod_cidrs)
            br = tree.add(Text.assemble(("cni0", "bold"), f" bridge, gateway {_addr(nf.view, 'cni0')} for the pod CIDR {cidrs}"))
            for port in nf.view.ports("cni0") if bridge is not None else []:
                pod = next((p for p in nf.pods if p.host_veth == port.name), None)
                label = f"port {port.name} ⇄ veth pair ⇄ " + (f"eth0 of pod {pod.name}" if pod else "?")
                br.add(label)
        vx = nf.view.link(names.FLANNEL_DEVICE) or nf.view.link(names.CALICO_VXLAN)  # flannel's, or Felix's
        if vx is not None and vx.vxlan is not None:
            v = vx.vxlan
            tun = tree.add(Text.assemble((vx.name, "bold"), f" VXLAN VTEP {_addr(nf.view, vx.name)} mac {vx.mac}, "
                                         f"VNI {v['id']}, UDP {v['port']}, local {v['local']}, mtu {vx.mtu}"
                                         + ("" if v["learning"] else ", no learning")))
            for ip, mac, state in vx.neighbours:
                fdb = next((dst for m, dst in vx.fdb if m == mac), None)
                tun.add(f"neighbour {ip} is {mac} ({state.lower()}); fdb sends {mac} to {fdb or '?'}")
        for pf in nf.pods:
            if bridge is None and pf.host_veth:
                link = nf.view.link(pf.host_veth)
                addrs = ", ".join(str(a) for a in link.addresses) if link and link.addresses else "no address"
                tree.add(f"{pf.host_veth} ⇄ veth pair ⇄ eth0 of pod {pf.name}, {addrs}"
                         + (f", mac {link.mac}" if link else "")
                         + (", proxy_arp on" if link and link.proxy_arp else ""))
        for pf in nf.pods:
            branch = tree.add(Text.assemble(("pod ", ""), (pf.name, "bold"), f"  eth0 {_addr(pf.view, names.POD_IFNAME)}",
                                            (f"  ns {pf.netns}, host end {pf.host_veth}", "dim")))
            for r in [*pf.view.routes, *(pf.view.routes6 if lab.dual_stack else [])]:
                branch.add(Text.assemble(r.describe(), ("  ← " + meaning(lab, nf.name, r, in_pod=True), "cyan")))
            if pf.cni_result is not None:
                res = pf.cni_result
                ips = ", ".join(f"{i.get('address')} gw {i.get('gateway', '-')}" for i in res.get("ips", []))
                ifs = ", ".join(i.get("name", "?") for i in res.get("interfaces", []))
                branch.add(Text(f"CNI ADD result (cniVersion {res.get('cniVersion')}): ips {ips}; interfaces {ifs}",
                             style="magenta"))
        if nf.bpf is not None:
            _bpf_branches(lab, tree, nf)
            story = tree.add(Text("the datapath, in words", style="bold"))
            for line in datapath_story(lab, nf):
                story.add(Text(line, style="cyan"))
        if nf.policies is not None:
            pol = tree.add(Text("NetworkPolicy (enforced here, on the node's side of each pod)", style="bold"))
            for pp in nf.policies:
                branch = pol.add(Text(f"pod {pp.pod}", style="bold"))
                for direction, lines in (("ingress", pp.ingress), ("egress", pp.egress)):
                    if lines is None:
                        branch.add(Text(f"{direction}: no policy selects it, everything allowed", style="dim"))
                    else:
                        d = branch.add(f"{direction}: isolated; allowed only")
                        for line in lines:
                            d.add(Text(line, style="cyan"))
                if pp.rules:
                    branch.add(Text(pp.rules, style="dim"))
        if nf.nat is not None:
            _nat_branches(tree, nf)
        if nf.bgp is not None:
            bgp = tree.add(Text("BGP peers (as calicoctl node status shows them; sessions from birdc)", style="bold"))
            if nf.bgp_error:
                bgp.add(Text(nf.bgp_error, style="red"))
            peers = calico_status(lab, nf)
            for family in sorted({p.family for p in peers}):
                status = bgp.add(Text(f"IPv{family} BGP status", style="bold"))
                status.add(Text(f"{'PEER ADDRESS':<24} {'PEER TYPE':<18} {'STATE':<6} {'SINCE':<13} INFO", style="dim"))
                for p in peers:
                    if p.family == family:
                        style = "green" if p.info.startswith("Established") else "red"
                        status.add(Text.assemble(f"{p.address:<24} {p.type:<18} {p.state:<6} {p.since:<13} ",
                                                 (p.info, style)))
        paths = calico_paths(lab, nf.name)
        if paths:
            reach = tree.add(Text("other nodes' pods, as the IP pool's mode routes them", style="bold"))
            for line in paths:
                reach.add(Text(line, style="cyan"))
        routes = tree.add(Text("routing table", style="bold"))
        for r in nf.view.routes:
            routes.add(Text.assemble(r.describe(), ("  ← " + meaning(lab, nf.name, r), "cyan")))
        if lab.dual_stack:
            routes6 = tree.add(Text("IPv6 routing table (ip -6 route)", style="bold"))
            for r in nf.view.routes6:
                routes6.add(Text.assemble(r.describe(), ("  ← " + meaning(lab, nf.name, r), "cyan")))
        trees.append(tree)
    return Group(*trees)


def _nat_branches(tree: Tree, nf: NodeFacts) -> None:
    """Where this node does NAT: what leaves the cluster (masquerade) and Services (DNAT)."""
    assert nf.nat is not None
    nat = nf.nat
    if nat.masquerade_table:
        masq = tree.add(Text(f"egress masquerade (table {nat.masquerade_table}): NAT only where traffic leaves the "
                             "cluster", style="bold"))
        for chain, rule, words in nat.masquerade:
            masq.add(Text.assemble(f"{chain}: {rule}", ("  ← " + words, "cyan")))
    if nat.services:
        svc = tree.add(Text("Services (table ip kube-proxy): the destination rewritten, on this node", style="bold"))
        for line in nat.services:
            svc.add(Text(line, style="cyan"))


def _bpf_branches(lab: Lab, tree: Tree, nf: NodeFacts) -> None:
    assert nf.bpf is not None
    facts = nf.bpf
    labels = labels_by_identity(lab)
    progs = tree.add(Text.assemble(("BPF programs", "bold"), ("  (bpftool net; pinned in " + facts.pin + ")", "dim")))
    if facts.error:
        progs.add(Text(facts.error, style="red"))
    for a in facts.attached:
        progs.add(f"{a.ifname} clsact/{a.direction} {a.program}")
    by_index = {lk.index: lk.name for lk in nf.view.links}
    pod_of = {pf.host_veth: pf.name for pf in nf.pods}
    eps = tree.add(Text.assemble(("cilium_lxc", "bold"), " (endpoints map: pod IP → lxc device, MACs)"))
    for e in facts.endpoints:
        lxc = by_index.get(e.ifindex, f"ifindex {e.ifindex} (gone)")
        eps.add(f"{e.ip} → {lxc} (pod {pod_of.get(lxc, '?')}), pod mac {e.mac}, lxc mac {e.node_mac}"
                + (f", endpoint {e.lxc_id}, identity {e.identity}" if e.lxc_id else ""))
    for e, pod in _endpoints(lab, nf):
        shown = ", ".join(labels.get(e.identity, ())) or "labels the lab does not know"
        branch = tree.add(Text.assemble((f"endpoint {e.lxc_id}", "bold"), f" (pod {pod or '?'}): identity {e.identity} ",
                                        (f"({shown})", "cyan")))
        rows = facts.policy.get(e.lxc_id)
        if rows is None:
            branch.add(Text(f"no {bpf.policy_map_name(e.lxc_id)} could be read: the programs let everything through "
                            "for an endpoint without a policy map", style="red"))
            continue
        policy = branch.add(Text.assemble((f"cilium bpf policy get {e.lxc_id}", "bold"),
                                          f"  ({bpf.policy_map_name(e.lxc_id)}: what the endpoint may send and hear, "
                                          "by identity)"))
        for line in cilium_view.policy_get(rows, labels):
            policy.add(Text(line))
    for command, maps, lines, empty in _cilium_lists(facts, labels):
        branch = tree.add(Text.assemble((command, "bold"), f"  ({maps})"))
        for line in lines or [empty]:
            branch.add(Text(line, style="dim" if not lines else ""))
    counted = ", ".join(f"{k} {v}" for k, v in facts.metrics.items() if v)
    tree.add(Text(f"cilium_metrics: {counted or 'no packets yet'}", style="dim"))


def _pod_ids(lab: Lab, node: str) -> dict[str, str]:
    """Each address of the node's pods → its pod's id."""
    return {str(a): p.id for p in lab.node(node).pods for a in p.ips}


def _endpoints(lab: Lab, nf: NodeFacts) -> list[tuple[bpf.Endpoint, str | None]]:
    """Each endpoint of the node once (cilium_lxc has an entry per address), with its pod's id."""
    pods = _pod_ids(lab, nf.name)
    assert nf.bpf is not None
    first = {e.lxc_id: e for e in reversed(nf.bpf.endpoints) if e.lxc_id}  # its IPv4 entry where it has one
    return [(e, pods.get(e.ip)) for _, e in sorted(first.items())]


def _cilium_lists(facts: BpfFacts, labels: dict[int, tuple[str, ...]]) -> list[tuple[str, str, list[str], str]]:
    """The node's maps as Cilium's commands print them: (command, maps, lines, what to say when
    there are none); the conntrack and NAT tables only where there is something to translate."""
    out = []
    if facts.services:
        out.append(("cilium bpf lb list", "cilium_lb4_services_v2 with cilium_lb4_backends_v3",
                    cilium_view.lb_list(facts.services), ""))
    if facts.services or facts.conntrack:
        out.append(("cilium bpf ct list global", "cilium_ct4_global, cilium_ct_any4_global",
                    cilium_view.ct_list(facts.conntrack), "no translated connection yet"))
    if facts.nat:
        out.append(("cilium bpf nat list", "cilium_snat_v4_external", cilium_view.nat_list(facts.nat, facts.now), ""))
    if facts.ipcache:
        out.append(("cilium bpf ipcache list", "cilium_ipcache_v2: prefix → identity, tunnel endpoint",
                    cilium_view.ipcache_list(facts.ipcache), ""))
        out.append(("cilium identity list", "the labels each identity stands for",
                    cilium_view.identity_list(labels), ""))
    return out


def to_json(lab: Lab, facts: list[NodeFacts]) -> dict[str, Any]:
    def addr_of(view: NetnsView, ifname: str) -> str | None:
        link = view.link(ifname)
        return str(link.addresses[0]) if link and link.addresses else None

    def routes_of(lab: Lab, node: str, routes: list[Route], in_pod: bool = False) -> list[dict[str, Any]]:
        return [{"route": r.describe(), "dst": r.dst, "gateway": r.gateway, "dev": r.dev,
                 "meaning": meaning(lab, node, r, in_pod=in_pod)} for r in routes]

    nodes = []
    for nf in facts:
        bridge = nf.view.link(names.CNI_BRIDGE)
        nodes.append({
            "name": nf.name,
            "netns": nf.netns,
            "underlay": {"ifname": names.NODE_UPLINK, "address": addr_of(nf.view, names.NODE_UPLINK),
                         "addresses": _addresses(nf.view, names.NODE_UPLINK), "peer": nf.underlay_port},
            "forwarding": nf.view.forwarding,
            "vxlan": _vxlan_json(nf.view),
            "bgp": None if nf.bgp is None else {
                "error": nf.bgp_error or None,
                "sessions": [{"name": b.name, "proto": b.proto, "state": b.state, "since": b.since, "info": b.info}
                             for b in nf.bgp],
                # as `calicoctl node status` shows them
                "peers": [{"peerAddress": p.address, "family": p.family, "peerType": p.type, "state": p.state,
                           "since": p.since, "info": p.info} for p in calico_status(lab, nf)],
            },
            "calicoPaths": calico_paths(lab, nf.name),  # bgp labs: each other node, direct or through the tunnel
            "bpf": None if nf.bpf is None else _bpf_json(lab, nf),
            "nat": None if nf.nat is None else {
                "masqueradeTable": nf.nat.masquerade_table,
                "masquerade": [{"chain": c, "rule": r, "meaning": m} for c, r, m in nf.nat.masquerade],
                "services": nf.nat.services},
            "policies": None if nf.policies is None else [
                {"pod": pp.pod, "ingress": pp.ingress, "egress": pp.egress, "nft": pp.rules} for pp in nf.policies],
            "bridge": None if bridge is None else {
                "name": bridge.name,
                "address": addr_of(nf.view, bridge.name),
                "mtu": bridge.mtu,
                "ports": sorted(p.name for p in nf.view.ports(bridge.name)),
            },
            "routes": routes_of(lab, nf.name, nf.view.routes),
            "routes6": routes_of(lab, nf.name, nf.view.routes6) if lab.dual_stack else [],
            "datapath": datapath_story(lab, nf),
            "pods": [{
                "name": pf.name,
                "netns": pf.netns,
                "ifname": names.POD_IFNAME,
                "address": addr_of(pf.view, names.POD_IFNAME),
                "addresses": _addresses(pf.view, names.POD_IFNAME),
                "mtu": pf.eth0.mtu if pf.eth0 else None,
                "hostVeth": pf.host_veth,
                "cniResult": pf.cni_result,
                "routes": routes_of(lab, nf.name, pf.view.routes, in_pod=True),
                "routes6": routes_of(lab, nf.name, pf.view.routes6, in_pod=True) if lab.dual_stack else [],
            } for pf in nf.pods],
        })
    return {"lab": lab.name, "dataplane": lab.dataplane, "nodes": nodes}


def _bpf_json(lab: Lab, nf: NodeFacts) -> dict[str, Any]:
    assert nf.bpf is not None
    names_by_index = {lk.index: lk.name for lk in nf.view.links}
    labels, pods = labels_by_identity(lab), _pod_ids(lab, nf.name)
    return {
        "pinned": nf.bpf.pin,
        "error": nf.bpf.error or None,
        "programs": [{"ifname": a.ifname, "hook": f"tc {a.direction}", "program": a.program} for a in nf.bpf.attached],
        # cilium_lxc's entries (one per address), each with its endpoint: the ID, the identity and its
        # labels, the policy map as `cilium bpf policy get` shows it (null: no map could be read)
        "endpoints": [{"ip": e.ip, "ifindex": e.ifindex, "lxc": names_by_index.get(e.ifindex), "mac": e.mac,
                       "nodeMac": e.node_mac, "id": e.lxc_id, "pod": pods.get(e.ip), "identity": e.identity,
                       "labels": list(labels.get(e.identity, ())),
                       "policy": None if e.lxc_id not in nf.bpf.policy else
                       cilium_view.policy_json(nf.bpf.policy[e.lxc_id], labels)} for e in nf.bpf.endpoints],
        # as `cilium bpf lb list`, `ct list global`, `nat list` and `ipcache list` show them (report/cilium_view.py)
        "services": cilium_view.lb_json(nf.bpf.services),
        "conntrack": cilium_view.ct_json(nf.bpf.conntrack),
        "nat": cilium_view.nat_json(nf.bpf.nat, nf.bpf.now),
        "ipcache": cilium_view.ipcache_json(nf.bpf.ipcache),
        "identities": cilium_view.identity_json(labels),
        "metrics": nf.bpf.metrics,
    }


def _vxlan_json(view: NetnsView) -> dict[str, Any] | None:
    link = view.link(names.FLANNEL_DEVICE) or view.link(names.CALICO_VXLAN)
    if link is None or link.vxlan is None:
        return None
    return {
        "name": link.name,
        "mac": link.mac,
        "mtu": link.mtu,
        "addresses": [str(a) for a in link.addresses],
        **link.vxlan,
        "neighbours": [{"ip": ip, "mac": mac, "state": st} for ip, mac, st in link.neighbours],
        "fdb": [{"mac": mac, "dst": dst} for mac, dst in link.fdb],
    }
