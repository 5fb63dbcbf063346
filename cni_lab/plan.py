"""Lab → an ordered, pure list of kernel objects to create.

A plan is a value: it prints (each step as the `ip` command a learner would type), compares and
tests without root. The kernel layer applies it; nothing here touches the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Union

from cni_lab import names
from cni_lab.ipam import Lab


@dataclass(frozen=True)
class CreateNetns:
    netns: str

    def describe(self) -> str:
        return f"ip netns add {self.netns}"


@dataclass(frozen=True)
class SetSysctl:
    netns: str
    key: str  # path under /proc/sys, e.g. net/ipv4/ip_forward
    value: str

    def describe(self) -> str:
        return f"ip netns exec {self.netns} sysctl -w {self.key.replace('/', '.')}={self.value}"


@dataclass(frozen=True)
class AddBridge:
    netns: str
    ifname: str
    mtu: int = 1500

    def describe(self) -> str:
        return f"ip -n {self.netns} link add {self.ifname} mtu {self.mtu} type bridge"


@dataclass(frozen=True)
class AddVeth:
    """A veth pair made inside `netns` with its peer created straight into `peer_netns`:
    neither end ever exists in the root namespace."""

    netns: str
    ifname: str
    peer_netns: str
    peer_ifname: str
    mtu: int = 1500

    def describe(self) -> str:
        return (
            f"ip -n {self.netns} link add {self.ifname} mtu {self.mtu} type veth "
            f"peer name {self.peer_ifname} netns {self.peer_netns}"
        )


@dataclass(frozen=True)
class LinkUp:
    netns: str
    ifname: str
    master: str | None = None

    def describe(self) -> str:
        master = f" master {self.master}" if self.master else ""
        return f"ip -n {self.netns} link set {self.ifname}{master} up"


@dataclass(frozen=True)
class AddAddress:
    netns: str
    ifname: str
    address: IPv4Interface

    def describe(self) -> str:
        return f"ip -n {self.netns} addr add {self.address} dev {self.ifname}"


@dataclass(frozen=True)
class AddRoute:
    netns: str
    dst: IPv4Network  # 0.0.0.0/0 for the default route
    dev: str
    via: IPv4Address | None = None
    onlink: bool = False

    def describe(self) -> str:
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst)
        via = f" via {self.via}" if self.via else ""
        onlink = " onlink" if self.onlink else ""
        return f"ip -n {self.netns} route add {dst}{via} dev {self.dev}{onlink}"


Step = Union[CreateNetns, SetSysctl, AddBridge, AddVeth, LinkUp, AddAddress, AddRoute]
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")


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
    from cni_lab.dataplanes import get

    dataplane = get(lab.dataplane)
    underlay_ns = names.underlay_netns(lab.name)
    steps: list[Step] = [
        CreateNetns(underlay_ns),
        LinkUp(underlay_ns, "lo"),
        AddBridge(underlay_ns, names.UNDERLAY_BRIDGE),
        LinkUp(underlay_ns, names.UNDERLAY_BRIDGE),
    ]
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
            AddVeth(ns, names.NODE_UPLINK, underlay_ns, port),
            LinkUp(underlay_ns, port, master=names.UNDERLAY_BRIDGE),
            AddAddress(ns, names.NODE_UPLINK, IPv4Interface(f"{node.ip}/{lab.underlay.prefixlen}")),
            LinkUp(ns, names.NODE_UPLINK),
        ]
        steps += dataplane.node_steps(lab, node)
        for pod in node.pods:
            pod_ns = names.pod_netns(lab.name, node.name, pod.name)
            steps += [CreateNetns(pod_ns), LinkUp(pod_ns, "lo")]
            steps += dataplane.pod_steps(lab, node, pod)
    steps += dataplane.cluster_steps(lab)
    return Plan(lab=lab, steps=tuple(steps))
