"""`ebpf`: Cilium's datapath, in miniature, configured as clusters deploy it: kubeProxyReplacement:
true, bpf.masquerade: true, socket LB off, routingMode tunnel or native. No bridge, no iptables,
no kube-proxy: tc BPF programs (ebpf.c, compiled with clang and loaded for real) move, balance
and masquerade every pod packet. What a node gets, with Cilium's names (cilium/cilium:
pkg/datapath/connector, bpf/bpf_lxc.c, bpf_host.c, bpf_overlay.c, bpf/lib/lb.h, nodeport.h, nat.h):

    pod:   eth0 10.244.X.Y/32, `10.244.X.1 dev eth0 scope link`, `default via 10.244.X.1 dev eth0`
           (`mtu 1450` on the routes in tunnel mode); the pod's ARP for 10.244.X.1 is answered by
           cil_from_container with the lxc device's MAC
    node:  lxc<12 hex> (the pod's veth peer) with cil_from_container at tc ingress;
           cilium_host (10.244.X.1/32, the router IP) / cilium_net, a veth pair; cil_from_host at
           cilium_host's tc egress; `10.244.X.0/24 via 10.244.X.1 dev cilium_host src 10.244.X.1`;
           cil_from_netdev at eth0's tc ingress (NodePort, replies to masqueraded connections)
    maps:  cilium_lxc (the node's pods), cilium_ipcache_v2 (every pod and node: identity, and in tunnel
           mode the tunnel endpoint), cilium_lb4_services_v2 / _backends_v3 / _reverse_nat (Services),
           cilium_ct4_global / cilium_ct_any4_global (Service connections), cilium_snat_v4_external (BPF masquerade),
           node_config, cilium_metrics, pinned in /sys/fs/bpf/cnilab-<lab>/<node>

Between nodes, `ebpf.routing` (or Cilium's Helm name, `ebpf.routingMode`):
    tunnel (Cilium's default): cilium_vxlan, a flow-based VXLAN device on UDP 8472 with
           cil_from_overlay at its tc ingress; the ipcache gives each remote pod's (and pod CIDR's)
           tunnel endpoint; `10.244.Y.0/24 via 10.244.X.1 dev cilium_host src 10.244.X.1 mtu 1450` so
           the node's own traffic to remote pods goes through cil_from_host. Works across routed segments.
    native (routingMode: native + autoDirectNodeRoutes): `10.244.Y.0/24 via <node Y IP> dev eth0`,
           which cil_from_container's bpf_fib_lookup follows. One L2 segment only, as host-gw.

Services (kube-proxy replacement, per packet): a pod's packet to a ClusterIP is DNATed to a
random backend in cil_from_container (its connection remembered in cilium_ct4_global, the reply's
source turned back to the frontend on delivery); a NodePort on a node's address in
cil_from_netdev: a backend on that node gets the client's address, one elsewhere gets the node's
(SNAT, so the reply comes back through it); externalTrafficPolicy Local gives the node's frontend
its own backends only. A pod reaching itself through its Service is seen from 169.254.42.1 (Cilium's
IPV4_LOOPBACK, capabilities.CILIUM_LB_LOOPBACK). BPF masquerade: a pod's packet to an address the ipcache does not know (world),
outside the native-routing CIDR, leaves with the node's address and a port of the node's.

Where the lab differs from Cilium, on purpose:
- Cilium compiles an object per endpoint with its addresses as constants; the lab compiles one
  object per source version and gives each node its values in `node_config`.
- Cilium picks its router IP from the pod CIDR; the lab takes the first address (.1), so pods
  are still numbered from .2 as in every other data plane.
- Each lxc device has forwarding off, so a pod whose program is detached (`fault bpf-detach`) is
  cut off instead of quietly falling back on the node's routing; the programs' own FIB lookups
  are made as if on eth0, where forwarding is on.
- Identities (ebpf_policy.py) are kept in the ipcache as Cilium with policy-cidr-match-mode: nodes
  keeps them: pods' from 256 by their labels (namespace included), this node's addresses host (1),
  each other node address its own (remote-node scope), the policies' ipBlock prefixes theirs; the
  sender's identity travels in the VNI, and each endpoint's policy map (cilium_policy_v2_<id>,
  filled from the lab's NetworkPolicy evaluator, ebpf_policy.py) is looked up by it on egress and
  ingress, with connection tracking so replies pass. The same for IPv6 (its ipcache entries,
  its addresses' identities: the policy map's key has no family).
- Left out: socket LB (the node's own connections to a ClusterIP are not balanced), Maglev (random
  only), DSR, XDP acceleration, session affinity, health checks, the NodePort "surrogate" 0.0.0.0
  frontend and the internal-scope (LB_LOOKUP_SCOPE_INT) entries; conntrack only for translated
  connections, with no garbage collection (LRU maps); a frontend without backends drops.
"""

from __future__ import annotations

import dataclasses
from ipaddress import ip_interface, ip_network
from typing import Any, Sequence

from cni_lab import names
from cni_lab.dataplanes import ebpf_policy
from cni_lab.dataplanes.capabilities import Capabilities, Tunnel
# the security identities live with the policy maps that use them (ebpf_policy.py)
from cni_lab.dataplanes.ebpf_policy import WORLD_ID, identities, ipcache
from cni_lab.dataplanes.hostgw import require_one_segment
from cni_lab.errors import LabError
from cni_lab.cluster import Lab, Node, Pod, Service
from cni_lab.model import Scenario
from cni_lab.steps import (
    AddAddress,
    AddFlowVxlan,
    AddRoute,
    AddVeth,
    AttachBpf,
    BpfEndpoint,
    BpfIpcache,
    BpfIpcacheSync,
    BpfNodeConfig,
    BpfPolicy,
    BpfServices,
    LbBackend,
    LbFrontend,
    LinkUp,
    LoadBpf,
    SetSysctl,
    Step,
    default_route,
)


def v4(address: object) -> Any:
    """An IPv4 address or network: Services and masquerade are IPv4's (cluster.py refuses
    Services, and masquerade.py an outside host, in labs with IPv6)."""
    assert getattr(address, "version", 4) == 4, address
    return address


def family(node: Node, version: int) -> tuple[Any, Any, Any] | None:
    """The node's (underlay address, pod CIDR, router IP) in one family, None when it has none
    (an IPv6-only node has no IPv4; a single-stack one no IPv6)."""
    if node.pod_cidr.version == version:
        return node.ip, node.pod_cidr, node.gateway
    if version == 6 and node.pod_cidr6 is not None:
        return node.ip6, node.pod_cidr6, node.gateway6
    return None


def pod_addresses(pod: Pod) -> tuple[Any, ...]:
    """Every address of the pod, IPv4 first."""
    return tuple(sorted(pod.ips, key=lambda a: a.version))


SOURCE = "ebpf.c"
VNI = WORLD_ID  # the VNI of a packet whose sender has no identity (every other carries its sender's)
# struct lb4_service's flags (bpf/lib/lb.h: SVC_FLAG_*)
SVC_FLAG_NODEPORT, SVC_FLAG_EXT_LOCAL_SCOPE, SVC_FLAG_ROUTABLE = 1 << 1, 1 << 2, 1 << 6
FROM_CONTAINER, FROM_NETDEV, FROM_OVERLAY, FROM_HOST = "cil_from_container", "cil_from_netdev", "cil_from_overlay", "cil_from_host"
PROGRAMS = (FROM_CONTAINER, FROM_NETDEV, FROM_OVERLAY, FROM_HOST)

NATIVE = Capabilities(
    ipam="host-local",  # the pod CIDR's first address is the router IP, pods from .2
    ipv6=None,  # IPv6 forwarding and policy too; Services and masquerade are IPv4's
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
    policy="cilium-bpf",
    services="cilium-bpf",
    masquerade="cilium-bpf",
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
        if lab.scenario.outside_ip is not None and lab.has_ipv6:  # as masquerade.py says for the others
            raise LabError(f"{lab.scenario.source}: outside: IPv4-only labs for now")
        if lab.scenario.ebpf_routing == "native":
            # a next hop per node, as host-gw: one segment, refused across a router
            require_one_segment(lab, "ebpf.routing: native", "use ebpf.routing: tunnel")

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        ns = names.node_netns(lab.name, node.name)
        pin = names.bpf_node_dir(lab.name, node.name)
        four, six = family(node, 4), family(node, 6)
        tunnel = lab.tunnelled
        steps: list[Step] = [AddVeth(ns, names.CILIUM_HOST, ns, names.CILIUM_NET, lab.scenario.underlay_mtu)]
        steps += [AddAddress(ns, names.CILIUM_HOST, ip_interface(f"{router}/{router.max_prefixlen}"))
                  for _, _, router in filter(None, (four, six))]
        # NOARP: the node's packets to its router IP need no neighbour; cil_from_host sets the MACs
        steps += [LinkUp(ns, names.CILIUM_NET, arp=False), LinkUp(ns, names.CILIUM_HOST, arp=False)]
        # IPv6 refuses a gateway that is the node's own address: the route names the device alone
        # (cilium_host is NOARP, cil_from_host sets the MACs)
        steps += [AddRoute(ns, cidr, names.CILIUM_HOST, via=router if router.version == 4 else None, src=router)
                  for _, cidr, router in filter(None, (four, six))]
        if tunnel:
            steps += [
                AddFlowVxlan(ns, names.CILIUM_VXLAN, names.VXLAN_PORT, lab.scenario.underlay_mtu),
                LinkUp(ns, names.CILIUM_VXLAN),
            ]
        steps += [
            LoadBpf(ns, pin, SOURCE),
            BpfNodeConfig(ns, pin, names.NODE_UPLINK, names.CILIUM_VXLAN if tunnel else None, four[2] if four else None,
                          VNI, four[0] if four else None, lab.scenario.outside_ip is not None and lab.scenario.masquerade,
                          v4(lab.scenario.cluster_cidr) if four else None, six[2] if six else None),
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
        eth0 = names.POD_IFNAME
        route_mtu = lab.pod_mtu if lab.tunnelled or lab.scenario.pod_mtu is not None else None
        routers = {v: f[2] for v in (4, 6) if (f := family(node, v)) is not None}
        steps: list[Step] = [AddVeth(node_ns, lxc, pod_ns, eth0, lab.scenario.underlay_mtu, up=True)]
        if 4 in routers:  # a detached program then cuts the pod off (IPv6 forwards per node, not per device)
            steps.append(SetSysctl(node_ns, f"net/ipv4/conf/{lxc}/forwarding", "0"))
        steps += [AddAddress(pod_ns, eth0, ip_interface(f"{ip}/{ip.max_prefixlen}")) for ip in pod_addresses(pod)]
        steps.append(LinkUp(pod_ns, eth0))
        for version, router in routers.items():
            # the router IP on the link, and the default route through it (Cilium's IPv4Routes/IPv6Routes)
            steps += [AddRoute(pod_ns, ip_network(f"{router}/{router.max_prefixlen}"), eth0, scope_link=version == 4),
                      AddRoute(pod_ns, default_route(version), eth0, via=router, mtu=route_mtu)]
        steps.append(AttachBpf(node_ns, lxc, "ingress", pin, FROM_CONTAINER))
        steps += [BpfEndpoint(node_ns, pin, ip, lxc, pod_ns, eth0, endpoint_id(node, pod), identities(lab)[pod.id])
                  for ip in pod_addresses(pod)]
        steps.append(BpfPolicy(node_ns, pin, endpoint_id(node, pod), policy_rows(lab, node, pod)))
        return steps

    def cluster_steps(self, lab: Lab) -> list[Step]:
        steps: list[Step] = []
        for node in lab.nodes:
            ns = names.node_netns(lab.name, node.name)
            pin = names.bpf_node_dir(lab.name, node.name)
            # the ipcache (ebpf_policy.ipcache): every node address, every pod, in tunnel mode other
            # nodes' pod CIDRs, and the policies' ipBlock prefixes
            steps += [BpfIpcache(ns, pin, *entry) for entry in ipcache_entries(lab, node)]
            for other in lab.nodes:
                if other is node or other.pod_cidr.overlaps(node.pod_cidr):
                    continue
                for version in lab.families:
                    mine, theirs = family(node, version), family(other, version)
                    if mine is None or theirs is None:
                        continue
                    if lab.tunnelled:  # the node's own packets to them through cil_from_host
                        steps.append(AddRoute(ns, theirs[1], names.CILIUM_HOST, via=mine[2] if version == 4 else None,
                                              src=mine[2], mtu=lab.overlay_mtu))
                    else:  # autoDirectNodeRoutes: to the node's address in that family
                        steps.append(AddRoute(ns, theirs[1], names.NODE_UPLINK, via=theirs[0]))
        return steps

    def policy_steps(self, lab: Lab) -> list[Step]:
        """Every endpoint's policy map and every node's ipcache (the policies' ipBlock prefixes
        come and go with them), made exactly what the lab's policies say, in both families."""
        problems = ebpf_policy.problems(lab)
        if problems:
            raise LabError(*(f"{lab.scenario.source}: {line}" for line in problems))
        steps: list[Step] = []
        for node in lab.nodes:
            ns, pin = names.node_netns(lab.name, node.name), names.bpf_node_dir(lab.name, node.name)
            steps.append(BpfIpcacheSync(ns, pin, tuple(ipcache_entries(lab, node))))
            steps += [BpfPolicy(ns, pin, endpoint_id(node, pod), policy_rows(lab, node, pod)) for pod in node.pods]
        return steps

    def service_steps(self, lab: Lab, services: Sequence[Service]) -> list[Step]:
        """Every node's Service maps (kube-proxy replacement): the ClusterIPs, and the NodePorts on
        the node's own address; a Local NodePort's frontend holds the node's own backends only."""
        frontends, backends = lb_maps(lab, services)
        return [BpfServices(names.node_netns(lab.name, node.name), names.bpf_node_dir(lab.name, node.name),
                            frontends[node.name], backends)
                for node in lab.nodes]


def endpoint_id(node: Node, pod: Pod) -> int:
    """The pod's endpoint ID on its node (Cilium's are small numbers the agent allocates per node)."""
    return next(i for i, p in enumerate(node.pods, 1) if p is pod)


# no policy: allow-any-ingress, the local host (allow-localhost), allow-any-egress
NO_POLICY = ((False, 0, 0, 0, 0), (False, ebpf_policy.HOST_ID, 0, 0, 0), (True, 0, 0, 0, 0))


def policy_rows(lab: Lab, node: Node, pod: Pod) -> tuple[tuple[bool, int, int, int, int], ...]:
    """The endpoint's policy map (ebpf_policy.policy_entries), as its steps carry it."""
    if not lab.scenario.policies:
        return NO_POLICY
    return tuple((e.egress, e.identity, e.protocol, e.port, e.prefix)
                 for e in ebpf_policy.policy_entries(lab, node, pod))


def ipcache_entries(lab: Lab, node: Node) -> list[tuple[Any, int, Any]]:
    """What the node's ipcache holds, both families (ebpf_policy.ipcache): identities as Cilium's
    nodes mode gives them, in tunnel mode other nodes' pod CIDRs and pods behind their node's
    first-family address, the policies' prefixes."""
    return [(e.prefix, e.identity, e.tunnel_endpoint) for e in ipcache(lab, node)]


def lb_maps(lab: Lab, services: Sequence[Service]) -> tuple[dict[str, tuple[LbFrontend, ...]], tuple[LbBackend, ...]]:
    """Each node's frontends and the lab's backends, as the agent numbers them: a backend ID per
    endpoint address, port and protocol, a reverse NAT index per frontend (the ClusterIPs first,
    then each node's NodePorts)."""
    ports = [(svc, port) for svc in services for port in svc.spec.ports]
    found = sorted({(v4(b.pod.ip), b.port, port.protocol, b.pod.id) for svc, port in ports for b in svc.backends(port)})
    backends = tuple(LbBackend(i, ip, number, protocol, pod) for i, (ip, number, protocol, pod) in enumerate(found, 1))
    backend_id = {(b.address, b.port, b.protocol): b.id for b in backends}
    index = iter(range(1, 1 << 16))

    def ids(svc: Service, port: Any, node: Node | None = None) -> tuple[int, ...]:
        return tuple(backend_id[(v4(b.pod.ip), b.port, port.protocol)] for b in svc.backends(port)
                     if node is None or b.pod.node == node.name)

    def label(svc: Service, port: Any) -> str:
        return svc.qualified + (f":{port.name}" if port.name else "")

    cluster = [LbFrontend(label(svc, port), "ClusterIP", v4(svc.cluster_ip), port.port, port.protocol, next(index), 0,
                          ids(svc, port)) for svc, port in ports]
    frontends = {}
    for node in lab.nodes:
        nodeports = []
        for svc, port in ports:
            if not port.node_port:
                continue
            local = svc.spec.external_traffic_policy == "Local"
            flags = SVC_FLAG_NODEPORT | SVC_FLAG_ROUTABLE | (SVC_FLAG_EXT_LOCAL_SCOPE if local else 0)
            nodeports.append(LbFrontend(label(svc, port), "NodePort", v4(node.ip), port.node_port, port.protocol,
                                        next(index), flags, ids(svc, port, node if local else None)))
        frontends[node.name] = (*cluster, *nodeports)
    return frontends, backends


__all__ = ["Ebpf", "identities", "lb_maps"]  # identities: ebpf_policy's, kept importable from here
