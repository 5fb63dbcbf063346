"""The kinds of step a plan is made of: each a frozen value naming one kernel object (or file, or
daemon), whose `describe()` is the command a learner would type to make it by hand.

Below both the plan (which orders them) and the data planes (which choose them), so neither
imports the other's module for them; the kernel layer (kernel/apply.py) makes each real.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Union


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
    neither end ever exists in the root namespace. The local end may be plugged into a bridge
    and brought up in the same netlink message (one round trip instead of three)."""

    netns: str
    ifname: str
    peer_netns: str
    peer_ifname: str
    mtu: int = 1500
    master: str | None = None
    up: bool = False

    def describe(self) -> str:
        master = f" master {self.master}" if self.master else ""
        up = " up" if self.up else ""
        return (
            f"ip -n {self.netns} link add {self.ifname} mtu {self.mtu}{master}{up} type veth "
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
    scope_link: bool = False

    def describe(self) -> str:
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst.network_address if self.dst.prefixlen == 32 else self.dst)
        via = f" via {self.via}" if self.via else ""
        onlink = " onlink" if self.onlink else ""
        scope = " scope link" if self.scope_link else ""
        return f"ip -n {self.netns} route add {dst}{via} dev {self.dev}{scope}{onlink}"


@dataclass(frozen=True)
class AddVxlan:
    netns: str
    ifname: str
    vni: int
    port: int
    local: IPv4Address
    dev: str  # the underlay interface the VTEP sends from
    mac: str
    mtu: int
    learning: bool = False

    def describe(self) -> str:
        learning = "" if self.learning else " nolearning"
        return (
            f"ip -n {self.netns} link add {self.ifname} address {self.mac} mtu {self.mtu} type vxlan "
            f"id {self.vni} local {self.local} dev {self.dev} dstport {self.port}{learning}"
        )


@dataclass(frozen=True)
class AddNeighbour:
    """A permanent ARP entry: what flannel writes for each remote VTEP instead of letting ARP ask."""

    netns: str
    ifname: str
    ip: IPv4Address
    mac: str

    def describe(self) -> str:
        return f"ip -n {self.netns} neigh add {self.ip} lladdr {self.mac} dev {self.ifname} nud permanent"


@dataclass(frozen=True)
class AddFdb:
    """A forwarding entry of a VXLAN device: frames for `mac` are sent to the VTEP at `dst`."""

    netns: str
    ifname: str
    mac: str
    dst: IPv4Address

    def describe(self) -> str:
        return f"bridge -n {self.netns} fdb add {self.mac} dev {self.ifname} dst {self.dst} self permanent"


@dataclass(frozen=True)
class WriteFile:
    """A file under the lab's state folder (`path` is relative to it), e.g. flannel's subnet.env."""

    netns: str  # the namespace the file belongs to (for grouping; the file lives on the host's /run)
    path: str
    content: str

    def describe(self) -> str:
        return f"write <lab state>/{self.path}"


@dataclass(frozen=True)
class StartBird:
    """Start BIRD in a node namespace with the config, socket, pid file and log in `folder`
    (relative to the lab's state folder). BIRD daemonizes itself: `up` returns, BIRD runs on."""

    netns: str
    folder: str

    def describe(self) -> str:
        return f"ip netns exec {self.netns} bird -c <lab state>/{self.folder}/bird.conf -s <…>/bird.ctl -P <…>/bird.pid"


@dataclass(frozen=True)
class WaitBgp:
    """Wait until the node's BGP sessions are Established and the kernel has learned every block."""

    netns: str
    node: str
    folder: str
    peers: tuple[str, ...]  # BIRD protocol names, one per peer
    learned: tuple[IPv4Network, ...]  # remote blocks that must appear as `proto bird` routes

    def describe(self) -> str:
        return f"birdc -s <lab state>/{self.folder}/bird.ctl show protocols  # until {len(self.peers)} sessions are Established"


@dataclass(frozen=True)
class CniAdd:
    """Act as the container runtime: CNI ADD for one pod, each plugin of the node's network
    configuration list in turn, executed inside the node's namespace (where the bridge it makes
    belongs) with CNI_NETNS the pod's namespace. `conflist` is relative to the lab's state folder."""

    netns: str  # the node's namespace
    pod_netns: str
    container_id: str
    ifname: str
    conflist: str
    result: str  # where the ADD result is recorded, relative to the lab's state folder
    cni_path: str
    expect_ip: IPv4Address | None = None  # the address the lab's IPAM model gives the pod

    def describe(self) -> str:
        return (
            f"ip netns exec {self.netns} env CNI_COMMAND=ADD CNI_CONTAINERID={self.container_id} "
            f"CNI_NETNS=/run/netns/{self.pod_netns} CNI_IFNAME={self.ifname} CNI_PATH={self.cni_path} "
            f"<plugin> < <lab state>/{self.conflist}"
        )


Step = Union[CreateNetns, SetSysctl, AddBridge, AddVeth, LinkUp, AddAddress, AddRoute, AddVxlan, AddNeighbour,
             AddFdb, WriteFile, StartBird, WaitBgp, CniAdd]
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
