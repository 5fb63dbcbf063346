"""Lab → an ordered, pure list of kernel objects to create.

A plan is a value: it prints (each step as the `ip` command a learner would type), compares and
tests without root. The kernel layer applies it; nothing here touches the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Interface, ip_interface
from typing import Sequence

from cni_lab import dataplanes, dns_records, names
from cni_lab.rulesets import kubeproxy, masquerade, netpol
from cni_lab.errors import LabError
from cni_lab.cluster import HeadlessService, Lab, Service
from cni_lab.dataplanes.capabilities import Refused
from cni_lab.model import OUTSIDE_NETWORK
from cni_lab.steps import (
    DEFAULT_ROUTE6,
    AddAddress,
    AddBridge,
    AddRoute,
    AddVeth,
    CreateNetns,
    LinkUp,
    LoadNftables,
    SetHairpin,
    SetSysctl,
    StartDnsmasq,
    Step,
    WriteFile,
    WriteResolvConf,
    default_route,
)


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
    if lab.has_ipv6 and lab.capabilities.ipv6 is not None:
        raise LabError(f"{lab.scenario.source}: {lab.capabilities.ipv6.reason}")
    underlay_ns = names.underlay_netns(lab.name)
    mtu = lab.scenario.underlay_mtu
    steps: list[Step] = _netns(lab, underlay_ns)
    for segment in lab.segments:
        bridge = names.segment_bridge(segment.name)
        steps += [AddBridge(underlay_ns, bridge, mtu), LinkUp(underlay_ns, bridge)]
    if lab.has_router:
        steps += _router(lab)
    for node in lab.nodes:
        ns = names.node_netns(lab.name, node.name)
        port = names.underlay_port(node.name)
        steps += [
            *_netns(lab, ns),
            # A node routes its pods' traffic: the one sysctl every data plane needs.
            SetSysctl(ns, "net/ipv4/ip_forward", "1"),
            # Answer every undeliverable packet with an ICMP error instead of a rate-limited few,
            # so `check` and `trace` say "unreachable" for every such pair, not for some.
            SetSysctl(ns, "net/ipv4/icmp_ratelimit", "0"),
            AddVeth(underlay_ns, port, ns, names.NODE_UPLINK, mtu, master=names.segment_bridge(node.segment.name), up=True),
            AddAddress(ns, names.NODE_UPLINK, node.underlay),
            LinkUp(ns, names.NODE_UPLINK),
        ]
        if lab.has_ipv6:
            steps.append(SetSysctl(ns, "net/ipv6/conf/all/forwarding", "1"))
        if node.underlay6 is not None:
            steps.append(AddAddress(ns, names.NODE_UPLINK, node.underlay6))
        if lab.has_router:
            # Like any machine on a routed network, a node's default gateway is its segment's router.
            steps.append(AddRoute(ns, default_route(node.router.version), names.NODE_UPLINK, via=node.router))
            if node.router6 is not None and node.underlay6 is not None:
                steps.append(AddRoute(ns, DEFAULT_ROUTE6, names.NODE_UPLINK, via=node.router6))
        steps += dataplane.node_steps(lab, node)
        for pod in node.pods:
            pod_ns = names.pod_netns(lab.name, node.name, pod.name)
            steps += _netns(lab, pod_ns)
            steps += dataplane.pod_steps(lab, node, pod)
    steps += dataplane.cluster_steps(lab)
    if lab.scenario.outside_ip is not None and lab.scenario.masquerade and lab.capabilities.masquerade != "cilium-bpf":
        for node in lab.nodes:
            steps.append(LoadNftables(names.node_netns(lab.name, node.name), *masquerade.rules(lab, node)))
    if lab.services:
        steps += service_steps(lab, lab.services)
        if lab.capabilities.sets_hairpin:  # pods on cni0: hairpin for their Services
            steps += [SetHairpin(names.node_netns(lab.name, n.name), names.pod_host_veth(lab.name, n.name, p.name))
                      for n in lab.nodes for p in n.pods]
    if lab.dns_service is not None:
        steps += dns_steps(lab, lab.services, lab.headless_services)
        steps += [WriteResolvConf(names.pod_netns(lab.name, p.node, p.name), dns_records.resolv_conf(lab, p))
                  for p in lab.pods]
    if lab.policies:
        steps += policy_steps(lab)
    return Plan(lab=lab, steps=tuple(steps))


def dns_steps(lab: Lab, services: Sequence[Service], headless: Sequence[HeadlessService]) -> list[Step]:
    """kube-dns with the records of these Services: dnsmasq's config written and dnsmasq (re)started
    in the DNS pod. Applied again with other endpoints (a pod taken down), the records follow."""
    server = dns_records.dns_pod(lab)
    if server is None:
        return []
    return [WriteFile(names.pod_netns(lab.name, server.node, server.name), names.dns_file(lab.name, "conf"),
                      dns_records.dnsmasq_conf(lab, services, headless)),
            StartDnsmasq(names.pod_netns(lab.name, server.node, server.name), names.dns_file(lab.name, "conf"),
                         names.dns_file(lab.name, "pid"), names.dns_file(lab.name, "log"))]


def service_steps(lab: Lab, services: Sequence[Service]) -> list[Step]:
    """Every node's share of these Services: kube-proxy's nftables table, or the data plane's
    own maps where it balances them itself. Applied again, they replace what the nodes hold
    (a fault's endpoints held back, then healed)."""
    if lab.capabilities.services == "kube-proxy-nftables":
        return [LoadNftables(names.node_netns(lab.name, n.name), kubeproxy.TABLE, kubeproxy.ruleset(lab, services, n))
                for n in lab.nodes]
    plane = dataplanes.get(lab.dataplane)
    if not isinstance(plane, dataplanes.BalancesServices):
        raise LabError(f"{lab.scenario.source}: dataplane {lab.dataplane} declares it balances Services but has no "
                       "service_steps")
    return plane.service_steps(lab, services)


def policy_steps(lab: Lab) -> list[Step]:
    """NetworkPolicy on every node (netpol.py), after its pods exist. Pods on one bridge
    reach each other without routing: br_netfilter shows that traffic to the forward hook too."""
    if isinstance(lab.capabilities.policy, Refused):
        raise LabError(f"{lab.scenario.source}: {lab.capabilities.policy.reason}")
    if lab.capabilities.policy != "node-nftables":
        plane = dataplanes.get(lab.dataplane)
        if not isinstance(plane, dataplanes.EnforcesPolicy):
            raise LabError(f"{lab.scenario.source}: dataplane {lab.dataplane} declares it enforces policies but has "
                           "no policy_steps")
        return plane.policy_steps(lab)
    steps: list[Step] = []
    for node in lab.nodes:
        ns = names.node_netns(lab.name, node.name)
        if lab.capabilities.pods_meet == "cni0":  # only bridged traffic needs br_netfilter (Calico's is routed)
            steps.append(SetSysctl(ns, "net/bridge/bridge-nf-call-iptables", "1"))
            if lab.has_ipv6:
                steps.append(SetSysctl(ns, "net/bridge/bridge-nf-call-ip6tables", "1"))
        steps.append(LoadNftables(ns, netpol.TABLE, netpol.ruleset(lab, node)))
    return steps


def _netns(lab: Lab, ns: str) -> list[Step]:
    """A namespace with its loopback up; in a dual-stack lab, its links skip duplicate address
    detection from the start (their link-local addresses too), so no IPv6 packet waits ~1 s
    for DAD after `up`: every address in a lab is the lab's own choice, none can collide."""
    steps: list[Step] = [CreateNetns(ns), LinkUp(ns, "lo")]
    if lab.has_ipv6:
        steps.append(SetSysctl(ns, "net/ipv6/conf/default/accept_dad", "0"))
    return steps


def _router(lab: Lab) -> list[Step]:
    """The router joining the segments (a ToR/spine, a cloud VPC router): one leg per segment at
    its first address. `fabric` adds the pod routes a fabric controller would program here."""
    ns = names.router_netns(lab.name)
    underlay_ns = names.underlay_netns(lab.name)
    steps: list[Step] = [
        *_netns(lab, ns),
        SetSysctl(ns, "net/ipv4/ip_forward", "1"),
        SetSysctl(ns, "net/ipv4/icmp_ratelimit", "0"),
        # Forward as programmed; do not tell nodes about shortcuts on their own segment.
        SetSysctl(ns, "net/ipv4/conf/all/send_redirects", "0"),
    ]
    if lab.has_ipv6:
        steps.append(SetSysctl(ns, "net/ipv6/conf/all/forwarding", "1"))
    if lab.scenario.outside_ip is not None:  # the internet, behind the router
        outside_ns = names.outside_netns(lab.name)
        net = OUTSIDE_NETWORK
        steps += [
            *_netns(lab, outside_ns),
            AddVeth(ns, names.OUTSIDE_LINK, outside_ns, "eth0", lab.scenario.underlay_mtu, up=True),
            AddAddress(ns, names.OUTSIDE_LINK, ip_interface(f"{net.network_address + 1}/{net.prefixlen}")),
            AddAddress(outside_ns, "eth0", ip_interface(f"{lab.scenario.outside_ip}/{net.prefixlen}")),
            LinkUp(outside_ns, "eth0"),
            AddRoute(outside_ns, default_route(4), "eth0", via=net.network_address + 1),
        ]
    for segment in lab.segments:
        port = names.router_port(segment.name)
        address = ip_interface(f"{segment.cidr.network_address + 1}/{segment.cidr.prefixlen}")
        steps += [
            AddVeth(underlay_ns, port, ns, segment.name, lab.scenario.underlay_mtu,
                    master=names.segment_bridge(segment.name), up=True),
            AddAddress(ns, segment.name, address),
        ]
        if segment.cidr6 is not None and lab.dual_stack:
            steps.append(AddAddress(ns, segment.name, IPv6Interface(f"{segment.cidr6.network_address + 1}/{segment.cidr6.prefixlen}")))
        steps.append(LinkUp(ns, segment.name))
    return steps
