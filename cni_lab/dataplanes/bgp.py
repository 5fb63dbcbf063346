"""`bgp`: Calico's BGP mode. No bridge: pods are routed. What each node gets, as Calico's CNI
plugin, Felix and BIRD leave it (projectcalico/calico: cni-plugin's network_linux.go, felix,
confd's bird.cfg.template and bird6.cfg.template):

    pod:   eth0 10.244.X.Y/32, `169.254.1.1 dev eth0 scope link`, `default via 169.254.1.1 dev eth0`
    node:  caliXXXXXXXXXXX (the pod's veth peer, MAC ee:ee:ee:ee:ee:ee): no address, proxy_arp on,
           so it answers the pod's ARP for 169.254.1.1; `10.244.X.Y dev caliXXXXXXXXXXX scope link`
    BIRD:  iBGP full mesh (AS 64512), sessions named Mesh_<peer address> as Calico's template
           names them, exporting the node's IPAM block; the static blackhole of the block and every
           learned route go to the kernel as `proto bird`, without a metric, as a Calico node shows
           them: `blackhole 10.244.X.0/26 proto bird`, `10.244.Y.0/26 via <node Y IP> dev eth0 proto bird`

Dual-stack, as Calico does IPv6: /122 blocks, each pod a /128 on eth0 and `default via
fe80::ecee:eeff:feee:eeee dev eth0` (the cali veth's link-local address, from its MAC), the cali
veth with proxy_ndp and forwarding on, `<pod IPv6> dev caliX` on the node; BIRD has an IPv6
channel and a session per peer's IPv6 address (Mesh_fd00_192_168_1__3), and peers learn each
other's /122 blocks. Calico runs two daemons (bird, bird6, BIRD 1.6); BIRD 2 does both in one.

The IP pool's encapsulation (`calico: {vxlanMode, ipipMode}`, Calico's IPPool fields) and
calico_backend (`calico: {backend: bird | vxlan}`) decide who programs the routes to other nodes'
blocks (felix/dataplane/linux: vxlan_mgr.go, ipip_mgr.go, route_mgr.go; confd's kernel filter):

    Never        BIRD: `10.244.Y.0/26 via <node Y IP> dev eth0 proto bird`, the blackhole `proto bird`
    VXLAN        Felix: vxlan.calico (VNI 4096, UDP 4789, local = node IP, no learning, MTU underlay − 50,
                 address = the block's first address, MAC 66:<SHA-1 of the node name>), per remote node
                 `10.244.Y.0/26 via <Y's VTEP> dev vxlan.calico onlink mtu 1450`, a permanent neighbour
                 (Y's VTEP → Y's VTEP MAC) and an fdb entry (Y's VTEP MAC → Y's node IP); the block's
                 blackhole `proto 80`; BIRD still runs the mesh but programs none of the pool's routes
    IPIP         Felix: tunl0 (MTU underlay − 20, address = the block's first address), per remote node
                 `10.244.Y.0/26 via <node Y IP> dev tunl0 proto 80 onlink mtu 1480`
    CrossSubnet  as Always towards nodes on another subnet; towards nodes on the node's own subnet
                 Felix's unencapsulated route `10.244.Y.0/26 via <node Y IP> dev eth0 proto 80 onlink`
    backend vxlan  VXLAN without BGP: the same routes from IPAM, and no BIRD at all

Across routed segments (two racks) with the pool at Never the lab builds what a cluster would: the
mesh is multihop, so every session comes up through the router; BIRD resolves a peer's next hop
in another subnet recursively (`gateway recursive`), through the node's default route, and
installs `10.244.Y.0/26 via <router> dev eth0 proto bird`. The router knows nothing of pod
addresses: `check` shows every cross-rack pod pair unreachable (the router answers "net
unreachable"), while node-to-node and same-rack pairs pass. CrossSubnet or Always fixes it.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

from cni_lab import names
from cni_lab.dataplanes.calico_bird import bird_conf, mesh_name, router_id
from cni_lab.dataplanes.capabilities import Capabilities, Refused, Tunnel
from cni_lab.errors import LabError
from cni_lab.cluster import Lab, Node, Pod
from cni_lab.model import Scenario
from cni_lab.steps import (
    DEFAULT_ROUTE,
    DEFAULT_ROUTE6,
    AddAddress,
    AddBlackhole,
    AddFdb,
    AddIpip,
    AddNeighbour,
    AddRoute,
    AddVeth,
    AddVxlan,
    LinkUp,
    SetSysctl,
    StartBird,
    Step,
    WaitBgp,
    WriteFile,
)

__all__ = ["Bgp", "CAPABILITIES", "bird_conf", "mesh_name", "router_id", "same_subnet", "vtep_address"]

GATEWAY = IPv4Address(names.CALICO_GATEWAY)
GATEWAY6 = IPv6Address(names.CALICO_GATEWAY6)
CAPABILITIES = Capabilities(
    ipam="calico-ipam",
    ipv6=None,
    pods_meet="routed",
    pod_gateway="proxy-arp",
    sets_hairpin=False,  # no bridge
    tunnel=None,
    needs_router=True,  # proxy ARP answers for 169.254.1.1 only with a default route (calico#3270)
    fabric_routes_pods=False,
    daemons=("bird",),
    loads_bpf=False,
    bypasses_forward_hook=False,
    runs_cni_plugins=False,
    policy="node-nftables",
    services="kube-proxy-nftables",
    masquerade="calico",
)
VXLAN_TUNNEL = Tunnel(names.CALICO_VXLAN)  # 50 bytes, as flannel's
IPIP_TUNNEL = Tunnel(names.CALICO_IPIP, overhead=20, overhead6=20)  # the outer IPv4 header alone
ENCAPSULATED_IPV6 = ("the lab's Calico encapsulates IPv4 only (Calico's IPIP carries IPv4 alone; its "
                     "vxlan-v6.calico is not modelled); for IPv6 keep vxlanMode and ipipMode Never")


def capabilities_of(scenario: Scenario) -> Capabilities:
    """What the lab's Calico does with this IP pool and backend."""
    calico = scenario.calico
    if calico.encapsulation is None:
        return CAPABILITIES
    tunnel = VXLAN_TUNNEL if calico.encapsulation == "vxlan" else IPIP_TUNNEL
    key = "vxlanMode" if calico.encapsulation == "vxlan" else "ipipMode"
    return dataclasses.replace(CAPABILITIES, tunnel=tunnel, ipv6=Refused(f"calico.{key}: {ENCAPSULATED_IPV6}"),
                               daemons=("bird",) if calico.runs_bird else ())


def vtep_address(node: Node) -> IPv4Address:
    """The address of the node's tunnel device (vxlan.calico or tunl0). Calico gives it the first
    address IPAM hands out on the node, from the node's block; the lab's IPAM starts pods at the
    block's first host, so the block's own first address (10.244.X.0) is free for it, as it is
    on most Calico nodes."""
    return IPv4Address(node.pod_cidr.network_address)


def same_subnet(node: Node, other: Node) -> bool:
    """Felix's SameSubnet: the other node's address is in this node's own subnet (its address
    with its prefix), so it is reached without a router."""
    return other.ip in node.underlay.network


def direct(lab: Lab, node: Node, other: Node) -> bool:
    """Whether `node` sends to `other`'s pods unencapsulated, straight to other's node IP:
    CrossSubnet and the other node on the same subnet."""
    return lab.scenario.calico.cross_subnet and same_subnet(node, other)


class Bgp:
    name = "bgp"

    def capabilities(self, scenario: Scenario) -> Capabilities:
        return capabilities_of(scenario)

    def needs(self, lab: Lab) -> tuple[tuple[str, str], ...]:
        if "bird" not in lab.capabilities.daemons:
            return ()
        return (("bird", "bird2"), ("birdc", "bird2"))

    def runs_as_root(self, lab: Lab) -> tuple[str, ...]:
        return ()  # BIRD is the system's own program

    def validate(self, lab: Lab) -> None:
        # Across routed segments a pool at Never builds and fails as a cluster does (the module's docstring)
        seen: list[Node] = []
        for node in lab.nodes:
            for other in seen:
                if node.pod_cidr.overlaps(other.pod_cidr):
                    raise LabError(f"{lab.scenario.source}: dataplane: bgp announces each block from one node, "
                                   f"but {node.name} and {other.name} share {node.pod_cidr}")
            seen.append(node)

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        """Felix's tunnel device and the block's blackhole, in the encapsulated modes (at Never,
        BIRD installs the blackhole from its static protocol)."""
        encap = lab.scenario.calico.encapsulation
        if encap is None:
            return []
        ns = names.node_netns(lab.name, node.name)
        dev = names.CALICO_VXLAN if encap == "vxlan" else names.CALICO_IPIP
        vtep = IPv4Interface(f"{vtep_address(node)}/32")
        steps: list[Step]
        if encap == "vxlan":
            steps = [AddVxlan(ns, dev, names.CALICO_VXLAN_VNI, names.CALICO_VXLAN_PORT, node.ip, names.NODE_UPLINK,
                              names.calico_vtep_mac(node.name), lab.overlay_mtu)]
        else:
            steps = [AddIpip(ns, dev, lab.overlay_mtu)]
        return [*steps, AddAddress(ns, dev, vtep), LinkUp(ns, dev),
                AddBlackhole(ns, node.pod_cidr, names.FELIX_PROTO)]

    def pod_steps(self, lab: Lab, node: Node, pod: Pod) -> list[Step]:
        node_ns = names.node_netns(lab.name, node.name)
        pod_ns = names.pod_netns(lab.name, node.name, pod.name)
        cali = names.cali_veth(lab.name, node.name, pod.name)
        ip4 = pod.ip if pod.ip.version == 4 else None
        ip6 = pod.ip6 if pod.ip6 is not None else pod.ip if pod.ip.version == 6 else None
        steps: list[Step] = [AddVeth(node_ns, cali, pod_ns, names.POD_IFNAME, lab.pod_mtu, up=True,
                                     mac=names.CALICO_HOST_MAC)]
        if ip4 is not None:
            steps += [
                SetSysctl(node_ns, f"net/ipv4/conf/{cali}/proxy_arp", "1"),
                SetSysctl(node_ns, f"net/ipv4/neigh/{cali}/proxy_delay", "0"),  # answer ARP at once, as Felix sets it
                AddAddress(pod_ns, names.POD_IFNAME, IPv4Interface(f"{ip4}/32")),
            ]
        if ip6 is not None:  # Calico's IPv6: a /128, proxy_ndp and forwarding on the host end
            steps += [
                SetSysctl(node_ns, f"net/ipv6/conf/{cali}/proxy_ndp", "1"),
                SetSysctl(node_ns, f"net/ipv6/conf/{cali}/forwarding", "1"),
                AddAddress(pod_ns, names.POD_IFNAME, IPv6Interface(f"{ip6}/128")),
            ]
        steps.append(LinkUp(pod_ns, names.POD_IFNAME))
        if ip4 is not None:
            steps += [
                AddRoute(pod_ns, IPv4Network(f"{GATEWAY}/32"), names.POD_IFNAME, scope_link=True),
                AddRoute(pod_ns, DEFAULT_ROUTE, names.POD_IFNAME, via=GATEWAY),
                AddRoute(node_ns, IPv4Network(f"{ip4}/32"), cali, scope_link=True),
            ]
        if ip6 is not None:  # via the cali veth's link-local address (its MAC's EUI-64)
            steps += [
                AddRoute(pod_ns, DEFAULT_ROUTE6, names.POD_IFNAME, via=GATEWAY6),
                AddRoute(node_ns, IPv6Network(f"{ip6}/128"), cali),
            ]
        return steps

    def cluster_steps(self, lab: Lab) -> list[Step]:
        steps = [s for node in lab.nodes for s in self.felix_routes(lab, node)]
        if "bird" not in lab.capabilities.daemons:
            return steps
        for node in lab.nodes:
            ns = names.node_netns(lab.name, node.name)
            folder = names.bird_dir(node.name)
            steps += [
                WriteFile(ns, f"{folder}/bird.conf", bird_conf(lab, node)),
                StartBird(ns, folder),
            ]
        birds_blocks = lab.scenario.calico.encapsulation is None  # else Felix programs them (above)
        for node in lab.nodes:
            others = [o for o in lab.nodes if o is not node]
            peers = [mesh_name(o.ip) for o in others]
            blocks: list[IPv4Network | IPv6Network] = [o.pod_cidr for o in others] if birds_blocks else []
            if node.ip6 is not None:
                peers += [mesh_name(o.ip6) for o in others if o.ip6 is not None]
                blocks += [o.pod_cidr6 for o in others if o.pod_cidr6 is not None]
            steps.append(WaitBgp(names.node_netns(lab.name, node.name), node.name, names.bird_dir(node.name),
                                 tuple(peers), tuple(blocks)))
        return steps

    def felix_routes(self, lab: Lab, node: Node) -> list[Step]:
        """What Felix programs on `node` for every other node's block in the encapsulated modes
        (route_mgr.go's updateRoutes: an unencapsulated route where the node is on the same subnet
        and the pool is CrossSubnet, else the tunnel's; vxlan_mgr.go: the VTEP's neighbour and fdb
        entries, for every remote VTEP, whichever way its block is routed)."""
        encap = lab.scenario.calico.encapsulation
        if encap is None:
            return []
        ns = names.node_netns(lab.name, node.name)
        steps: list[Step] = []
        for other in lab.nodes:
            if other is node or other.pod_cidr.overlaps(node.pod_cidr):
                continue
            if encap == "vxlan":
                mac = names.calico_vtep_mac(other.name)
                steps += [AddNeighbour(ns, names.CALICO_VXLAN, vtep_address(other), mac),
                          AddFdb(ns, names.CALICO_VXLAN, mac, other.ip)]
            if direct(lab, node, other):
                steps.append(AddRoute(ns, other.pod_cidr, names.NODE_UPLINK, via=other.ip, onlink=True,
                                      proto=names.FELIX_PROTO))
            elif encap == "vxlan":  # proto boot: Felix's DeviceRouteProtocol default (3) for VXLAN's routes
                steps.append(AddRoute(ns, other.pod_cidr, names.CALICO_VXLAN, via=vtep_address(other), onlink=True,
                                      mtu=lab.overlay_mtu))
            else:
                steps.append(AddRoute(ns, other.pod_cidr, names.CALICO_IPIP, via=other.ip, onlink=True,
                                      mtu=lab.overlay_mtu, proto=names.FELIX_PROTO))
        return steps
