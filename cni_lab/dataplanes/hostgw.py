"""`host-gw`: flannel's host-gw backend. Pods are wired as in `bridge`; in addition every node
gets one route per other node, with that node's underlay IP as the next hop:

    10.244.Y.0/24 via 192.168.1.Y dev eth0

This works only while all nodes share one L2 segment: the next hop must be on-link. Across a
router the kernel refuses such a route ("Nexthop has invalid gateway"), and so does flannel; the
lab says so before building anything (use `vxlan` or `fabric` there).
"""

from __future__ import annotations

from cni_lab import names
from cni_lab.dataplanes.bridge import Bridge
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.steps import AddRoute, Step


def require_one_segment(lab: Lab, what: str, instead: str) -> None:
    """Routes with other nodes as next hops need them on-link: refuse a lab across a router."""
    for node in lab.nodes:
        for other in lab.nodes:
            if other is not node and other.ip not in node.segment.cidr:
                raise LabError(
                    f"{lab.scenario.source}: {what} needs every node on one L2 segment, but "
                    f"{node.name} ({node.segment.name} {node.segment.cidr}) cannot use {other.name}'s "
                    f"{other.ip} as a next hop (not on-link); {instead} across segments"
                )


class HostGw(Bridge):
    name = "host-gw"

    def validate(self, lab: Lab) -> None:
        require_one_segment(lab, "dataplane: host-gw", "use dataplane vxlan or fabric")

    def cluster_steps(self, lab: Lab) -> list[Step]:
        steps: list[Step] = []
        for node in lab.nodes:
            ns = names.node_netns(lab.name, node.name)
            for other in lab.nodes:
                # With overlapping pod CIDRs (the collision lesson) the route would shadow the
                # node's own cni0 subnet; the kernel refuses it anyway, so it is left out.
                if other is not node and not other.pod_cidr.overlaps(node.pod_cidr):
                    steps.append(AddRoute(ns, other.pod_cidr, names.NODE_UPLINK, via=other.ip))
                if other is not node and other.pod_cidr6 is not None and node.pod_cidr6 is not None \
                        and not other.pod_cidr6.overlaps(node.pod_cidr6):
                    steps.append(AddRoute(ns, other.pod_cidr6, names.NODE_UPLINK, via=other.ip6))
        return steps
