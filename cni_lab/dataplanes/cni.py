"""`cni`: the real CNI reference plugins wire the pods, with the lab acting as the container
runtime (kubelet + containerd): for every pod it executes the plugins of the node's network
configuration list with CNI_COMMAND=ADD, as the CNI specification says, inside the node's
namespace so the bridge the plugin makes is the node's bridge.

The default list is what flannel delegates to: `bridge` (cni0, isGateway, isDefaultGateway,
ipMasq false) with `host-local` IPAM over the node's pod CIDR, its dataDir inside the lab's
state folder. A scenario may bring its own list (`cni.conflist`); these strings in it are replaced
per node: {{podCIDR}} {{gateway}} {{mtu}} {{node}} {{clusterCIDR}}, and in a dual-stack lab
{{podCIDRv6}} {{gatewayv6}} {{clusterCIDRv6}}. Dual-stack, host-local gets one range per family,
`ranges: [[{subnet: v4}], [{subnet: v6}]]`, as flannel's CNI plugin delegates it.

Nodes reach each other's pods through `cni.routing`: `host-gw` routes or a `vxlan` overlay.
With an `outside` host, the node masquerades as flannel does when it delegates (its --ip-masq
rules; the bridge's ipMasq stays false). A list that sets the bridge plugin's `ipMasq: true` is
honoured: the plugin adds its own iptables rules in the node's namespace, masquerading all that
leaves the pod's subnet, pods on other nodes included, which check then shows as NAT.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cni_lab import names
from cni_lab.dataplanes.bridge import Bridge
from cni_lab.dataplanes.capabilities import Capabilities
from cni_lab.dataplanes.hostgw import HostGw
from cni_lab.dataplanes.vxlan import Vxlan
from cni_lab.cluster import Lab, Node, Pod
from cni_lab.model import DEFAULT_CNI_PATH, Scenario, plugin_types
from cni_lab.steps import CniAdd, Step, WriteFile

CNI_VERSION = "1.0.0"  # the newest version Debian's plugins (1.1.1) speak
# cni.routing → the data plane whose way joins the nodes: host-gw's routes, vxlan's overlay, or none
ROUTING: dict[str, Bridge] = {"host-gw": HostGw(), "vxlan": Vxlan(), "none": Bridge()}


def default_conflist(lab: Lab) -> dict[str, Any]:
    ipam: dict[str, Any] = {"type": "host-local", "subnet": "{{podCIDR}}", "dataDir": "{{dataDir}}"}
    if lab.dual_stack:
        ipam = {"type": "host-local", "ranges": [[{"subnet": "{{podCIDR}}"}], [{"subnet": "{{podCIDRv6}}"}]],
                "dataDir": "{{dataDir}}"}
    return {
        "cniVersion": CNI_VERSION,
        "name": f"cnilab-{lab.name}",
        "plugins": [{
            "type": "bridge",
            "bridge": names.CNI_BRIDGE,
            "isGateway": True,
            "isDefaultGateway": True,  # isGateway alone gives pods only their subnet route
            "ipMasq": False,
            "mtu": "{{mtu}}",
            "ipam": ipam,
            **({"hairpinMode": True} if lab.scenario.services else {}),  # a pod reaching itself through its Service
        }],
    }


def render(lab: Lab, node: Node) -> dict[str, Any]:
    """The node's network configuration list with the node's values put in."""
    template = lab.scenario.cni.conflist or default_conflist(lab)
    values = {
        "podCIDR": str(node.pod_cidr),
        "gateway": str(node.gateway),
        "mtu": lab.pod_mtu,
        "node": node.name,
        "clusterCIDR": str(lab.scenario.cluster_cidr),
        # relative: the runtime resolves it inside the lab's state folder (each node its own,
        # as nodes share one filesystem here and host-local keeps its last address in it)
        "dataDir": f"{names.cni_dir(node.name)}/ipam",
    }
    if node.pod_cidr6 is not None:
        values |= {"podCIDRv6": str(node.pod_cidr6), "gatewayv6": str(node.gateway6),
                   "clusterCIDRv6": str(lab.scenario.cluster_cidr6)}

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, str):
            for key, replacement in values.items():
                token = "{{" + key + "}}"
                if value == token:
                    return replacement  # keeps numbers numbers
                value = value.replace(token, str(replacement))
        return value

    conflist = fill(template)
    conflist.setdefault("cniVersion", CNI_VERSION)
    conflist.setdefault("name", f"cnilab-{lab.name}")
    return conflist


def container_id(lab: Lab, node: Node, pod: Pod) -> str:
    return f"cnilab-{lab.name}-{node.name}-{pod.name}"


class Cni(Bridge):
    name = "cni"

    def capabilities(self, scenario: Scenario) -> Capabilities:
        """Pods on cni0 as in `bridge` (the bridge plugin sets hairpin itself: hairpinMode), the
        nodes joined as cni.routing says, and the lab is the runtime that runs the plugins."""
        joined = ROUTING[scenario.cni.routing].capabilities(scenario)
        return dataclasses.replace(joined, sets_hairpin=False, runs_cni_plugins=True)

    def needs(self, lab: Lab) -> tuple[tuple[str, str], ...]:
        found: tuple[tuple[str, str], ...] = ((f"{lab.scenario.cni.cni_path}/host-local", "containernetworking-plugins"),)
        conflist = lab.scenario.cni.conflist or {}
        if any(p.get("ipMasq") for p in conflist.get("plugins", []) if isinstance(p, dict)):
            found += (("/usr/sbin/iptables", "iptables"),)  # the bridge plugin's ipMasq runs it
        return found

    def runs_as_root(self, lab: Lab) -> tuple[str, ...]:
        """Every plugin the nodes' configuration lists run, and the configuration list's file: a
        scenario that names plugins is code run as root."""
        spec = lab.scenario.cni
        types = {t for node in lab.nodes for t in plugin_types(render(lab, node))}
        files = [os.path.join(spec.cni_path, t) for t in sorted(types)]
        if spec.conflist_file:
            files.append(spec.conflist_file)
        names_plugins = spec.conflist is not None or spec.cni_path != DEFAULT_CNI_PATH
        if names_plugins and os.path.isfile(lab.scenario.source):  # the scenario itself says what runs
            files.append(lab.scenario.source)
        return tuple(files)

    def validate(self, lab: Lab) -> None:
        ROUTING[lab.scenario.cni.routing].validate(lab)

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        ns = names.node_netns(lab.name, node.name)
        steps: list[Step] = [WriteFile(ns, f"{names.cni_dir(node.name)}/net.conflist", json.dumps(render(lab, node), indent=2))]
        joined = ROUTING[lab.scenario.cni.routing]
        if isinstance(joined, Vxlan):
            steps += joined.vtep_steps(lab, node)
        return steps

    def pod_steps(self, lab: Lab, node: Node, pod: Pod) -> list[Step]:
        return [CniAdd(
            netns=names.node_netns(lab.name, node.name),
            pod_netns=names.pod_netns(lab.name, node.name, pod.name),
            container_id=container_id(lab, node, pod),
            ifname=names.POD_IFNAME,
            conflist=f"{names.cni_dir(node.name)}/net.conflist",
            result=names.cni_result(node.name, pod.name),
            cni_path=lab.scenario.cni.cni_path,
            expect_ip=pod.ip,
            expect_ip6=pod.ip6,
        )]

    def cluster_steps(self, lab: Lab) -> list[Step]:
        return ROUTING[lab.scenario.cni.routing].cluster_steps(lab)

