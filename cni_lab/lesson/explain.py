"""`explain`: each node as the kernel has it, put in the words of the lesson. Returns values;
report/explain_view.py renders them (the tree, the JSON)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any

from cni_lab import names, state
from cni_lab.cluster import Lab
from cni_lab.dataplanes.capabilities import CILIUM_LB_LOOPBACK
from cni_lab.dataplanes.ebpf import FROM_CONTAINER, FROM_NETDEV, SVC_FLAG_EXT_LOCAL_SCOPE, SVC_FLAG_NODEPORT
from cni_lab.dataplanes.ebpf_policy import WORLD_ID
from cni_lab.errors import LabError
from cni_lab.kernel import bpf, daemons, readback
from cni_lab.kernel.readback import NetnsView, Route


@dataclass
class PodFacts:
    name: str
    netns: str
    view: NetnsView
    host_veth: str | None  # the node's end of the pod's veth pair, found from the kernel
    cni_result: dict[str, Any] | None = None  # what the CNI plugins returned for the pod (`cni`)

    @property
    def eth0(self) -> readback.Link | None:
        return self.view.link(names.POD_IFNAME)


@dataclass
class BpfFacts:
    """A node's eBPF datapath as the kernel has it: programs at tc hooks, its maps' entries."""

    pin: str
    attached: list[bpf.Attachment]
    endpoints: list[bpf.Endpoint]
    ipcache: list[bpf.IpcacheEntry]
    metrics: dict[str, int]
    error: str = ""
    services: list[bpf.LbEntry] = field(default_factory=list)
    conntrack: list[bpf.CtEntry] = field(default_factory=list)
    nat: list[bpf.NatEntry] = field(default_factory=list)
    reverse_nat: dict[int, tuple[str, int]] = field(default_factory=dict)  # rev_nat_index → the frontend
    now: int | None = None  # the monotonic clock's second when the maps were read (what their entries are stamped with)
    # endpoint ID → its policy map's entries; an endpoint whose map could not be read is left out
    # (the programs allow everything for an endpoint without a map)
    policy: dict[int, list[bpf.PolicyRow]] = field(default_factory=dict)

    def program_on(self, ifname: str, direction: str = "ingress") -> str | None:
        return next((a.program for a in self.attached if a.ifname == ifname and a.direction == direction), None)

    @property
    def tunnels(self) -> list[bpf.IpcacheEntry]:
        """The ipcache's entries behind a tunnel endpoint (what the tunnel map used to hold)."""
        return [e for e in self.ipcache if e.tunnel_endpoint != "0.0.0.0"]

    def ipcache_entry(self, address: IPv4Address | IPv6Address) -> bpf.IpcacheEntry | None:
        """The ipcache's longest prefix holding `address` (the datapath's LPM lookup)."""
        found = [e for e in self.ipcache if ip_network(e.prefix).version == address.version
                 and address in ip_network(e.prefix)]
        return max(found, key=lambda e: ip_network(e.prefix).prefixlen, default=None)

    def tunnel_of(self, address: IPv4Address | IPv6Address) -> bpf.IpcacheEntry | None:
        """The ipcache's longest prefix holding `address`, when it is behind a tunnel endpoint."""
        best = self.ipcache_entry(address)
        return best if best is not None and best.tunnel_endpoint != "0.0.0.0" else None

    def identity_of(self, address: IPv4Address | IPv6Address) -> int:
        """The identity the programs give `address` (identity_of in ebpf_lib/policy.h): its
        ipcache entry's, reserved:world where none holds it."""
        best = self.ipcache_entry(address)
        return best.identity if best is not None else WORLD_ID


def read_bpf(ns: str, pin: str) -> BpfFacts:
    try:
        attached = bpf.attached(ns)
    except OSError as e:
        return BpfFacts(pin, [], [], [], {}, f"cannot read tc filters: {e.strerror or e}")
    try:
        # bpf_ktime_get_ns, which the programs stamp entries with, is CLOCK_MONOTONIC: Python's monotonic clock
        facts = BpfFacts(pin, attached, bpf.endpoints(pin), bpf.ipcache(pin), bpf.metrics(pin), "",
                         bpf.lb_services(pin), bpf.conntrack(pin), bpf.nat(pin), bpf.reverse_nat(pin),
                         int(time.monotonic()))
    except OSError as e:
        return BpfFacts(pin, attached, [], [], {}, f"cannot read the pinned maps in {pin}: {e.strerror or e}")
    for lxc_id in dict.fromkeys(e.lxc_id for e in facts.endpoints if e.lxc_id):  # one per endpoint, not per address
        try:
            facts.policy[lxc_id] = bpf.policy(pin, lxc_id)
        except OSError:
            pass  # not made yet (or gone): left out, as the programs pass everything for it
    return facts


@dataclass
class PodPolicies:
    """What NetworkPolicy does to one pod: per direction the selecting policies' rules in words
    (None: not isolated, everything allowed), and the node's chain for it as nft lists it."""

    pod: str
    ingress: list[str] | None
    egress: list[str] | None
    rules: str = ""


def pod_policies(lab: Lab, node: str) -> list[PodPolicies]:
    from cni_lab import policy
    from cni_lab.rulesets import netpol
    from cni_lab.kernel import edit

    if not lab.policies:
        return []
    ns = names.node_netns(lab.name, node)
    try:
        listing = edit.nft_text(ns, "list", "table", "inet", netpol.TABLE)
    except OSError:
        listing = ""
    out = []
    for w in lab.workloads:
        if not w.id.startswith(f"{node}/"):
            continue
        words: dict[str, list[str] | None] = {}
        for direction in ("Ingress", "Egress"):
            selecting = lab.evaluator.selecting(w, direction)
            words[direction] = [line for p in selecting for line in policy.describe(p, direction)] if selecting else None
        if words["Ingress"] is not None:  # what the evaluator and the rules (no output chain) let through too
            words["Ingress"].append(f"{node} itself, always: a pod's own node is never denied (Kubernetes' "
                                    "NetworkPolicySpec.ingress; Felix does not police host → local pod)")
        chains = [f"chain {netpol.workload_chain_name(w, d)} {{" for d in ("Ingress", "Egress")]
        rules = "\n".join(_chain_text(listing, c) for c in chains if c in listing)
        out.append(PodPolicies(w.id, words["Ingress"], words["Egress"], rules))
    return out


def _chain_text(listing: str, head: str) -> str:
    start = listing.index(head)
    end = listing.index("}", start)
    return "\n".join(line.strip() for line in listing[start:end + 1].splitlines())


@dataclass
class NatFacts:
    """The node's NAT, read from its nftables tables: egress masquerade rules (each with its
    meaning) and kube-proxy's Services in words."""

    masquerade_table: str | None  # `ip flannel-ipv4`, `ip calico`, or None where there is none
    masquerade: list[tuple[str, str, str]]  # (chain, rule as nft lists it, meaning)
    services: list[str]


def read_nat(lab: Lab, node: str) -> NatFacts | None:
    from cni_lab.rulesets import kubeproxy, masquerade, nft
    from cni_lab.kernel import edit

    if lab.scenario.outside_ip is None and not lab.scenario.services:
        return None
    ns, n = names.node_netns(lab.name, node), lab.node(node)
    table, rules = None, []
    for name in (masquerade.FLANNEL_TABLE, masquerade.CALICO_TABLE):
        try:
            listing = edit.nft_text(ns, "list", "table", "ip", name)
        except OSError:
            continue
        table = f"ip {name}"
        for chain, lines in nft.parse_chains(listing).items():
            rules += [(chain, line, masquerade.meaning(lab, n, line)) for line in lines]
    words: list[str] = []
    if lab.scenario.services and lab.capabilities.services == "kube-proxy-nftables":  # not ebpf's BPF maps
        try:
            words = kubeproxy.describe(lab, n, edit.nft_text(ns, "list", "table", "ip", kubeproxy.TABLE))
        except OSError:
            words = ["kube-proxy's table is missing on this node"]
    return NatFacts(table, rules, words)


@dataclass
class NodeFacts:
    name: str
    netns: str
    view: NetnsView
    pods: list[PodFacts]
    underlay_port: str | None  # the underlay bridge's port that is the other end of this node's eth0
    bgp: list[daemons.Session] | None = None  # `birdc show protocols`, where the node runs BIRD
    bgp_error: str = ""
    bpf: BpfFacts | None = None  # the eBPF datapath, in `ebpf` labs
    policies: list[PodPolicies] | None = None  # NetworkPolicy per pod, in labs that have policies
    nat: NatFacts | None = None  # masquerade and Services, in labs with an outside host or Services


def read(lab: Lab, node: str | None = None) -> list[NodeFacts]:
    underlay = names.underlay_netns(lab.name)
    node_namespaces = [names.node_netns(lab.name, n.name) for n in lab.nodes]
    underlay_view = readback.read(underlay, [*node_namespaces, *([names.router_netns(lab.name)] if lab.has_router else [])])
    port_of = {lk.peer_netns: lk.name for lk in underlay_view.links if lk.kind == "veth"}
    out = []
    for n in lab.nodes:
        if node is not None and n.name != node:
            continue
        node_ns = names.node_netns(lab.name, n.name)
        pod_ns = {p.name: names.pod_netns(lab.name, n.name, p.name) for p in n.pods}
        view = readback.read(node_ns, [underlay, *pod_ns.values()])
        pods = []
        for pod in n.pods:
            pview = readback.read(pod_ns[pod.name], [node_ns])
            host = next((lk.name for lk in view.links if lk.kind == "veth" and lk.peer_netns == pod_ns[pod.name]), None)
            pods.append(PodFacts(pod.name, pod_ns[pod.name], pview, host, _cni_result(lab, n.name, pod.name)))
        facts = NodeFacts(n.name, node_ns, view, pods, port_of.get(node_ns))
        if "bird" in lab.capabilities.daemons:
            try:
                facts.bgp = daemons.protocols(state.lab_dir(lab.name) / names.bird_dir(n.name) / "bird.ctl")
            except LabError as e:
                facts.bgp, facts.bgp_error = [], f"BIRD does not answer: {e}"
        if lab.capabilities.loads_bpf:
            facts.bpf = read_bpf(node_ns, names.bpf_node_dir(lab.name, n.name))
        if lab.policies:
            facts.policies = pod_policies(lab, n.name)
        facts.nat = read_nat(lab, n.name)
        out.append(facts)
    if node is not None and not out:
        lab.node(node)  # raises the "no such node" error
    return out


@dataclass(frozen=True)
class Peer:
    """A BGP session as `calicoctl node status` lists it."""

    address: str
    family: int
    type: str  # "node-to-node mesh"
    state: str  # up | start | ...
    since: str
    info: str


def calico_status(lab: Lab, facts: NodeFacts) -> list[Peer]:
    """The node's mesh sessions (read from BIRD), each named by its peer's address as Calico
    names them: what `calicoctl node status` shows, IPv4 peers first."""
    from cni_lab.dataplanes.bgp import mesh_name

    by_name: dict[str, tuple[str, int]] = {}
    for n in lab.nodes:
        by_name[mesh_name(n.ip)] = (str(n.ip), 4)
        if n.ip6 is not None:
            by_name[mesh_name(n.ip6)] = (str(n.ip6), 6)
    peers = [Peer(*by_name[s.name], "node-to-node mesh", s.state, s.since, s.info)
             for s in facts.bgp or [] if s.proto == "BGP" and s.name in by_name]
    return sorted(peers, key=lambda p: p.family)


def calico_paths(lab: Lab, node_name: str) -> list[str]:
    """How a `bgp` node reaches each other node's pods, in words, from the lab alone: straight
    over eth0 to the node (same subnet, or a pool that never encapsulates) or through the tunnel
    (VXLAN's vxlan.calico, IPIP's tunl0), as the IP pool's mode decides; empty for other labs."""
    if lab.capabilities.pods_meet != "routed":
        return []
    from cni_lab.dataplanes.bgp import direct, same_subnet, vtep_address

    tunnel = lab.capabilities.tunnel
    node = lab.node(node_name)
    subnet = node.underlay.network
    out = []
    for other in lab.nodes:
        if other is node:
            continue
        where = f"same subnet {subnet}" if same_subnet(node, other) else "other subnet"
        if tunnel is None:
            if same_subnet(node, other):
                how = f"direct via eth0 ({where}): BIRD's route via {other.ip}, learned over BGP"
            else:
                how = (f"via eth0 to the router ({where}): BIRD resolves the next hop {other.ip} through the "
                       "default route, and the router has no route to pods: blackholed there (use vxlanMode "
                       "CrossSubnet or Always)")
        elif direct(lab, node, other):
            how = f"direct via eth0 ({where}): Felix's route via {other.ip}, not encapsulated (CrossSubnet)"
        elif tunnel.device == names.CALICO_VXLAN:
            how = (f"VXLAN via {names.CALICO_VXLAN} ({where}): to its VTEP {vtep_address(other)}, UDP "
                   f"{names.CALICO_VXLAN_PORT} to {other.ip}")
        else:
            how = f"IPIP via {names.CALICO_IPIP} ({where}): IP in IP to {other.ip}"
        out.append(f"{other.name} {other.pod_cidr}: {how}")
    return out


def routing(lab: Lab, facts: list[NodeFacts]) -> dict[str, list[Route]]:
    """Each node's routes as read (and the router's, where the lab has one): what `graph` draws."""
    out = {f.name: [*f.view.routes, *f.view.routes6] for f in facts}
    if lab.has_router:
        router = readback.read(names.router_netns(lab.name), [])
        out["router"] = [*router.routes, *router.routes6]
    return out


def meaning(lab: Lab, node_name: str, route: Route, in_pod: bool = False) -> str:
    """What a route means in the lesson's words (`in_pod`: a route of a pod, not of its node)."""
    # With colliding pod CIDRs two nodes share a gateway address: this node's own wins.
    ordered = sorted(lab.nodes, key=lambda n: n.name == node_name)
    owner_of_gateway = {str(g): n.name for n in ordered for g in (n.gateway, n.gateway6) if g is not None}
    node_by_ip = {str(ip): n.name for n in lab.nodes for ip in n.ips}
    routers = {str(c.network_address + 1) for seg in lab.segments for c in (seg.cidr, seg.cidr6) if c is not None}
    if route.dst == "default":
        if route.gateway in routers and lab.has_router:
            return f"everything else goes to the segment's router {route.gateway}"
        if route.gateway == names.CALICO_GATEWAY:
            return "everything goes to the fake gateway 169.254.1.1, that is: to the node"
        if route.gateway == names.CALICO_GATEWAY6:
            return "everything goes to the cali veth's link-local address (its MAC ee:ee:ee:ee:ee:ee), that is: to the node"
        if lab.capabilities.pod_gateway == "cilium_host" and in_pod:
            return (f"everything goes to the router IP {route.gateway}: out of eth0 into the node's lxc device, "
                    "where cil_from_container decides")
        if route.gateway in owner_of_gateway:
            return f"everything else goes to the gateway {route.gateway}, on node {owner_of_gateway[route.gateway]}"
        return f"everything else goes to {route.gateway or route.dev}"
    if route.type == "blackhole":
        return "this node's IPAM block: addresses of it no pod has are dropped here, not sent on"
    if route.dev in (names.CALICO_VXLAN, names.CALICO_IPIP) and route.gateway is None:
        return f"this node's own tunnel address, on {route.dev}"
    try:
        dst = ip_network(route.dst)
    except ValueError:
        return ""
    for segment in lab.segments:
        if dst in (segment.cidr, segment.cidr6):
            if len(lab.segments) == 1:
                return "the underlay LAN: other nodes are reached directly"
            return f"underlay segment {segment.name}: nodes on it are reached directly"
    v6 = "IPv6 " if dst.version == 6 and lab.dual_stack else ""  # which of a dual-stack lab's two
    resolve = "neighbour discovery" if dst.version == 6 else "ARP"
    for n in reversed(ordered):
        if dst == n.pod_cidr and route.dev == names.CILIUM_HOST:
            if n.name == node_name:
                return ("this node's pod CIDR, for what the node itself sends: out of cilium_host, where "
                        "cil_from_host hands it to the pod's lxc device")
            return (f"{n.name}'s pods, for what the node itself sends: out of cilium_host, where cil_from_host "
                    "tunnels it (pods' own packets never consult this table)")
        if dst in n.pod_cidrs:
            if in_pod and route.gateway is None:
                return f"the pod network: pods of this node are reached directly ({resolve} over cni0)"
            if n.name == node_name and route.gateway is None:
                return f"this node's {v6}pod CIDR, on the bridge {route.dev}"
            if route.dev in (names.FLANNEL_DEVICE, names.FLANNEL_DEVICE6, names.CALICO_VXLAN):
                return f"route to {n.name}'s {v6}pods through the VXLAN tunnel (its VTEP {route.gateway})"
            if route.dev == names.CALICO_IPIP:
                return f"route to {n.name}'s pods through the IPIP tunnel to {route.gateway}"
            if route.gateway in node_by_ip:
                how = (", learned over BGP" if route.proto == "bird" else
                       ", programmed by Felix: same subnet, not encapsulated" if route.proto == str(names.FELIX_PROTO) else "")
                if lab.capabilities.loads_bpf:
                    how = " (autoDirectNodeRoutes; cil_from_container's bpf_fib_lookup follows it)"
                return f"route to {node_by_ip[route.gateway]}'s {v6}pods via {route.gateway}{how}"
            return f"route to {n.name}'s {v6}pods ({dst})"
    if dst.version == 6 and dst.prefixlen == 128 and route.gateway is None:
        if route.dev and route.dev.startswith("cali"):
            return f"a local pod, straight down its veth {route.dev}"
        if route.dev and route.dev.startswith("flannel"):
            return "this node's own VTEP address"
        return f"a single address straight out of {route.dev}"
    if dst.prefixlen == 32 and route.gateway is None:
        if route.dev and route.dev.startswith("cali"):
            return f"a local pod, straight down its veth {route.dev}"
        if str(dst.network_address) == names.CALICO_GATEWAY:
            return "the fake gateway is on-link: the node's cali* veth answers its ARP (proxy ARP)"
        if lab.capabilities.pod_gateway == "cilium_host" and in_pod:
            return "the router IP (cilium_host's) is on-link: cil_from_container answers the pod's ARP for it"
        return f"a single address straight out of {route.dev}"
    return ""


def datapath_story(lab: Lab, nf: NodeFacts) -> list[str]:
    """The eBPF datapath of a node in the lesson's words, from what the kernel has."""
    if nf.bpf is None:
        return []
    by_index = {lk.index: lk.name for lk in nf.view.links}
    lines = []
    for pf in nf.pods:
        program = nf.bpf.program_on(pf.host_veth or "", "ingress")
        if program is None:
            lines.append(f"packets leaving pod {pf.name} enter {pf.host_veth}, which has no program: the node's stack "
                         "gets them, and forwarding is off on lxc devices, so they go nowhere")
            continue
        away = ("they are tunnelled: the remote node's IP, the tunnel endpoint cilium_ipcache_v2 gives, is set as the tunnel key, then "
                "they leave through cilium_vxlan" if nf.bpf.tunnels else
                "they go where bpf_fib_lookup says, straight out of eth0 (bpf_redirect)")
        lines.append(f"packets leaving pod {pf.name} are handled by {program} on {pf.host_veth}: for pods on this node "
                     f"they are redirected straight into the pod's namespace (bpf_redirect_peer); for other nodes' "
                     f"pods {away}; the packet never passes through the node's IP forwarding or netfilter")
    if nf.bpf.program_on(names.NODE_UPLINK):
        lines.append(f"packets arriving on eth0 for a pod of this node are redirected into it by "
                     f"{nf.bpf.program_on(names.NODE_UPLINK)}; the node's routing table and netfilter never see them")
    if nf.bpf.program_on(names.CILIUM_VXLAN):
        lines.append(f"packets out of the tunnel (cilium_vxlan) go into their pod through {nf.bpf.program_on(names.CILIUM_VXLAN)}")
    known = {e.ip for e in nf.bpf.endpoints}
    missing = [p.name for p in lab.node(nf.name).pods if str(p.ip) not in known]
    if missing:
        lines.append(f"cilium_lxc lacks {', '.join(missing)}: packets for them are not delivered by the programs")
    extra = [e.ip for e in nf.bpf.endpoints if e.ifindex not in by_index]
    if extra:
        lines.append(f"cilium_lxc holds {', '.join(extra)} whose lxc device is gone")
    return lines + service_story(lab, nf) + masquerade_story(lab, nf)


def _service_names(lab: Lab, node: str) -> dict[tuple[str, int, str], str]:
    """(address, port, protocol) → the Service port it is, `default/web` (`default/web:http` for
    one of several): every ClusterIP, and the node's NodePorts on its own address."""
    out = {}
    node_ip = str(lab.node(node).ip)
    for svc in lab.services:
        for port in svc.spec.ports:
            label = svc.qualified + (f":{port.name}" if port.name else "")
            out[(str(svc.cluster_ip), port.port, port.protocol)] = label
            if port.node_port:
                out[(node_ip, port.node_port, port.protocol)] = label
    return out


def service_story(lab: Lab, nf: NodeFacts) -> list[str]:
    """Services as the node's maps balance them (Cilium's kube-proxy replacement): per frontend of
    cilium_lb4_services_v2 which program DNATs it, to how many backends, and how replies are
    turned back; a slot whose backend the backends map lacks (`fault bpf-backend-del`) named."""
    if nf.bpf is None or not nf.bpf.services:
        return []
    named = _service_names(lab, nf.name)
    slots: dict[tuple[str, int, str], list[bpf.LbEntry]] = {}
    for e in nf.bpf.services:
        slots.setdefault((e.address, e.port, e.protocol), []).append(e)
    lines = []
    for key, entries in slots.items():
        master = next((e for e in entries if e.slot == 0), None)
        if master is not None:
            lines.append(_frontend_line(lab, nf, nf.bpf, master, named.get(key)))
        lines += [f"slot {e.slot} of {e.address}:{e.port}/{e.protocol} names backend {e.backend_id}, which "
                  "cilium_lb4_backends_v3 lacks: connections that land there are dropped"
                  for e in sorted(entries, key=lambda e: e.slot) if e.slot and e.backend is None]
    own = {str(p.ip) for p in lab.node(nf.name).pods}
    if any(e.backend is not None and e.backend[0] in own and not e.flags & SVC_FLAG_NODEPORT for e in nf.bpf.services):
        lines.append(f"a pod whose connection to a Service lands on itself sees it come from {CILIUM_LB_LOOPBACK} "
                     "(Cilium's IPV4_LOOPBACK): with its own address as the source, the reply would never leave it")
    return lines


def _programs(nf: NodeFacts, facts: BpfFacts) -> tuple[str, str]:
    """The programs at the pods' lxc devices and at eth0, as attached (Cilium's names when not)."""
    container = next((p for p in (facts.program_on(pf.host_veth or "") for pf in nf.pods) if p), FROM_CONTAINER)
    return container, facts.program_on(names.NODE_UPLINK) or FROM_NETDEV


def _frontend_line(lab: Lab, nf: NodeFacts, facts: BpfFacts, master: bpf.LbEntry, service: str | None) -> str:
    """One frontend (its slot 0) in words: a ClusterIP DNATed where pods send, a NodePort where
    the node receives."""
    container, netdev = _programs(nf, facts)
    count, fe = master.count, f"{master.address}:{master.port}/{master.protocol}"
    some = "its one backend" if count == 1 else f"one of {count} backends chosen at random"
    where = "slot 1" if count == 1 else f"slots 1-{count}"
    if not master.flags & SVC_FLAG_NODEPORT:
        what = f"a pod's packet to ClusterIP {fe}" + (f" ({service})" if service else "")
        if not count:
            return f"{what} finds no backend in cilium_lb4_services_v2 (count 0): {container} drops it (DROP_NO_SERVICE)"
        ct = bpf.CT_MAPS[0] if master.protocol == "TCP" else bpf.CT_MAPS[1]
        back = facts.reverse_nat.get(master.rev_nat_index)
        replies = (f"replies get {back[0]}:{back[1]} back from cilium_lb4_reverse_nat on delivery" if back else
                   f"cilium_lb4_reverse_nat has no entry {master.rev_nat_index}: replies keep the backend's address, "
                   "which the client never dialled")
        return f"{what} is DNATed by {container} to {some} (cilium_lb4_services_v2 {where}), its connection remembered in {ct}; {replies}"
    local = bool(master.flags & SVC_FLAG_EXT_LOCAL_SCOPE)
    about = ", ".join(([service] if service else []) + (["externalTrafficPolicy Local"] if local else []))
    what = f"a packet from outside to NodePort {fe}" + (f" ({about})" if about else "") + " on this node's address"
    if not count:
        return (f"{what} finds no backend" + (" on this node" if local else "") + f" (count 0): {netdev} drops it "
                "(DROP_NO_SERVICE; Cilium's default answers ICMP port unreachable instead)")
    if local:
        return f"{what} is DNATed by {netdev} to {some} on this node ({where}), the client's address kept"
    node = lab.node(nf.name)
    snat = (f"the router IP {node.gateway}, its reply coming back through the tunnel" if lab.tunnelled else
            f"the node's IP {node.ip}, its reply coming back here")
    return (f"{what} is DNATed by {netdev} to {some} ({where}): one on this node gets it with the client's address "
            f"kept, one on another node gets it SNATed to {snat} (cilium_snat_v4_external)")


def masquerade_story(lab: Lab, nf: NodeFacts) -> list[str]:
    """BPF masquerade (bpf.masquerade): what leaves the cluster takes the node's address."""
    scenario = lab.scenario
    if nf.bpf is None or scenario.outside_ip is None or not scenario.masquerade or lab.capabilities.masquerade != "cilium-bpf":
        return []
    container, netdev = _programs(nf, nf.bpf)
    return [f"a pod's packet to the world (an address cilium_ipcache_v2 does not know, outside the native-routing CIDR "
            f"{scenario.cluster_cidr}) leaves with this node's IP {lab.node(nf.name).ip} and a port of the node's "
            f"(32768-65535): {container} masquerades it, the mapping both ways in cilium_snat_v4_external, and "
            f"{netdev} turns the replies back"]


def _cni_result(lab: Lab, node: str, pod: str) -> dict[str, Any] | None:
    if not lab.capabilities.runs_cni_plugins:
        return None
    try:
        return json.loads((state.lab_dir(lab.name) / names.cni_result(node, pod)).read_text()).get("result")
    except (OSError, ValueError):
        return None
