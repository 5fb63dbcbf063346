"""`ebpf`: Cilium's datapath, in miniature. No bridge and no iptables: tc BPF programs (ebpf.c,
compiled with clang and loaded for real) move every pod packet. What a node gets, with Cilium's
names (cilium/cilium: pkg/datapath/connector, bpf/bpf_lxc.c, bpf_host.c, bpf_overlay.c):

    pod:   eth0 10.244.X.Y/32, `10.244.X.1 dev eth0 scope link`, `default via 10.244.X.1 dev eth0`
           (`mtu 1450` on the routes in tunnel mode); the pod's ARP for 10.244.X.1 is answered by
           cil_from_container with the lxc device's MAC
    node:  lxc<12 hex> (the pod's veth peer) with cil_from_container at tc ingress;
           cilium_host (10.244.X.1/32, the router IP) / cilium_net, a veth pair; cil_from_host at
           cilium_host's tc egress; `10.244.X.0/24 via 10.244.X.1 dev cilium_host src 10.244.X.1`;
           cil_from_netdev at eth0's tc ingress
    maps:  cilium_lxc (the node's pods), node_config, cilium_metrics, and in tunnel mode
           cilium_tunnel_map (other nodes' pod CIDRs -> their IPs), pinned in /sys/fs/bpf/cnilab-<lab>/<node>

Between nodes, `ebpf.routing`:
    tunnel (Cilium's default): cilium_vxlan, a flow-based VXLAN device on UDP 8472 with
           cil_from_overlay at its tc ingress; `10.244.Y.0/24 via 10.244.X.1 dev cilium_host src
           10.244.X.1 mtu 1450` so the node's own traffic to remote pods goes through cil_from_host.
           Works across routed segments.
    native (routingMode: native + autoDirectNodeRoutes): `10.244.Y.0/24 via <node Y IP> dev eth0`,
           which cil_from_container's bpf_fib_lookup follows. One L2 segment only, as host-gw.

Where the lab differs from Cilium, on purpose:
- Cilium compiles an object per endpoint with its addresses as constants; the lab compiles one
  object per source version and gives each node its values in `node_config`.
- Cilium picks its router IP from the pod CIDR; the lab takes the first address (.1), so pods
  are still numbered from .2 as in every other data plane.
- Each lxc device has forwarding off, so a pod whose program is detached (`fault bpf-detach`) is
  cut off instead of quietly falling back on the node's routing; the programs' own FIB lookups
  are made as if on eth0, where forwarding is on.
- No identities, policy, conntrack, NAT or services: the lesson is the forwarding path.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

from cni_lab import names
from cni_lab.dataplanes.capabilities import Capabilities, Refused, Tunnel
from cni_lab.dataplanes.hostgw import require_one_segment
from cni_lab.cluster import Lab, Node, Pod
from cni_lab.model import Scenario
from cni_lab.steps import (
    DEFAULT_ROUTE,
    AddAddress,
    AddFlowVxlan,
    AddRoute,
    AddVeth,
    AttachBpf,
    BpfEndpoint,
    BpfNodeConfig,
    BpfTunnel,
    LinkUp,
    LoadBpf,
    SetSysctl,
    Step,
)


def v4(address: object) -> Any:
    """An IPv4 address or network: the programs speak IPv4 only (plan.build refuses IPv6 labs)."""
    assert getattr(address, "version", 4) == 4, address
    return address


SOURCE = "ebpf.c"
VNI = 2  # Cilium puts the sender's security identity in the VNI; the lab has none, so one "world" value
FROM_CONTAINER, FROM_NETDEV, FROM_OVERLAY, FROM_HOST = "cil_from_container", "cil_from_netdev", "cil_from_overlay", "cil_from_host"
PROGRAMS = (FROM_CONTAINER, FROM_NETDEV, FROM_OVERLAY, FROM_HOST)

NATIVE = Capabilities(
    ipam="host-local",  # the pod CIDR's first address is the router IP, pods from .2
    ipv6=Refused("dataplane: ebpf forwards IPv4 only (its programs and maps have no IPv6 path): give "
                 "networking.clusterCIDR one IPv4 CIDR, or use another data plane for IPv6"),
    pods_meet="bpf-redirect",
    pod_gateway="cilium_host",
    sets_hairpin=False,  # no bridge
    tunnel=None,
    needs_router=False,
    fabric_routes_pods=False,
    daemons=(),
    loads_bpf=True,
    bypasses_forward_hook=True,
    runs_cni_plugins=False,
    policy=Refused("policies: dataplane ebpf does not enforce NetworkPolicy (its programs have no policy map "
                   "yet); use another data plane for policies"),
    services=Refused("services: dataplane ebpf does not load-balance Services yet (its programs bypass the "
                     "node's NAT hooks, where kube-proxy's rules are)"),
    masquerade=Refused("outside: dataplane ebpf does not masquerade yet (it needs BPF SNAT); use host-gw, vxlan, "
                       "bridge, fabric, bgp or cni"),
)
TUNNEL = dataclasses.replace(NATIVE, tunnel=Tunnel(names.CILIUM_VXLAN))


class Ebpf:
    name = "ebpf"

    def capabilities(self, scenario: Scenario) -> Capabilities:
        return TUNNEL if scenario.ebpf_routing == "tunnel" else NATIVE

    def needs(self, lab: Lab) -> tuple[tuple[str, str], ...]:
        return (("clang", "clang"), ("bpftool", "bpftool"))

    def runs_as_root(self, lab: Lab) -> tuple[str, ...]:
        return ()

    def validate(self, lab: Lab) -> None:
        if lab.scenario.ebpf_routing == "native":
            # a next hop per node, as host-gw: one segment, refused across a router
            require_one_segment(lab, "ebpf.routing: native", "use ebpf.routing: tunnel")

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        ns = names.node_netns(lab.name, node.name)
        pin = names.bpf_node_dir(lab.name, node.name)
        router = v4(node.gateway)
        tunnel = lab.tunnelled
        steps: list[Step] = [
            AddVeth(ns, names.CILIUM_HOST, ns, names.CILIUM_NET, lab.scenario.underlay_mtu),
            AddAddress(ns, names.CILIUM_HOST, IPv4Interface(f"{router}/32")),
            # NOARP: the node's packets to its router IP need no neighbour; cil_from_host sets the MACs
            LinkUp(ns, names.CILIUM_NET, arp=False),
            LinkUp(ns, names.CILIUM_HOST, arp=False),
            AddRoute(ns, node.pod_cidr, names.CILIUM_HOST, via=router, src=router),
        ]
        if tunnel:
            steps += [
                AddFlowVxlan(ns, names.CILIUM_VXLAN, names.VXLAN_PORT, lab.scenario.underlay_mtu),
                LinkUp(ns, names.CILIUM_VXLAN),
            ]
        steps += [
            LoadBpf(ns, pin, SOURCE),
            BpfNodeConfig(ns, pin, names.NODE_UPLINK, names.CILIUM_VXLAN if tunnel else None, router, VNI),
            AttachBpf(ns, names.NODE_UPLINK, "ingress", pin, FROM_NETDEV),
            AttachBpf(ns, names.CILIUM_HOST, "egress", pin, FROM_HOST),
        ]
        if tunnel:
            steps.append(AttachBpf(ns, names.CILIUM_VXLAN, "ingress", pin, FROM_OVERLAY))
        return steps

    def pod_steps(self, lab: Lab, node: Node, pod: Pod) -> list[Step]:
        node_ns = names.node_netns(lab.name, node.name)
        pod_ns = names.pod_netns(lab.name, node.name, pod.name)
        lxc = names.lxc_veth(lab.name, node.name, pod.name)
        pin = names.bpf_node_dir(lab.name, node.name)
        router = v4(node.gateway)
        eth0 = names.POD_IFNAME
        route_mtu = lab.pod_mtu if lab.tunnelled or lab.scenario.pod_mtu is not None else None
        return [
            AddVeth(node_ns, lxc, pod_ns, eth0, lab.scenario.underlay_mtu, up=True),
            SetSysctl(node_ns, f"net/ipv4/conf/{lxc}/forwarding", "0"),
            AddAddress(pod_ns, eth0, IPv4Interface(f"{pod.ip}/32")),
            LinkUp(pod_ns, eth0),
            AddRoute(pod_ns, IPv4Network(f"{router}/32"), eth0, scope_link=True),
            AddRoute(pod_ns, DEFAULT_ROUTE, eth0, via=router, mtu=route_mtu),
            AttachBpf(node_ns, lxc, "ingress", pin, FROM_CONTAINER),
            BpfEndpoint(node_ns, pin, v4(pod.ip), lxc, pod_ns, eth0),
        ]

    def cluster_steps(self, lab: Lab) -> list[Step]:
        steps: list[Step] = []
        for node in lab.nodes:
            ns = names.node_netns(lab.name, node.name)
            pin = names.bpf_node_dir(lab.name, node.name)
            for other in lab.nodes:
                if other is node or other.pod_cidr.overlaps(node.pod_cidr):
                    continue
                if lab.tunnelled:
                    steps += [
                        BpfTunnel(ns, pin, v4(other.pod_cidr), v4(other.ip)),
                        AddRoute(ns, other.pod_cidr, names.CILIUM_HOST, via=node.gateway, src=v4(node.gateway),
                                 mtu=lab.overlay_mtu),
                    ]
                else:
                    steps.append(AddRoute(ns, other.pod_cidr, names.NODE_UPLINK, via=other.ip))
        return steps
