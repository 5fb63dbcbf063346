"""What a scenario is, once read: frozen, typed values, and the defaults a key left out gets.

How each section of the file is read and checked lives beside this module, one module a section;
the loader (loader.py) calls them in the file's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import cni_lab.dataplanes.registry as registry  # the module alone: the package sits above the model

# -- data planes: their names and the sections only one of them reads --------------------------------
# The data planes' registry declares them (dataplanes/registry.py imports nothing above the model);
# the model only checks a scenario against them.
DATAPLANES = registry.NAMES
DEFAULT_DATAPLANE = registry.DEFAULT
DATAPLANE_SECTIONS = registry.SECTIONS  # top-level keys read for one data plane: `cni:`, `ebpf:`
CNI_KEYS = ("routing", "cniPath", "conflist")
CNI_ROUTING = registry.CNI_ROUTING  # how the nodes of a `dataplane: cni` lab reach each other's pods
DEFAULT_CNI_ROUTING = registry.CNI_DEFAULT_ROUTING
DEFAULT_CNI_PATH = "/usr/lib/cni"  # Debian's containernetworking-plugins
# `ebpf:` takes Cilium's Helm values, by Cilium's names: `routing` (or `routingMode`) chooses; the
# others each take the one value the lab runs (dataplane_sections.CILIUM_VALUES says why not another)
EBPF_KEYS = ("routing", "routingMode", "kubeProxyReplacement", "bpf", "socketLB", "loadBalancer", "healthChecking",
             "nodePort")
EBPF_ROUTING = registry.EBPF_ROUTING  # Cilium's routingMode; tunnel is its default
DEFAULT_EBPF_ROUTING = registry.EBPF_DEFAULT_ROUTING
# `calico:` takes an IPPool's encapsulation by Calico's names, and calico_backend (bird, or vxlan: no BGP)
CALICO_KEYS = ("vxlanMode", "ipipMode", "backend")
CALICO_MODES = registry.CALICO_MODES
CALICO_BACKENDS = registry.CALICO_BACKENDS
# -----------------------------------------------------------------------------------------------------

DEFAULT_NAMESPACE = "default"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # every namespace has it, set by Kubernetes
Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs: hashable, frozen

DEFAULT_CLUSTER_CIDR = IPv4Network("10.244.0.0/16")
DEFAULT_NODE_MASK = 24
DEFAULT_NODE_MASK6 = 64  # kube-controller-manager's --node-cidr-mask-size-ipv6
DEFAULT_UNDERLAY = IPv4Network("192.168.1.0/24")
DEFAULT_UNDERLAY6 = IPv6Network("fd00:192:168:1::/64")  # an IPv6-only lab's, unless it says
DEFAULT_SEGMENT = "underlay"  # the name of the one segment of a plain `underlay: CIDR`
DEFAULT_MTU = 1500
DEFAULT_BLOCK_SIZE = 26  # Calico's IPAM block: a /26 per node
DEFAULT_BLOCK_SIZE6 = 122  # Calico's IPv6 IPAM block
DEFAULT_AS = 64512  # Calico's default AS number
DEFAULT_SERVICE_CIDR = IPv4Network("10.96.0.0/12")  # kube-apiserver's --service-cluster-ip-range default
NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver's --service-node-port-range default
# Cluster DNS (kube-dns as kubeadm deploys it): the Service's name and namespace, the label its
# pods carry (CoreDNS's deployment), the ClusterIP kubeadm's clusterDNS gives it (the tenth
# address of the Service CIDR) and the domain kubelet's clusterDomain defaults to.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_POD = "coredns"
DNS_LABELS: Labels = (("k8s-app", "kube-dns"),)
DNS_CLUSTER_IP_INDEX = 10
OUTSIDE_NETWORK = IPv4Network("198.51.100.0/24")  # TEST-NET-2 (RFC 5737): documentation's "internet"
DEFAULT_OUTSIDE_IP = IPv4Address("198.51.100.10")

VERDICTS = ("ok", "nat", "wrong-peer", "timeout", "unreachable")
RULES = ("pod-pod-same-node", "pod-pod-cross-node", "node-pod", "pod-node", "node-node",
         "pod-outside", "node-outside", "outside-node", "outside-pod")


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
class CalicoSpec:
    """`dataplane: bgp`: the IP pool's encapsulation (Calico's IPPool vxlanMode and ipipMode: Never,
    Always or CrossSubnet, at most one not Never) and calico_backend (bird: BGP; vxlan: VXLAN
    without BGP, routes from IPAM alone)."""

    vxlan_mode: str = registry.CALICO_DEFAULT_MODE
    ipip_mode: str = registry.CALICO_DEFAULT_MODE
    backend: str = registry.CALICO_DEFAULT_BACKEND

    @property
    def encapsulation(self) -> str | None:
        """"vxlan", "ipip", or None for a pool that never encapsulates."""
        return "vxlan" if self.vxlan_mode != "Never" else "ipip" if self.ipip_mode != "Never" else None

    @property
    def cross_subnet(self) -> bool:
        """Encapsulate only towards nodes on another subnet."""
        return "CrossSubnet" in (self.vxlan_mode, self.ipip_mode)

    @property
    def runs_bird(self) -> bool:
        return self.backend == "bird"


@dataclass(frozen=True)
class CniSpec:
    """`dataplane: cni`: the reference plugins wire pods; `routing` joins the nodes."""

    routing: str = DEFAULT_CNI_ROUTING
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
    target_port: int | str  # a number, or the name of a port each endpoint pod declares (resolved per pod)
    protocol: str = "TCP"  # TCP | UDP | SCTP
    node_port: int | None = None  # NodePort Services: every port has one (given, or allocated by load)
    name: str = ""  # required when a Service has more than one; kube-proxy's chains are named after it

    @property
    def label(self) -> str:
        """`80/TCP`, or `http 80/TCP` for a named port: how check and explain name it."""
        return f"{self.name + ' ' if self.name else ''}{self.port}/{self.protocol}"


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
    cluster_ip: IPv4Address | None = None  # `clusterIP: 10.96.0.20` given (kube-dns's: the CIDR's tenth)
    headless: bool = False  # `clusterIP: None`: no ClusterIP, not balanced; DNS answers with the endpoints

    @property
    def node_port(self) -> bool:
        return self.type == "NodePort"


@dataclass(frozen=True)
class DnsSpec:
    """`dns:` cluster DNS, on by default in a lab with Services: a DNS server (dnsmasq) in a
    `kube-system/coredns` pod behind the `kube-system/kube-dns` Service, and every pod's
    resolv.conf as kubelet writes it for dnsPolicy ClusterFirst."""

    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


@dataclass(frozen=True)
class PolicySource:
    """A NetworkPolicy object as the scenario gives it (inline, or one document of a file),
    checked by policy/reading.py as the API server would."""

    where: str  # the scenario, or the file, and the document's index
    document: dict[str, Any]


@dataclass(frozen=True)
class ProbePort:
    """A port `check` probes every pod pair on besides ICMP: a `probe.ports` entry or a
    `check --port`, written `tcp/80`."""

    protocol: str  # TCP | UDP | SCTP, spelt as Services and NetworkPolicies spell it
    port: int


@dataclass(frozen=True)
class ContainerPort:
    """A port a pod declares (a container's `ports` entry): what a named port in a NetworkPolicy
    or a Service's targetPort resolves through. Declaring it opens nothing: as in Kubernetes, a
    pod is reached on any port it listens on."""

    container_port: int
    protocol: str = "TCP"  # TCP | UDP | SCTP
    name: str = ""  # IANA_SVC_NAME, unique in the pod; "" for none

    @property
    def label(self) -> str:
        """`http 8080/TCP`, or `8080/TCP` for an unnamed port."""
        return f"{self.name + ' ' if self.name else ''}{self.container_port}/{self.protocol}"


def find_port(ports: tuple[ContainerPort, ...], name: str, protocol: str) -> int | None:
    """The number a named port stands for on a pod with these ports, or None where it has none:
    the first port of that name and protocol, as FindPort (kubernetes pkg/api/v1/pod/util.go)
    matches `port.Name == name && port.Protocol == svcPort.Protocol`."""
    return next((p.container_port for p in ports if p.name == name and p.protocol == protocol), None)


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    labels: Labels  # kubernetes.io/metadata.name=<name> included


@dataclass(frozen=True)
class PodSpec:
    """A pod as the scenario gives it: `web`, or `{name: a, namespace: x, labels: {pod: a},
    ports: [{name: http, containerPort: 8080}]}`."""

    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: Labels = ()
    ports: tuple[ContainerPort, ...] = ()  # its containers' ports, in the order given

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
    pod_specs: tuple[PodSpec, ...] = ()  # namespaces, labels, ports of `pods`, same order (empty: all default)

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
    ebpf_routing: str = DEFAULT_EBPF_ROUTING  # ebpf: Cilium's routingMode (tunnel: VXLAN; native: autoDirectNodeRoutes)
    calico: CalicoSpec = field(default_factory=CalicoSpec)  # bgp: the IP pool's encapsulation, calico_backend
    cluster_cidr6: IPv6Network | None = None  # dual-stack: the cluster's IPv6 CIDR (the second family)
    namespaces: tuple[NamespaceSpec, ...] = ()  # every namespace of the lab with its labels (default first)
    probe_ports: tuple[ProbePort, ...] = ()  # `probe.ports`: what check probes besides ICMP
    policies: tuple[PolicySource, ...] = ()
    outside_ip: IPv4Address | None = None  # `outside:`: a host behind the router, standing for the internet
    services: tuple[ServiceSpec, ...] = ()
    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR
    dns: DnsSpec | None = None  # cluster DNS; None: off (`dns: false`, or a lab without Services)
    masquerade: bool = False  # traffic leaving the cluster is masqueraded (default: when there is an outside)
    node_cidr_mask_size6: int = DEFAULT_NODE_MASK6
    allow_overlap: bool = False
    expect: tuple[Expectation, ...] = ()
    description: str = ""
    source: str = "<scenario>"
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def declared_ports(self) -> tuple[ProbePort, ...]:
        """Every protocol and number the pods declare as container ports, once: TCP, UDP, SCTP,
        each by number."""
        order = {"TCP": 0, "UDP": 1, "SCTP": 2}
        found = {ProbePort(c.protocol, c.container_port) for n in self.nodes for p in n.pod_specs for c in p.ports}
        return tuple(sorted(found, key=lambda p: (order[p.protocol], p.port)))

    @property
    def probed_ports(self) -> tuple[ProbePort, ...]:
        """What check probes every pod pair on besides ICMP: `probe.ports` when given, else in a
        lab with policies the declared container ports, so the rules that name them are probed."""
        return self.probe_ports or (self.declared_ports if self.policies else ())

    def protocol_uses(self) -> dict[str, tuple[str, ...]]:
        """protocol → where the lab asks the kernel for it (Service ports, probe ports), by key:
        what `up` and `check` hold against the kernel's sockets (kernel/transports.py)."""
        uses: dict[str, list[str]] = {}
        for i, svc in enumerate(self.services):
            if (svc.namespace, svc.name) == (DNS_NAMESPACE, DNS_SERVICE) and self.dns is not None:
                continue  # the lab's kube-dns: UDP and TCP, which every kernel has; no key of the file
            for j, port in enumerate(svc.ports):
                uses.setdefault(port.protocol, []).append(f"services[{i}].ports[{j}].protocol")
        declared = "" if self.probe_ports else " (a port the pods declare)"
        for probe in self.probed_ports:
            uses.setdefault(probe.protocol, []).append(f"probe port {probe.protocol.lower()}/{probe.port}{declared}")
        return {protocol: tuple(where) for protocol, where in uses.items()}
