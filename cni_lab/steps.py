"""The kinds of step a plan is made of: each a frozen value naming one kernel object (or file, or
daemon), whose `describe()` is the command a learner would type to make it by hand.

Below both the plan (which orders them) and the data planes (which choose them), so neither
imports the other's module for them; executor/handlers.py makes each real through kernel/.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
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
    mac: str | None = None  # the local end's MAC (Calico's ee:ee:ee:ee:ee:ee); None: the kernel's

    def describe(self) -> str:
        master = f" master {self.master}" if self.master else ""
        up = " up" if self.up else ""
        mac = f" address {self.mac}" if self.mac else ""
        return (
            f"ip -n {self.netns} link add {self.ifname}{mac} mtu {self.mtu}{master}{up} type veth "
            f"peer name {self.peer_ifname} netns {self.peer_netns}"
        )


@dataclass(frozen=True)
class LinkUp:
    netns: str
    ifname: str
    master: str | None = None
    arp: bool = True  # False: IFF_NOARP, as Cilium sets on cilium_host and cilium_net

    def describe(self) -> str:
        master = f" master {self.master}" if self.master else ""
        arp = "" if self.arp else " arp off"
        return f"ip -n {self.netns} link set {self.ifname}{master}{arp} up"


@dataclass(frozen=True)
class AddAddress:
    """An address on a link. IPv6 ones skip duplicate address detection (`nodad`), as the CNI
    plugins add them, so nothing waits for DAD."""

    netns: str
    ifname: str
    address: IPv4Interface | IPv6Interface

    def describe(self) -> str:
        nodad = " nodad" if self.address.version == 6 else ""
        return f"ip -n {self.netns} addr add {self.address} dev {self.ifname}{nodad}"


@dataclass(frozen=True)
class AddRoute:
    netns: str
    dst: IPv4Network | IPv6Network  # 0.0.0.0/0 (::/0) for the default route
    dev: str
    via: IPv4Address | IPv6Address | None = None
    onlink: bool = False
    scope_link: bool = False
    src: IPv4Address | IPv6Address | None = None  # the preferred source of what the node itself sends this way
    mtu: int | None = None  # a route MTU (the overlay's, where the device's own is larger)
    proto: int | None = None  # the route's protocol; None: boot, what `ip route add` leaves (80: Felix's)

    def describe(self) -> str:
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst.network_address if self.dst.prefixlen == 32 else self.dst)
        via = f" via {self.via}" if self.via else ""
        onlink = " onlink" if self.onlink else ""
        scope = " scope link" if self.scope_link else ""
        src = f" src {self.src}" if self.src else ""
        mtu = f" mtu {self.mtu}" if self.mtu else ""
        family = " -6" if self.dst.version == 6 and self.dst.prefixlen == 0 else ""
        proto = f" proto {self.proto}" if self.proto is not None else ""
        return f"ip{family} -n {self.netns} route add {dst}{via} dev {self.dev}{proto}{scope}{onlink}{src}{mtu}"


@dataclass(frozen=True)
class AddBlackhole:
    """A blackhole route: traffic to addresses of a node's own IPAM block that no pod holds stops
    here instead of following the default route (Felix's, proto 80, in Calico's tunnel modes)."""

    netns: str
    dst: IPv4Network | IPv6Network
    proto: int | None = None  # None: boot

    def describe(self) -> str:
        proto = f" proto {self.proto}" if self.proto is not None else ""
        return f"ip -n {self.netns} route add blackhole {self.dst}{proto}"


@dataclass(frozen=True)
class AddIpip:
    """The node's IPIP device: `tunl0`, the fallback device the ipip module gives every namespace,
    which Felix sets up (MTU, address, up); made here if the module did not make it already."""

    netns: str
    ifname: str
    mtu: int

    def describe(self) -> str:
        return f"ip -n {self.netns} link add {self.ifname} mtu {self.mtu} type ipip"


@dataclass(frozen=True)
class AddVxlan:
    netns: str
    ifname: str
    vni: int
    port: int
    local: IPv4Address | IPv6Address
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
class AddFlowVxlan:
    """A flow-based (`external`) VXLAN device: no fixed VNI or remote; each packet's tunnel key,
    set by a BPF program, says where it goes. Cilium's cilium_vxlan."""

    netns: str
    ifname: str
    port: int
    mtu: int

    def describe(self) -> str:
        return f"ip -n {self.netns} link add {self.ifname} mtu {self.mtu} type vxlan external dstport {self.port}"


@dataclass(frozen=True)
class LoadBpf:
    """Load the data plane's BPF object (compiled from `source`, shipped with cni-lab) and pin
    its programs and maps in `pin`, a folder of bpffs that carries the lab's name."""

    netns: str  # the node whose programs these are (maps are per node)
    pin: str
    source: str  # a C file of cni_lab/dataplanes/

    def describe(self) -> str:
        obj = self.source.removesuffix(".c") + ".o"
        return f"bpftool prog loadall <cache>/{obj} {self.pin} pinmaps {self.pin}  # clang -O2 -g -target bpf {self.source}"


@dataclass(frozen=True)
class AttachBpf:
    """A pinned program at the tc hook of a device (a `clsact` qdisc, the program direct-action)."""

    netns: str
    ifname: str
    direction: str  # ingress | egress
    pin: str
    program: str

    def describe(self) -> str:
        return (f"tc -n {self.netns} qdisc add dev {self.ifname} clsact; tc -n {self.netns} filter add dev "
                f"{self.ifname} {self.direction} bpf da object-pinned {self.pin}/{self.program}")


@dataclass(frozen=True)
class BpfNodeConfig:
    """The node's entry of `node_config`: what Cilium compiles into node_config.h."""

    netns: str
    pin: str
    uplink: str
    vxlan: str | None  # the tunnel device, None in native routing
    router_ip: IPv4Address | None  # cilium_host's (None in an IPv6-only lab)
    vni: int  # the VNI of a packet whose sender has no identity
    node_ip: IPv4Address | None  # eth0's: NodePort frontends, the masquerade source
    masquerade: bool  # bpf.masquerade: pods' traffic to the world leaves as node_ip
    native_cidr: IPv4Network | None  # ipv4NativeRoutingCIDR: never masqueraded to
    router_ip6: IPv6Address | None = None  # cilium_host's IPv6 address, in a lab with IPv6

    def describe(self) -> str:
        vxlan = f"ifindex of {self.vxlan}" if self.vxlan else "0"
        six = f", {self.router_ip6}" if self.router_ip6 else ""
        return (f"bpftool map update pinned {self.pin}/node_config key 0 value <ifindex of {self.uplink}, {vxlan}, "
                f"{self.router_ip or '0.0.0.0'}, vni {self.vni}, tunnel {int(self.vxlan is not None)}, "
                f"{self.node_ip or '0.0.0.0'}, masquerade {int(self.masquerade)}, {self.native_cidr or '0.0.0.0/0'}{six}>")


@dataclass(frozen=True)
class BpfEndpoint:
    """A pod in the node's endpoints map (cilium_lxc): its IP → its lxc device and both MACs."""

    netns: str
    pin: str
    ip: IPv4Address | IPv6Address  # one entry per address of the pod
    lxc: str
    pod_netns: str
    pod_ifname: str
    lxc_id: int  # the endpoint ID, unique on the node
    identity: int  # its security identity

    def describe(self) -> str:
        return (f"bpftool map update pinned {self.pin}/cilium_lxc key <{self.ip}> value <ifindex of {self.lxc}, "
                f"MAC of {self.pod_ifname} in {self.pod_netns}, MAC of {self.lxc}, endpoint {self.lxc_id}, "
                f"identity {self.identity}>")


@dataclass(frozen=True)
class BpfPolicy:
    """An endpoint's policy map (cilium_policy_v2_<endpoint ID>) made to hold exactly these allow
    entries, each (egress, identity, protocol, port, prefix): identity 0 is any, prefix Cilium's
    lpm_prefix_length (0: any protocol and port, 8: the protocol, 24: the protocol and the port)."""

    netns: str
    pin: str
    lxc_id: int
    entries: tuple[tuple[bool, int, int, int, int], ...]

    def describe(self) -> str:
        path = f"{self.pin}/cilium_policy_v2_{self.lxc_id:05d}"
        lines = [f"bpftool map create {path} type lpm_trie key 12 value 12 entries 16384 name cilium_policy_v2 flags 1"
                 f"  # and into {self.pin}/cilium_policy_v2 under key {self.lxc_id}"]
        for egress, identity, protocol, port, prefix in self.entries:
            what = "ANY" if prefix == 0 else f"proto {protocol}" if prefix == 8 else f"{port}/{protocol} prefix {prefix}"
            lines.append(f"bpftool map update pinned {path} key <{'egress' if egress else 'ingress'}, identity "
                         f"{identity or 'ANY'}, {what}> value <allow>")
        return "\n".join(lines)


@dataclass(frozen=True)
class BpfIpcache:
    """A prefix in the node's ipcache: its security identity and, when it lives behind a tunnel,
    the node it lives on (Cilium's tunnel endpoint, which replaced the tunnel map)."""

    netns: str
    pin: str
    prefix: IPv4Network | IPv6Network
    identity: int
    tunnel_endpoint: IPv4Address | IPv6Address | None

    def describe(self) -> str:
        return (f"bpftool map update pinned {self.pin}/cilium_ipcache_v2 key <{self.prefix}> value <identity "
                f"{self.identity}, tunnelendpoint {self.tunnel_endpoint or '0.0.0.0'}>")


@dataclass(frozen=True)
class BpfIpcacheSync:
    """The node's ipcache made to hold exactly these entries, (prefix, identity, tunnel endpoint)
    each: what a policy change adds (ipBlock prefixes) written, what it removed deleted."""

    netns: str
    pin: str
    entries: tuple[tuple[IPv4Network | IPv6Network, int, IPv4Address | IPv6Address | None], ...]

    def describe(self) -> str:
        return "\n".join(f"bpftool map update pinned {self.pin}/cilium_ipcache_v2 key <{prefix}> value <identity "
                         f"{identity}, tunnelendpoint {endpoint or '0.0.0.0'}>" for prefix, identity, endpoint in self.entries) \
            + f"\n# and every other entry of {self.pin}/cilium_ipcache_v2 deleted"


@dataclass(frozen=True)
class LbFrontend:
    """A Service frontend as the agent writes it (slot 0 of cilium_lb4_services_v2, then a slot
    per backend) and its reverse NAT entry."""

    service: str  # namespace/name, and :port-name for a Service with several ports
    kind: str  # ClusterIP | NodePort
    address: IPv4Address
    port: int
    protocol: str
    rev_nat_index: int
    flags: int  # SVC_FLAG_*
    backend_ids: tuple[int, ...]


@dataclass(frozen=True)
class LbBackend:
    """An entry of cilium_lb4_backends_v3: an endpoint and its target port."""

    id: int
    address: IPv4Address
    port: int
    protocol: str
    pod: str  # the endpoint pod: node/name


@dataclass(frozen=True)
class BpfServices:
    """The node's Service maps made to hold exactly these frontends and backends (what is missing
    written, what is stale removed), as the agent syncs them from Services and EndpointSlices."""

    netns: str
    pin: str
    frontends: tuple[LbFrontend, ...]
    backends: tuple[LbBackend, ...]

    def describe(self) -> str:
        """A line per map entry, in the order they are written: backends, reverse NAT, then each
        frontend's slot 0 (its backend count) and a slot per backend."""
        update = f"bpftool map update pinned {self.pin}"
        lines = [f"{update}/cilium_lb4_backends_v3 key <backend {b.id}> value <{b.address}:{b.port}/{b.protocol}>  # {b.pod}"
                 for b in self.backends]
        lines += [f"{update}/cilium_lb4_reverse_nat key <{f.rev_nat_index}> value <{f.address}:{f.port}>" for f in self.frontends]
        for f in self.frontends:
            key = f"{f.address}:{f.port}/{f.protocol}"
            lines.append(f"{update}/cilium_lb4_services_v2 key <{key} slot 0> value <count {len(f.backend_ids)}, "
                         f"rev_nat {f.rev_nat_index}, flags {f.flags:#x}>  # {f.service} ({f.kind})")
            lines += [f"{update}/cilium_lb4_services_v2 key <{key} slot {slot}> value <backend {backend}, "
                      f"rev_nat {f.rev_nat_index}, flags {f.flags:#x}>" for slot, backend in enumerate(f.backend_ids, 1)]
        return "\n".join(lines) or f"{update}/cilium_lb4_services_v2 ...  # no frontends: every entry removed"


@dataclass(frozen=True)
class SetHairpin:
    """A bridge port that sends a frame back out of the port it came in by: what a pod reaching
    itself through its own Service needs (kubelet's --hairpin-mode=hairpin-veth, the CNI bridge
    plugin's hairpinMode)."""

    netns: str
    ifname: str

    def describe(self) -> str:
        return f"ip -n {self.netns} link set {self.ifname} type bridge_slave hairpin on"


@dataclass(frozen=True)
class LoadNftables:
    """An nftables table loaded in a namespace, replaced as a whole (`nft -f` is one transaction)."""

    netns: str
    table: str
    ruleset: str

    def describe(self) -> str:
        rules = sum(1 for line in self.ruleset.splitlines() if line.startswith("    ") and "type filter" not in line)
        return f"ip netns exec {self.netns} nft -f <table inet {self.table}, {rules} rules>"


@dataclass(frozen=True)
class AddNeighbour:
    """A permanent ARP entry: what flannel writes for each remote VTEP instead of letting ARP ask."""

    netns: str
    ifname: str
    ip: IPv4Address | IPv6Address
    mac: str

    def describe(self) -> str:
        return f"ip -n {self.netns} neigh add {self.ip} lladdr {self.mac} dev {self.ifname} nud permanent"


@dataclass(frozen=True)
class AddFdb:
    """A forwarding entry of a VXLAN device: frames for `mac` are sent to the VTEP at `dst`."""

    netns: str
    ifname: str
    mac: str
    dst: IPv4Address | IPv6Address

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
class StartDnsmasq:
    """(Re)start dnsmasq, kube-dns's server, in the DNS pod's namespace: its config, pid file and
    log under the lab's state folder (`conf` relative to it), nothing read from /etc. dnsmasq
    daemonizes once it listens; a dnsmasq the pid file names is stopped first (new records: a
    restart takes milliseconds, and SIGHUP would not re-read host-record lines)."""

    netns: str
    conf: str
    pidfile: str
    log: str

    def describe(self) -> str:
        return (f"ip netns exec {self.netns} dnsmasq --conf-file=<lab state>/{self.conf} "
                f"--pid-file=<lab state>/{self.pidfile} --log-facility=<lab state>/{self.log}")


@dataclass(frozen=True)
class WriteResolvConf:
    """A pod's /etc/resolv.conf as `ip netns exec` shows it: /etc/netns/<netns>/resolv.conf."""

    netns: str
    content: str

    def describe(self) -> str:
        return f"mkdir -p /etc/netns/{self.netns} && write /etc/netns/{self.netns}/resolv.conf  # " + next(
            (line for line in self.content.splitlines() if line.startswith("nameserver")), "")


@dataclass(frozen=True)
class WaitBgp:
    """Wait until the node's BGP sessions are Established and the kernel has learned every block."""

    netns: str
    node: str
    folder: str
    peers: tuple[str, ...]  # BIRD protocol names, one per peer
    learned: tuple[IPv4Network | IPv6Network, ...]  # remote blocks that must appear as `proto bird` routes

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
    expect_ip: IPv4Address | IPv6Address | None = None  # the address the lab's IPAM model gives the pod
    expect_ip6: IPv6Address | None = None  # and its IPv6 address, in a dual-stack lab

    def describe(self) -> str:
        return (
            f"ip netns exec {self.netns} env CNI_COMMAND=ADD CNI_CONTAINERID={self.container_id} "
            f"CNI_NETNS=/run/netns/{self.pod_netns} CNI_IFNAME={self.ifname} CNI_PATH={self.cni_path} "
            f"<plugin> < <lab state>/{self.conflist}"
        )


Step = Union[CreateNetns, SetSysctl, AddBridge, AddVeth, LinkUp, AddAddress, AddRoute, AddVxlan, AddNeighbour,
             AddFdb, WriteFile, StartBird, WaitBgp, CniAdd, AddFlowVxlan, LoadBpf, AttachBpf, BpfNodeConfig,
             BpfEndpoint, BpfIpcache, BpfIpcacheSync, BpfServices, BpfPolicy, LoadNftables,
             SetHairpin, AddBlackhole, AddIpip, StartDnsmasq, WriteResolvConf]
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
DEFAULT_ROUTE6 = IPv6Network("::/0")


def default_route(version: int) -> IPv4Network | IPv6Network:
    return DEFAULT_ROUTE6 if version == 6 else DEFAULT_ROUTE
