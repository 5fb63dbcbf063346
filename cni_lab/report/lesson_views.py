"""Rich views of the lesson: `explain` trees and `trace` paths."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from cni_lab.cluster import Lab
from cni_lab.lesson.explain import NodeFacts, calico_status, datapath_story, meaning
from cni_lab.lesson.service_trace import ServiceTrace
from cni_lab.lesson.trace import Leg, Trace


def _addr(facts: NodeFacts, ifname: str) -> str:
    """The link's addresses, IPv4 first, then IPv6 (link-local ones left out)."""
    link = facts.view.link(ifname)
    found = [*link.addresses, *(a for a in link.addresses6 if not a.is_link_local)] if link else []
    return ", ".join(str(a) for a in found) if found else "no address"


def explain_view(lab: Lab, facts: list[NodeFacts]) -> RenderableType:
    trees = []
    for nf in facts:
        node = lab.node(nf.name)
        tree = Tree(Text.assemble((f"node {nf.name}", "bold"), f"  underlay {_addr(nf, 'eth0')}",
                                  ("  (ip_forward on)" if nf.view.forwarding else "  (ip_forward OFF)", "dim")))
        tree.add(f"eth0 {_addr(nf, 'eth0')} ⇄ veth pair ⇄ {nf.underlay_port or '?'} on the underlay switch")
        bridge = nf.view.link("cni0")
        if bridge is not None:
            cidrs = " and ".join(str(c) for c in node.pod_cidrs)
            br = tree.add(Text.assemble(("cni0", "bold"), f" bridge, gateway {_addr(nf, 'cni0')} for the pod CIDR {cidrs}"))
            for port in nf.view.ports("cni0") if bridge is not None else []:
                pod = next((p for p in nf.pods if p.host_veth == port.name), None)
                label = f"port {port.name} ⇄ veth pair ⇄ " + (f"eth0 of pod {pod.name}" if pod else "?")
                br.add(label)
        vx = nf.view.link("flannel.1")
        if vx is not None and vx.vxlan is not None:
            v = vx.vxlan
            tun = tree.add(Text.assemble(("flannel.1", "bold"), f" VXLAN VTEP {_addr(nf, 'flannel.1')} mac {vx.mac}, "
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
            eth0 = pf.eth0
            found = [*eth0.addresses, *(a for a in eth0.addresses6 if not a.is_link_local)] if eth0 else []
            ip = ", ".join(str(a) for a in found) if found else "no address"
            branch = tree.add(Text.assemble(("pod ", ""), (pf.name, "bold"), f"  eth0 {ip}",
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
            _bpf_branches(tree, nf)
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


def _bpf_branches(tree: Tree, nf: NodeFacts) -> None:
    assert nf.bpf is not None
    facts = nf.bpf
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
        eps.add(f"{e.ip} → {lxc} (pod {pod_of.get(lxc, '?')}), pod mac {e.mac}, lxc mac {e.node_mac}")
    if facts.tunnels:
        tun = tree.add(Text.assemble(("cilium_tunnel_map", "bold"), " (pod CIDR → node IP, through cilium_vxlan)"))
        for cidr, ip in facts.tunnels:
            tun.add(f"{cidr} → {ip}")
    counted = ", ".join(f"{k} {v}" for k, v in facts.metrics.items() if v)
    tree.add(Text(f"cilium_metrics: {counted or 'no packets yet'}", style="dim"))


def _leg_tree(title: str, leg: Leg) -> Tree:
    tree = Tree(Text(title, style="bold"))
    for i, hop in enumerate(leg.hops, 1):
        came = f" (in on {hop.came_in})" if hop.came_in else ""
        if hop.bpf is not None:
            label = Text.assemble(f"{i}. {hop.where}{came}: ", ("BPF ", "bold magenta"), hop.bpf)
            if hop.action == "drop":
                label.append_text(Text.assemble(": ", ("dropped", "bold red"), f": {hop.reason}"))
            elif hop.action == "deliver":
                label.append_text(Text(" (delivered)", style="bold green"))
            node = tree.add(label)
            if hop.wire:
                node.add(Text(" → ".join(hop.wire), style="dim"))
            continue
        if hop.action == "arrive":
            tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("arrives at kube-proxy's table", "bold")))
        elif hop.action == "deliver":
            tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("delivered", "bold green"), f" ({hop.route})"))
        elif hop.action == "drop":
            tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("dropped", "bold red"), f": {hop.reason}"))
        else:
            node = tree.add(Text.assemble(f"{i}. {hop.where}{came}: route ", (hop.route or "?", "cyan"),
                                          f" → out {hop.out}, next hop {hop.next_hop}"))
            if hop.wire:
                node.add(Text(" → ".join(hop.wire), style="dim"))
    return tree


def trace_view(t: Trace, verdict: str | None, agree: bool | None,
               moved: dict[str, dict[str, int]] | None = None) -> RenderableType:
    parts: list[RenderableType] = [_leg_tree(f"{t.src.id} ({t.src.ip}) → {t.dst.id} ({t.dst.ip})", t.there)]
    if t.back is not None:
        parts.append(_leg_tree(f"reply {t.back.src.id} ({t.back.src.ip}) → {t.src.ip}", t.back))
    style = "green" if t.outcome == "ok" else "red"
    parts.append(Text.assemble(("result: ", "bold"), (t.summary(), style)))
    if verdict is not None:
        mark = ("✓ agrees", "green") if agree else ("✗ DISAGREES", "bold red")
        parts.append(Text.assemble(f"real probe: {verdict} ", mark))
    for node, counts in (moved or {}).items():
        counted = ", ".join(f"{k} +{v}" for k, v in counts.items())
        parts.append(Text(f"  cilium_metrics on {node} during the probe: {counted}", style="dim"))
    return Group(*parts)


def service_trace_view(t: ServiceTrace) -> RenderableType:
    """pod → ClusterIP: the way to the node, the DNAT as conntrack recorded it, the way on."""
    svc, port = t.service, t.port
    parts: list[RenderableType] = []
    title = f"{t.src.id} ({t.src.ip}) → Service {svc.qualified} {svc.cluster_ip}:{port.port}/{port.protocol}"
    if t.to_dnat.hops:
        parts.append(_leg_tree(title, t.to_dnat))
    else:
        parts.append(Text(f"{title}: sent by the node itself (nat-output)", style="bold"))
    if t.dnat_at:
        hook = "nat-output" if not t.to_dnat.hops else "nat-prerouting"
        dnat = Tree(Text(f"at {t.dnat_at}: kube-proxy's table (table ip kube-proxy)", style="bold"))
        dnat.add(Text.assemble(f"{hook} → services: ", (f"{svc.cluster_ip} . tcp . {port.port}", "cyan"),
                               f" in map service-ips → goto {t.chain}"))
        dnat.add(f"{t.chain}: numgen random mod {len(svc.endpoints)} picks one of "
                 + ", ".join(f"{p.id} {p.ip}:{port.target_port}" for p in svc.endpoints))
        c = t.connection
        if c is not None:
            dnat.add(Text.assemble("conntrack: ", (f"{c.src}:{c.sport} → {c.dst}:{c.dport}", "cyan"), "  reply ",
                                   (f"{c.reply_src}:{c.reply_sport} → {c.reply_dst}:{c.reply_dport}", "cyan"),
                                   f"  [{c.status}]"))
            if c.reply_dst != c.src:
                dnat.add(Text(f"the reply goes to {c.reply_dst}: the source was masqueraded (hairpin: the client is "
                              "the endpoint itself)", style="magenta"))
        parts.append(dnat)
    if t.onward is not None and t.connection is not None:
        parts.append(_leg_tree(f"on, rewritten: {t.src.ip} → {t.connection.reply_src}:{t.connection.reply_sport}", t.onward))
    if t.back is not None and t.connection is not None:
        parts.append(_leg_tree(f"reply {t.connection.reply_src} → {t.connection.reply_dst} "
                               f"(un-DNATed to {svc.cluster_ip} on {t.dnat_at} by conntrack)", t.back))
    style = "green" if t.outcome == "ok" else "red"
    parts.append(Text.assemble(("result: ", "bold"), (t.summary(), style)))
    return Group(*parts)


def demo_event(event: object) -> RenderableType:
    from rich.panel import Panel
    from rich.rule import Rule

    from cni_lab.lesson import demo
    from cni_lab.report.terminal import check_view, lab_table, warnings

    if isinstance(event, demo.ActStarted):
        act = event.act
        parts: list[RenderableType] = [Rule(f"[bold]Act {act.number}: {act.title}[/]  (scenarios/{act.scenario}.yaml)"),
                                       Text(act.story)]
        parts += warnings(event.lab)
        parts.append(lab_table(event.lab))
        return Group(*parts)
    if isinstance(event, demo.Facts):
        return Group(Text("What the kernel says (read back from the namespaces):", style="bold"),
                     explain_view(event.lab, event.nodes))
    if isinstance(event, demo.Traced):
        return trace_view(event.trace, None, None)
    if isinstance(event, demo.Proved):
        return Group(Text("The proof (every pair probed for real):", style="bold"), check_view(event.result))
    if isinstance(event, demo.ActDone):
        if event.passed:
            return Panel(Text(event.act.notice), title=f"Act {event.act.number}: what to notice", border_style="green")
        return Panel(Text("\n".join(event.problems), style="red"), title=f"Act {event.act.number} did not show what it should",
                     border_style="red")
    return Text(str(event))


def demo_summary(results: list) -> RenderableType:  # type: ignore[type-arg]
    lines = Text()
    for r in results:
        lines.append("✓ " if r.passed else "✗ ", style="green" if r.passed else "red")
        lines.append(f"Act {r.act.number}: {r.act.title}\n")
    return lines
