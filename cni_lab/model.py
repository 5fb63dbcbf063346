"""Scenario files → a validated, typed description of the lab.

Pure: no kernel, no subprocess, no terminal. Every problem found is collected and reported at
once, each naming the file and the key (rule 6 of the house style).
"""

from __future__ import annotations

import difflib
import json
import re
import dataclasses
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cni_lab.errors import LabError

Net = TypeVar("Net", IPv4Network, IPv6Network)

DATAPLANES = ("bridge", "host-gw", "vxlan", "fabric", "bgp", "cni", "ebpf")
VERDICTS = ("ok", "nat", "wrong-peer", "timeout", "unreachable")
RULES = ("pod-pod-same-node", "pod-pod-cross-node", "node-pod", "pod-node", "node-node",
         "pod-outside", "node-outside", "outside-node", "outside-pod")

# Names become parts of namespace and interface names. A node's underlay port is called
# "<node>-eth0" inside the underlay namespace and must fit IFNAMSIZ (15 characters).
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
NODE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,9}$")
SEGMENT_NAME = NODE_NAME  # a segment's bridge is "br-<segment>", its router port "r-<segment>"
POD_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
NAMESPACE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")  # a DNS label, shortened to fit netns names
DEFAULT_NAMESPACE = "default"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # every namespace has it, set by Kubernetes
# a label key: an optional DNS subdomain prefix and a name of 1-63 [A-Za-z0-9-_.], alphanumeric at both ends
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
POD_KEYS = ("name", "namespace", "labels")
Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs: hashable, frozen
RESERVED_NODE_NAMES = ("underlay", "router", "outside")
OUTSIDE_NETWORK = IPv4Network("198.51.100.0/24")  # TEST-NET-2 (RFC 5737): documentation's "internet"
DEFAULT_OUTSIDE_IP = IPv4Address("198.51.100.10")
MAX_BRIDGE_PORTS = 1023  # the kernel's BR_MAX_PORTS minus one: the 1024th port gives "Exchange full"

DEFAULT_CLUSTER_CIDR = IPv4Network("10.244.0.0/16")
DEFAULT_NODE_MASK = 24
DEFAULT_UNDERLAY = IPv4Network("192.168.1.0/24")
DEFAULT_UNDERLAY6 = IPv6Network("fd00:192:168:1::/64")  # an IPv6-only lab's, unless it says
DEFAULT_SEGMENT = "underlay"  # the name of the one segment of a plain `underlay: CIDR`
DEFAULT_MTU = 1500

TOP_KEYS = ("name", "description", "dataplane", "networking", "nodes", "allowOverlap", "expect", "cni", "ebpf",
            "namespaces", "probe", "policies", "outside", "services")
SERVICE_KEYS = ("name", "namespace", "selector", "pods", "ports", "type", "externalTrafficPolicy")
SERVICE_PORT_KEYS = ("port", "targetPort", "protocol", "name", "nodePort")
SERVICE_TYPES = ("ClusterIP", "NodePort")
NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver's --service-node-port-range default
DEFAULT_SERVICE_CIDR = IPv4Network("10.96.0.0/12")  # kube-apiserver's --service-cluster-ip-range default
PROBE_KEYS = ("ports",)
PROBE_PORT = re.compile(r"^(tcp|udp)/([0-9]{1,5})$")
EBPF_KEYS = ("routing",)
EBPF_ROUTING = ("tunnel", "native")  # Cilium's routingMode; tunnel is its default
CNI_KEYS = ("routing", "cniPath", "conflist")
CNI_ROUTING = ("host-gw", "vxlan", "none")
DEFAULT_CNI_PATH = "/usr/lib/cni"  # Debian's containernetworking-plugins
NETWORKING_KEYS = ("clusterCIDR", "nodeCIDRMaskSize", "nodeCIDRMaskSizeIPv6", "underlay", "underlayMTU", "podMTU",
                   "blockSize", "asNumber", "masquerade", "serviceCIDR")
DEFAULT_NODE_MASK6 = 64  # kube-controller-manager's --node-cidr-mask-size-ipv6
DEFAULT_BLOCK_SIZE6 = 122  # Calico's IPv6 IPAM block
MAX_NODE_MASK_DIFF = 16  # kube-controller-manager: node CIDR mask - cluster CIDR mask <= 16
DEFAULT_BLOCK_SIZE = 26  # Calico's IPAM block: a /26 per node
DEFAULT_AS = 64512  # Calico's default AS number
NODE_KEYS = ("name", "ip", "ips", "podCIDR", "podCIDRs", "pods", "segment", "count")
MAX_NODES = 1000
EXPECT_KEYS = ("from", "to", "rule", "verdict")


@dataclass(frozen=True)
class Expectation:
    """Pairs matching `src`/`dst` (globs over endpoint names such as `node1` or `node1/web`)
    and `rule` must end with one of `verdicts`. `fail` stands for any verdict but `ok`."""

    src: str = "*"
    dst: str = "*"
    rule: str | None = None
    verdicts: frozenset[str] = frozenset({"ok"})


@dataclass(frozen=True)
class Segment:
    """One L2 segment of the underlay (a rack, a subnet); more than one are joined by a router."""

    name: str
    cidr: IPv4Network | IPv6Network  # the lab's first family (IPv6 in an IPv6-only lab)
    cidr6: IPv6Network | None = None  # dual-stack: the segment's IPv6 network


@dataclass(frozen=True)
class CniSpec:
    """`dataplane: cni`: the reference plugins wire pods; `routing` joins the nodes."""

    routing: str = "host-gw"
    cni_path: str = DEFAULT_CNI_PATH
    conflist: dict[str, Any] | None = None  # a network configuration list; None: bridge + host-local
    conflist_file: str | None = None  # where it was read from, when the scenario named a file


def plugin_types(conflist: dict[str, Any]) -> list[str]:
    """The plugins a network configuration list runs: each plugin's type and its IPAM plugin's."""
    types = []
    for plugin in conflist.get("plugins", []):
        types.append(str(plugin.get("type", "")))
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str):
            types.append(ipam["type"])
    return types


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int
    protocol: str = "TCP"
    node_port: int | None = None  # NodePort Services: every port has one (given, or allocated by load)


@dataclass(frozen=True)
class ServiceSpec:
    """A Service: the pods its selector picks in its namespace (or the pods it names) are its
    endpoints. A NodePort Service is a ClusterIP Service that is also reachable on every node's
    address at each port's nodePort."""

    name: str
    namespace: str
    selector: Labels
    ports: tuple[ServicePort, ...]
    type: str = "ClusterIP"
    external_traffic_policy: str = "Cluster"  # NodePort only: Local keeps the client's address
    pods: tuple[str, ...] = ()  # pod references (`node1/web`) instead of a selector

    @property
    def node_port(self) -> bool:
        return self.type == "NodePort"


@dataclass(frozen=True)
class PolicySource:
    """A NetworkPolicy object as the scenario gives it (inline, or one document of a file),
    checked by policy.py as the API server would."""

    where: str  # the scenario, or the file, and the document's index
    document: dict[str, Any]


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    labels: Labels  # kubernetes.io/metadata.name=<name> included


@dataclass(frozen=True)
class PodSpec:
    """A pod as the scenario gives it: `web`, or `{name: a, namespace: x, labels: {pod: a}}`."""

    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: Labels = ()

    @property
    def key(self) -> str:
        """Unique on its node, and what its namespace and host veth are named after: the name, or
        for a pod of another namespace `<namespace>.<name>` (no name holds a dot)."""
        return self.name if self.namespace == DEFAULT_NAMESPACE else f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: IPv4Address | None
    pod_cidr: IPv4Network | None
    pods: tuple[str, ...]  # the pods' keys (PodSpec.key), in order
    segment: str | None = None
    ip6: IPv6Address | None = None  # dual-stack: `ips: [v4, v6]`
    pod_cidr6: IPv6Network | None = None  # dual-stack: `podCIDRs: [v4, v6]`
    pod_specs: tuple[PodSpec, ...] = ()  # namespaces and labels of `pods`, same order (empty: all default)

    def spec_of(self, key: str) -> PodSpec:
        return next((p for p in self.pod_specs if p.key == key), PodSpec(key))


@dataclass(frozen=True)
class Scenario:
    """What the file says, checked for shape and types; addresses not yet allocated."""

    name: str
    dataplane: str
    cluster_cidr: IPv4Network | IPv6Network  # the first family's (IPv6 in an IPv6-only lab)
    node_cidr_mask_size: int
    segments: tuple[Segment, ...]
    nodes: tuple[NodeSpec, ...]
    underlay_mtu: int = DEFAULT_MTU
    pod_mtu: int | None = None  # None: what the data plane needs; set it to mis-set it on purpose
    block_size: int = DEFAULT_BLOCK_SIZE  # bgp: the prefix length of a node's IPAM block
    as_number: int = DEFAULT_AS  # bgp: the iBGP mesh's AS
    cni: CniSpec = field(default_factory=CniSpec)
    ebpf_routing: str = "tunnel"  # ebpf: Cilium's routingMode (tunnel: VXLAN; native: autoDirectNodeRoutes)
    cluster_cidr6: IPv6Network | None = None  # dual-stack: the cluster's IPv6 CIDR (the second family)
    namespaces: tuple[NamespaceSpec, ...] = ()  # every namespace of the lab with its labels (default first)
    probe_ports: tuple[str, ...] = ()  # `probe.ports`: tcp/80, udp/81 ... what check probes besides ICMP
    policies: tuple[PolicySource, ...] = ()
    outside_ip: IPv4Address | None = None  # `outside:`: a host behind the router, standing for the internet
    services: tuple[ServiceSpec, ...] = ()
    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR
    masquerade: bool = False  # traffic leaving the cluster is masqueraded (default: when there is an outside)
    node_cidr_mask_size6: int = DEFAULT_NODE_MASK6
    allow_overlap: bool = False
    expect: tuple[Expectation, ...] = ()
    description: str = ""
    source: str = "<scenario>"
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def load_file(path: str | Path, name_override: str | None = None) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabError(f"{path}: cannot read scenario: {getattr(e, 'strerror', None) or e}") from None
    return load_text(text, str(path), name_override)


def load_text(text: str, source: str, name_override: str | None = None) -> Scenario:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise LabError(f"{source}: not valid YAML{where}: {problem}") from None
    return load_document(document, source, name_override)


def load_document(document: Any, source: str, name_override: str | None = None) -> Scenario:
    """Check a parsed document and return the Scenario, or raise LabError listing every problem."""
    c = _Checker(source)
    if not isinstance(document, dict):
        raise LabError(f"{source}: a scenario is a mapping with keys {', '.join(TOP_KEYS)}")
    if name_override is not None:
        document = {**document, "name": name_override}
    c.unknown_keys(document, TOP_KEYS, "")

    name = c.name(document.get("name"), "name", LAB_NAME, "1-12 of [a-z0-9-], starting with a letter")
    dataplane = document.get("dataplane", "host-gw")
    if dataplane not in DATAPLANES:
        c.problem("dataplane", f"{dataplane!r} is not one of {', '.join(DATAPLANES)}{_hint(dataplane, DATAPLANES)}")

    networking = document.get("networking") or {}
    if not isinstance(networking, dict):
        c.problem("networking", "must be a mapping")
        networking = {}
    c.unknown_keys(networking, NETWORKING_KEYS, "networking.")
    cluster4, cluster6 = c.cluster(networking.get("clusterCIDR", DEFAULT_CLUSTER_CIDR))
    # an IPv6-only lab: IPv6 is its one family, in the fields of the first
    cluster: IPv4Network | IPv6Network | None = cluster4 if cluster4 is not None else cluster6
    if cluster4 is None:
        cluster6 = None
    segments = c.segments(networking.get("underlay", str(DEFAULT_UNDERLAY if cluster4 is not None or cluster is None
                                                          else DEFAULT_UNDERLAY6)))
    c.families(cluster, cluster6, segments)
    underlay_mtu = c.mtu(networking.get("underlayMTU", DEFAULT_MTU), "networking.underlayMTU")
    pod_mtu = c.mtu(networking["podMTU"], "networking.podMTU") if networking.get("podMTU") is not None else None
    as_number = c.integer(networking, "asNumber", DEFAULT_AS, 1, 4294967295, "an AS number")
    block_size = c.prefix(networking, "blockSize", DEFAULT_BLOCK_SIZE, 16, cluster4, "a block prefix length")
    mask = c.prefix(networking, "nodeCIDRMaskSize", DEFAULT_NODE_MASK, 8, cluster4, "a prefix length")
    mask6 = c.prefix6(networking, cluster6 if cluster4 is not None else cluster if isinstance(cluster, IPv6Network) else None)

    namespaces = c.namespaces(document.get("namespaces"))
    c.known_namespaces = {n.name for n in namespaces}
    nodes = c.nodes(document.get("nodes"))
    c.unique_pods(nodes)
    probe_ports = c.probe(document.get("probe"))
    outside_ip = c.outside(document.get("outside"), "outside" in document)
    services = c.services(document.get("services"))
    service_cidr = c.network(networking.get("serviceCIDR", str(DEFAULT_SERVICE_CIDR)), "networking.serviceCIDR") \
        or DEFAULT_SERVICE_CIDR
    masquerade = networking.get("masquerade", outside_ip is not None)
    if not isinstance(masquerade, bool):
        c.problem("networking.masquerade", f"{masquerade!r} is not true or false")
        masquerade = False
    policies = c.policies(document.get("policies"), source)
    allow_overlap = document.get("allowOverlap", False)
    if not isinstance(allow_overlap, bool):
        c.problem("allowOverlap", f"{allow_overlap!r} is not true or false")
        allow_overlap = False
    description = document.get("description", "")
    if not isinstance(description, str):
        c.problem("description", "must be text")
        description = ""
    expect = c.expectations(document.get("expect", "full"))
    cni, document = c.cni(document, source)
    ebpf_routing = c.ebpf(document.get("ebpf"))
    c.raise_if_any()
    assert name is not None and cluster is not None
    return Scenario(
        name=name,
        dataplane=dataplane,
        cluster_cidr=cluster,
        node_cidr_mask_size=mask,
        segments=segments,
        nodes=nodes,
        underlay_mtu=underlay_mtu,
        pod_mtu=pod_mtu,
        block_size=block_size,
        as_number=as_number,
        cni=cni,
        ebpf_routing=ebpf_routing,
        cluster_cidr6=cluster6,
        namespaces=namespaces,
        probe_ports=probe_ports,
        outside_ip=outside_ip,
        services=services,
        service_cidr=service_cidr,
        masquerade=masquerade,
        policies=policies,
        node_cidr_mask_size6=mask6,
        allow_overlap=allow_overlap,
        expect=expect,
        description=description,
        source=source,
        document=document,
    )


def _hint(value: object, choices: tuple[str, ...]) -> str:
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


class _Checker:
    """Collects problems as values while walking the document."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.known_namespaces: set[str] = {DEFAULT_NAMESPACE}

    def problem(self, key: str, message: str) -> None:
        # one line per problem, whatever the document holds: control characters are shown escaped
        line = f"{self.source}: {key}: {message}"
        self.problems.append("".join(c if c.isprintable() else repr(c)[1:-1] for c in line))

    def raise_if_any(self) -> None:
        if self.problems:
            raise LabError(*self.problems)

    def unknown_keys(self, mapping: dict[Any, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.problem(f"{prefix}{key}", f"unknown key{_hint(key, allowed)}; known keys: {', '.join(allowed)}")

    def name(self, value: Any, key: str, pattern: re.Pattern[str], rule: str) -> str | None:
        if not isinstance(value, str) or not pattern.match(value):
            shown = "missing" if value is None else f"{value!r} is not a valid name"
            self.problem(key, f"{shown}: use {rule}")
            return None
        return value

    def cluster(self, value: Any) -> tuple[IPv4Network | None, IPv6Network | None]:
        """`clusterCIDR`: one CIDR, or a list of one per family as kubeadm takes them."""
        key = "networking.clusterCIDR"
        v4, v6 = self.dual(value, key)
        if isinstance(value, list) and len(value) == 2 and v4 is not None and v6 is not None \
                and str(value[0]).find(":") >= 0:
            self.problem(key, "list the IPv4 CIDR first: cni-lab's dual-stack labs are IPv4-first")
        return v4, v6

    def dual(self, value: Any, key: str) -> tuple[IPv4Network | None, IPv6Network | None]:
        """A CIDR, or a list of one or two CIDRs of different families."""
        if not isinstance(value, list):
            if isinstance(value, str) and ":" in value:
                return None, self.network(value, key, IPv6Network)
            return self.network(value, key), None
        if not 1 <= len(value) <= 2:
            self.problem(key, "must be one CIDR, or a list of two: one IPv4, one IPv6")
            return None, None
        v4: IPv4Network | None = None
        v6: IPv6Network | None = None
        for j, item in enumerate(value):
            where = f"{key}[{j}]"
            try:
                net = ip_network(str(item), strict=True)
            except ValueError as e:
                self.problem(where, f"{item!r} is not an IPv4 or IPv6 CIDR with host bits zero ({e})")
                continue
            if isinstance(net, IPv4Network):
                if v4 is not None:
                    self.problem(where, f"{net}: a second IPv4 CIDR; give one CIDR per family")
                v4 = v4 or net
            else:
                if v6 is not None:
                    self.problem(where, f"{net}: a second IPv6 CIDR; give one CIDR per family")
                v6 = v6 or net
        return v4, v6

    def families(self, cluster: IPv4Network | IPv6Network | None, cluster6: IPv6Network | None,
                 segments: tuple[Segment, ...]) -> None:
        """Nodes have the families the cluster has: IPv4, IPv6, or both (then IPv6 second)."""
        if cluster is not None and any(s.cidr.version != cluster.version for s in segments):
            self.problem("networking.underlay", f"an IPv{cluster.version} cluster needs an IPv{cluster.version} "
                         "underlay (the first CIDR of each segment)")
            return
        if cluster6 is not None and any(s.cidr6 is None for s in segments):
            self.problem("networking.underlay", "a dual-stack cluster needs an IPv6 underlay too, e.g. "
                         "[192.168.1.0/24, fd00:192:168:1::/64] (or per segment)")
        if cluster6 is None and any(s.cidr6 is not None and s.cidr.version == 4 for s in segments):
            self.problem("networking.underlay", "an IPv6 underlay needs an IPv6 cluster CIDR too "
                         "(networking.clusterCIDR: [10.244.0.0/16, fd00:10:244::/56])")

    def prefix6(self, mapping: dict[str, Any], cluster6: IPv6Network | None) -> int:
        key = "nodeCIDRMaskSizeIPv6"
        value = mapping.get(key, DEFAULT_NODE_MASK6)
        if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 126:
            self.problem(f"networking.{key}", f"{value!r} is not a prefix length between 8 and 126")
            return DEFAULT_NODE_MASK6
        if cluster6 is not None:
            if value < cluster6.prefixlen:
                self.problem(f"networking.{key}", f"/{value} is larger than the cluster CIDR {cluster6}")
            elif value - cluster6.prefixlen > MAX_NODE_MASK_DIFF:
                self.problem(f"networking.{key}", f"/{value} cuts {cluster6} into more than 2^{MAX_NODE_MASK_DIFF} "
                             f"node CIDRs (kube-controller-manager allows a difference of {MAX_NODE_MASK_DIFF} bits)")
        return value

    def network(self, value: Any, key: str, kind: type[Net] = IPv4Network) -> Net | None:  # type: ignore[assignment]
        try:
            return kind(str(value), strict=True)
        except ValueError as e:
            self.problem(key, f"{value!r} is not an IPv{4 if kind is IPv4Network else 6} CIDR with host bits zero ({e})")
            return None

    def cni(self, document: dict[str, Any], source: str) -> tuple[CniSpec, dict[str, Any]]:
        """The `cni` section. A conflist given as a path (relative to the scenario file) is read
        and put into the document, so the recorded lab never depends on the file again."""
        raw = document.get("cni")
        if raw is None:
            return CniSpec(), document
        if not isinstance(raw, dict):
            self.problem("cni", "must be a mapping with keys " + ", ".join(CNI_KEYS))
            return CniSpec(), document
        self.unknown_keys(raw, CNI_KEYS, "cni.")
        routing = raw.get("routing", "host-gw")
        if routing not in CNI_ROUTING:
            self.problem("cni.routing", f"{routing!r} is not one of {', '.join(CNI_ROUTING)}{_hint(routing, CNI_ROUTING)}")
        cni_path = raw.get("cniPath", DEFAULT_CNI_PATH)
        if not isinstance(cni_path, str) or not cni_path.startswith("/"):
            self.problem("cni.cniPath", f"{cni_path!r} is not an absolute folder")
            cni_path = DEFAULT_CNI_PATH
        conflist = raw.get("conflist")
        conflist_file = None
        if isinstance(conflist, str):
            path = Path(conflist) if Path(conflist).is_absolute() else Path(source).parent / conflist
            conflist_file = str(path)
            try:
                conflist = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                self.problem("cni.conflist", f"cannot read {path} as JSON: {getattr(e, 'strerror', None) or e}")
                conflist = None
            document = {**document, "cni": {**raw, "conflist": conflist}}
        if conflist is not None:
            plugins = conflist.get("plugins") if isinstance(conflist, dict) else None
            if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins):
                self.problem("cni.conflist", "a network configuration list needs \"plugins\": a list of objects with a \"type\"")
                conflist = None
            elif any("/" in t for t in plugin_types(conflist)):
                self.problem("cni.conflist", "a plugin type is a file name in cniPath, not a path")
                conflist = None
        return CniSpec(routing=str(routing), cni_path=cni_path, conflist=conflist, conflist_file=conflist_file), document

    def ebpf(self, raw: Any) -> str:
        """The `ebpf` section: how nodes reach each other's pods (Cilium's routingMode)."""
        if raw is None:
            return "tunnel"
        if not isinstance(raw, dict):
            self.problem("ebpf", "must be a mapping with keys " + ", ".join(EBPF_KEYS))
            return "tunnel"
        self.unknown_keys(raw, EBPF_KEYS, "ebpf.")
        routing = raw.get("routing", "tunnel")
        if routing not in EBPF_ROUTING:
            self.problem("ebpf.routing", f"{routing!r} is not one of {', '.join(EBPF_ROUTING)}{_hint(routing, EBPF_ROUTING)}")
            return "tunnel"
        return str(routing)

    def integer(self, mapping: dict[str, Any], key: str, default: int, lo: int, hi: int, what: str) -> int:
        value = mapping.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            self.problem(f"networking.{key}", f"{value!r} is not {what} between {lo} and {hi}")
            return default
        return value

    def prefix(self, mapping: dict[str, Any], key: str, default: int, lo: int, cluster: IPv4Network | None,
               what: str) -> int:
        """A prefix length the cluster CIDR is split by: no shorter than the cluster CIDR's own.
        (blockSize is only checked when given: only bgp labs use it.)"""
        value = self.integer(mapping, key, default, lo, 30, what)
        if cluster is not None and value < cluster.prefixlen and (key in mapping or key == "nodeCIDRMaskSize"):
            self.problem(f"networking.{key}", f"/{value} is larger than the cluster CIDR {cluster}")
        return value

    def mtu(self, value: Any, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 576 <= value <= 9000:
            self.problem(key, f"{value!r} is not an MTU between 576 and 9000")
            return DEFAULT_MTU
        return value

    def segments(self, value: Any) -> tuple[Segment, ...]:
        """`underlay: 192.168.1.0/24`, or `underlay: {segments: {rack1: CIDR, rack2: CIDR}}`;
        each CIDR may be a list of one per family (dual-stack)."""
        if isinstance(value, dict):
            self.unknown_keys(value, ("segments",), "networking.underlay.")
            raw = value.get("segments")
            if not isinstance(raw, dict) or not raw:
                self.problem("networking.underlay.segments", "must map segment names to CIDRs, e.g. {rack1: 192.168.1.0/24}")
                return (Segment(DEFAULT_SEGMENT, DEFAULT_UNDERLAY),)
            items = list(raw.items())
        else:
            items = [(DEFAULT_SEGMENT, value)]
        out: list[Segment] = []
        for seg_name, cidr in items:
            key = "networking.underlay" if len(items) == 1 and not isinstance(value, dict) else f"networking.underlay.segments.{seg_name}"
            if not isinstance(seg_name, str) or not SEGMENT_NAME.match(seg_name):
                self.problem(key, f"{seg_name!r} is not a valid segment name: use 1-10 of [a-z0-9-], starting with a letter")
                continue
            net4, net6 = self.dual(cidr, key)
            net: IPv4Network | IPv6Network | None = net4
            if net4 is None:  # an IPv6-only underlay: IPv6 is its first family
                net, net6 = net6, None
            if net is None:
                continue
            if net.num_addresses < 4:
                self.problem(key, f"{net} is too small for nodes (use /30 or larger)")
            if net6 is not None and net6.num_addresses < 4:
                self.problem(key, f"{net6} is too small for nodes")
            for other in out:
                if net.version == other.cidr.version and net.overlaps(other.cidr):  # type: ignore[arg-type]
                    self.problem(key, f"{net} overlaps segment {other.name} {other.cidr}")
                if net6 is not None and other.cidr6 is not None and net6.overlaps(other.cidr6):
                    self.problem(key, f"{net6} overlaps segment {other.name} {other.cidr6}")
            out.append(Segment(seg_name, net, net6))
        return tuple(out) or (Segment(DEFAULT_SEGMENT, DEFAULT_UNDERLAY),)

    def nodes(self, value: Any) -> tuple[NodeSpec, ...]:
        if not isinstance(value, list) or not value:
            self.problem("nodes", "must be a non-empty list of nodes")
            return ()
        nodes = []
        seen: set[str] = set()
        for i, raw in enumerate(self.expand_counts(value)):
            key = f"nodes[{raw.pop('_index')}]" if isinstance(raw, dict) and "_index" in raw else f"nodes[{i}]"
            if not isinstance(raw, dict):
                self.problem(key, "must be a mapping with keys " + ", ".join(NODE_KEYS))
                continue
            self.unknown_keys(raw, NODE_KEYS, f"{key}.")
            name = self.name(raw.get("name"), f"{key}.name", NODE_NAME, "1-10 of [a-z0-9-], starting with a letter")
            if name in RESERVED_NODE_NAMES:
                self.problem(f"{key}.name", f"{name!r} is reserved for the lab's underlay")
            elif name is not None and name in seen:
                self.problem(f"{key}.name", f"duplicate node name {name!r}")
            if name:
                seen.add(name)
            ip, ip6 = self.addresses(raw, key)
            pod_cidr, pod_cidr6 = None, None
            if raw.get("podCIDR") is not None and raw.get("podCIDRs") is not None:
                self.problem(f"{key}.podCIDRs", "give podCIDR or podCIDRs, not both")
            elif raw.get("podCIDRs") is not None:
                if not isinstance(raw["podCIDRs"], list):
                    self.problem(f"{key}.podCIDRs", "must be a list of one CIDR per family, as a Node's spec.podCIDRs")
                else:
                    pod_cidr, pod_cidr6 = self.dual(raw["podCIDRs"], f"{key}.podCIDRs")
            elif raw.get("podCIDR") is not None:
                pod_cidr, pod_cidr6 = self.dual(raw["podCIDR"], f"{key}.podCIDR")
            pod_specs = self.pods(raw.get("pods", []), f"{key}.pods")
            pods = tuple(p.key for p in pod_specs)
            if all(p.namespace == DEFAULT_NAMESPACE and not p.labels for p in pod_specs):
                pod_specs = ()  # plain names: nothing more to keep (and records stay as they were)
            segment = raw.get("segment")
            if segment is not None and not isinstance(segment, str):
                self.problem(f"{key}.segment", f"{segment!r} is not a segment name")
                segment = None
            nodes.append(NodeSpec(name=name or f"node{i + 1}", ip=ip, pod_cidr=pod_cidr, pods=pods, segment=segment,
                                  ip6=ip6, pod_cidr6=pod_cidr6, pod_specs=pod_specs))
        return tuple(nodes)

    def addresses(self, raw: dict[str, Any], key: str) -> tuple[IPv4Address | None, IPv6Address | None]:
        """A node's `ip`, or `ips`: one address per family, as a Node's status.addresses."""
        if raw.get("ip") is not None and raw.get("ips") is not None:
            self.problem(f"{key}.ips", "give ip or ips, not both")
            return None, None
        if raw.get("ip") is not None:
            try:
                address = ip_address(str(raw["ip"]))
            except ValueError:
                self.problem(f"{key}.ip", f"{raw['ip']!r} is not an IP address (a dual-stack node: ips: [v4, v6])")
                return None, None
            return (address, None) if isinstance(address, IPv4Address) else (None, address)
        items = raw.get("ips")
        if items is None:
            return None, None
        if not isinstance(items, list) or not 1 <= len(items) <= 2:
            self.problem(f"{key}.ips", "must be a list of one address per family, e.g. [192.168.1.2, fd00:192:168:1::2]")
            return None, None
        v4: IPv4Address | None = None
        v6: IPv6Address | None = None
        for j, item in enumerate(items):
            try:
                address = ip_address(str(item))
            except ValueError:
                self.problem(f"{key}.ips[{j}]", f"{item!r} is not an IPv4 or IPv6 address")
                continue
            if isinstance(address, IPv4Address):
                if v4 is not None:
                    self.problem(f"{key}.ips[{j}]", f"{address}: a second IPv4 address; give one per family")
                v4 = v4 or address
            else:
                if v6 is not None:
                    self.problem(f"{key}.ips[{j}]", f"{address}: a second IPv6 address; give one per family")
                v6 = v6 or address
        return v4, v6

    def labels(self, value: Any, key: str) -> Labels:
        """Labels as Kubernetes takes them: keys with an optional DNS prefix, values of up to 63."""
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.problem(key, "must be a mapping of label keys to values")
            return ()
        out = []
        for k, v in value.items():
            if not isinstance(k, str) or not LABEL_KEY.match(k) or len(k.rpartition("/")[0]) > 253:
                self.problem(f"{key}.{k}", f"{k!r} is not a valid label key")
            elif not isinstance(v, (str, int, float)) or isinstance(v, bool) or not LABEL_VALUE.match(str(v)):
                self.problem(f"{key}.{k}", f"{v!r} is not a valid label value (up to 63 of [A-Za-z0-9-_.])")
            else:
                out.append((k, str(v)))
        return tuple(sorted(out))

    def namespaces(self, value: Any) -> tuple[NamespaceSpec, ...]:
        """`namespaces: {x: {labels: {team: red}}, y: {}}`; `default` always exists. Each gets
        kubernetes.io/metadata.name=<name>, as Kubernetes adds it."""
        raw: dict[Any, Any] = {}
        if value is not None and not isinstance(value, dict):
            self.problem("namespaces", "must map namespace names to {labels: {...}}")
        elif value is not None:
            raw = value
        out: dict[str, Labels] = {DEFAULT_NAMESPACE: ((NAMESPACE_LABEL, DEFAULT_NAMESPACE),)}
        for name, spec in raw.items():
            key = f"namespaces.{name}"
            if not isinstance(name, str) or not NAMESPACE_NAME.match(name):
                self.problem(key, f"{name!r} is not a valid namespace name: 1-32 of [a-z0-9-]")
                continue
            spec = spec or {}
            if not isinstance(spec, dict):
                self.problem(key, "must be a mapping with keys labels")
                continue
            self.unknown_keys(spec, ("labels",), f"{key}.")
            labels = dict(self.labels(spec.get("labels"), f"{key}.labels"))
            labels[NAMESPACE_LABEL] = name
            out[name] = tuple(sorted(labels.items()))
        return tuple(NamespaceSpec(name, labels) for name, labels in out.items())

    def pod(self, value: Any, key: str) -> PodSpec | None:
        """A pod: its name, or {name, namespace, labels}."""
        if isinstance(value, str):
            if not POD_NAME.match(value):
                self.problem(key, f"{value!r} is not a valid pod name: use 1-32 of [a-z0-9-]")
                return None
            return PodSpec(value)
        if not isinstance(value, dict):
            self.problem(key, f"{value!r} is not a pod name or a mapping with keys {', '.join(POD_KEYS)}")
            return None
        self.unknown_keys(value, POD_KEYS, f"{key}.")
        name, namespace = value.get("name"), value.get("namespace", DEFAULT_NAMESPACE)
        if not isinstance(name, str) or not POD_NAME.match(name):
            self.problem(f"{key}.name", f"{name!r} is not a valid pod name: use 1-32 of [a-z0-9-]")
            return None
        if namespace not in self.known_namespaces:
            self.problem(f"{key}.namespace", f"{namespace!r} is not a namespace of the lab (namespaces: "
                         f"{', '.join(sorted(self.known_namespaces))})")
            return None
        return PodSpec(name, namespace, self.labels(value.get("labels"), f"{key}.labels"))

    def outside(self, value: Any, present: bool) -> IPv4Address | None:
        """`outside: {ip: 198.51.100.10}` (that address the default, so `outside: {}` is enough)."""
        if not present:
            return None
        raw = value or {}
        if not isinstance(raw, dict):
            self.problem("outside", "must be a mapping with keys ip")
            return None
        self.unknown_keys(raw, ("ip",), "outside.")
        try:
            ip = IPv4Address(str(raw.get("ip", DEFAULT_OUTSIDE_IP)))
        except ValueError:
            self.problem("outside.ip", f"{raw.get('ip')!r} is not an IPv4 address")
            return None
        if ip not in OUTSIDE_NETWORK or ip in (OUTSIDE_NETWORK.network_address, OUTSIDE_NETWORK.network_address + 1,
                                              OUTSIDE_NETWORK.broadcast_address):
            self.problem("outside.ip", f"{ip} is not a host of {OUTSIDE_NETWORK} other than the router's .1 "
                         "(the lab's internet stays inside lab namespaces)")
            return None
        return ip

    def services(self, value: Any) -> tuple[ServiceSpec, ...]:
        """`services: [{name, namespace, selector | pods, ports: [{port, targetPort, protocol,
        nodePort}], type, externalTrafficPolicy}]`: ClusterIP and NodePort Services, checked as the
        API server checks them (ipam allocates the NodePorts not given)."""
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem("services", "must be a list of Services")
            return ()
        out: list[ServiceSpec] = []
        taken: set[tuple[str, int]] = set()  # (protocol, nodePort) given explicitly
        for i, raw in enumerate(value):
            key = f"services[{i}]"
            if not isinstance(raw, dict):
                self.problem(key, "must be a mapping with keys " + ", ".join(SERVICE_KEYS))
                continue
            self.unknown_keys(raw, SERVICE_KEYS, f"{key}.")
            spec = self.service(raw, key, taken)
            if spec is None:
                continue
            if any(s.name == spec.name and s.namespace == spec.namespace for s in out):
                self.problem(f"{key}.name", f"{spec.namespace}/{spec.name} is defined twice")
                continue
            out.append(spec)
        return tuple(out)

    def service(self, raw: dict[str, Any], key: str, taken: set[tuple[str, int]]) -> ServiceSpec | None:
        name = raw.get("name")
        if not isinstance(name, str) or not NAMESPACE_NAME.match(name):
            self.problem(f"{key}.name", f"{name!r} is not a valid Service name (a DNS label)")
            return None
        namespace = raw.get("namespace", DEFAULT_NAMESPACE)
        if namespace not in self.known_namespaces:
            self.problem(f"{key}.namespace", f"{namespace!r} is not a namespace of the lab")
            return None
        kind = raw.get("type", "ClusterIP")
        if kind not in SERVICE_TYPES:
            self.problem(f"{key}.type", f"{kind!r} is not one of {', '.join(SERVICE_TYPES)}"
                         + (" (LoadBalancer needs a cloud's load balancer: not built)" if kind == "LoadBalancer" else ""))
            return None
        policy = raw.get("externalTrafficPolicy")
        if policy is not None and kind == "ClusterIP":
            self.problem(f"{key}.externalTrafficPolicy", "may only be set for externally-accessible Services "
                         "(type NodePort), as the API server says")
            return None
        if policy not in (None, "Cluster", "Local"):
            self.problem(f"{key}.externalTrafficPolicy", f"{policy!r} is not Cluster or Local")
            return None
        selector: Labels = ()
        pods: Any = ()
        if "pods" in raw:
            if "selector" in raw:
                self.problem(key, "give a selector or pods, not both")
                return None
            pods = raw["pods"]
            if not isinstance(pods, list) or not pods or not all(isinstance(p, str) and "/" in p for p in pods):
                self.problem(f"{key}.pods", "must be a list of pods as node/pod, e.g. [node1/web, node2/web]")
                return None
        else:
            selector = self.labels(raw.get("selector"), f"{key}.selector")
            if not selector:
                self.problem(f"{key}.selector", "required: the labels of the pods that serve it (or pods: [node1/web])")
                return None
        ports = []
        seen: set[tuple[str, int]] = set()
        for j, p in enumerate(raw.get("ports") or []):
            at = f"{key}.ports[{j}]"
            if not isinstance(p, dict):
                self.problem(at, "must be a mapping with keys " + ", ".join(SERVICE_PORT_KEYS))
                continue
            self.unknown_keys(p, SERVICE_PORT_KEYS, f"{at}.")
            port, target, proto = p.get("port"), p.get("targetPort", p.get("port")), p.get("protocol", "TCP")
            if not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 65535 for x in (port, target)):
                self.problem(at, f"port {port!r} and targetPort {target!r} must be port numbers")
                continue
            if proto not in ("TCP", "UDP"):
                self.problem(f"{at}.protocol", f"{proto!r} is not TCP or UDP")
                continue
            if (proto, port) in seen:
                self.problem(f"{at}.port", f"{port}/{proto} is given twice")
                continue
            seen.add((str(proto), int(port)))  # type: ignore[arg-type]
            node_port = p.get("nodePort")
            if node_port is not None:
                low, high = NODE_PORT_RANGE
                if kind != "NodePort":
                    self.problem(f"{at}.nodePort", "may not be used when type is ClusterIP")
                    continue
                if not isinstance(node_port, int) or isinstance(node_port, bool) or not low <= node_port <= high:
                    self.problem(f"{at}.nodePort", f"{node_port!r} is not in the valid range {low}-{high}")
                    continue
                if (proto, node_port) in taken:
                    self.problem(f"{at}.nodePort", f"{node_port}/{proto}: provided port is already allocated")
                    continue
                taken.add((proto, node_port))
            ports.append(ServicePort(int(port), int(target), str(proto), node_port))  # type: ignore[arg-type]
        if not ports:
            self.problem(f"{key}.ports", "a Service needs at least one port")
            return None
        return ServiceSpec(name, namespace, selector, tuple(ports), kind, policy or "Cluster", tuple(pods))

    def probe(self, value: Any) -> tuple[str, ...]:
        """`probe: {ports: [tcp/80, udp/81]}`."""
        raw = value or {}
        if not isinstance(raw, dict):
            self.problem("probe", "must be a mapping with keys " + ", ".join(PROBE_KEYS))
            return ()
        self.unknown_keys(raw, PROBE_KEYS, "probe.")
        ports = raw.get("ports") or []
        if not isinstance(ports, list):
            self.problem("probe.ports", "must be a list such as [tcp/80, udp/81]")
            return ()
        out = []
        for i, p in enumerate(ports):
            m = PROBE_PORT.match(str(p).lower())
            if not m or not 1 <= int(m.group(2)) <= 65535 or int(m.group(2)) == 31999:
                self.problem(f"probe.ports[{i}]", f"{p!r} is not tcp/PORT or udp/PORT (1-65535; 31999 is check's own)")
                continue
            out.append(f"{m.group(1)}/{int(m.group(2))}")
        return tuple(dict.fromkeys(out))

    def policies(self, value: Any, source: str) -> tuple[PolicySource, ...]:
        """NetworkPolicy objects inline, or files of them (multi-document YAML, relative to the
        scenario). Only read here; policy.py checks them as the API server would."""
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem("policies", "must be a list of NetworkPolicy objects or files")
            return ()
        out = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append(PolicySource(f"{source}: policies[{i}]", item))
                continue
            if not isinstance(item, str):
                self.problem(f"policies[{i}]", f"{item!r} is not a NetworkPolicy object or a file")
                continue
            path = Path(item) if Path(item).is_absolute() else Path(source).parent / item
            try:
                documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
                self.problem(f"policies[{i}]", f"cannot read {path}: {getattr(e, 'strerror', None) or e}")
                continue
            for j, doc in enumerate(d for d in documents if d is not None):
                if not isinstance(doc, dict):
                    self.problem(f"policies[{i}]", f"{path} document {j}: not a NetworkPolicy object")
                    continue
                out.append(PolicySource(f"{path} (document {j})", doc))
        return tuple(out)

    def unique_pods(self, nodes: tuple[NodeSpec, ...]) -> None:
        """A pod given with a namespace is unique in it across the lab, as Kubernetes' pod names are.
        (Plain names, `pods: 3` included, stay unique per node, as before namespaces.)"""
        seen: dict[tuple[str, str], str] = {}
        for i, node in enumerate(nodes):
            for spec in node.pod_specs:
                if spec.namespace == DEFAULT_NAMESPACE and not spec.labels:
                    continue
                where = seen.get((spec.namespace, spec.name))
                if where is not None and where != node.name:
                    self.problem(f"nodes[{i}].pods", f"pod {spec.namespace}/{spec.name} is already on {where}: "
                                 "pod names are unique within a namespace")
                seen[(spec.namespace, spec.name)] = node.name

    def expand_counts(self, value: list[Any]) -> list[Any]:
        """`{name: node, count: 50, pods: 20}` stands for node1 … node50, each with 20 pods."""
        out: list[Any] = []
        for i, raw in enumerate(value):
            if not isinstance(raw, dict) or "count" not in raw:
                out.append({**raw, "_index": i} if isinstance(raw, dict) else raw)
                continue
            count = raw["count"]
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_NODES:
                self.problem(f"nodes[{i}].count", f"{count!r} is not a node count between 1 and {MAX_NODES}")
                continue
            for field_name in ("ip", "ips", "podCIDR", "podCIDRs"):
                if raw.get(field_name) is not None:
                    self.problem(f"nodes[{i}].{field_name}", "cannot be given for a counted group of nodes")
            base = {k: v for k, v in raw.items() if k not in ("count", "ip", "ips", "podCIDR", "podCIDRs")}
            name = raw.get("name", "node")
            out += [{**base, "name": f"{name}{n}" if isinstance(name, str) else name, "_index": i} for n in range(1, count + 1)]
        if len(out) > MAX_NODES:
            self.problem("nodes", f"{len(out)} nodes: a lab holds at most {MAX_NODES}")
            return out[:MAX_NODES]
        return out

    def pods(self, value: Any, key: str) -> tuple[PodSpec, ...]:
        if isinstance(value, bool):
            self.problem(key, "must be a list of pod names or a count")
            return ()
        if isinstance(value, int):
            if not 0 <= value <= MAX_BRIDGE_PORTS:
                self.problem(key, f"{value} pods: a node holds 0 to {MAX_BRIDGE_PORTS} pods (a bridge's port limit)")
                return ()
            return tuple(PodSpec(f"pod-{i}") for i in range(1, value + 1))
        if not isinstance(value, list):
            self.problem(key, "must be a list of pod names or a count")
            return ()
        specs: list[PodSpec] = []
        for j, raw in enumerate(value):
            pod = self.pod(raw, f"{key}[{j}]")
            if pod is None:
                continue
            if any(p.key == pod.key for p in specs):
                shown = pod.name if pod.namespace == DEFAULT_NAMESPACE else f"{pod.namespace}/{pod.name}"
                self.problem(f"{key}[{j}]", f"duplicate pod name {shown!r}")
            else:
                specs.append(pod)
        if len(value) > MAX_BRIDGE_PORTS:
            self.problem(key, f"{len(value)} pods: a node holds at most {MAX_BRIDGE_PORTS} pods")
        return tuple(specs)

    def expectations(self, value: Any) -> tuple[Expectation, ...]:
        if value == "full" or value is None:
            return ()
        if not isinstance(value, list):
            self.problem("expect", "must be 'full' or a list of {from, to, rule, verdict} entries")
            return ()
        out = []
        for i, raw in enumerate(value):
            key = f"expect[{i}]"
            if not isinstance(raw, dict):
                self.problem(key, "must be a mapping with keys " + ", ".join(EXPECT_KEYS))
                continue
            self.unknown_keys(raw, EXPECT_KEYS, f"{key}.")
            src, dst = raw.get("from", "*"), raw.get("to", "*")
            for k, v in (("from", src), ("to", dst)):
                if not isinstance(v, str) or not v:
                    self.problem(f"{key}.{k}", f"{v!r} is not an endpoint pattern such as node1 or node2/*")
            rule = raw.get("rule")
            if rule is not None and rule not in RULES:
                self.problem(f"{key}.rule", f"{rule!r} is not one of {', '.join(RULES)}{_hint(rule, RULES)}")
            verdict = raw.get("verdict", "ok")
            verdicts = verdict if isinstance(verdict, list) else [verdict]
            allowed = (*VERDICTS, "fail")
            bad = [v for v in verdicts if v not in allowed]
            if bad or not verdicts:
                self.problem(f"{key}.verdict", f"{verdict!r}: use one or a list of {', '.join(allowed)}")
                continue
            expanded: set[str] = set()
            for v in verdicts:
                expanded |= set(VERDICTS) - {"ok"} if v == "fail" else {v}
            out.append(Expectation(src=str(src), dst=str(dst), rule=rule, verdicts=frozenset(expanded)))
        return tuple(out)

