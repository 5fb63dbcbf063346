"""The `nodes` section: each node's name, addresses and pod CIDRs, and its pods (by name, by
count, or with a namespace and labels)."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from cni_lab.model.container_ports import read_container_ports
from cni_lab.model.namespaces import read_labels
from cni_lab.model.networking import read_dual
from cni_lab.model.problems import Problems, read_name
from cni_lab.model.scenario import DEFAULT_NAMESPACE, NodeSpec, PodSpec

# Names become parts of namespace and interface names. A node's underlay port is called
# "<node>-eth0" inside the underlay namespace and must fit IFNAMSIZ (15 characters).
NODE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,9}\Z")
POD_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}\Z")
NODE_KEYS = ("name", "ip", "ips", "podCIDR", "podCIDRs", "pods", "segment", "count")
POD_KEYS = ("name", "namespace", "labels", "ports")
RESERVED_NODE_NAMES = ("underlay", "router", "outside")
MAX_NODES = 1000
MAX_BRIDGE_PORTS = 1023  # the kernel's BR_MAX_PORTS minus one: the 1024th port gives "Exchange full"


def read_nodes(problems: Problems, value: Any, namespaces: set[str]) -> tuple[NodeSpec, ...]:
    """`namespaces`: the lab's, which a pod may name."""
    if not isinstance(value, list) or not value:
        problems.add("nodes", "must be a non-empty list of nodes")
        return ()
    nodes = []
    seen: set[str] = set()
    for i, raw in enumerate(_expand_counts(problems, value)):
        key = f"nodes[{raw.pop('_index')}]" if isinstance(raw, dict) and "_index" in raw else f"nodes[{i}]"
        if not isinstance(raw, dict):
            problems.add(key, "must be a mapping with keys " + ", ".join(NODE_KEYS))
            continue
        problems.unknown_keys(raw, NODE_KEYS, f"{key}.")
        name = read_name(problems, raw.get("name"), f"{key}.name", NODE_NAME, "1-10 of [a-z0-9-], starting with a letter")
        if name in RESERVED_NODE_NAMES:
            problems.add(f"{key}.name", f"{name!r} is reserved for the lab's underlay")
        elif name is not None and name in seen:
            problems.add(f"{key}.name", f"duplicate node name {name!r}")
        if name:
            seen.add(name)
        ip, ip6 = _addresses(problems, raw, key)
        pod_cidr, pod_cidr6 = None, None
        if raw.get("podCIDR") is not None and raw.get("podCIDRs") is not None:
            problems.add(f"{key}.podCIDRs", "give podCIDR or podCIDRs, not both")
        elif raw.get("podCIDRs") is not None:
            if not isinstance(raw["podCIDRs"], list):
                problems.add(f"{key}.podCIDRs", "must be a list of one CIDR per family, as a Node's spec.podCIDRs")
            else:
                pod_cidr, pod_cidr6 = read_dual(problems, raw["podCIDRs"], f"{key}.podCIDRs")
        elif raw.get("podCIDR") is not None:
            pod_cidr, pod_cidr6 = read_dual(problems, raw["podCIDR"], f"{key}.podCIDR")
        pod_specs = _pods(problems, raw.get("pods", []), f"{key}.pods", namespaces)
        pods = tuple(p.key for p in pod_specs)
        if all(p.namespace == DEFAULT_NAMESPACE and not p.labels and not p.ports for p in pod_specs):
            pod_specs = ()  # plain names: nothing more to keep (and records stay as they were)
        segment = raw.get("segment")
        if segment is not None and not isinstance(segment, str):
            problems.add(f"{key}.segment", f"{segment!r} is not a segment name")
            segment = None
        nodes.append(NodeSpec(name=name or f"node{i + 1}", ip=ip, pod_cidr=pod_cidr, pods=pods, segment=segment,
                              ip6=ip6, pod_cidr6=pod_cidr6, pod_specs=pod_specs))
    return tuple(nodes)


def check_unique_pods(problems: Problems, nodes: tuple[NodeSpec, ...]) -> None:
    """A pod given with a namespace is unique in it across the lab, as Kubernetes' pod names are.
    (Plain names, `pods: 3` included, stay unique per node, as before namespaces.)"""
    seen: dict[tuple[str, str], str] = {}
    for i, node in enumerate(nodes):
        for spec in node.pod_specs:
            if spec.namespace == DEFAULT_NAMESPACE and not spec.labels:
                continue
            where = seen.get((spec.namespace, spec.name))
            if where is not None and where != node.name:
                problems.add(f"nodes[{i}].pods", f"pod {spec.namespace}/{spec.name} is already on {where}: "
                             "pod names are unique within a namespace")
            seen[(spec.namespace, spec.name)] = node.name


def _expand_counts(problems: Problems, value: list[Any]) -> list[Any]:
    """`{name: node, count: 50, pods: 20}` stands for node1 … node50, each with 20 pods."""
    out: list[Any] = []
    for i, raw in enumerate(value):
        if not isinstance(raw, dict) or "count" not in raw:
            out.append({**raw, "_index": i} if isinstance(raw, dict) else raw)
            continue
        count = raw["count"]
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_NODES:
            problems.add(f"nodes[{i}].count", f"{count!r} is not a node count between 1 and {MAX_NODES}")
            continue
        for field_name in ("ip", "ips", "podCIDR", "podCIDRs"):
            if raw.get(field_name) is not None:
                problems.add(f"nodes[{i}].{field_name}", "cannot be given for a counted group of nodes")
        base = {k: v for k, v in raw.items() if k not in ("count", "ip", "ips", "podCIDR", "podCIDRs")}
        name = raw.get("name", "node")
        out += [{**base, "name": f"{name}{n}" if isinstance(name, str) else name, "_index": i} for n in range(1, count + 1)]
    if len(out) > MAX_NODES:
        problems.add("nodes", f"{len(out)} nodes: a lab holds at most {MAX_NODES}")
        return out[:MAX_NODES]
    return out


def _addresses(problems: Problems, raw: dict[str, Any], key: str) -> tuple[IPv4Address | None, IPv6Address | None]:
    """A node's `ip`, or `ips`: one address per family, as a Node's status.addresses."""
    if raw.get("ip") is not None and raw.get("ips") is not None:
        problems.add(f"{key}.ips", "give ip or ips, not both")
        return None, None
    if raw.get("ip") is not None:
        try:
            address = ip_address(str(raw["ip"]))
        except ValueError:
            problems.add(f"{key}.ip", f"{raw['ip']!r} is not an IP address (a dual-stack node: ips: [v4, v6])")
            return None, None
        return (address, None) if isinstance(address, IPv4Address) else (None, address)
    items = raw.get("ips")
    if items is None:
        return None, None
    if not isinstance(items, list) or not 1 <= len(items) <= 2:
        problems.add(f"{key}.ips", "must be a list of one address per family, e.g. [192.168.1.2, fd00:192:168:1::2]")
        return None, None
    v4: IPv4Address | None = None
    v6: IPv6Address | None = None
    for j, item in enumerate(items):
        try:
            address = ip_address(str(item))
        except ValueError:
            problems.add(f"{key}.ips[{j}]", f"{item!r} is not an IPv4 or IPv6 address")
            continue
        if isinstance(address, IPv4Address):
            if v4 is not None:
                problems.add(f"{key}.ips[{j}]", f"{address}: a second IPv4 address; give one per family")
            v4 = v4 or address
        else:
            if v6 is not None:
                problems.add(f"{key}.ips[{j}]", f"{address}: a second IPv6 address; give one per family")
            v6 = v6 or address
    return v4, v6


def _pods(problems: Problems, value: Any, key: str, namespaces: set[str]) -> tuple[PodSpec, ...]:
    if isinstance(value, bool):
        problems.add(key, "must be a list of pod names or a count")
        return ()
    if isinstance(value, int):
        if not 0 <= value <= MAX_BRIDGE_PORTS:
            problems.add(key, f"{value} pods: a node holds 0 to {MAX_BRIDGE_PORTS} pods (a bridge's port limit)")
            return ()
        return tuple(PodSpec(f"pod-{i}") for i in range(1, value + 1))
    if not isinstance(value, list):
        problems.add(key, "must be a list of pod names or a count")
        return ()
    specs: list[PodSpec] = []
    for j, raw in enumerate(value):
        pod = _pod(problems, raw, f"{key}[{j}]", namespaces)
        if pod is None:
            continue
        if any(p.key == pod.key for p in specs):
            shown = pod.name if pod.namespace == DEFAULT_NAMESPACE else f"{pod.namespace}/{pod.name}"
            problems.add(f"{key}[{j}]", f"duplicate pod name {shown!r}")
        else:
            specs.append(pod)
    if len(value) > MAX_BRIDGE_PORTS:
        problems.add(key, f"{len(value)} pods: a node holds at most {MAX_BRIDGE_PORTS} pods")
    return tuple(specs)


def _pod(problems: Problems, value: Any, key: str, namespaces: set[str]) -> PodSpec | None:
    """A pod: its name, or {name, namespace, labels, ports}."""
    if isinstance(value, str):
        if not POD_NAME.match(value):
            problems.add(key, f"{value!r} is not a valid pod name: use 1-32 of [a-z0-9-]")
            return None
        return PodSpec(value)
    if not isinstance(value, dict):
        problems.add(key, f"{value!r} is not a pod name or a mapping with keys {', '.join(POD_KEYS)}")
        return None
    problems.unknown_keys(value, POD_KEYS, f"{key}.")
    name, namespace = value.get("name"), value.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(name, str) or not POD_NAME.match(name):
        problems.add(f"{key}.name", f"{name!r} is not a valid pod name: use 1-32 of [a-z0-9-]")
        return None
    if not isinstance(namespace, str) or namespace not in namespaces:  # a list or mapping: no name
        problems.add(f"{key}.namespace", f"{namespace!r} is not a namespace of the lab (namespaces: "
                     f"{', '.join(sorted(namespaces))})")
        return None
    return PodSpec(name, namespace, read_labels(problems, value.get("labels"), f"{key}.labels"),
                   read_container_ports(problems, value.get("ports"), f"{key}.ports"))
