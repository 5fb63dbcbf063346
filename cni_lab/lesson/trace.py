"""`trace`: the path a packet takes, hop by hop, each decision the kernel's own route lookup.

At every namespace the packet reaches, `ip route get` (with the interface it came in on, so
forwarding is judged as the kernel would) says where it goes next. In an `ebpf` lab a device
with a program at its tc hook decides first: the hop is then the program's own decision, made
from its maps as read from the kernel (cilium_lxc, cilium_ipcache_v2, and in a lab with policies
each endpoint's cilium_policy_v2_<id>: lesson/policy_lookup.py) and, for native routing, the FIB
lookup it asks for (bpf_fib_lookup). On the data planes that enforce NetworkPolicy in the nodes'
nftables, each node hook the packet passes (forward, routed or bridged, input, output) is judged
by the chains the node's table jumps to (lesson/policy_hooks.py). Which namespace receives it is followed over the wiring
read from the kernel: veth pairs and bridge ports. The trace then goes back the other way,
because a reply needs a route too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from cni_lab import names
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.dataplanes.ebpf import FROM_CONTAINER
from cni_lab.kernel import readback
from cni_lab.kernel.readback import NetnsView
from cni_lab.lesson import policy_hooks, policy_lookup
from cni_lab.lesson.explain import BpfFacts, read_bpf
from cni_lab.lesson.hops import Hop, Leg
from cni_lab.lesson.policy_hooks import Bridged, Hooks
from cni_lab.lesson.policy_lookup import Judged
from cni_lab.probe.pairs import Endpoint, endpoints

MAX_HOPS = 16


@dataclass
class Trace:
    src: Endpoint
    dst: Endpoint
    there: Leg
    back: Leg | None

    @property
    def outcome(self) -> str:
        """ok | wrong-peer | dropped (the probe verdicts a trace can predict)."""
        if self.there.delivered_to is None:
            return "dropped"
        if self.there.delivered_to != self.dst.id:
            return "wrong-peer"
        if self.back is None or self.back.delivered_to != self.src.id:
            return "dropped"
        return "ok"


class Wiring:
    """The lab's L2 wiring and addresses, read from the kernel once per trace."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        underlay = names.underlay_netns(lab.name)
        self.views: dict[str, NetnsView] = {}
        self.bpf: dict[str, BpfFacts] = {}  # node namespace -> its datapath (ebpf labs)
        self.label: dict[str, str] = {underlay: "underlay"}
        node_namespaces = [names.node_netns(lab.name, n.name) for n in lab.nodes]
        router = [names.router_netns(lab.name)] if lab.has_router else []
        self.views[underlay] = readback.read(underlay, [*node_namespaces, *router])
        for r in router:
            self.views[r] = readback.read(r, [underlay])
            self.label[r] = "router"
        for n in lab.nodes:
            node_ns = names.node_netns(lab.name, n.name)
            pod_namespaces = [names.pod_netns(lab.name, n.name, p.name) for p in n.pods]
            self.views[node_ns] = readback.read(node_ns, [underlay, *pod_namespaces])
            self.label[node_ns] = n.name
            if lab.capabilities.loads_bpf:
                self.bpf[node_ns] = read_bpf(node_ns, names.bpf_node_dir(lab.name, n.name))
            for p in n.pods:
                pod_ns = names.pod_netns(lab.name, n.name, p.name)
                self.views[pod_ns] = readback.read(pod_ns, [node_ns])
                self.label[pod_ns] = p.id

    def _peer(self, ns: str, ifname: str) -> tuple[str, str] | None:
        link = self.views[ns].link(ifname)
        if link is None or link.kind != "veth" or link.peer_netns not in self.views:
            return None
        peer = next((lk for lk in self.views[link.peer_netns].links if lk.index == link.peer_index), None)
        return (link.peer_netns, peer.name) if peer else None

    def segment(self, ns: str, ifname: str) -> list[tuple[str, str, list[str]]]:
        """Every L3 interface on the same L2 segment as (ns, ifname), with the wire path to it."""
        start = (ns, ifname)
        seen = {start}
        queue: list[tuple[tuple[str, str], list[str]]] = [(start, [])]
        found = []
        while queue:
            (cur_ns, cur_if), path = queue.pop(0)
            view = self.views[cur_ns]
            link = view.link(cur_if)
            if link is None:
                continue
            steps: list[tuple[str, str]] = []
            if link.kind == "bridge":
                steps += [(cur_ns, p.name) for p in view.ports(cur_if)]
            if link.master:
                steps.append((cur_ns, link.master))
            peer = self._peer(cur_ns, cur_if)
            if peer:
                steps.append(peer)
            for nxt in steps:
                if nxt in seen:
                    continue
                seen.add(nxt)
                label = f"{nxt[1]} ({self.label.get(nxt[0], nxt[0])})"
                nxt_path = [*path, label]
                nxt_link = self.views[nxt[0]].link(nxt[1])
                if nxt_link and (nxt_link.addresses or nxt_link.addresses6) and nxt != start:
                    found.append((nxt[0], nxt[1], nxt_path))
                queue.append((nxt, nxt_path))
        return found

    def owner(self, ns: str, ifname: str, ip: IPv4Address | IPv6Address) -> tuple[str, str, list[str]] | None:
        link = self.views[ns].link(ifname)
        if link is not None and link.vxlan is not None:
            return self._tunnel(ns, link, ip)
        segment = self.segment(ns, ifname)
        for other_ns, other_if, path in segment:
            link = self.views[other_ns].link(other_if)
            if link and (any(a.ip == ip for a in link.addresses) or any(a.ip == ip for a in link.addresses6)):
                return other_ns, other_if, path
        # Nobody has the address: an interface with proxy_arp answers for it when its namespace
        # routes that address out of another interface (how Calico's 169.254.1.1 works).
        peer = self._peer(ns, ifname)
        if peer is not None and peer[0] in self.bpf:
            # a pod's router IP is cilium_host's, on no device of this segment: the program on the
            # lxc device answers the pod's ARP for it (ebpf)
            facts, node = self.bpf[peer[0]], self.label.get(peer[0], peer[0])
            program = facts.program_on(peer[1])
            router = self.views[peer[0]].link(names.CILIUM_HOST)
            if router is not None and any(a.ip == ip for a in router.addresses):
                who = f"{program} answers" if program else "no program: the node's stack answers"
                return peer[0], peer[1], [f"{peer[1]} ({node}): {who} the ARP for {ip} with {peer[1]}'s MAC"]
        if peer is not None:
            peer_ns, peer_if = peer
            link = self.views[peer_ns].link(peer_if)
            if link is not None and link.proxy_arp:
                decision = readback.route_get(peer_ns, ip)
                if decision.type == "unicast" and decision.dev != peer_if:
                    label = f"{peer_if} ({self.label.get(peer_ns, peer_ns)}) answers the ARP for {ip} (proxy ARP)"
                    return peer_ns, peer_if, [label]
        return None

    def _tunnel(self, ns: str, link: readback.Link, ip: IPv4Address | IPv6Address) -> tuple[str, str, list[str]] | None:
        """Across a VXLAN device: the neighbour entry gives the remote VTEP's MAC, the fdb entry the
        node IP the encapsulated frame is sent to, and that node's VXLAN device receives it."""
        mac = next((m for n_ip, m, _ in link.neighbours if n_ip == str(ip)), None)
        remote = next((dst for m, dst in link.fdb if m == mac), None)
        if mac is None or remote is None:
            return None
        for other_ns, view in self.views.items():
            other = view.link(link.name)
            if other_ns != ns and other is not None and other.mac == mac:
                wire = [f"VXLAN VNI {link.vxlan['id'] if link.vxlan else '?'}: {mac} is at {remote}, "
                        f"so the frame goes as UDP {link.vxlan['port'] if link.vxlan else '?'} "
                        f"{link.vxlan['local'] if link.vxlan else '?'} → {remote} over the underlay",
                        f"{other.name} ({self.label.get(other_ns, other_ns)})"]
                return other_ns, other.name, wire
        return None

    def bridged(self, ns: str, out: str, next_ns: str, next_if: str) -> Bridged | None:
        """Where the way from (ns, out) to (next_ns, next_if) crosses a bridge in a third
        namespace (two pods on their node's cni0): that namespace, its ports in and out, the bridge."""
        entry, leaving = self._peer(ns, out), self._peer(next_ns, next_if)
        link = self.views[entry[0]].link(entry[1]) if entry is not None else None
        if entry is None or link is None or not link.master or entry[0] == next_ns:
            return None
        out_port = leaving[1] if leaving is not None and leaving[0] == entry[0] else None
        return Bridged(entry[0], self.label.get(entry[0], entry[0]), entry[1], out_port, link.master)

    def matched_route(self, ns: str, dst: IPv4Address | IPv6Address) -> str | None:
        """The route the lookup used, found by longest prefix match over the table read back."""
        best, best_len = None, -1
        view = self.views[ns]
        for r in (view.routes6 if dst.version == 6 else view.routes):
            net = ip_network(("::/0" if dst.version == 6 else "0.0.0.0/0") if r.dst == "default" else r.dst)
            if net.version != dst.version:
                continue
            if dst in net and net.prefixlen > best_len:
                best, best_len = r, net.prefixlen
        return best.describe() if best else None


def resolve_endpoint(lab: Lab, text: str, family: int = 4) -> Endpoint:
    """A node or pod by name (its address of `family`), or any endpoint by one of its IPs."""
    eps = endpoints(lab, family)
    by_ip = [ep for f in (4, 6) for ep in endpoints(lab, f) if str(ep.ip) == text]
    if by_ip:
        return by_ip[0]
    if family == 6 and not lab.dual_stack:
        raise LabError(f"lab {lab.name} has no IPv6 addresses (it is not a dual-stack lab)")
    for ep in eps:
        if ep.id == text:
            return ep
    qualified = {p.qualified: p.id for p in lab.pods if p.namespace != "default"}
    if text in qualified and not any(n.name == text.split("/")[0] for n in lab.nodes):
        return next(ep for ep in eps if ep.id == qualified[text])
    matches = [ep for ep in eps if str(ep.ip) == text or ep.id.split("/")[-1] == text]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise LabError(f"{text!r} is ambiguous in lab {lab.name}: {', '.join(e.id for e in matches)}; use NODE/POD")
    raise LabError(f"lab {lab.name} has no node, pod or endpoint IP {text!r}")


NOT_CONSULTED = "the node's routing table and netfilter are not consulted"


def _bpf_hop(w: Wiring, ns: str, came_in: str | None, dst_ip: IPv4Address | IPv6Address, judged: Judged | None = None,
             sender: str | None = None) -> tuple[Hop, str, str] | Hop | None:
    """What the node's BPF programs do with a packet arriving on `came_in` (or sent by the node
    itself): (the hop, the namespace and interface it reaches next), a final hop, or None when
    no program takes it (the kernel's routing decides, as elsewhere). `judged`: the packet whose
    policy is looked up (a lab with policies), `sender` the namespace of the hop before."""
    found = _bpf_way(w, ns, came_in, dst_ip, judged, sender)
    facts = w.bpf.get(ns)
    if judged is None or found is None or facts is None or came_in is None or facts.program_on(came_in) != FROM_CONTAINER:
        return found
    # cil_from_container's egress lookup comes first: its words go before what the program did next
    peer = w._peer(ns, came_in)
    check = policy_lookup.egress(facts, dst_ip, judged, w.label.get(peer[0], "?") if peer else "?")
    if check is None:
        return found
    hop = found if isinstance(found, Hop) else found[0]
    at = f"{FROM_CONTAINER} on {came_in}"
    if not check.allowed:
        return Hop(hop.where, ns, came_in, "drop", bpf=f"{at}: {check.words}", reason=check.reason)
    rest = (hop.bpf or "")[len(at):].removeprefix(": ")
    hop.bpf = f"{at}: {check.words}" + (f"; {rest}" if rest else "")
    return found


def _bpf_way(w: Wiring, ns: str, came_in: str | None, dst_ip: IPv4Address | IPv6Address, judged: Judged | None,
             sender: str | None) -> tuple[Hop, str, str] | Hop | None:
    """_bpf_hop's way on, with the ingress lookup where a pod of this node gets the packet."""
    facts = w.bpf.get(ns)
    if facts is None:
        return None
    where = w.label.get(ns, ns)
    view = w.views[ns]
    if came_in is None:
        decision = readback.route_get(ns, dst_ip)
        if decision.dev != names.CILIUM_HOST or facts.program_on(names.CILIUM_HOST, "egress") is None:
            return None
        program, hook = facts.program_on(names.CILIUM_HOST, "egress"), f"{names.CILIUM_HOST} (tc egress)"
    else:
        link = view.link(came_in)
        program, hook = facts.program_on(came_in), came_in
        if program is None:
            if link is not None and came_in.startswith("lxc"):
                return Hop(where, ns, came_in, "drop", reason=f"no program on {came_in}: the node's stack gets the "
                           "packet, and forwarding is off on lxc devices")
            return None
    endpoint = next((e for e in facts.endpoints if e.ip == str(dst_ip)), None)
    if endpoint is not None:
        lxc = next((lk for lk in view.links if lk.index == endpoint.ifindex), None)
        peer = w._peer(ns, lxc.name) if lxc is not None else None
        if peer is None:
            return Hop(where, ns, came_in, "drop", bpf=f"{program} on {hook}", reason=f"cilium_lxc sends {dst_ip} "
                       f"to ifindex {endpoint.ifindex}, which has no pod behind it")
        helper = "bpf_redirect_peer" if came_in is not None else f"bpf_redirect out of {lxc.name if lxc else '?'}"
        target = f"{w.label.get(peer[0], peer[0])} {peer[1]}"
        delivery = ""
        if judged is not None and came_in is not None:  # cil_from_host's way in: allow-localhost, no lookup
            sending = (w.label.get(sender, sender), w.bpf[sender]) if sender in w.bpf else None
            check = policy_lookup.ingress(facts, endpoint, w.label.get(peer[0], peer[0]), program, judged, sending)
            if not check.allowed:
                return Hop(where, ns, came_in, "drop", bpf=f"{program} on {hook}: {dst_ip} is in cilium_lxc → "
                           f"local_delivery: {check.words}", reason=check.reason)
            delivery = f"local_delivery: {check.words} → "
        return (Hop(where, ns, came_in, "forward", out=lxc.name if lxc else None, bpf=f"{program} on {hook}: "
                    f"{dst_ip} is in cilium_lxc → {delivery}{helper} → {target}; {NOT_CONSULTED}"), peer[0], peer[1])
    tunnel = facts.tunnel_of(dst_ip)
    if tunnel is not None and program in ("cil_from_container", "cil_from_host"):
        cidr, node_ip = tunnel.prefix, tunnel.tunnel_endpoint
        remote = next((n for n in w.lab.nodes if str(n.ip) == node_ip), None)
        if remote is None:
            return Hop(where, ns, came_in, "drop", bpf=f"{program} on {hook}", reason=f"cilium_ipcache_v2 sends "
                       f"{cidr} to {node_ip}, which is no node of this lab")
        remote_ns = names.node_netns(w.lab.name, remote.name)
        outer = readback.route_get(ns, IPv4Address(node_ip))
        via = f" via {outer.gateway}" if outer.gateway else ""
        wire = [f"VXLAN: {names.CILIUM_VXLAN} encapsulates it as UDP {names.VXLAN_PORT} to {node_ip}, sent out of "
                f"{outer.dev or '?'}{via} by the node's routing", f"{names.CILIUM_VXLAN} ({remote.name})"]
        return (Hop(where, ns, came_in, "forward", out=names.CILIUM_VXLAN, next_hop=node_ip, wire=wire,
                    bpf=f"{program} on {hook}: {cidr} is behind tunnel endpoint {node_ip} in cilium_ipcache_v2 → "
                        f"bpf_skb_set_tunnel_key (remote {node_ip}) → bpf_redirect to {names.CILIUM_VXLAN}"),
                remote_ns, names.CILIUM_VXLAN)
    if program != "cil_from_container":
        if came_in is None:
            return Hop(where, ns, came_in, "drop", bpf=f"{program} on {hook}",
                       reason=f"{dst_ip} is neither in cilium_lxc nor behind a tunnel: the program passes it on")
        return None  # TC_ACT_OK: not a pod of this node, the node's stack takes it
    decision = readback.route_get(ns, dst_ip)  # bpf_fib_lookup: the node's FIB
    if decision.type == "local":
        return Hop(where, ns, came_in, "deliver", route=f"local {dst_ip}",
                   bpf=f"{program} on {hook}: bpf_fib_lookup finds {dst_ip} is this node's → TC_ACT_OK, its stack answers")
    if decision.type != "unicast" or decision.dev is None:
        return Hop(where, ns, came_in, "drop", bpf=f"{program} on {hook}",
                   reason=f"bpf_fib_lookup finds no route to {dst_ip}: passed to the stack, which drops it")
    next_hop = ip_address(decision.gateway) if decision.gateway else dst_ip
    owner = w.owner(ns, decision.dev, next_hop)
    if owner is None:
        return Hop(where, ns, came_in, "drop", out=decision.dev, next_hop=str(next_hop), bpf=f"{program} on {hook}",
                   reason=f"nobody on {decision.dev}'s segment has {next_hop}")
    next_ns, next_if, wire = owner
    return (Hop(where, ns, came_in, "forward", route=w.matched_route(ns, dst_ip), out=decision.dev,
                next_hop=str(next_hop), wire=wire,
                bpf=f"{program} on {hook}: bpf_fib_lookup → out {decision.dev} to {next_hop} (bpf_redirect); "
                    "the node's IP forwarding and netfilter are not on the way"), next_ns, next_if)


def leg(w: Wiring, src: Endpoint, dst_ip: IPv4Address | IPv6Address, start: tuple[str, str | None] | None = None,
         stop_at: frozenset[str] = frozenset(), src_ip: IPv4Address | IPv6Address | None = None,
         judged: Judged | None = None, hooks: Hooks | None = None) -> Leg:
    """From the source (or from `start`: a namespace and the interface the packet came in on) to
    where the kernel delivers or drops it; a namespace in `stop_at` ends the leg on arrival (the
    caller decides what happens there: a Service's DNAT). `src_ip`: the packet's source once a
    NAT on the way out of the first namespace has rewritten it (a masqueraded hairpin).
    `judged`: the packet the BPF programs' policy lookups are said for (an ebpf lab's policies),
    `hooks`: the nodes' policy hooks it meets (an nftables data plane's policies)."""
    ns, came_in = start or (src.netns, None)
    hops: list[Hop] = []
    for _ in range(MAX_HOPS):
        where = w.label.get(ns, ns)
        if came_in is not None and ns in stop_at:
            hops.append(Hop(where, ns, came_in, "arrive"))
            break
        by_bpf = _bpf_hop(w, ns, came_in, dst_ip, judged, hops[-1].netns if hops else None)
        if isinstance(by_bpf, Hop):
            hops.append(by_bpf)
            break
        if by_bpf is not None:
            hop, ns, came_in = by_bpf
            hops.append(hop)
            continue
        # a source NAT happens on the way out of the first namespace (postrouting): it routes the original
        source = src.ip if not hops or src_ip is None else src_ip
        decision = readback.route_get(ns, dst_ip, src=source if came_in else None, iif=came_in)
        route = w.matched_route(ns, dst_ip)
        if decision.type == "local":
            hop = Hop(where, ns, came_in, "deliver", route=f"local {dst_ip}")
            hops.append(hop if hooks is None else hooks.police(hop, "input"))
            break
        if decision.type != "unicast":
            reason = _no_route(w.lab, dst_ip) if decision.type in ("error", "unreachable") else decision.type
            if decision.error and decision.type == "error" and "unreachable" not in decision.error:
                reason = decision.error
            hops.append(Hop(where, ns, came_in, "drop", route=route, reason=reason))
            break
        next_hop = ip_address(decision.gateway) if decision.gateway else dst_ip
        assert decision.dev is not None
        owner = w.owner(ns, decision.dev, next_hop)
        if owner is None:
            hops.append(Hop(where, ns, came_in, "drop", route=route, out=decision.dev, next_hop=str(next_hop),
                            reason=f"nobody on {decision.dev}'s segment has {next_hop} (ARP gets no answer)"))
            break
        next_ns, next_if, wire = owner
        hop = Hop(where, ns, came_in, "forward", route=route, out=decision.dev, next_hop=str(next_hop), wire=wire)
        hops += [hop] if hooks is None else hooks.forwarded(hop, w.bridged(ns, decision.dev, next_ns, next_if))
        if hops[-1].action == "drop":
            break
        ns, came_in = next_ns, next_if
    else:
        hops.append(Hop(w.label.get(ns, ns), ns, came_in, "drop", reason=f"more than {MAX_HOPS} hops: a routing loop"))
    return Leg(src, dst_ip, hops)


def _no_route(lab: Lab, dst: IPv4Address | IPv6Address) -> str:
    for n in lab.nodes:
        if dst in n.pod_cidr:
            return f"no route to {n.pod_cidr} ({n.name}'s pod CIDR): the kernel answers 'network unreachable'"
    return f"no route to {dst}: the kernel answers 'network unreachable'"


def trace(lab: Lab, src_text: str, dst_text: str, family: int = 4, wiring: Wiring | None = None) -> Trace:
    """The path of one packet and its reply. `family` 6 traces IPv6 (the kernel's IPv6 route
    lookups); an address given as DST decides the family itself. `wiring`: the lab's wiring read
    already, for many traces of one lab (the nodes' nftables are read per trace, so policies
    changed since on those data planes are seen; an ebpf node's maps are the wiring's)."""
    dst = resolve_endpoint(lab, dst_text, family)
    src = resolve_endpoint(lab, src_text, dst.family)
    if src.family != dst.family:
        raise LabError(f"{src_text} and {dst_text} are of different families (IPv{src.family}, IPv{dst.family})")
    if src == dst:
        raise LabError("source and destination are the same endpoint")
    w = wiring or Wiring(lab)
    judged = policy_lookup.judged(lab, src.ip)
    hooks = policy_hooks.hooks(lab, src, dst)
    there = leg(w, src, dst.ip, judged=judged, hooks=hooks)
    back = None
    if there.delivered_to == dst.id:
        answering = next(e for e in endpoints(lab, dst.family) if e.id == there.delivered_to)
        reply = None if judged is None else replace(judged, src_ip=answering.ip, reply=True)
        back = leg(w, answering, src.ip, judged=reply, hooks=hooks.back() if hooks is not None else None)
    return Trace(src, dst, there, back)


def bpf_counters(lab: Lab) -> dict[str, dict[str, int]]:
    """Each node's cilium_metrics (ebpf labs; empty elsewhere), to compare before and after a probe."""
    if not lab.capabilities.loads_bpf:
        return {}
    from cni_lab.kernel import bpf

    out = {}
    for n in lab.nodes:
        try:
            out[n.name] = bpf.metrics(names.bpf_node_dir(lab.name, n.name))
        except OSError:
            out[n.name] = {}
    return out


def counters_moved(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """What the programs counted between two readings: node -> action -> packets."""
    moved = {}
    for node, counts in after.items():
        delta = {k: v - before.get(node, {}).get(k, 0) for k, v in counts.items()}
        delta = {k: v for k, v in delta.items() if v}
        if delta:
            moved[node] = delta
    return moved


def verify(lab: Lab, t: Trace) -> str:
    """Send the real packets for the traced pair; returns the probe's verdict."""
    from cni_lab.probe.engine import Prober, verdict_of

    with Prober([t.src, t.dst], lab.name) as prober:
        return verdict_of(prober.run([(0, 1)]).verdict[0])


def agrees(t: Trace, verdict: str) -> bool:
    if t.outcome == "dropped":
        return verdict in ("timeout", "unreachable")
    return t.outcome == verdict
