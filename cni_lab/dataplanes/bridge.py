"""`bridge`: pods on a per-node Linux bridge, exactly what the CNI `bridge` plugin with
`host-local` IPAM and `isGateway`/`isDefaultGateway` does:

    cni0 (10.244.X.1/24) in the node, pod eth0 10.244.X.N/24 with `default via 10.244.X.1`,
    the host end `vethXXXXXXXX` a port of cni0.

No routes between nodes: pods reach pods on their own node only. That is the lesson's
"it does not work yet" state; `host-gw` adds the routes.
"""

from __future__ import annotations

from ipaddress import IPv6Interface, ip_interface

from cni_lab import names
from cni_lab.cluster import Lab, Node, Pod
from cni_lab.dataplanes.capabilities import Capabilities
from cni_lab.model import Scenario
from cni_lab.steps import DEFAULT_ROUTE6, AddAddress, AddBridge, AddRoute, AddVeth, LinkUp, Step, default_route

# flannel's way, which every data plane wiring pods to cni0 shares but for what it changes
CAPABILITIES = Capabilities(
    ipam="host-local",
    ipv6=None,
    pods_meet="cni0",
    pod_gateway="cni0",
    sets_hairpin=True,
    tunnel=None,
    needs_router=False,
    fabric_routes_pods=False,
    daemons=(),
    loads_bpf=False,
    bypasses_forward_hook=False,
    runs_cni_plugins=False,
    policy="node-nftables",
    services="kube-proxy-nftables",
    masquerade="flannel",
)


class Bridge:
    name = "bridge"

    def capabilities(self, scenario: Scenario) -> Capabilities:
        return CAPABILITIES

    def needs(self, lab: Lab) -> tuple[tuple[str, str], ...]:
        """Programs (and their Debian package) the data plane runs."""
        return ()

    def runs_as_root(self, lab: Lab) -> tuple[str, ...]:
        return ()

    def validate(self, lab: Lab) -> None:
        pass

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        ns = names.node_netns(lab.name, node.name)
        gateway = ip_interface(f"{node.gateway}/{node.pod_cidr.prefixlen}")
        steps: list[Step] = [AddBridge(ns, names.CNI_BRIDGE, lab.pod_mtu), AddAddress(ns, names.CNI_BRIDGE, gateway)]
        if node.pod_cidr6 is not None:  # dual-stack: the bridge is the gateway of both families
            steps.append(AddAddress(ns, names.CNI_BRIDGE, IPv6Interface(f"{node.gateway6}/{node.pod_cidr6.prefixlen}")))
        return [*steps, LinkUp(ns, names.CNI_BRIDGE)]

    def pod_steps(self, lab: Lab, node: Node, pod: Pod) -> list[Step]:
        node_ns = names.node_netns(lab.name, node.name)
        pod_ns = names.pod_netns(lab.name, node.name, pod.name)
        host_veth = names.pod_host_veth(lab.name, node.name, pod.name)
        steps: list[Step] = [
            AddVeth(node_ns, host_veth, pod_ns, names.POD_IFNAME, lab.pod_mtu, master=names.CNI_BRIDGE, up=True),
            AddAddress(pod_ns, names.POD_IFNAME, pod.interface),
        ]
        if pod.interface6 is not None:
            steps.append(AddAddress(pod_ns, names.POD_IFNAME, pod.interface6))
        steps += [LinkUp(pod_ns, names.POD_IFNAME), AddRoute(pod_ns, default_route(node.gateway.version), names.POD_IFNAME,
                                                                        via=node.gateway)]
        if pod.ip6 is not None:
            steps.append(AddRoute(pod_ns, DEFAULT_ROUTE6, names.POD_IFNAME, via=node.gateway6))
        return steps

    def cluster_steps(self, lab: Lab) -> list[Step]:
        return []
