"""NetworkPolicy as values: selectors, peers, ports, rules, policies (networking.k8s.io/v1), and a
workload (a pod, or a node) as policies see it. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from cni_lab.model import ContainerPort, Labels, find_port

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values  # a missing key is "not in", as in Kubernetes
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class Selector:
    """A LabelSelector: every matchLabels pair and every expression must hold. Empty: everything."""

    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Labels | dict[str, str]) -> bool:
        have = dict(labels)
        return all(have.get(k) == v for k, v in self.match_labels) and all(
            r.matches(have) for r in self.match_expressions)


@dataclass(frozen=True)
class IPBlock:
    cidr: IPv4Network | IPv6Network
    excepted: tuple[IPv4Network | IPv6Network, ...] = ()

    def matches(self, ip: IPv4Address | IPv6Address) -> bool:
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in e for e in self.excepted)


@dataclass(frozen=True)
class Peer:
    """One entry of `from`/`to`: pods (by podSelector, in the policy's namespace unless a
    namespaceSelector widens it), whole namespaces, or an ipBlock."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PortRange:
    protocol: str  # TCP | UDP | SCTP
    port: int | str | None = None  # None: every port of the protocol; a name: a port the destination declares
    end_port: int | None = None

    def matches(self, protocol: str, port: int | None, destination: Workload | None = None) -> bool:
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if port is None:
            return False
        if isinstance(self.port, str):
            return self.named_port_on(destination) == port
        return self.port <= port <= (self.end_port or self.port)

    def named_port_on(self, destination: Workload | None) -> int | None:
        """A named port on the pod traffic goes to: its container port of this name and
        protocol, None where it has none (a node has none). NetworkPolicyPort.port: "a numerical
        or named port on a pod"; implementations resolve it per pod, as FindPort does a Service's."""
        if not isinstance(self.port, str) or destination is None:
            return None
        return destination.find_port(self.port, self.protocol)


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...] = ()  # empty: every peer (`from`/`to` missing or empty)
    ports: tuple[PortRange, ...] = ()  # empty: every port and protocol

    def allows_port(self, protocol: str, port: int | None, destination: Workload | None = None) -> bool:
        """`destination`: the pod the traffic goes to, whose ports named ports stand for."""
        return not self.ports or any(p.matches(protocol, port, destination) for p in self.ports)


@dataclass(frozen=True)
class Policy:
    name: str
    namespace: str
    pod_selector: Selector
    policy_types: tuple[str, ...]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    warnings: tuple[str, ...] = ()  # what the API server would warn of, accepting the policy

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Workload:
    """A pod as policies see it (or a node: no namespace, no labels, matched by ipBlock only)."""

    id: str  # node1/x/a, or node1
    namespace: str  # "" for a node
    labels: Labels
    ips: tuple[IPv4Address | IPv6Address, ...]
    ports: tuple[ContainerPort, ...] = ()  # its declared container ports (a node: none)

    def find_port(self, name: str, protocol: str) -> int | None:
        return find_port(self.ports, name, protocol)

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.id.rsplit('/', 1)[1]}"

    @property
    def node(self) -> str:
        """The node it runs on (a node: itself); ids start with the node's name."""
        return self.id.split("/", 1)[0]

    def is_local_node_of(self, pod: Workload) -> bool:
        """This is a node, and `pod` runs on it."""
        return not self.namespace and pod.namespace != "" and self.node == pod.node


