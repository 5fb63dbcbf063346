"""Lab → an ordered, pure list of kernel objects to create.

A plan is a value: it prints (each step as the `ip` command a learner would type), compares and
tests without root. The kernel layer applies it; nothing here touches the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface

from cni_lab import dataplanes, names
from cni_lab.ipam import Lab
from cni_lab.steps import DEFAULT_ROUTE, AddAddress, AddBridge, AddRoute, AddVeth, CreateNetns, LinkUp, SetSysctl, Step


@dataclass(frozen=True)
class Plan:
    lab: Lab
    steps: tuple[Step, ...]

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(s.netns for s in self.steps if isinstance(s, CreateNetns))

    def describe(self) -> list[str]:
        return [s.describe() for s in self.steps]


def build(lab: Lab) -> Plan:
    """The whole lab: underlay switch, nodes on it, pods in nodes, then the data plane's routes."""
    dataplane = dataplanes.get(lab.dataplane)
    dataplane.validate(lab)
    underlay_ns = names.underlay_netns(lab.name)
    mtu = lab.scenario.underlay_mtu
    steps: list[Step] = [CreateNetns(underlay_ns), LinkUp(underlay_ns, "lo")]
    for segment in lab.segments:
        bridge = names.segment_bridge(segment.name)
        steps += [AddBridge(underlay_ns, bridge, mtu), LinkUp(underlay_ns, bridge)]
    if lab.has_router:
        steps += _router(lab)
    for node in lab.nodes:
        ns = names.node_netns(lab.name, node.name)
        port = names.underlay_port(node.name)
        steps += [
            CreateNetns(ns),
            LinkUp(ns, "lo"),
            # A node routes its pods' traffic: the one sysctl every data plane needs.
            SetSysctl(ns, "net/ipv4/ip_forward", "1"),
            # Answer every undeliverable packet with an ICMP error instead of a rate-limited few,
            # so `check` and `trace` say "unreachable" for every such pair, not for some.
            SetSysctl(ns, "net/ipv4/icmp_ratelimit", "0"),
            AddVeth(underlay_ns, port, ns, names.NODE_UPLINK, mtu, master=names.segment_bridge(node.segment.name), up=True),
            AddAddress(ns, names.NODE_UPLINK, node.underlay),
            LinkUp(ns, names.NODE_UPLINK),
        ]
        if lab.has_router:
            # Like any machine on a routed network, a node's default gateway is its segment's router.
            steps.append(AddRoute(ns, DEFAULT_ROUTE, names.NODE_UPLINK, via=node.router))
        steps += dataplane.node_steps(lab, node)
        for pod in node.pods:
            pod_ns = names.pod_netns(lab.name, node.name, pod.name)
            steps += [CreateNetns(pod_ns), LinkUp(pod_ns, "lo")]
            steps += dataplane.pod_steps(lab, node, pod)
    steps += dataplane.cluster_steps(lab)
    return Plan(lab=lab, steps=tuple(steps))


def _router(lab: Lab) -> list[Step]:
    """The router joining the segments (a ToR/spine, a cloud VPC router): one leg per segment at
    its first address. `fabric` adds the pod routes a fabric controller would program here."""
    ns = names.router_netns(lab.name)
    underlay_ns = names.underlay_netns(lab.name)
    steps: list[Step] = [
        CreateNetns(ns),
        LinkUp(ns, "lo"),
        SetSysctl(ns, "net/ipv4/ip_forward", "1"),
        SetSysctl(ns, "net/ipv4/icmp_ratelimit", "0"),
        # Forward as programmed; do not tell nodes about shortcuts on their own segment.
        SetSysctl(ns, "net/ipv4/conf/all/send_redirects", "0"),
    ]
    for segment in lab.segments:
        port = names.router_port(segment.name)
        address = IPv4Interface(f"{segment.cidr.network_address + 1}/{segment.cidr.prefixlen}")
        steps += [
            AddVeth(underlay_ns, port, ns, segment.name, lab.scenario.underlay_mtu,
                    master=names.segment_bridge(segment.name), up=True),
            AddAddress(ns, segment.name, address),
            LinkUp(ns, segment.name),
        ]
    return steps
