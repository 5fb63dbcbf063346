"""NetworkPolicy as Cilium's datapath holds it, for the `ebpf` data plane, worked out without a
kernel: the security identities and what each node's cilium_ipcache_v2 holds (a prefix → its
identity). Pure: values in, values out (the maps are written by the kernel layer).

The lab runs Cilium as with `policy-cidr-match-mode: nodes`, so that an ipBlock selects node
addresses as Kubernetes says it does (Cilium's default keeps node addresses out of CIDR selectors):

    pods          one identity per label set and namespace (cluster-local, from 256)
    this node     each address of its own (eth0's, cilium_host's router IP): reserved:host, 1
    other nodes   each address its own identity, from the remote-node scope (2<<24 | n): in nodes
                  mode every node address carries its own cidr: labels (pkg/node/manager), and
                  a label set with reserved:remote-node is allocated there (pkg/identity,
                  ScopeForLabels; bpf/lib/identity.h's identity_is_remote_node knows the scope)
    ipBlocks      every cidr and except prefix of every policy its own identity, from the local
                  scope (1<<24 | n), as the agent upserts policies' prefixes into the ipcache with
                  cidr: labels (pkg/policy/cell/policy_importer.go); 0.0.0.0/0 is reserved:world
    the rest      reserved:world, 2 (in tunnel mode, other nodes' pod CIDRs too: PR #38015)
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Iterable, NamedTuple

from cni_lab import policy
from cni_lab.cluster import Lab, Node, Pod

# Reserved security identities (pkg/identity/numericidentity.go)
HOST_ID, WORLD_ID, REMOTE_NODE_ID = 1, 2, 6
CLUSTER_IDENTITY_MIN = 256  # GetMinimalAllocationIdentity(0)
LOCAL_SCOPE = 1 << 24  # IdentityScopeLocal: CIDR identities, MinLocalIdentity = LOCAL_SCOPE | 1
REMOTE_NODE_SCOPE = 2 << 24  # IdentityScopeRemoteNode: node addresses in policy-cidr-match-mode nodes


class IpcacheEntry(NamedTuple):
    """One cilium_ipcache_v2 entry: a prefix, its identity, the node it lives behind (tunnel mode)."""

    prefix: IPv4Network
    identity: int
    tunnel_endpoint: IPv4Address | None


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


def node_identities(lab: Lab) -> dict[IPv4Address, int]:
    """Each node address's identity as the other nodes see it (its own node sees reserved:host):
    the underlay IP, then the router IP, node after node, from the remote-node scope."""
    addresses = [a for n in lab.nodes for a in (n.ip, n.gateway)]
    return {_a4(a): REMOTE_NODE_SCOPE | i for i, a in enumerate(dict.fromkeys(addresses), 1)}


def cidr_prefixes(lab: Lab) -> list[IPv4Network]:
    """Every IPv4 cidr and except prefix of every policy's ipBlocks (the agent's GetCIDRPrefixes)."""
    found = {_v4(net) for block in _ip_blocks(lab) for net in (block.cidr, *block.excepted) if net.version == 4}
    return sorted(found, key=lambda n: (int(n.network_address), n.prefixlen))


def cidr_identities(lab: Lab) -> dict[IPv4Network, int]:
    """An identity per policy prefix: 0.0.0.0/0 is world; a /32 that is a pod's or a node's keeps
    that one (an endpoint's entry outranks a CIDR's); the others from the local scope."""
    endpoints = {_a4(p.ip) for p in lab.pods} | set(node_identities(lab))
    out: dict[IPv4Network, int] = {}
    for net in cidr_prefixes(lab):
        if net.prefixlen == 0:
            out[net] = WORLD_ID
        elif not (net.prefixlen == 32 and net.network_address in endpoints):
            out[net] = LOCAL_SCOPE | (1 + sum(i != WORLD_ID for i in out.values()))
    return out


def ipcache(lab: Lab, node: Node) -> list[IpcacheEntry]:
    """What `node`'s cilium_ipcache_v2 holds: every node's underlay IP (its own: host), then per
    node (its own first) its pod CIDR in tunnel mode (world, behind the node: PR #38839), its
    router IP (cilium_host's, the source of its packets to pods; behind the node in tunnel mode,
    as Cilium's nodeAddressHasTunnelIP gives a CiliumInternalIP) and its pods; then the policies'
    prefixes (one that is a pod CIDR keeps its tunnel endpoint, as the metadata merge does)."""
    ids, nodes = identities(lab), node_identities(lab)
    others = [o for o in lab.nodes if o is not node and not o.pod_cidr.overlaps(node.pod_cidr)]
    out = [IpcacheEntry(_host(o.ip), HOST_ID if o is node else nodes[_a4(o.ip)], None) for o in lab.nodes]
    for other in [node, *others]:
        behind = _a4(other.ip) if lab.tunnelled and other is not node else None
        if behind is not None:
            out.append(IpcacheEntry(_v4(other.pod_cidr), WORLD_ID, behind))
        out.append(IpcacheEntry(_host(other.gateway), HOST_ID if other is node else nodes[_a4(other.gateway)], behind))
        out += [IpcacheEntry(_host(p.ip), ids[p.id], behind) for p in other.pods]
    index = {e.prefix: i for i, e in enumerate(out)}
    for net, identity in cidr_identities(lab).items():
        if net not in index:
            out.append(IpcacheEntry(net, identity, None))
        elif out[index[net]].identity == WORLD_ID:  # a pod CIDR: the policy's labels win, the tunnel stays
            out[index[net]] = out[index[net]]._replace(identity=identity)
    return out


def lookup(entries: Iterable[IpcacheEntry], address: IPv4Address) -> int:
    """The identity of the longest prefix holding `address` (world where none does), as the
    datapath's ipcache lookup gives it."""
    best = max((e for e in entries if address in e.prefix), key=lambda e: e.prefix.prefixlen, default=None)
    return WORLD_ID if best is None else best.identity


def identity_of(lab: Lab, node: Node, address: IPv4Address) -> int:
    """The identity `node`'s datapath gives `address` (LPM over its ipcache)."""
    return lookup(ipcache(lab, node), _a4(address))


def _ip_blocks(lab: Lab) -> list[policy.IPBlock]:
    return [peer.ip_block for pol in lab.policies for rule in (*pol.ingress, *pol.egress) for peer in rule.peers
            if peer.ip_block is not None]


def _shown(spans: list[tuple[int, int]]) -> str:
    """Address ranges in words: 10.244.0.1, 192.168.1.2-192.168.1.9 (the first three)."""
    words = [str(IPv4Address(a)) if a == b else f"{IPv4Address(a)}-{IPv4Address(b)}" for a, b in spans[:3]]
    return ", ".join(words) + (" ..." if len(spans) > 3 else "")


def _a4(address: object) -> IPv4Address:
    """An IPv4 address as it is (the lab's are already), made once otherwise."""
    return address if isinstance(address, IPv4Address) else IPv4Address(str(address))


def _host(address: object) -> IPv4Network:
    return IPv4Network((_a4(address), 32))


def _v4(net: object) -> IPv4Network:
    found = net if isinstance(net, IPv4Network) else ip_network(str(net))
    assert isinstance(found, IPv4Network), net  # ebpf is IPv4 only (plan.build refuses IPv6 labs)
    return found
