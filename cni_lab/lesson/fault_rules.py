"""Which pairs a recorded fault lies on the way of, by a rule per kind: what `check`'s causes ask
where a trace cannot see the fault, and what `observe` asks of every drop and ICMP error it reads.
Pure: the fault's kind, target and namespace against the pair's ends."""

from __future__ import annotations

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.faults import Fault
from cni_lab.probe.pairs import Endpoint


def fault_words(f: Fault) -> str:
    """The fault as a cause names it: `fault link-down at node2: node2's eth0 is down`."""
    return f"fault {f.describe()}"


def pod_netns(lab: Lab, target: str) -> str:
    """A fault's NODE/POD as the pod's namespace (what an endpoint carries)."""
    node, _, pod = target.partition("/")
    return names.pod_netns(lab.name, node, pod)


def _nodes(*ends: Endpoint) -> set[str]:
    return {e.node for e in ends if e.kind != "outside"}


def touches_pair(lab: Lab, f: Fault, src: Endpoint, dst: Endpoint) -> bool:
    """The rule per kind: whether the fault lies on the pair's way, either direction (a probe
    needs its reply). Asked of failing pairs only, so a rule may be generous."""
    nodes = _nodes(src, dst)
    if f.kind == "link-down":
        return f.target in nodes
    if f.kind == "route-del":
        holder, other = f.target.split(">")
        if holder == "router":  # the fabric's router: every way into the other node's pods from off it
            return other in nodes and any(e.node != other for e in (src, dst))
        return nodes == {holder, other}
    if f.kind in ("pod-down", "bpf-detach"):
        return pod_netns(lab, f.target) in (src.netns, dst.netns)
    if f.kind == "forward-drop":  # the node forwards for its pods, but not its own packets to them
        pod_here = any(e.kind == "pod" and e.node == f.target for e in (src, dst))
        return pod_here and not any(e.kind == "node" and e.node == f.target for e in (src, dst))
    return False  # bpf-backend-del: Service probes only
