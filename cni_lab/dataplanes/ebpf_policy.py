"""NetworkPolicy as Cilium's datapath holds it, for the `ebpf` data plane, worked out without a
kernel: the security identities, what each node's cilium_ipcache_v2 holds (a prefix → its
identity), what each endpoint's policy map cilium_policy_v2_<id> holds (identity, direction,
protocol and port prefix → allow), and the lookup bpf/lib/policy.h's __policy_can_access makes in
it. Pure: values in, values out (the maps are written by the kernel layer).

The lab runs Cilium as with `policy-cidr-match-mode: nodes`, so that an ipBlock selects node
addresses as Kubernetes says it does (Cilium's default keeps node addresses out of CIDR selectors):

    pods          one identity per label set and namespace (cluster-local, from 256)
    this node     each address of its own (eth0's, cilium_host's router IP, of both families):
                  reserved:host, 1
    other nodes   each address its own identity (an IPv4 and an IPv6 one apart), from the
                  remote-node scope (2<<24 | n): in nodes mode every node address carries its own
                  cidr: labels (pkg/node/manager), and a label set with reserved:remote-node is
                  allocated there (pkg/identity, ScopeForLabels; bpf/lib/identity.h's
                  identity_is_remote_node knows the scope)
    ipBlocks      every cidr and except prefix of every policy (either family) its own identity,
                  from the local scope (1<<24 | n), as the agent upserts policies' prefixes into
                  the ipcache with cidr: labels (pkg/policy/cell/policy_importer.go); a /0 is
                  reserved:world
    the rest      reserved:world, 2 (in tunnel mode, other nodes' pod CIDRs too: PR #38015); in a
                  dual-stack lab world-ipv4, 9, and world-ipv6, 10, as Cilium splits it there
                  (node_config.h's WORLD_IPV4_ID/WORLD_IPV6_ID), held by explicit 0.0.0.0/0 and
                  ::/0 entries so that the datapath's lookup never misses in such a lab

The policy map selects identities, not addresses, and its key has no address family, so a
policy is exact only where every address of an identity (both families': a dual-stack pod's IPv4
and IPv6 address are one identity) falls on the same side of each rule's ipBlocks taken together,
and every pod of an identity gives a named port the same number. An IPv4 ipBlock holding a pod's
IPv4 address alone is such a split: the pod's entry would let its IPv6 traffic through too, which
Kubernetes does not (a rule naming both of its families' blocks is exact). `problems(lab)` names the policies where that fails. Addresses of a
pod CIDR that no pod and no router holds are nobody's and never decide it: nothing sends from
them, nothing answers there.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Iterable, NamedTuple, Union

from cni_lab import policy
from cni_lab.cluster import Lab, Node, Pod

# Reserved security identities (pkg/identity/numericidentity.go)
ANY_ID, HOST_ID, WORLD_ID, REMOTE_NODE_ID = 0, 1, 2, 6  # 0: reserved:unknown, ANY in a policy key
WORLD_IPV4_ID, WORLD_IPV6_ID = 9, 10  # reserved:world-ipv4, -ipv6: world's, per family, in dual stack
WORLDS = (WORLD_ID, WORLD_IPV4_ID, WORLD_IPV6_ID)
CLUSTER_IDENTITY_MIN = 256  # GetMinimalAllocationIdentity(0)
LOCAL_SCOPE = 1 << 24  # IdentityScopeLocal: CIDR identities, MinLocalIdentity = LOCAL_SCOPE | 1
REMOTE_NODE_SCOPE = 2 << 24  # IdentityScopeRemoteNode: node addresses in policy-cidr-match-mode nodes
# IP protocol numbers, as struct policy_key's protocol byte holds them, and their names (pkg/u8proto)
PROTOCOL_NUMBERS = {"ICMP": 1, "TCP": 6, "UDP": 17, "SCTP": 132}
PROTOCOL_NAMES = {0: "ANY", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
LPM_PROTO_PREFIX_BITS = 8  # a policy entry's lpm_prefix_length: protocol given
LPM_FULL_PREFIX_BITS = LPM_PROTO_PREFIX_BITS + 16  # protocol and port given
STATIC_PREFIX_BITS = 40  # sec_label and the direction byte, never wildcarded


Address = Union[IPv4Address, IPv6Address]
Network = Union[IPv4Network, IPv6Network]


class IpcacheEntry(NamedTuple):
    """One cilium_ipcache_v2 entry: a prefix (either family), its identity, the node it lives
    behind (tunnel mode: the node's first-family address, the outer header's)."""

    prefix: Network
    identity: int
    tunnel_endpoint: Address | None


@dataclass(frozen=True, order=True)
class PolicyEntry:
    """One cilium_policy_v2 entry (all of them allow: Kubernetes' policies need no deny). Its key
    is {sec_label: identity, egress, protocol, dport} with key.prefixlen 40 + `prefix`; `prefix` is
    the entry's lpm_prefix_length: 0 any protocol and port, 8 the protocol only, 8 + N the
    protocol and the port's top N bits, 24 the exact port. Sorted as `cilium bpf policy get`
    prints them: Ingress first, then by identity."""

    egress: bool
    identity: int  # 0: ANY
    protocol: int = 0  # 0 any, 6 TCP, 17 UDP, 132 SCTP
    port: int = 0  # host order here; the key holds it in network order
    prefix: int = 0

    @property
    def key_prefixlen(self) -> int:
        return STATIC_PREFIX_BITS + self.prefix

    def matches(self, protocol: int, port: int) -> bool:
        """Its key's first `key_prefixlen` bits are those of a lookup for this protocol and port."""
        if self.prefix == 0:
            return True
        if protocol != self.protocol:
            return False
        wildcard = LPM_FULL_PREFIX_BITS - self.prefix
        return port >> wildcard == self.port >> wildcard


# -- identities -----------------------------------------------------------------------------------

def identity_labels(pod: Pod) -> tuple[tuple[str, str], ...]:
    """The labels a pod's identity is derived from, Cilium's way: its own, and its namespace's
    name as k8s:io.kubernetes.pod.namespace."""
    return tuple(sorted({("io.kubernetes.pod.namespace", pod.namespace), *pod.labels}))


def identities(lab: Lab) -> dict[str, int]:
    """Every pod's security identity: pods with the same labels share one; cluster-local
    identities numbered from 256 in the labels' sorted order (Cilium allocates them as pods
    appear; the lab's order is stable)."""
    sets = sorted({identity_labels(p) for p in lab.pods})
    number = {labels: CLUSTER_IDENTITY_MIN + i for i, labels in enumerate(sets)}
    return {p.id: number[identity_labels(p)] for p in lab.pods}


def world(lab: Lab, version: int) -> int:
    """reserved:world, or in a dual-stack lab its family's half: world-ipv4 (9), world-ipv6 (10)."""
    if not lab.dual_stack:
        return WORLD_ID
    return WORLD_IPV4_ID if version == 4 else WORLD_IPV6_ID


def labels_by_identity(lab: Lab) -> dict[int, tuple[str, ...]]:
    """identity → the labels it stands for, as Cilium prints them (`source:key=value`, sorted):
    pods' own and their namespace's (k8s:), the reserved ones, every node address (in nodes mode
    an address of another node carries its cidr: label with reserved:remote-node; this node's
    own are reserved:host), every policy prefix (cidr:, reserved:world or, in dual stack, its
    family's world). 0 is reserved:unknown, what a policy map's ANY is."""
    out: dict[int, tuple[str, ...]] = {ANY_ID: ("reserved:unknown",), HOST_ID: ("reserved:host",),
                                       WORLD_ID: ("reserved:world",), REMOTE_NODE_ID: ("reserved:remote-node",)}
    if lab.dual_stack:
        out |= {WORLD_IPV4_ID: ("reserved:world-ipv4",), WORLD_IPV6_ID: ("reserved:world-ipv6",)}
    pod_ids = identities(lab)
    out |= {pod_ids[p.id]: tuple(sorted(f"k8s:{k}={v}" if v else f"k8s:{k}" for k, v in identity_labels(p)))
            for p in lab.pods}
    out |= {i: (f"cidr:{a}/{a.max_prefixlen}", "reserved:remote-node") for a, i in node_identities(lab).items()}
    out |= {i: (f"cidr:{net}", out[world(lab, net.version)][0]) for net, i in cidr_identities(lab).items()
            if i not in WORLDS}
    return out


def node_addresses(node: Node) -> tuple[Address, ...]:
    """The node's own addresses: eth0's and cilium_host's router IP, the first family's first."""
    return tuple(a for a in (node.ip, node.gateway, node.ip6, node.gateway6) if a is not None)


def node_identities(lab: Lab) -> dict[Address, int]:
    """Each node address's identity as the other nodes see it (its own node sees reserved:host):
    the underlay IP, then the router IP (then the IPv6 ones in dual stack), node after node, from
    the remote-node scope. Every address its own: nodes mode gives each its own cidr: label."""
    addresses = [a for n in lab.nodes for a in node_addresses(n)]
    return {a: REMOTE_NODE_SCOPE | i for i, a in enumerate(dict.fromkeys(addresses), 1)}


def cidr_prefixes(lab: Lab) -> list[Network]:
    """Every cidr and except prefix of every policy's ipBlocks (the agent's GetCIDRPrefixes),
    IPv4 first."""
    found = {net for block in _ip_blocks(lab) for net in (block.cidr, *block.excepted)}
    return sorted(found, key=lambda n: (n.version, int(n.network_address), n.prefixlen))


def cidr_identities(lab: Lab) -> dict[Network, int]:
    """An identity per policy prefix: a /0 is world (its family's in dual stack); a host prefix
    that is a pod's or a node's address keeps that one (an endpoint's entry outranks a CIDR's);
    the others from the local scope."""
    endpoints = {a for p in lab.pods for a in p.ips} | set(node_identities(lab))
    out: dict[Network, int] = {}
    for net in cidr_prefixes(lab):
        if net.prefixlen == 0:
            out[net] = world(lab, net.version)
        elif not (net.prefixlen == net.max_prefixlen and net.network_address in endpoints):
            out[net] = LOCAL_SCOPE | (1 + sum(i not in WORLDS for i in out.values()))
    return out


def ipcache(lab: Lab, node: Node) -> list[IpcacheEntry]:
    """What `node`'s cilium_ipcache_v2 holds, both families: every node's underlay IPs (its own:
    host), then per node (its own first) its pod CIDRs in tunnel mode (world, behind the node: PR
    #38839), its router IPs (cilium_host's, the source of its packets to pods; behind the node in
    tunnel mode, as Cilium's nodeAddressHasTunnelIP gives a CiliumInternalIP) and its pods' addresses;
    then the policies' prefixes (one that is a pod CIDR keeps its tunnel endpoint, as the metadata
    merge does), and in a dual-stack lab 0.0.0.0/0 and ::/0 (world-ipv4, world-ipv6). Behind a
    node is behind its first-family address, the tunnel's outer one, whatever the inner family."""
    ids, nodes = identities(lab), node_identities(lab)
    others = [o for o in lab.nodes if o is not node and not o.pod_cidr.overlaps(node.pod_cidr)]
    out = [IpcacheEntry(_host(a), HOST_ID if o is node else nodes[a], None)
           for o in lab.nodes for a in (o.ip, o.ip6) if a is not None]
    for other in [node, *others]:
        behind = other.ip if lab.tunnelled and other is not node else None
        if behind is not None:
            out += [IpcacheEntry(cidr, world(lab, cidr.version), behind) for cidr in other.pod_cidrs]
        out += [IpcacheEntry(_host(router), HOST_ID if other is node else nodes[router], behind)
                for router in (other.gateway, other.gateway6) if router is not None]
        out += [IpcacheEntry(_host(a), ids[p.id], behind) for p in other.pods for a in p.ips]
    index = {e.prefix: i for i, e in enumerate(out)}
    wanted = cidr_identities(lab)
    if lab.dual_stack:
        wanted.setdefault(ip_network("0.0.0.0/0"), WORLD_IPV4_ID)
        wanted.setdefault(ip_network("::/0"), WORLD_IPV6_ID)
    for net, identity in wanted.items():
        if net not in index:
            out.append(IpcacheEntry(net, identity, None))
        elif out[index[net]].identity in WORLDS:  # a pod CIDR: the policy's labels win, the tunnel stays
            out[index[net]] = out[index[net]]._replace(identity=identity)
    return out


def lookup(entries: Iterable[IpcacheEntry], address: Address) -> int:
    """The identity of the longest prefix holding `address` (world where none does: a
    single-stack lab; a dual-stack one has a /0 of each family), as the datapath's ipcache
    lookup gives it. A prefix of the other family never holds it (the key carries the family)."""
    best = max((e for e in entries if address in e.prefix), key=lambda e: e.prefix.prefixlen, default=None)
    return WORLD_ID if best is None else best.identity


def identity_of(lab: Lab, node: Node, address: Address) -> int:
    """The identity `node`'s datapath gives `address` (LPM over its ipcache)."""
    return lookup(ipcache(lab, node), ip_address(address))


# -- policy maps ----------------------------------------------------------------------------------

def port_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """The fewest (port, N) covering first..last exactly, N the port bits each keeps: what a
    port range becomes in an LPM policy map (one entry each, lpm_prefix_length 8 + N)."""
    out = []
    while first <= last:
        size = first & -first if first else 1 << 16  # the largest aligned block starting here
        while size > last - first + 1:
            size >>= 1
        out.append((first, 17 - size.bit_length()))
        first += size
    return out


def policy_entries(lab: Lab, node: Node, pod: Pod) -> list[PolicyEntry]:
    """The policy map of `pod` (an endpoint on `node`), as the agent computes it (pkg/policy)."""
    return _Endpoint(_View(lab, node), pod).entries()


def problems(lab: Lab) -> list[str]:
    """Where the lab's policies cannot be held by identity exactly: one line per policy and cause."""
    found: dict[str, None] = {}
    for node in lab.nodes:
        view = _View(lab, node)
        for pod in node.pods:
            endpoint = _Endpoint(view, pod)
            endpoint.entries()
            found |= dict.fromkeys(endpoint.problems)
    return list(found)


def allows(entries: Iterable[PolicyEntry], egress: bool, identity: int, protocol: int, port: int) -> bool:
    """__policy_can_access: the longest entry for the exact identity, then for ANY (identity 0);
    the ANY one wins when longer (no precedences but allow here), and either allows."""
    return deciding(entries, egress, identity, protocol, port) is not None


def deciding(entries: Iterable[PolicyEntry], egress: bool, identity: int, protocol: int, port: int) -> PolicyEntry | None:
    """The entry that allows it (`allows`'s choice), None where none does: DROP_POLICY."""
    entries = entries if isinstance(entries, list) else list(entries)
    exact = _longest(entries, egress, identity, protocol, port)
    wildcard = _longest(entries, egress, ANY_ID, protocol, port)
    return wildcard if exact is None or (wildcard is not None and wildcard.prefix > exact.prefix) else exact


def port_proto(protocol: int, port: int, prefix: int) -> str:
    """A policy key's protocol and port as PolicyKey.PortProtoString words them (pkg/maps/policymap):
    the protocol's name alone (ANY for none) while the port is wildcarded, `80/TCP` for one port,
    `%d-%d/%s` for a port prefix (the range it covers)."""
    name = PROTOCOL_NAMES.get(protocol, str(protocol))
    if prefix in (0, LPM_PROTO_PREFIX_BITS):
        return name
    if LPM_PROTO_PREFIX_BITS < prefix < LPM_FULL_PREFIX_BITS:
        return f"{port}-{port + (0xFFFF >> (prefix - LPM_PROTO_PREFIX_BITS))}/{name}"
    if prefix == LPM_FULL_PREFIX_BITS:
        return f"{port}/{name}"
    return f"<INVALID PREFIX LENGTH: {prefix}>"


def _longest(entries: list[PolicyEntry], egress: bool, identity: int, protocol: int, port: int) -> PolicyEntry | None:
    found = [e for e in entries if e.egress == egress and e.identity == identity and e.matches(protocol, port)]
    return max(found, key=lambda e: e.prefix, default=None)


# -- how the agent gets there ---------------------------------------------------------------------

class _View:
    """One node's agent: its ipcache, and the addresses each identity stands for there."""

    def __init__(self, lab: Lab, node: Node) -> None:
        self.lab, self.node = lab, node
        self.pod_ids = identities(lab)
        self.pods_of: dict[int, list[Pod]] = {}
        for p in lab.pods:
            self.pods_of.setdefault(self.pod_ids[p.id], []).append(p)
        self.spans = self._spans(ipcache(lab, node))

    def _spans(self, entries: list[IpcacheEntry]) -> dict[int, list[Span]]:
        """identity → the address ranges it holds here, in both families: each family's ipcache
        prefixes cut at every prefix's edge (the policies' and pod CIDRs' too), each piece its LPM
        identity; the unused addresses of pod CIDRs left out."""
        out: dict[int, list[Span]] = {}
        for version in self.lab.families:
            nets = [(int(e.prefix.network_address), int(e.prefix.broadcast_address), e.prefix.prefixlen, e.identity)
                    for e in entries if e.prefix.version == version]
            pod_cidrs = [c for n in self.lab.nodes for c in n.pod_cidrs if c.version == version]
            used = {int(a) for n in self.lab.nodes for a in (n.gateway, n.gateway6, *(a for p in n.pods for a in p.ips))
                    if a is not None and a.version == version}
            cuts = {0, 1 << (32 if version == 4 else 128)} | {b for lo, hi, _, _ in nets for b in (lo, hi + 1)}
            cuts |= {b for net in (*pod_cidrs, *(n for n in cidr_prefixes(self.lab) if n.version == version))
                     for b in (int(net.network_address), int(net.broadcast_address) + 1)}
            cuts |= {b for a in used for b in (a, a + 1)}
            edges = sorted(cuts)
            for first, end in zip(edges, edges[1:]):
                last = end - 1
                if any(int(c.network_address) <= first and last <= int(c.broadcast_address) for c in pod_cidrs) \
                        and not (first == last and first in used):
                    continue  # nobody's
                held = [n for n in nets if n[0] <= first and last <= n[1]]
                identity = max(held, key=lambda n: n[2])[3] if held else world(self.lab, version)
                out.setdefault(identity, []).append(Span(version, first, last))
        return out

    def name(self, identity: int) -> str:
        """An identity in words, for a problem's line."""
        if identity == HOST_ID:
            return f"reserved:host (node {self.node.name}'s addresses)"
        if identity in WORLDS:
            return {WORLD_ID: "reserved:world", WORLD_IPV4_ID: "reserved:world-ipv4",
                    WORLD_IPV6_ID: "reserved:world-ipv6"}[identity]
        if identity in self.pods_of:
            return "pods " + ", ".join(p.qualified for p in self.pods_of[identity])
        named = {i: f"node address {a}" for a, i in node_identities(self.lab).items()}
        named |= {i: f"cidr:{net}" for net, i in cidr_identities(self.lab).items()}
        return named.get(identity, f"identity {identity}")

    def by_blocks(self, blocks: Iterable[policy.IPBlock]) -> tuple[set[int], dict[int, tuple[str, str]]]:
        """The identities all of whose addresses the blocks (one rule's, taken together) hold, and
        those they hold in part (identity → some addresses in them, some out of them). A block
        holds addresses of its own family only, so an identity with addresses of both families
        (a dual-stack pod) is held whole only by a rule whose blocks hold both."""
        blocks = list(blocks)
        whole, part = set(), {}
        eth0 = [a for a in (self.node.ip, self.node.ip6) if a is not None]
        for identity, spans in self.spans.items():
            if identity == HOST_ID:
                # the node's own identity is only ever a pod's destination at its eth0 addresses (its
                # router IPs are the pods' gateways, not peers): those alone decide, each family's
                # against the blocks of its family (IPBlock.matches) and both together, since the
                # one entry for reserved:host lets the pod reach either
                spans = [s for s in spans if any(s.holds(a) for a in eth0)]
            inside = [s for s in spans if any(b.matches(s.start) for b in blocks)]
            if len(inside) == len(spans):
                whole.add(identity)
            elif inside:
                part[identity] = (_shown(inside), _shown([s for s in spans if s not in inside]))
        return whole, part


class _Endpoint:
    """One endpoint's policy map, and what keeps it from being exact."""

    def __init__(self, view: _View, pod: Pod) -> None:
        self.view, self.pod, self.lab = view, pod, view.lab
        self.problems: list[str] = []
        self.workload = policy.Workload(pod.id, pod.namespace, pod.labels, pod.ips, pod.ports)

    def entries(self) -> list[PolicyEntry]:
        out: set[PolicyEntry] = set()
        for direction in policy.POLICY_TYPES:
            egress = direction == "Egress"
            selecting = self.lab.evaluator.selecting(self.workload, direction)
            if not selecting:  # not isolated: allow-any-ingress / allow-any-egress (mapstate.go's allKey)
                out.add(PolicyEntry(egress, ANY_ID))
            for pol in selecting:
                for rule in pol.egress if egress else pol.ingress:
                    out |= self._rule(pol, rule, egress)
        # allow-localhost=always (the agent's choice under Kubernetes), Kubernetes' own-node rule too
        out.add(PolicyEntry(False, HOST_ID))
        return sorted(out)

    def _rule(self, pol: policy.Policy, rule: policy.Rule, egress: bool) -> set[PolicyEntry]:
        peers: set[int] | None = None  # None: every identity (no `from`/`to`)
        if rule.peers:
            peers = {self.view.pod_ids[p.id] for peer in rule.peers if peer.ip_block is None
                     for p in self.lab.pods if _selects(self.lab, pol, peer, p)}
            peers |= self._blocks(pol, [peer.ip_block for peer in rule.peers if peer.ip_block is not None], peers, egress)
        targets = peers if peers is not None else {ANY_ID}
        if not rule.ports:
            return {PolicyEntry(egress, i) for i in targets}
        out = set()
        for port in rule.ports:
            protocol = PROTOCOL_NUMBERS[port.protocol]
            if port.port is None:
                out |= {PolicyEntry(egress, i, protocol, 0, LPM_PROTO_PREFIX_BITS) for i in targets}
            elif isinstance(port.port, int):
                out |= {PolicyEntry(egress, i, protocol, number, LPM_PROTO_PREFIX_BITS + bits) for i in targets
                        for number, bits in port_prefixes(port.port, port.end_port or port.port)}
            else:
                out |= self._named(pol, port, protocol, peers, egress)
        return out

    def _named(self, pol: policy.Policy, port: policy.PortRange, protocol: int, peers: set[int] | None,
               egress: bool) -> set[PolicyEntry]:
        """A named port: ingress, this pod's number for it; egress, each destination identity's
        (only pods declare ports: a rule without peers means every pod identity)."""
        name = str(port.port)
        if not egress:
            number = self.pod.find_port(name, port.protocol)
            return set() if number is None else {PolicyEntry(False, i, protocol, number, LPM_FULL_PREFIX_BITS)
                                                 for i in (peers if peers is not None else {ANY_ID})}
        out = set()
        for identity in sorted(peers if peers is not None else self.view.pods_of):
            numbers = {p.find_port(name, port.protocol) for p in self.view.pods_of.get(identity, [])}
            if len(numbers) > 1:
                apart = ", ".join(sorted(str(n) if n is not None else "none" for n in numbers))
                self.problems.append(
                    f"policy {pol.qualified}: egress port {name}/{port.protocol}: {self.view.name(identity)} share "
                    f"identity {identity} but number it differently ({apart}), and a policy map entry gives one "
                    "port per identity")
            number = next(iter(numbers), None) if len(numbers) == 1 else None
            if number is not None:
                out.add(PolicyEntry(True, identity, protocol, number, LPM_FULL_PREFIX_BITS))
        return out

    def _blocks(self, pol: policy.Policy, blocks: list[policy.IPBlock], selected: set[int], egress: bool) -> set[int]:
        """The identities a rule's ipBlocks select: those they hold whole, together (a rule lets a
        peer through when any of its peers holds it); one they hold in part is a problem, unless
        the rule's pod selectors select it anyway."""
        if not blocks:
            return set()
        whole, part = self.view.by_blocks(blocks)
        for identity, (inside, outside) in part.items():
            if identity in selected:
                continue
            if identity == HOST_ID and not egress:
                continue  # reserved:host gets in anyway (allow-localhost), as a pod's own node does
            words = ", ".join(str(b.cidr) + (" except " + ", ".join(str(e) for e in b.excepted) if b.excepted else "")
                              for b in blocks)
            holds = "it holds" if len(blocks) == 1 else "they hold"
            self.problems.append(
                f"policy {pol.qualified}: {'egress' if egress else 'ingress'} ipBlock{'s' if len(blocks) > 1 else ''} "
                f"{words}: {holds} {inside} but not {outside}, which {self.view.name(identity)} share as identity "
                f"{identity}: a policy map selects identities, not addresses")
        return whole


def _selects(lab: Lab, pol: policy.Policy, peer: policy.Peer, pod: Pod) -> bool:
    """A pod peer (podSelector, namespaceSelector or both) selects `pod`, as the evaluator reads it."""
    if peer.namespace_selector is not None:
        if not peer.namespace_selector.matches(lab.evaluator.namespaces.get(pod.namespace, ())):
            return False
    elif pod.namespace != pol.namespace:
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def _ip_blocks(lab: Lab) -> list[policy.IPBlock]:
    return [peer.ip_block for pol in lab.policies for rule in (*pol.ingress, *pol.egress) for peer in rule.peers
            if peer.ip_block is not None]


class Span(NamedTuple):
    """Addresses first..last (as integers) of one family."""

    version: int
    first: int
    last: int

    @property
    def start(self) -> Address:
        return _address(self.version, self.first)

    def holds(self, address: Address) -> bool:
        return address.version == self.version and self.first <= int(address) <= self.last


def _shown(spans: list[Span]) -> str:
    """Address ranges in words: 10.244.0.1, 192.168.1.2-192.168.1.9 (the first three)."""
    words = [str(s.start) if s.first == s.last else f"{s.start}-{_address(s.version, s.last)}" for s in spans[:3]]
    return ", ".join(words) + (" ..." if len(spans) > 3 else "")


def _address(version: int, number: int) -> Address:
    return IPv4Address(number) if version == 4 else IPv6Address(number)


def _host(address: Address) -> Network:
    """The address as a host prefix: /32, or /128."""
    return ip_network(f"{address}/{address.max_prefixlen}")
