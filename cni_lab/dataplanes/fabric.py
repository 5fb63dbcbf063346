"""`fabric`: the network itself routes pod CIDRs, as an SDN fabric (Cisco ACI, Big Cloud Fabric,
VMware NSX) or a cloud route table (GCE routes, AWS VPC route tables) does. Pods are wired as in
`bridge`; nodes send everything that is not local to their segment's router (their default
gateway), and the router holds one route per node's pod CIDR, programmed by the "controller":

    router: 10.244.Y.0/24 via <node Y IP> dev <node Y's segment>
            (dual-stack: fd00:10:244:Y::/64 via <node Y's IPv6 address> too)

No encapsulation and no per-node routes: it works across segments because the router knows.
"""

from __future__ import annotations

import dataclasses

from cni_lab import names
from cni_lab.dataplanes import bridge
from cni_lab.dataplanes.bridge import Bridge
from cni_lab.dataplanes.capabilities import Capabilities
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.model import Scenario
from cni_lab.steps import AddRoute, Step

# the router is the fabric; routing pod CIDRs, it lets the outside reach pods too
CAPABILITIES = dataclasses.replace(bridge.CAPABILITIES, needs_router=True, fabric_routes_pods=True)


class Fabric(Bridge):
    name = "fabric"

    def capabilities(self, scenario: Scenario) -> Capabilities:
        return CAPABILITIES

    def validate(self, lab: Lab) -> None:
        seen: dict[str, str] = {}
        for node in lab.nodes:
            for other, cidr in seen.items():
                if node.pod_cidr.overlaps(lab.node(other).pod_cidr):
                    raise LabError(f"{lab.scenario.source}: dataplane: fabric routes each pod CIDR to one node, "
                                   f"but {node.name} and {other} share {cidr}")
            seen[node.name] = str(node.pod_cidr)

    def cluster_steps(self, lab: Lab) -> list[Step]:
        router = names.router_netns(lab.name)
        steps: list[Step] = [AddRoute(router, node.pod_cidr, node.segment.name, via=node.ip) for node in lab.nodes]
        steps += [AddRoute(router, node.pod_cidr6, node.segment.name, via=node.ip6) for node in lab.nodes
                  if node.pod_cidr6 is not None and node.ip6 is not None]
        return steps
