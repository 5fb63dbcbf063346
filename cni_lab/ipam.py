"""Addresses, the way a cluster hands them out.

- Node underlay IPs: each segment's hosts in node order from .2 (.1 is the segment's router,
  when the lab has one), unless a node gives its own.
- Pod CIDRs: like kube-controller-manager's range allocator (`--allocate-node-cidrs
  --cluster-cidr --node-cidr-mask-size`): the cluster CIDR split into /nodeCIDRMaskSize
  subnets, handed out in node order from the first free one; an explicit podCIDR wins.
- Pod IPs: like the CNI bridge plugin with host-local IPAM: the first address of the pod CIDR
  is the gateway on cni0, pods get the next ones in order (first pod .2).
- With Calico IPAM (`bgp`), a node's pod CIDR is its IPAM block (/blockSize, /26 by default)
  and, as there is no bridge to take a gateway address, pods start at the block's first host.
- Dual-stack: the same per family, in node order (kube-controller-manager allocates each
  family's node CIDRs separately: --node-cidr-mask-size-ipv6, /64 by default; Calico's IPv6
  blocks are /122); nodes and pods get an IPv6 address besides their IPv4 one.

- ClusterIPs: in order from the Service CIDR's .2 (kube-apiserver picks at random; .1 is the
  `kubernetes` Service's, kept). NodePorts not given: the lowest free port of the range.

Pure: allocation only (cluster.py builds the resolved lab from it); raises LabError listing
every problem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Iterator, TypeVar, Union

from cni_lab.dataplanes.capabilities import Capabilities
from cni_lab.errors import LabError
from cni_lab.model import DEFAULT_BLOCK_SIZE6, NODE_PORT_RANGE, Scenario, Segment, ServiceSpec

Net = TypeVar("Net", IPv4Network, IPv6Network)
AnyAddress = Union[IPv4Address, IPv6Address]


@dataclass(frozen=True)
class NodeAddresses:
    """What one node is given: its segment and underlay address(es), its pod CIDR(s) and its pods'
    addresses in the order of its pods."""

    segment: Segment
    ip: IPv4Address | IPv6Address
    pod_cidr: IPv4Network | IPv6Network
    pod_ips: tuple[IPv4Address | IPv6Address, ...]
    ip6: IPv6Address | None = None
    pod_cidr6: IPv6Network | None = None
    pod_ips6: tuple[IPv6Address, ...] | None = None


@dataclass(frozen=True)
class Allocation:
    nodes: tuple[NodeAddresses, ...]  # in the scenario's node order
    warnings: tuple[str, ...] = ()


def has_router(scenario: Scenario, capabilities: Capabilities) -> bool:
    """A router namespace (at each segment's first address, every node's default gateway) joins
    the segments, leads to the outside host, and is there on one segment too for a data plane
    that needs it (Capabilities.needs_router: the fabric's; Calico's proxy ARP)."""
    return len(scenario.segments) > 1 or capabilities.needs_router or scenario.outside_ip is not None


def allocate(scenario: Scenario, capabilities: Capabilities) -> Allocation:
    """Every node's and pod's addresses, in node order (what the data plane does decides the size
    of a node's pod CIDR and whether its first address is a gateway's)."""
    problems: list[str] = []
    warnings: list[str] = []
    src = scenario.source

    segments = _node_segments(scenario, problems)
    v6only = isinstance(scenario.cluster_cidr, IPv6Network)
    _families_given(scenario, v6only, problems)
    given_ips: list[IPv4Address | IPv6Address | None] = [s.ip6 if v6only else s.ip for s in scenario.nodes]
    node_ips = _node_ips(scenario, segments, given_ips, has_router(scenario, capabilities), problems)
    node_ips6 = _node_ips6(scenario, segments, problems) if not v6only else [None] * len(scenario.nodes)
    blocks = capabilities.ipam == "calico-ipam"  # else host-local's node CIDRs
    if v6only:
        mask = DEFAULT_BLOCK_SIZE6 if blocks else scenario.node_cidr_mask_size6
    else:
        mask = scenario.block_size if blocks else scenario.node_cidr_mask_size
    given = [s.pod_cidr6 if v6only else s.pod_cidr for s in scenario.nodes]
    pod_cidrs = _pod_cidrs(scenario, scenario.cluster_cidr, mask, given, "podCIDR", problems, warnings)  # type: ignore[type-var]
    pod_cidrs6: list[IPv6Network | None] = [None] * len(scenario.nodes)
    if scenario.cluster_cidr6 is not None:
        mask6 = DEFAULT_BLOCK_SIZE6 if blocks else scenario.node_cidr_mask_size6
        pod_cidrs6 = list(_pod_cidrs(scenario, scenario.cluster_cidr6, mask6, [s.pod_cidr6 for s in scenario.nodes],
                                     "podCIDRs[1]", problems, warnings))
    if problems:
        raise LabError(*problems)

    nodes = []
    for i, spec in enumerate(scenario.nodes):
        cidr = pod_cidrs[i]
        skip = 0 if blocks else 1  # host-local: the gateway's address (cni0's, the router IP)
        capacity = cidr.num_addresses - 2 - skip  # network, broadcast (and gateway)
        if len(spec.pods) > capacity:
            problems.append(
                f"{src}: nodes[{i}].pods: {len(spec.pods)} pods do not fit {spec.name}'s pod CIDR {cidr} "
                f"({capacity} addresses for pods); use a smaller "
                + ("networking.blockSize" if blocks else "networking.nodeCIDRMaskSize")
            )
            continue
        hosts = _hosts(cidr, skip=skip)  # type: ignore[type-var]
        cidr6 = pod_cidrs6[i]
        if cidr6 is not None and len(spec.pods) > cidr6.num_addresses - 2 - skip:
            problems.append(f"{src}: nodes[{i}].pods: {len(spec.pods)} pods do not fit {spec.name}'s IPv6 pod CIDR {cidr6}")
            continue
        hosts6 = _hosts(cidr6, skip=skip) if cidr6 is not None else None
        nodes.append(NodeAddresses(segment=segments[i], ip=node_ips[i], pod_cidr=cidr,
                                   pod_ips=tuple(next(hosts) for _ in spec.pods), ip6=node_ips6[i], pod_cidr6=cidr6,
                                   pod_ips6=None if hosts6 is None else tuple(next(hosts6) for _ in spec.pods)))
    if problems:
        raise LabError(*problems)
    return Allocation(tuple(nodes), tuple(warnings))


def cluster_ips(scenario: Scenario, problems: list[str]) -> list[IPv4Address | None]:
    """Each Service's ClusterIP: the one given (kube-dns's, the CIDR's tenth), None for a headless
    Service, else the next free one in order from the Service CIDR's .2."""
    cidr = scenario.service_cidr
    given: dict[IPv4Address, int] = {}
    for i, spec in enumerate(scenario.services):
        ip = spec.cluster_ip
        if ip is None:
            continue
        if not in_service_range(cidr, ip):
            problems.append(f"{scenario.source}: services[{i}].clusterIP: {ip} is not in the range "
                            f"{cidr} (.1 is the `kubernetes` Service's)")
        elif ip in given:
            problems.append(f"{scenario.source}: services[{i}].clusterIP: {ip}: provided IP is already allocated")
        given[ip] = i
    wanted = sum(1 for s in scenario.services if s.cluster_ip is None and not s.headless)
    if wanted + len(given) > cidr.num_addresses - 3:
        problems.append(f"{scenario.source}: networking.serviceCIDR: {cidr} has no room for {len(scenario.services)} Services")
        return []
    free = (a for a in (cidr.network_address + 2 + i for i in range(cidr.num_addresses - 3)) if a not in given)
    return [None if s.headless else s.cluster_ip if s.cluster_ip is not None else next(free)
            for s in scenario.services]


def in_service_range(cidr: IPv4Network, ip: IPv4Address) -> bool:
    """Whether a ClusterIP may be given: in the Service CIDR, not its first two addresses (.1 is
    the `kubernetes` Service's) nor its broadcast address."""
    return ip in cidr and ip not in (cidr.network_address, cidr.broadcast_address, cidr.network_address + 1)


def node_ports(specs: tuple[ServiceSpec, ...]) -> tuple[ServiceSpec, ...]:
    """A NodePort Service's ports without a nodePort get the lowest free one (kube-apiserver
    picks at random, preferring the range's upper band; in order is what a lab can predict). The
    model has refused a given one that is out of range or taken twice."""
    taken = {(p.protocol, p.node_port) for s in specs for p in s.ports if p.node_port is not None}
    low, high = NODE_PORT_RANGE
    out = []
    for spec in specs:
        ports = []
        for p in spec.ports:
            if spec.node_port and p.node_port is None:
                found = next((n for n in range(low, high + 1) if (p.protocol, n) not in taken), None)
                if found is None:
                    raise LabError("services: no free nodePort left")
                taken.add((p.protocol, found))
                p = dataclasses.replace(p, node_port=found)
            ports.append(p)
        out.append(dataclasses.replace(spec, ports=tuple(ports)))
    return tuple(out)


def _hosts(net: Net, skip: int = 0) -> Iterator:  # type: ignore[type-arg]
    """Usable host addresses of `net` in order, after skipping the first `skip` of them (IPv6
    has no broadcast address, but the last one is left out too, as host-local does)."""
    first = int(net.network_address) + 1 + skip
    last = int(net.broadcast_address) - 1
    kind = IPv4Address if isinstance(net, IPv4Network) else IPv6Address
    for value in range(first, last + 1):
        yield kind(value)


def _node_segments(scenario: Scenario, problems: list[str]) -> list[Segment]:
    """Each node's segment: the one it names, the one holding its IP, or the first."""
    by_name = {s.name: s for s in scenario.segments}
    out = []
    for i, spec in enumerate(scenario.nodes):
        segment = scenario.segments[0]
        if spec.segment is not None:
            if spec.segment in by_name:
                segment = by_name[spec.segment]
            else:
                problems.append(f"{scenario.source}: nodes[{i}].segment: no segment {spec.segment!r} "
                                f"(segments: {', '.join(by_name)})")
        elif spec.ip is not None:
            segment = next((s for s in scenario.segments if s.cidr.version == 4 and spec.ip in s.cidr), segment)  # type: ignore[operator]
        out.append(segment)
    return out


def _node_ips(scenario: Scenario, segments: list[Segment], given: list[IPv4Address | IPv6Address | None],
              router: bool, problems: list[str]) -> list[IPv4Address | IPv6Address]:
    """Each node's address of the lab's first family: given, or its segment's next from .2."""
    src = scenario.source
    taken: dict[IPv4Address | IPv6Address, str] = {}
    for i, spec in enumerate(scenario.nodes):
        address = given[i]
        if address is None:
            continue
        key = f"{src}: nodes[{i}].ip"
        net = segments[i].cidr
        where = "the underlay" if len(scenario.segments) == 1 else f"segment {segments[i].name}"
        if address.version != net.version or address not in net:  # type: ignore[operator]
            problems.append(f"{key}: {address} is outside {where} {net}")
        elif address in (net.network_address, net.broadcast_address):
            problems.append(f"{key}: {address} is the underlay's network or broadcast address")
        elif address in taken:
            problems.append(f"{key}: {address} is already {taken[address]}'s address")
        elif address == net.network_address + 1 and router:
            problems.append(f"{key}: {address} is the address of {where}'s router")
        taken[address] = spec.name
    free = {s.name: (ip for ip in _hosts(s.cidr, skip=1) if ip not in taken) for s in scenario.segments}  # type: ignore[type-var]
    ips: list[IPv4Address | IPv6Address] = []
    left_out: dict[str, list[str]] = {}
    for i, spec in enumerate(scenario.nodes):
        ip = given[i] if given[i] is not None else next(free[segments[i].name], None)
        if ip is None:
            left_out.setdefault(str(segments[i].cidr), []).append(spec.name)
            ip = segments[i].cidr.network_address
        ips.append(ip)
    for segment_cidr, nodes in left_out.items():  # one line per segment, not one per node
        problems.append(f"{src}: nodes: the underlay {segment_cidr} has no address left for {len(nodes)} nodes "
                        f"({nodes[0]}{' … ' + nodes[-1] if len(nodes) > 1 else ''}); use a larger underlay")
    return ips


def _families_given(scenario: Scenario, v6only: bool, problems: list[str]) -> None:
    """A node's addresses and pod CIDRs must be of the lab's families."""
    has6 = v6only or scenario.cluster_cidr6 is not None
    for i, spec in enumerate(scenario.nodes):
        key = f"{scenario.source}: nodes[{i}]"
        if v6only and spec.ip is not None:
            problems.append(f"{key}.ip: {spec.ip} is outside the underlay {scenario.segments[0].cidr} (an IPv6-only lab)")
        if v6only and spec.pod_cidr is not None:
            problems.append(f"{key}.podCIDR: {spec.pod_cidr} is IPv4, but the lab is IPv6-only")
        if not has6 and spec.ip6 is not None:
            problems.append(f"{key}.ip: {spec.ip6} is IPv6, but the lab has no IPv6 (networking.clusterCIDR)")
        if not has6 and spec.pod_cidr6 is not None:
            problems.append(f"{key}.podCIDR: {spec.pod_cidr6} is IPv6, but the lab has no IPv6 (networking.clusterCIDR)")


def _node_ips6(scenario: Scenario, segments: list[Segment], problems: list[str]) -> list[IPv6Address | None]:
    """IPv6 underlay addresses, as for IPv4: given, or each segment's next from ::2."""
    taken: set[IPv6Address] = set()
    for i, spec in enumerate(scenario.nodes):
        net = segments[i].cidr6
        if spec.ip6 is None:
            continue
        key = f"{scenario.source}: nodes[{i}].ips[1]"
        if net is None:
            problems.append(f"{key}: {spec.ip6}: the underlay has no IPv6 network")
        elif spec.ip6 not in net:
            problems.append(f"{key}: {spec.ip6} is outside the underlay's IPv6 network {net}")
        elif spec.ip6 in (net.network_address, net.network_address + 1):
            problems.append(f"{key}: {spec.ip6} is the network's own address or its router's")
        elif spec.ip6 in taken:
            problems.append(f"{key}: {spec.ip6} is already another node's address")
        taken.add(spec.ip6)
    free = {s.name: (ip for ip in _hosts(s.cidr6, skip=1) if ip not in taken) for s in scenario.segments
            if s.cidr6 is not None}
    out: list[IPv6Address | None] = []
    for i, spec in enumerate(scenario.nodes):
        if spec.ip6 is not None or segments[i].cidr6 is None:
            out.append(spec.ip6)
        else:
            out.append(next(free[segments[i].name], None))
    return out


def _pod_cidrs(scenario: Scenario, cluster: Net, mask: int, given: list[Net | None], field: str,
               problems: list[str], warnings: list[str]) -> list[Net]:
    """One family's node CIDRs: the given ones checked, the rest from the cluster CIDR in order."""
    src = scenario.source
    cluster_key = "networking.clusterCIDR" if isinstance(cluster, IPv4Network) else "networking.clusterCIDR[1]"
    for segment in scenario.segments:
        underlay = segment.cidr if isinstance(cluster, IPv4Network) else segment.cidr6
        if underlay is not None and cluster.overlaps(underlay):  # type: ignore[arg-type]
            problems.append(f"{src}: {cluster_key}: {cluster} overlaps the underlay {underlay}")
    smallest = 30 if isinstance(cluster, IPv4Network) else 126
    explicit: list[tuple[int, Net]] = []
    for i, spec in enumerate(scenario.nodes):
        pod_cidr = given[i]
        if pod_cidr is None:
            continue
        key = f"{src}: nodes[{i}].{field}"
        if not pod_cidr.subnet_of(cluster):  # type: ignore[arg-type]
            problems.append(f"{key}: {pod_cidr} is outside the cluster CIDR {cluster}")
        elif pod_cidr.prefixlen > smallest:
            problems.append(f"{key}: {pod_cidr} is too small for a gateway and a pod (use /{smallest} or larger)")
        for j, other in explicit:
            if pod_cidr.overlaps(other):  # type: ignore[arg-type]
                other_name = scenario.nodes[j].name
                message = f"{pod_cidr} overlaps {other_name}'s {other}"
                if scenario.allow_overlap:
                    warnings.append(
                        f"{spec.name} and {other_name} share pod addresses ({message}): "
                        "pods on one will not reach the same addresses on the other"
                    )
                else:
                    problems.append(f"{key}: {message} (set allowOverlap: true only to study the collision)")
        explicit.append((i, pod_cidr))

    candidates = cluster.subnets(new_prefix=mask)
    cidrs: list[Net] = []
    left_out: list[str] = []
    for i, spec in enumerate(scenario.nodes):
        pod_cidr = given[i]
        if pod_cidr is not None:
            cidrs.append(pod_cidr)
            continue
        for candidate in candidates:
            if not any(candidate.overlaps(c) for _, c in explicit):  # type: ignore[arg-type]
                cidrs.append(candidate)
                break
        else:
            left_out.append(spec.name)
            cidrs.append(cluster)
    if left_out:
        problems.append(f"{src}: nodes: the cluster CIDR {cluster} has no /{mask} left for {len(left_out)} nodes "
                        f"({left_out[0]}{' … ' + left_out[-1] if len(left_out) > 1 else ''}); use a larger "
                        "clusterCIDR or a longer mask")
    return cidrs
