"""The resolved lab: a scenario with every address decided, its Services and NetworkPolicies
worked out once. What every later stage (plan, kernel, probe, lesson, report) reads.

`resolve(scenario, capabilities)` asks `ipam` for the addresses (node IPs, pod CIDRs, pod IPs,
ClusterIPs, NodePorts), builds the nodes and pods from them, and checks the policies as the API
server would before anything is built. It is handed what the data plane does (a data plane's
module sits above this one: it wires the lab); `catalog.resolve(scenario)` asks the data plane. A Service's endpoints are the pods its selector picks in its namespace
(or the pods it names), as the EndpointSlice controller picks them.

Pure: no kernel, no files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network, ip_interface
from typing import NamedTuple, Union

from cni_lab import ipam, policy
from cni_lab.dataplanes.capabilities import Capabilities, Refused
from cni_lab.errors import LabError
from cni_lab.model import (DEFAULT_NAMESPACE, ContainerPort, DnsSpec, Labels, ProbePort, Scenario, Segment,
                           ServicePort, ServiceSpec, find_port, is_cluster_dns)

AnyAddress = Union[IPv4Address, IPv6Address]


@dataclass(frozen=True)
class Pod:
    name: str  # its key on the node: the pod's name, or `<namespace>.<name>` in another namespace
    node: str
    ip: IPv4Address | IPv6Address  # the lab's first family's (IPv6 in an IPv6-only lab)
    prefixlen: int
    ip6: IPv6Address | None = None  # dual-stack
    prefixlen6: int = 64
    namespace: str = DEFAULT_NAMESPACE
    labels: Labels = ()
    ports: tuple[ContainerPort, ...] = ()  # its declared container ports

    def find_port(self, name: str, protocol: str) -> int | None:
        """The number its port `name` of `protocol` has (FindPort), None where it declares none."""
        return find_port(self.ports, name, protocol)

    @property
    def id(self) -> str:
        """What the CLI calls it: node1/web, or node1/x/a for pod a of namespace x."""
        return f"{self.node}/{self.name.replace('.', '/')}"

    @property
    def pod_name(self) -> str:
        """Its name in its namespace (Kubernetes' metadata.name)."""
        return self.name.rpartition(".")[2]

    @property
    def qualified(self) -> str:
        """namespace/name, as kubectl and the e2e suite write pods."""
        return f"{self.namespace}/{self.pod_name}"

    @property
    def interface(self) -> IPv4Interface | IPv6Interface:
        return ip_interface(f"{self.ip}/{self.prefixlen}")

    @property
    def interface6(self) -> IPv6Interface | None:
        return None if self.ip6 is None else IPv6Interface(f"{self.ip6}/{self.prefixlen6}")

    @property
    def ips(self) -> tuple[AnyAddress, ...]:
        """Every address of the pod, the lab's first family first (a Pod's status.podIPs)."""
        return (self.ip,) if self.ip6 is None else (self.ip, self.ip6)


@dataclass(frozen=True)
class Node:
    name: str
    ip: IPv4Address | IPv6Address  # the lab's first family's (IPv6 in an IPv6-only lab)
    pod_cidr: IPv4Network | IPv6Network
    pods: tuple[Pod, ...]
    segment: Segment
    ip6: IPv6Address | None = None  # dual-stack
    pod_cidr6: IPv6Network | None = None

    @property
    def ips(self) -> tuple[AnyAddress, ...]:
        return (self.ip,) if self.ip6 is None else (self.ip, self.ip6)

    @property
    def pod_cidrs(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """spec.podCIDRs of the Node object: one per family."""
        return (self.pod_cidr,) if self.pod_cidr6 is None else (self.pod_cidr, self.pod_cidr6)

    @property
    def underlay6(self) -> IPv6Interface | None:
        if self.ip6 is None or self.segment.cidr6 is None:
            return None
        return IPv6Interface(f"{self.ip6}/{self.segment.cidr6.prefixlen}")

    @property
    def router6(self) -> IPv6Address | None:
        return None if self.segment.cidr6 is None else self.segment.cidr6.network_address + 1

    @property
    def gateway6(self) -> IPv6Address | None:
        return None if self.pod_cidr6 is None else self.pod_cidr6.network_address + 1

    @property
    def underlay(self) -> IPv4Interface | IPv6Interface:
        """The node's eth0 address with its segment's prefix."""
        return ip_interface(f"{self.ip}/{self.segment.cidr.prefixlen}")

    @property
    def router(self) -> IPv4Address | IPv6Address:
        """Its segment's router address (the first host), where the lab has a router."""
        return self.segment.cidr.network_address + 1

    @property
    def id(self) -> str:
        return self.name

    @property
    def gateway(self) -> IPv4Address | IPv6Address:
        """The bridge address pods route through (host-local's default gateway: the first host)."""
        return self.pod_cidr.network_address + 1


class Backend(NamedTuple):
    """An endpoint of one Service port: the pod, and the number its targetPort is on it."""

    pod: Pod
    port: int


@dataclass(frozen=True)
class Service:
    """A Service as kube-proxy sees it: its spec (every NodePort allocated), its ClusterIP and
    its endpoints."""

    spec: ServiceSpec
    cluster_ip: IPv4Address
    endpoints: tuple[Pod, ...]  # the pods it selects (or names)

    @property
    def qualified(self) -> str:
        return f"{self.spec.namespace}/{self.spec.name}"

    def backends(self, port: ServicePort) -> tuple[Backend, ...]:
        return backends(self.endpoints, port)


@dataclass(frozen=True)
class HeadlessService:
    """A Service with `clusterIP: None`: no ClusterIP, nothing balances it; its name in DNS
    answers with its endpoints' addresses (kubernetes/dns specification 2.4)."""

    spec: ServiceSpec
    endpoints: tuple[Pod, ...]

    @property
    def qualified(self) -> str:
        return f"{self.spec.namespace}/{self.spec.name}"

    def backends(self, port: ServicePort) -> tuple[Backend, ...]:
        return backends(self.endpoints, port)


def backends(endpoints: tuple[Pod, ...], port: ServicePort) -> tuple[Backend, ...]:
    """The endpoints of one port, each with its own number: a numbered targetPort is every
    endpoint's; a named one is each pod's port of that name and the Service port's protocol,
    and a pod without one is no endpoint of that port, as the EndpointSlice controller's
    getEndpointPorts skips it (FindPort's error: "no suitable port")."""
    out = []
    for pod in endpoints:
        number = port.target_port if isinstance(port.target_port, int) else pod.find_port(port.target_port, port.protocol)
        if number is not None:
            out.append(Backend(pod, number))
    return tuple(out)


@dataclass(frozen=True)
class Lab:
    """A scenario with every address decided: what every later stage reads."""

    scenario: Scenario
    nodes: tuple[Node, ...]
    capabilities: Capabilities  # what its data plane does in it: what the code asks instead of its name
    warnings: tuple[str, ...] = ()  # the allocation's (ipam); `all_warnings` adds the policies'

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def dataplane(self) -> str:
        """Its data plane's name: to show and to look the data plane up by, never to compare."""
        return self.scenario.dataplane

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.scenario.segments

    @property
    def has_router(self) -> bool:
        return ipam.has_router(self.scenario, self.capabilities)

    @property
    def pod_mtu(self) -> int:
        """What the data plane needs (VXLAN takes 50 bytes), unless the scenario mis-sets it."""
        if self.scenario.pod_mtu is not None:
            return self.scenario.pod_mtu
        return self.overlay_mtu

    @property
    def dual_stack(self) -> bool:
        return self.scenario.cluster_cidr6 is not None

    @property
    def ipv6_only(self) -> bool:
        return self.scenario.cluster_cidr.version == 6

    @property
    def has_ipv6(self) -> bool:
        return self.dual_stack or self.ipv6_only

    @property
    def families(self) -> tuple[int, ...]:
        """The address families of the lab, its first first."""
        return (6,) if self.ipv6_only else (4, 6) if self.dual_stack else (4,)

    @property
    def tunnelled(self) -> bool:
        """Pod traffic between nodes travels in VXLAN (flannel's vxlan, Cilium's tunnel mode)."""
        return self.capabilities.tunnel is not None

    @property
    def overlay_mtu(self) -> int:
        """What a pod's packet may be inside the tunnel (Tunnel.mtu), or the underlay's."""
        tunnel = self.capabilities.tunnel
        return self.scenario.underlay_mtu if tunnel is None else tunnel.mtu(self.scenario.underlay_mtu, self.has_ipv6)

    @property
    def pods(self) -> tuple[Pod, ...]:
        return tuple(p for n in self.nodes for p in n.pods)

    @cached_property
    def policies(self) -> tuple[policy.Policy, ...]:
        """The scenario's NetworkPolicy objects, checked as the API server checks them."""
        spaces = [ns.name for ns in self.scenario.namespaces] or ["default"]
        problems: list[str] = []
        found = []
        for source in self.scenario.policies:
            try:
                found.append(policy.parse(source.document, source.where, spaces))
            except LabError as e:
                problems += e.problems
        names = [p.qualified for p in found]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{self.scenario.source}: policies: {dup} is defined twice")
        if problems:
            raise LabError(*problems)
        return tuple(found)

    @property
    def probe_ports(self) -> tuple[ProbePort, ...]:
        """What check probes every pod pair on besides ICMP: `probe.ports` (or `check --port`),
        else, in a lab with policies, every port its pods declare (Scenario.probed_ports)."""
        return self.scenario.probed_ports

    @property
    def all_warnings(self) -> tuple[str, ...]:
        """What to warn of: the allocation's, and what the API server would accept in the policies
        with a warning (an ipBlock CIDR with host bits), worked out from the policies the lab has
        now (`policy apply` and `delete` change them on a running lab)."""
        return self.warnings + tuple(w for p in self.policies for w in p.warnings)

    @cached_property
    def evaluator(self) -> policy.Evaluator:
        return policy.Evaluator({ns.name: ns.labels for ns in self.scenario.namespaces}, self.policies)

    @cached_property
    def _all_services(self) -> tuple[Service | HeadlessService, ...]:
        return _services(self)

    @property
    def all_services(self) -> tuple[Service | HeadlessService, ...]:
        """Every Service, headless ones too, in the order of `scenario.services`."""
        return self._all_services

    @property
    def services(self) -> tuple[Service, ...]:
        """Every Service with its ClusterIP and endpoints (what kube-proxy balances); LabError where
        the lab cannot have them. Headless Services are `headless_services`."""
        return tuple(s for s in self._all_services if isinstance(s, Service))

    @property
    def headless_services(self) -> tuple[HeadlessService, ...]:
        return tuple(s for s in self._all_services if isinstance(s, HeadlessService))

    def services_without(self, gone: frozenset[str]) -> tuple[Service, ...]:
        """The Services once the pods in `gone` (by id) are not ready: the EndpointSlice
        controller drops them from every Service's endpoints."""
        return tuple(dataclasses.replace(s, endpoints=tuple(p for p in s.endpoints if p.id not in gone))
                     for s in self.services)

    def headless_without(self, gone: frozenset[str]) -> tuple[HeadlessService, ...]:
        return tuple(dataclasses.replace(s, endpoints=tuple(p for p in s.endpoints if p.id not in gone))
                     for s in self.headless_services)

    @property
    def dns(self) -> DnsSpec | None:
        """Its cluster DNS (on by default where there are Services), or None."""
        return self.scenario.dns

    @property
    def dns_service(self) -> Service | None:
        """kube-system/kube-dns, the ClusterIP every pod's resolv.conf names."""
        return next((s for s in self.services if is_cluster_dns(s.spec)), None) if self.dns is not None else None

    @property
    def workloads(self) -> list[policy.Workload]:
        """Every pod as policies see it."""
        return [policy.Workload(p.id, p.namespace, p.labels, p.ips, p.ports) for p in self.pods]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"lab {self.name} has no node {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")


def resolve(scenario: Scenario, capabilities: Capabilities) -> Lab:
    """The scenario with every address decided, given what its data plane does in it
    (catalog.resolve asks the data plane); LabError listing every problem."""
    allocation = ipam.allocate(scenario, capabilities)
    nodes = []
    for i, spec in enumerate(scenario.nodes):
        given = allocation.nodes[i]
        cidr, cidr6 = given.pod_cidr, given.pod_cidr6
        pods = tuple(Pod(name=p, node=spec.name, ip=given.pod_ips[j], prefixlen=cidr.prefixlen,
                         ip6=given.pod_ips6[j] if given.pod_ips6 is not None else None,
                         prefixlen6=cidr6.prefixlen if cidr6 is not None else 64,
                         namespace=spec.spec_of(p).namespace, labels=spec.spec_of(p).labels,
                         ports=spec.spec_of(p).ports)
                     for j, p in enumerate(spec.pods))
        nodes.append(Node(name=spec.name, ip=given.ip, pod_cidr=cidr, pods=pods, segment=given.segment,
                          ip6=given.ip6, pod_cidr6=cidr6))
    lab = Lab(scenario=scenario, nodes=tuple(nodes), capabilities=capabilities, warnings=allocation.warnings)
    lab.policies  # noqa: B018 - every policy checked now, as `kubectl apply` would, before anything is built
    return lab


def _services(lab: Lab) -> tuple[Service | HeadlessService, ...]:
    specs = lab.scenario.services
    if not specs:
        return ()
    src, cidr = lab.scenario.source, lab.scenario.service_cidr
    problems = []
    if lab.scenario.cluster_cidr.version != 4:  # a dual-stack lab's Services are IPv4 SingleStack
        problems.append(f"{src}: services: IPv4 or dual-stack labs for now (an IPv6-only lab has no IPv4 ClusterIPs)")
    for net, what in [(lab.scenario.cluster_cidr, "the cluster CIDR"), *((s.cidr, "the underlay") for s in lab.segments)]:
        if net.version == 4 and cidr.overlaps(net):  # type: ignore[arg-type]
            problems.append(f"{src}: networking.serviceCIDR: {cidr} overlaps {what} {net}")
    if isinstance(lab.capabilities.services, Refused):
        problems.append(f"{src}: {lab.capabilities.services.reason}")
    elif lab.capabilities.services == "cilium-bpf":  # the BPF load balancer rewrites ports
        problems += [f"{src}: services[{i}].ports[{j}]: SCTP on dataplane {lab.dataplane}: its BPF load balancer "
                     "rewrites ports without recomputing SCTP's CRC32c checksum; use TCP or UDP, or another data plane"
                     for i, spec in enumerate(specs) for j, port in enumerate(spec.ports) if port.protocol == "SCTP"]
    cluster_ips = ipam.cluster_ips(lab.scenario, problems)
    if problems:
        raise LabError(*problems)
    by_id = {p.id: p for p in lab.pods}
    for i, spec in enumerate(specs):
        for ref in spec.pods:
            if ref not in by_id:
                problems.append(f"{src}: services[{i}].pods: {ref} is no pod of the lab (pods are node/pod)")
            elif by_id[ref].namespace != spec.namespace:
                problems.append(f"{src}: services[{i}].pods: {ref} is in namespace {by_id[ref].namespace}, "
                                f"not the Service's {spec.namespace}")
    if problems:
        raise LabError(*problems)
    out: list[Service | HeadlessService] = []
    for spec, cluster_ip in zip(ipam.node_ports(specs), cluster_ips):
        if spec.pods:  # named: as an EndpointSlice written by hand
            chosen = tuple(by_id[ref] for ref in spec.pods)
        else:
            selector = policy.Selector(match_labels=spec.selector)  # a Service's selector: equality on every label
            chosen = tuple(p for p in lab.pods if p.namespace == spec.namespace and selector.matches(p.labels))
        out.append(HeadlessService(spec, chosen) if cluster_ip is None else Service(spec, cluster_ip, chosen))
    return tuple(out)
