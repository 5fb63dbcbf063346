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

from ipaddress import IPv4Interface, IPv6Interface

from cni_lab import names
from cni_lab.dataplanes.bridge import Bridge
from cni_lab.ipam import Lab, Node
from cni_lab.steps import AddAddress, AddFdb, AddNeighbour, AddRoute, AddVxlan, LinkUp, SetSysctl, Step, WriteFile


def subnet_env(lab: Lab, node: Node) -> str:
    """What flannel writes to /run/flannel/subnet.env for the CNI plugin to read. The lab
    installs no masquerade rules, so FLANNEL_IPMASQ is false."""
    return (
        f"FLANNEL_NETWORK={lab.scenario.cluster_cidr}\n"
        f"FLANNEL_SUBNET={node.gateway}/{node.pod_cidr.prefixlen}\n"
        f"FLANNEL_MTU={lab.overlay_mtu}\n"
        "FLANNEL_IPMASQ=false\n"
        + (f"FLANNEL_IPV6_NETWORK={lab.scenario.cluster_cidr6}\n"
           f"FLANNEL_IPV6_SUBNET={node.gateway6}/{node.pod_cidr6.prefixlen}\n" if node.pod_cidr6 is not None else "")
    )


class Vxlan(Bridge):
    name = "vxlan"

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        return [*super().node_steps(lab, node), *self.vtep_steps(lab, node)]

    def vtep_steps(self, lab: Lab, node: Node) -> list[Step]:
        """The node's VXLAN device and subnet.env: what flanneld sets up on a node."""
        ns = names.node_netns(lab.name, node.name)
        dev = names.FLANNEL_DEVICE
        vtep_ip = IPv4Interface(f"{node.pod_cidr.network_address}/32")
        return [
            AddVxlan(ns, dev, names.VXLAN_VNI, names.VXLAN_PORT, node.ip, names.NODE_UPLINK,
                     names.vtep_mac(lab.name, node.name), lab.overlay_mtu),
            SetSysctl(ns, f"net/ipv6/conf/{dev}/accept_ra", "0"),  # as flannel does
            AddAddress(ns, dev, vtep_ip),
            LinkUp(ns, dev),
            *self.vtep6_steps(lab, node),
            WriteFile(ns, f"flannel/{node.name}/subnet.env", subnet_env(lab, node)),
        ]

    def vtep6_steps(self, lab: Lab, node: Node) -> list[Step]:
        """Dual-stack: flannel-v6.1, the IPv6 twin of flannel.1."""
        if node.pod_cidr6 is None or node.ip6 is None:
            return []
        ns = names.node_netns(lab.name, node.name)
        dev = names.FLANNEL_DEVICE6
        return [
            AddVxlan(ns, dev, names.VXLAN_VNI, names.VXLAN_PORT, node.ip6, names.NODE_UPLINK,
                     names.vtep_mac6(lab.name, node.name), lab.scenario.underlay_mtu - 70),
            SetSysctl(ns, f"net/ipv6/conf/{dev}/accept_ra", "0"),
            AddAddress(ns, dev, IPv6Interface(f"{node.pod_cidr6.network_address}/128")),
            LinkUp(ns, dev),
        ]

    def cluster_steps(self, lab: Lab) -> list[Step]:
        steps: list[Step] = []
        dev = names.FLANNEL_DEVICE
        for node in lab.nodes:
            ns = names.node_netns(lab.name, node.name)
            for other in lab.nodes:
                if other is node or other.pod_cidr.overlaps(node.pod_cidr):
                    continue
                vtep = other.pod_cidr.network_address
                mac = names.vtep_mac(lab.name, other.name)
                steps += [
                    AddNeighbour(ns, dev, vtep, mac),
                    AddFdb(ns, dev, mac, other.ip),
                    AddRoute(ns, other.pod_cidr, dev, via=vtep, onlink=True),
                ]
                if other.pod_cidr6 is not None and other.ip6 is not None and node.pod_cidr6 is not None:
                    vtep6, mac6 = other.pod_cidr6.network_address, names.vtep_mac6(lab.name, other.name)
                    steps += [
                        AddNeighbour(ns, names.FLANNEL_DEVICE6, vtep6, mac6),
                        AddFdb(ns, names.FLANNEL_DEVICE6, mac6, other.ip6),
                        AddRoute(ns, other.pod_cidr6, names.FLANNEL_DEVICE6, via=vtep6, onlink=True),
                    ]
        return steps
