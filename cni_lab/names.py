"""How lab objects are named. Every namespace the lab makes starts with `cnilab-<lab>`, so
`down` and the leak sweep find exactly the lab's objects and nothing else on the machine.

Lab, node and pod names use only [a-z0-9-]; the dots below cannot appear in them, so two labs
(or a node and a pod) can never produce the same namespace name.
"""

from __future__ import annotations

import hashlib

PREFIX = "cnilab-"
UNDERLAY_BRIDGE = "br-underlay"  # the LAN switch, alone in the underlay namespace
NODE_UPLINK = "eth0"  # a node's underlay interface, as on a real machine
POD_IFNAME = "eth0"  # CNI_IFNAME the kubelet passes
CNI_BRIDGE = "cni0"  # the bridge plugin's default name, as flannel configures it


def lab_netns_prefix(lab: str) -> str:
    return f"{PREFIX}{lab}."


def underlay_netns(lab: str) -> str:
    return f"{PREFIX}{lab}.underlay"


def node_netns(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}.{node}"


def pod_netns(lab: str, node: str, pod: str) -> str:
    return f"{PREFIX}{lab}.{node}.{pod}"


def lab_of_netns(netns: str) -> str | None:
    """The lab a namespace belongs to, or None when it is not a cni-lab namespace."""
    if not netns.startswith(PREFIX) or "." not in netns:
        return None
    return netns[len(PREFIX) :].split(".", 1)[0] or None


def underlay_port(node: str) -> str:
    """The underlay bridge's port for a node: `node1-eth0` reads as "the other end of node1's eth0"."""
    return f"{node}-eth0"


def pod_host_veth(lab: str, node: str, pod: str) -> str:
    """Host side of a pod's veth: `veth` + 8 hex characters, like the CNI bridge plugin's
    random names, but derived from the pod's identity so a plan is reproducible."""
    digest = hashlib.sha256(f"{lab}/{node}/{pod}".encode()).hexdigest()
    return f"veth{digest[:8]}"
