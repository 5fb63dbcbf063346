"""What a user names on the command line (`node1`, `node1/web`, `web`, `router`) → the namespace it is."""

from __future__ import annotations

from cni_lab import names
from cni_lab.errors import LabError
from cni_lab.cluster import Lab


def target_netns(lab: Lab, target: str) -> str:
    """`node1`, `node1/web`, `node1/x/a` (pod a of namespace x), `x/a` (when x is no node), or a
    bare pod name when unique → the network namespace to run in."""
    node_name, _, pod_name = target.partition("/")
    if not pod_name:
        if any(n.name == target for n in lab.nodes):
            return names.node_netns(lab.name, target)
        if target == "underlay":
            return names.underlay_netns(lab.name)
        if target == "router" and lab.has_router:
            return names.router_netns(lab.name)
        matches = [p for p in lab.pods if p.name == target]
        if len(matches) == 1:
            return names.pod_netns(lab.name, matches[0].node, matches[0].name)
        raise LabError(f"lab {lab.name} has no node or unique pod {target!r}: use NODE or NODE/POD")
    if not any(n.name == node_name for n in lab.nodes):
        # NAMESPACE/POD, as kubectl names pods, where the first part is no node's name
        matches = [p for p in lab.pods if p.qualified == target]
        if len(matches) == 1:
            return names.pod_netns(lab.name, matches[0].node, matches[0].name)
    node = lab.node(node_name)
    key = pod_name.replace("/", ".")  # node1/x/a: pod a of namespace x on node1
    if not any(p.name == key for p in node.pods):
        raise LabError(f"node {node_name} of lab {lab.name} has no pod {pod_name!r}")
    return names.pod_netns(lab.name, node_name, key)
