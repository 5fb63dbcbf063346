"""`vxlan`: flannel's vxlan backend. Pods are wired as in `bridge` (at the overlay MTU); every node
gets a VXLAN device and, per remote node, the three entries flannel programs from the remote
node's lease (pkg/backend/vxlan in flannel):

    flannel.1: vxlan id 1 local <node IP> dev eth0 dstport 8472 nolearning, mtu = eth0 - 50,
               address 10.244.X.0/32
    route      10.244.Y.0/24 via 10.244.Y.0 dev flannel.1 onlink
    neighbour  10.244.Y.0 lladdr <Y's VTEP MAC> dev flannel.1 PERMANENT
    fdb        <Y's VTEP MAC> dev flannel.1 dst <Y's node IP> self permanent

Packets between pods of different nodes travel as UDP 8472 between node IPs, so nodes only need
to reach each other's IPs: it works across routed segments too.

Dual-stack: flannel adds a second device for IPv6, `flannel-v6.1` (VNI 1, local = the node's
IPv6 address, its own MAC, address 10.244.X.0's IPv6 twin fd00:10:244:X::/128), and the same three
entries per remote node in IPv6: `fd00:10:244:Y::/64 via fd00:10:244:Y:: dev flannel-v6.1 onlink`,
a permanent neighbour for that VTEP address, an fdb entry to the node's IPv6 address. The outer
IPv6 header is 20 bytes longer: the overlay costs 70 bytes there, and the pods' MTU fits it.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_interface

from cni_lab import names
from cni_lab.dataplanes import bridge
from cni_lab.dataplanes.bridge import Bridge
from cni_lab.dataplanes.capabilities import Capabilities, Tunnel
from cni_lab.cluster import Lab, Node
from cni_lab.model import Scenario
from cni_lab.steps import AddAddress, AddFdb, AddNeighbour, AddRoute, AddVxlan, LinkUp, SetSysctl, Step, WriteFile


TUNNEL = Tunnel(names.FLANNEL_DEVICE)
CAPABILITIES = dataclasses.replace(bridge.CAPABILITIES, tunnel=TUNNEL)  # pods on cni0, nodes joined by the overlay


def subnet_env(lab: Lab, node: Node) -> str:
    """What flannel writes to /run/flannel/subnet.env for the CNI plugin to read. The lab
    masquerades (FLANNEL_IPMASQ=true) where the lab has an outside host. An IPv6-only node has only the
    IPV6 lines, as flannel writes them with EnableIPv4 off."""
    v4 = "" if lab.ipv6_only else (f"FLANNEL_NETWORK={lab.scenario.cluster_cidr}\n"
                                   f"FLANNEL_SUBNET={node.gateway}/{node.pod_cidr.prefixlen}\n")
    cluster6, cidr6, gateway6 = ((lab.scenario.cluster_cidr, node.pod_cidr, node.gateway) if lab.ipv6_only
                                 else (lab.scenario.cluster_cidr6, node.pod_cidr6, node.gateway6))
    v6 = "" if cidr6 is None else f"FLANNEL_IPV6_NETWORK={cluster6}\nFLANNEL_IPV6_SUBNET={gateway6}/{cidr6.prefixlen}\n"
    masq = "true" if lab.scenario.outside_ip is not None and lab.scenario.masquerade else "false"
    return f"{v4}FLANNEL_MTU={lab.overlay_mtu}\nFLANNEL_IPMASQ={masq}\n{v6}"


def _family(lab: Lab, node: Node, version: int) -> tuple[IPv4Network | IPv6Network, IPv4Address | IPv6Address] | None:
    """The node's pod CIDR and underlay address of one family, where it has that family."""
    for cidr, ip in ((node.pod_cidr, node.ip), (node.pod_cidr6, node.ip6)):
        if cidr is not None and ip is not None and cidr.version == version:
            return cidr, ip
    return None


def _device(lab: Lab, node: str, version: int) -> tuple[str, str]:
    """flannel's device and this node's VTEP MAC for a family: flannel.1, or flannel-v6.1."""
    if version == 6:
        return names.FLANNEL_DEVICE6, names.vtep_mac6(lab.name, node)
    return names.FLANNEL_DEVICE, names.vtep_mac(lab.name, node)


class Vxlan(Bridge):
    name = "vxlan"

    def capabilities(self, scenario: Scenario) -> Capabilities:
        return CAPABILITIES

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        return [*super().node_steps(lab, node), *self.vtep_steps(lab, node)]

    def vtep_steps(self, lab: Lab, node: Node) -> list[Step]:
        """The node's VXLAN device per family and subnet.env: what flanneld sets up on a node."""
        steps: list[Step] = []
        for version in lab.families:
            found = _family(lab, node, version)
            if found is not None:
                steps += self._vtep(lab, node, version, *found)
        return [*steps, WriteFile(names.node_netns(lab.name, node.name), f"flannel/{node.name}/subnet.env",
                                  subnet_env(lab, node))]

    def _vtep(self, lab: Lab, node: Node, version: int, cidr: IPv4Network | IPv6Network,
              local: IPv4Address | IPv6Address) -> list[Step]:
        ns = names.node_netns(lab.name, node.name)
        dev, mac = _device(lab, node.name, version)
        mtu = TUNNEL.mtu(lab.scenario.underlay_mtu, ipv6=version == 6)
        vtep_ip = ip_interface(f"{cidr.network_address}/{32 if version == 4 else 128}")
        return [
            AddVxlan(ns, dev, names.VXLAN_VNI, names.VXLAN_PORT, local, names.NODE_UPLINK, mac,
                     lab.overlay_mtu if version == 4 else mtu),
            SetSysctl(ns, f"net/ipv6/conf/{dev}/accept_ra", "0"),  # as flannel does
            AddAddress(ns, dev, vtep_ip),
            LinkUp(ns, dev),
        ]

    def cluster_steps(self, lab: Lab) -> list[Step]:
        steps: list[Step] = []
        for node in lab.nodes:
            ns = names.node_netns(lab.name, node.name)
            for other in lab.nodes:
                if other is node:
                    continue
                for version in lab.families:
                    mine, theirs = _family(lab, node, version), _family(lab, other, version)
                    if mine is None or theirs is None or theirs[0].overlaps(mine[0]):  # type: ignore[arg-type]
                        continue
                    dev, mac = _device(lab, other.name, version)
                    vtep = theirs[0].network_address
                    steps += [
                        AddNeighbour(ns, dev, vtep, mac),
                        AddFdb(ns, dev, mac, theirs[1]),
                        AddRoute(ns, theirs[0], dev, via=vtep, onlink=True),
                    ]
        return steps
