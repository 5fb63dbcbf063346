"""Reading a lab back from the kernel: links, addresses, routes, veth peers, route lookups.

`explain`, `trace` and the demo show what these return, never what the plan meant to build.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from socket import AF_INET, AF_INET6
from typing import TYPE_CHECKING

from cni_lab.kernel import netns

if TYPE_CHECKING:
    from pyroute2 import IPRoute

RT_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
RT_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
RT_PROTOS = {2: "kernel", 3: "boot", 4: "static", 12: "bird", 16: "dhcp"}
RT_TABLE_MAIN = 254
AF_BRIDGE = 7
NUD_STATES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE", 0x20: "FAILED",
              0x40: "NOARP", 0x80: "PERMANENT"}


def _nud(state: int) -> str:
    return "|".join(v for k, v in NUD_STATES.items() if state & k) or "NONE"


@dataclass
class Link:
    index: int
    name: str
    kind: str  # veth, bridge, vxlan, loopback ...
    up: bool
    mtu: int
    mac: str
    master: str | None = None
    peer_netns: str | None = None  # for a veth: the namespace holding the other end
    peer_index: int | None = None
    peer_name: str | None = None
    addresses: list[IPv4Interface] = field(default_factory=list)
    addresses6: list[IPv6Interface] = field(default_factory=list)  # link-local ones included
    vxlan: dict[str, object] | None = None  # id, port, local, learning, for a VXLAN device
    neighbours: list[tuple[str, str, str]] = field(default_factory=list)  # (ip, mac, state) on a VXLAN device
    fdb: list[tuple[str, str]] = field(default_factory=list)  # (mac, dst) of a VXLAN device
    proxy_arp: bool = False  # answers ARP for addresses it routes elsewhere (Calico's cali* veths)


@dataclass
class Route:
    dst: str  # "default" or a CIDR
    dev: str | None
    gateway: str | None
    scope: str
    proto: str
    type: str
    prefsrc: str | None
    onlink: bool
    mtu: int | None = None  # a route MTU (RTAX_MTU)

    def describe(self) -> str:
        # as `ip route` prints host routes
        dst = self.dst[:-3] if self.dst.endswith("/32") else self.dst[:-4] if self.dst.endswith("/128") else self.dst
        parts = [dst if self.type == "unicast" else f"{self.type} {dst}"]
        if self.gateway:
            parts.append(f"via {self.gateway}")
        if self.dev:
            parts.append(f"dev {self.dev}")
        if self.proto not in ("boot", "static"):
            parts.append(f"proto {self.proto}")
        if self.scope != "global":
            parts.append(f"scope {self.scope}")
        if self.prefsrc:
            parts.append(f"src {self.prefsrc}")
        if self.onlink:
            parts.append("onlink")
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        return " ".join(parts)


@dataclass
class NetnsView:
    netns: str
    links: list[Link]
    routes: list[Route]
    forwarding: bool
    routes6: list[Route] = field(default_factory=list)  # IPv6's main table, kernel's own fe80::/64 left out

    def link(self, name: str) -> Link | None:
        return next((lk for lk in self.links if lk.name == name), None)

    def ports(self, bridge: str) -> list[Link]:
        return [lk for lk in self.links if lk.master == bridge]


@dataclass(frozen=True)
class Decision:
    """The kernel's answer to `ip route get`: where a packet for `dst` goes from here."""

    type: str  # unicast | local | unreachable | ... | error
    dev: str | None = None
    gateway: str | None = None
    prefsrc: str | None = None
    error: str | None = None


def _kind(msg: object) -> str:
    info = msg.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    if info is not None:
        return str(info.get_attr("IFLA_INFO_KIND") or "")
    return "loopback" if msg.get_attr("IFLA_IFNAME") == "lo" else "device"  # type: ignore[attr-defined]


def read(ns: str, neighbours: list[str]) -> NetnsView:
    """Everything about one namespace. `neighbours` are the namespaces veth peers may be in."""
    ipr = netns.open_ipr(ns)
    try:
        raw_links = list(ipr.get_links())
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in raw_links}
        nsids = _nsids(ipr, neighbours)
        links = []
        for m in raw_links:
            master = m.get_attr("IFLA_MASTER")
            link = Link(
                index=m["index"],
                name=m.get_attr("IFLA_IFNAME"),
                kind=_kind(m),
                up=bool(m["flags"] & 1),
                mtu=m.get_attr("IFLA_MTU"),
                mac=m.get_attr("IFLA_ADDRESS") or "",
                master=names.get(master) if master else None,
            )
            if link.kind == "vxlan":
                data = m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
                link.vxlan = {
                    "id": data.get_attr("IFLA_VXLAN_ID"),
                    "port": data.get_attr("IFLA_VXLAN_PORT"),
                    "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                    "learning": bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                }
                if data.get_attr("IFLA_VXLAN_LOCAL6"):
                    link.vxlan["local"] = data.get_attr("IFLA_VXLAN_LOCAL6")
                for family in (AF_INET, AF_INET6):
                    for n in ipr.get_neighbours(family, ifindex=link.index):
                        link.neighbours.append((n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR"), _nud(n["state"])))
                for n in ipr.get_neighbours(AF_BRIDGE, ifindex=link.index):
                    if n.get_attr("NDA_DST"):
                        link.fdb.append((n.get_attr("NDA_LLADDR"), n.get_attr("NDA_DST")))
            if link.kind == "veth":
                link.peer_index = m.get_attr("IFLA_LINK")
                nsid = m.get_attr("IFLA_LINK_NETNSID")
                link.peer_netns = nsids.get(nsid) if nsid is not None else ns
            links.append(link)
        by_index = {lk.index: lk for lk in links}
        for a in ipr.get_addr(family=AF_INET):
            owner = by_index.get(a["index"])
            if owner is not None:
                owner.addresses.append(IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
        for a in ipr.get_addr(family=AF_INET6):
            owner = by_index.get(a["index"])
            if owner is not None:
                owner.addresses6.append(IPv6Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
        routes = [_route(r, names) for r in ipr.get_routes(family=AF_INET, table=RT_TABLE_MAIN)]
        routes6 = [route for r in ipr.get_routes(family=AF_INET6, table=RT_TABLE_MAIN)
                   if not (route := _route(r, names)).dst.startswith("fe80::") and route.type != "multicast"]
    finally:
        ipr.close()
    forwarding, proxied = netns.in_netns(ns, lambda: _read_flags([lk.name for lk in links]))
    for link in links:
        link.proxy_arp = link.name in proxied
    return NetnsView(ns, links, routes, forwarding, routes6)


def _read_flags(ifnames: list[str]) -> tuple[bool, set[str]]:
    """ip_forward and the interfaces with proxy_arp on, read in one visit to the namespace."""
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forwarding = f.read().strip() == "1"
    proxied = set()
    for name in ifnames:
        try:
            with open(f"/proc/sys/net/ipv4/conf/{name}/proxy_arp") as f:
                if f.read().strip() == "1":
                    proxied.add(name)
        except OSError:
            pass
    return forwarding, proxied


def _nsids(ipr: IPRoute, neighbours: list[str]) -> dict[int, str]:
    """nsid (as this namespace numbers its peers) → namespace name."""
    out = {}
    for other in neighbours:
        with contextlib.suppress(OSError):
            fd = os.open(netns.netns_path(other), os.O_RDONLY | os.O_CLOEXEC)
            try:
                got = ipr.get_netnsid(fd=fd)
            finally:
                os.close(fd)
            if got and got.get("nsid") is not None and got["nsid"] >= 0:
                out[got["nsid"]] = other
    return out


def _route(r: object, names: dict[int, str]) -> Route:
    get = r.get_attr  # type: ignore[attr-defined]
    dst = get("RTA_DST")
    length = r["dst_len"]  # type: ignore[index]
    oif = get("RTA_OIF")
    return Route(
        dst=f"{dst}/{length}" if dst else "default",
        dev=names.get(oif) if oif else None,
        gateway=get("RTA_GATEWAY"),
        scope=RT_SCOPES.get(r["scope"], str(r["scope"])),  # type: ignore[index]
        proto=RT_PROTOS.get(r["proto"], str(r["proto"])),  # type: ignore[index]
        type=RT_TYPES.get(r["type"], str(r["type"])),  # type: ignore[index]
        prefsrc=get("RTA_PREFSRC"),
        onlink=bool(r["flags"] & 4),  # type: ignore[index]
        mtu=metrics.get_attr("RTAX_MTU") if (metrics := get("RTA_METRICS")) is not None else None,
    )


def route_get(ns: str, dst: IPv4Address | IPv6Address, src: IPv4Address | IPv6Address | None = None,
              iif: str | None = None) -> Decision:
    """The kernel's own route lookup in `ns`: as sent from here (no iif) or as forwarded (iif)."""
    from pyroute2.netlink.exceptions import NetlinkError

    ipr = netns.open_ipr(ns)
    try:
        query: dict[str, object] = {"dst": str(dst)}
        if src is not None:
            query["src"] = str(src)
        if iif is not None:
            found = ipr.link_lookup(ifname=iif)
            if not found:
                return Decision("error", error=f"no interface {iif}")
            query["iif"] = found[0]
        try:
            r = ipr.route("get", **query)[0]
        except NetlinkError as e:
            return Decision("error", error=os.strerror(e.code).lower())
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
        oif = r.get_attr("RTA_OIF")
        return Decision(
            type=RT_TYPES.get(r["type"], str(r["type"])),
            dev=names.get(oif) if oif else None,
            gateway=r.get_attr("RTA_GATEWAY"),
            prefsrc=r.get_attr("RTA_PREFSRC"),
        )
    finally:
        ipr.close()


def raw(ns: str) -> str:
    """What `ip addr`, `ip route` and `bridge link` print inside the namespace."""
    out = []
    for command in (["ip", "addr"], ["ip", "route"], ["bridge", "link"]):
        done = subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True, text=True)
        text = (done.stdout + done.stderr).rstrip()
        out.append(f"$ {' '.join(command)}\n{text}" if text else f"$ {' '.join(command)}")
    return "\n".join(out)


@dataclass(frozen=True)
class Connection:
    """A conntrack entry: the tuple the client sent and the tuple the reply comes back with
    (a DNAT shows as a reply from another address than the original destination)."""

    src: str
    sport: int
    dst: str
    dport: int
    reply_src: str
    reply_sport: int
    reply_dst: str
    reply_dport: int
    status: str


def connections(ns: str) -> list[Connection]:
    """The namespace's conntrack table (ctnetlink, through pyroute2)."""
    from pyroute2 import Conntrack

    def dump() -> list[Connection]:
        with Conntrack() as ct:
            return [Connection(str(e.tuple_orig.saddr), int(e.tuple_orig.sport or 0), str(e.tuple_orig.daddr),
                               int(e.tuple_orig.dport or 0), str(e.tuple_reply.saddr), int(e.tuple_reply.sport or 0),
                               str(e.tuple_reply.daddr), int(e.tuple_reply.dport or 0), e.status_name())
                    for e in ct.dump_entries()]

    return netns.in_netns(ns, dump)
