"""A small synchronous rtnetlink client for the calls `up` makes thousands of times.

pyroute2's IPRoute runs every call through an asyncio event loop, which costs ~0.2-0.4 ms a call
and ~0.8 ms per namespace to open. Here pyroute2's message classes encode the requests and a
plain netlink socket sends them: a call costs ~0.05 ms (measured in bench/). Reading (dumps)
stays with IPRoute in `readback.py`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cni_lab.kernel import netns, templates

if TYPE_CHECKING:
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

# the kernel's numbers (linux/netlink.h, linux/rtnetlink.h), as pyroute2 names them (a unit test
# holds them to pyroute2's): written here so that `up` with its templates stored needs no pyroute2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR = 20
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH = 28
RTM_NEWQDISC = 36
RTM_NEWTFILTER, RTM_DELTFILTER = 44, 45
NLMSG_ERROR = 2
EEXIST = errno.EEXIST
IFF_UP = 1
IFF_NOARP = 0x80
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3  # what `ip route add` and flannel leave: shown without a "proto" by `ip route`
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
TC_H_CLSACT = 0xFFFFFFF1
TC_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}  # clsact's ingress and egress hooks
ETH_P_ALL = 0x0003
TCA_BPF_FLAG_ACT_DIRECT = 1
BPF_FILTER_PRIO, BPF_FILTER_HANDLE = 1, 1


class RtnlError(OSError):
    @property
    def code(self) -> int:
        return self.errno or 0


# -- the messages, as pyroute2 builds them (kernel/templates.py fills them in again) ----------------

def link_msg(ifname: str, kind: str, mtu: int | None = None, master: int | None = None, up: bool = False,
             address: str | None = None, data: list[tuple[str, Any]] | None = None) -> ifinfmsg:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # pyroute2 builds a kind of message once: templates.py

    msg = ifinfmsg()
    attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", ifname)]
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    if address is not None:
        attrs.append(("IFLA_ADDRESS", address))
    info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", kind)]
    if data:
        info.append(("IFLA_INFO_DATA", {"attrs": data}))
    attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    msg["attrs"] = attrs
    if up:
        msg["flags"] = msg["change"] = IFF_UP
    return msg


def veth_msg(ifname: str, peer_ifname: str, peer_ns_fd: int, mtu: int, peer_mtu: int, master: int | None = None,
             up: bool = False, mac: str | None = None) -> ifinfmsg:
    peer = [("IFLA_IFNAME", peer_ifname), ("IFLA_NET_NS_FD", peer_ns_fd), ("IFLA_MTU", peer_mtu)]
    return link_msg(ifname, "veth", mtu=mtu, master=master, up=up, address=mac,
                    data=[("VETH_INFO_PEER", {"attrs": peer})])


def vxlan_msg(ifname: str, mtu: int, vni: int, local: IPv4Address | IPv6Address, port: int, learning: int,
              link: int, address: str | None = None) -> ifinfmsg:
    local_attr = "IFLA_VXLAN_LOCAL6" if local.version == 6 else "IFLA_VXLAN_LOCAL"
    data = [("IFLA_VXLAN_ID", vni), (local_attr, str(local)), ("IFLA_VXLAN_PORT", port),
            ("IFLA_VXLAN_LEARNING", learning), ("IFLA_VXLAN_LINK", link)]
    return link_msg(ifname, "vxlan", mtu=mtu, address=address, data=data)


def ifname_msg(ifname: str) -> ifinfmsg:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", ifname)]
    return msg


def set_link_msg(index: int, up: bool | None = None, master: int | None = None, noarp: bool = False) -> ifinfmsg:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    msg["index"] = index
    if up is not None:
        msg["change"] = IFF_UP
        msg["flags"] = IFF_UP if up else 0
    if noarp:
        msg["change"] |= IFF_NOARP
        msg["flags"] |= IFF_NOARP
    if master is not None:
        msg["attrs"] = [("IFLA_MASTER", master)]
    return msg


def address_msg(index: int, ip: IPv4Address | IPv6Address, prefixlen: int) -> ifaddrmsg:
    """An address; an IPv6 one without duplicate address detection (IFA_F_NODAD)."""
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    msg = ifaddrmsg()
    msg["prefixlen"], msg["index"] = prefixlen, index
    if ip.version == 6:
        msg["family"], msg["flags"] = socket.AF_INET6, IFA_F_NODAD
        msg["attrs"] = [("IFA_ADDRESS", str(ip))]
    else:
        msg["family"] = socket.AF_INET
        msg["attrs"] = [("IFA_LOCAL", str(ip)), ("IFA_ADDRESS", str(ip))]
    return msg


def route_msg(dst: IPv4Address | IPv6Address, dst_len: int, oif: int, gateway: IPv4Address | IPv6Address | None = None,
              onlink: bool = False, scope_link: bool = False, src: IPv4Address | IPv6Address | None = None,
              mtu: int | None = None, proto: int = RTPROT_BOOT, blackhole: bool = False) -> rtmsg:
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    msg = rtmsg()
    msg["family"] = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
    msg["dst_len"], msg["table"] = dst_len, RT_TABLE_MAIN
    msg["proto"], msg["type"] = proto, RTN_BLACKHOLE if blackhole else RTN_UNICAST
    msg["scope"] = RT_SCOPE_LINK if scope_link else RT_SCOPE_UNIVERSE
    msg["flags"] = RTNH_F_ONLINK if onlink else 0
    attrs: list[tuple[str, Any]] = [] if blackhole else [("RTA_OIF", oif)]  # a blackhole has no device
    if dst_len:
        attrs.append(("RTA_DST", str(dst)))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", str(gateway)))
    if src is not None:
        attrs.append(("RTA_PREFSRC", str(src)))
    if mtu is not None:
        attrs.append(("RTA_METRICS", {"attrs": [("RTAX_MTU", mtu)]}))
    msg["attrs"] = attrs
    return msg


def neighbour_msg(index: int, ip: IPv4Address | IPv6Address, mac: str, bridge: bool = False) -> ndmsg:
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    msg = ndmsg()
    msg["family"] = AF_BRIDGE if bridge else socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    msg["ifindex"], msg["state"] = index, NUD_PERMANENT
    msg["flags"] = NTF_SELF if bridge else 0
    msg["attrs"] = [("NDA_DST", str(ip)), ("NDA_LLADDR", mac)]
    return msg


# one per process: each kind of message is encoded by pyroute2 once, and kept for the next runs
# beside the BPF objects' cache (root's; executor/apply.py saves what a run made)
ENCODER = templates.Encoder(templates.store_for(Path("/var/cache/cni-lab")) if os.geteuid() == 0 else None)


class Rtnl:
    """One NETLINK_ROUTE socket bound inside a namespace (`sock`: one already opened in there).

    Requests go one at a time (`_request`: sent, then its answer read), or, between `batch()`
    and `flush()`, are gathered and sent in one sendmsg; the kernel handles them in order and
    answers each, and `flush` says which failed, by the order they were queued in."""

    def __init__(self, ns: str, sock: socket.socket | None = None) -> None:
        self.ns = ns
        self.sock = sock or netns.in_netns(ns, netns.route_socket)
        self.sock.bind((0, 0))
        self.seq = 0
        self._queued: list[bytes] | None = None

    def close(self) -> None:
        self.sock.close()

    def _encode(self, build: templates.Builder, msg_type: int, flags: int, **values: Any) -> bytes:
        self.seq += 1
        return ENCODER.encode(build, msg_type, flags, self.seq, **values)

    def _send(self, data: bytes) -> None:
        """A request that only needs an acknowledgement: queued in a batch, or sent and answered now."""
        if self._queued is not None:
            self._queued.append(data)
            return
        self._exchange(data)

    def _exchange(self, data: bytes) -> bytes:
        seq = struct.unpack_from("=I", data, templates.SEQ_OFFSET)[0]
        self.sock.send(data)
        while True:
            reply = self.sock.recv(65536)
            length, mtype, _, got, _ = struct.unpack_from("=LHHLL", reply)
            if got != seq:
                continue  # a late answer to an earlier request
            if mtype == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", reply, 16)
                if code:
                    raise RtnlError(-code, os.strerror(-code))
            return reply[:length]

    # -- batches ------------------------------------------------------------------------------

    def batch(self) -> None:
        """Queue the requests that follow (until `flush`) instead of sending each."""
        self._queued = []

    def flush(self) -> list[RtnlError | None]:
        """Send what was queued in one sendmsg; per request, in order, None or its error."""
        queued, self._queued = self._queued or [], None
        if not queued:
            return []
        # their sequence numbers need not be consecutive: a lookup may have gone in between
        seqs = [struct.unpack_from("=I", data, templates.SEQ_OFFSET)[0] for data in queued]
        wanted = set(seqs)
        self.sock.send(b"".join(queued))
        outcome: dict[int, RtnlError | None] = {}
        while len(outcome) < len(queued):
            data = self.sock.recv(1 << 16)
            at = 0
            while at + 16 <= len(data):
                length, mtype, _, seq, _ = struct.unpack_from("=LHHLL", data, at)
                if mtype == NLMSG_ERROR and seq in wanted:
                    (code,) = struct.unpack_from("=i", data, at + 16)
                    outcome[seq] = RtnlError(-code, os.strerror(-code)) if code else None
                at += (length + 3) & ~3
        return [outcome[seq] for seq in seqs]

    # -- links -----------------------------------------------------------------------------------

    def index(self, ifname: str) -> int:
        data = self._exchange(self._encode(ifname_msg, RTM_GETLINK, NLM_F_REQUEST, ifname=templates.name(ifname)))
        return int(struct.unpack_from("=i", data, 20)[0])  # ifinfomsg.ifi_index after the 16-byte header

    def add_link(self, ifname: str, kind: str, *, mtu: int | None = None, master: int | None = None,
                 up: bool = False, address: str | None = None, data: list[tuple[str, Any]] | None = None) -> None:
        self._send(self._encode(link_msg, RTM_NEWLINK, CREATE, ifname=templates.name(ifname), kind=kind,
                                mtu=_maybe(templates.u32, mtu), master=_maybe(templates.u32, master), up=up,
                                address=_maybe(templates.mac, address), data=data))

    def add_veth(self, ifname: str, peer_ifname: str, peer_ns_fd: int, *, mtu: int, master: int | None = None,
                 up: bool = False, mac: str | None = None) -> None:
        self._send(self._encode(veth_msg, RTM_NEWLINK, CREATE, ifname=templates.name(ifname),
                                peer_ifname=templates.name(peer_ifname), peer_ns_fd=templates.u32(peer_ns_fd),
                                mtu=templates.u32(mtu), peer_mtu=templates.u32(mtu),
                                master=_maybe(templates.u32, master), up=up, mac=_maybe(templates.mac, mac)))

    def add_vxlan(self, ifname: str, *, mtu: int, vni: int, local: IPv4Address | IPv6Address, port: int,
                  learning: bool, link: int, address: str | None = None) -> None:
        self._send(self._encode(vxlan_msg, RTM_NEWLINK, CREATE, ifname=templates.name(ifname), mtu=templates.u32(mtu),
                                vni=templates.u32(vni), local=templates.ip(local), port=templates.be16(port),
                                learning=templates.u8(int(learning)), link=templates.u32(link),
                                address=_maybe(templates.mac, address)))

    def add_flow_vxlan(self, ifname: str, *, mtu: int, port: int) -> None:
        """`ip link add X type vxlan external dstport P nolearning`: one device for every tunnel,
        the remote end set per packet (Cilium's cilium_vxlan, BPF's bpf_skb_set_tunnel_key)."""
        self.add_link(ifname, "vxlan", mtu=mtu, data=[("IFLA_VXLAN_COLLECT_METADATA", 1), ("IFLA_VXLAN_PORT", port),
                                                      ("IFLA_VXLAN_LEARNING", 0)])

    def link_mac(self, ifname: str) -> str:
        data = self._exchange(self._encode(ifname_msg, RTM_GETLINK, NLM_F_REQUEST, ifname=templates.name(ifname)))
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        reply = ifinfmsg(data)
        reply.decode()
        return str(reply.get_attr("IFLA_ADDRESS"))

    def set_link(self, index: int, *, up: bool | None = None, master: int | None = None, noarp: bool = False) -> None:
        self._send(self._encode(set_link_msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, index=templates.u32(index),
                                up=up, master=_maybe(templates.u32, master), noarp=noarp))

    # -- addresses, routes, neighbours -------------------------------------------------------------

    def add_address(self, index: int, ip: IPv4Address | IPv6Address, prefixlen: int) -> None:
        self._send(self._encode(address_msg, RTM_NEWADDR, CREATE, index=templates.u32(index), ip=templates.ip(ip),
                                prefixlen=templates.u8(prefixlen)))

    def add_route(self, dst: IPv4Network | IPv6Network, oif: int, *, gateway: IPv4Address | IPv6Address | None = None,
                  onlink: bool = False, scope_link: bool = False, src: IPv4Address | IPv6Address | None = None,
                  mtu: int | None = None, proto: int = RTPROT_BOOT) -> None:
        # the destination's address is a field only where the message carries it (not for a default route)
        dst_field = templates.ip(dst.network_address) if dst.prefixlen else dst.network_address
        self._send(self._encode(route_msg, RTM_NEWROUTE, CREATE, dst=dst_field, dst_len=templates.u8(dst.prefixlen)
                                if dst.prefixlen else 0, oif=templates.u32(oif), gateway=_maybe(templates.ip, gateway),
                                onlink=onlink, scope_link=scope_link, src=_maybe(templates.ip, src),
                                mtu=_maybe(templates.u32, mtu), proto=proto))

    def add_blackhole(self, dst: IPv4Network | IPv6Network, proto: int = RTPROT_BOOT) -> None:
        """`ip route add blackhole DST proto PROTO` (Felix's for a node's own IPAM block)."""
        self._send(self._encode(route_msg, RTM_NEWROUTE, CREATE, dst=templates.ip(dst.network_address),
                                dst_len=templates.u8(dst.prefixlen), oif=0, proto=proto, blackhole=True))

    def delete_route(self, dst: IPv4Network, oif: int | None = None) -> None:
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

        msg = rtmsg()
        msg["family"], msg["dst_len"], msg["table"] = socket.AF_INET, dst.prefixlen, RT_TABLE_MAIN
        msg["scope"] = 255  # RT_SCOPE_NOWHERE: match any scope
        attrs: list[tuple[str, Any]] = []
        if dst.prefixlen:
            attrs.append(("RTA_DST", str(dst.network_address)))
        if oif is not None:
            attrs.append(("RTA_OIF", oif))
        msg["attrs"] = attrs
        self._request(msg, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)  # faults: rare, encoded as it is

    def replace_neighbour(self, index: int, ip: IPv4Address | IPv6Address, mac: str, *, bridge: bool = False) -> None:
        """A permanent ARP entry, or with `bridge` a permanent fdb entry of a VXLAN device (`ip`
        then is the remote VTEP's address), as `ip neigh replace` / `bridge fdb replace` make them."""
        self._send(self._encode(neighbour_msg, RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                                index=templates.u32(index), ip=templates.ip(ip), mac=templates.mac(mac), bridge=bridge))

    def _request(self, msg: Any, kind: int, flags: int) -> bytes:
        """A one-off request pyroute2 encodes as it is (tc: a few per node)."""
        self.seq += 1
        msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"] = kind, flags, self.seq
        msg.encode()
        return self._exchange(bytes(msg.data))

    # -- tc: BPF programs at a device's clsact hooks ----------------------------------------------

    def add_clsact(self, index: int) -> None:
        """`tc qdisc add dev X clsact` (EEXIST when it is there)."""
        from pyroute2.netlink.rtnl.tcmsg import tcmsg  # ~20 ms to import: only ebpf labs need tc

        msg = tcmsg()
        msg["index"], msg["handle"], msg["parent"] = index, 0xFFFF0000, TC_H_CLSACT
        msg["attrs"] = [("TCA_KIND", "clsact")]
        self._request(msg, RTM_NEWQDISC, CREATE)

    def _bpf_filter(self, index: int, direction: str) -> Any:
        from pyroute2.netlink.rtnl.tcmsg import tcmsg

        msg = tcmsg()
        msg["index"], msg["handle"], msg["parent"] = index, BPF_FILTER_HANDLE, TC_PARENT[direction]
        msg["info"] = (BPF_FILTER_PRIO << 16) | socket.htons(ETH_P_ALL)
        return msg

    def replace_bpf_filter(self, index: int, direction: str, fd: int, name: str) -> None:
        """`tc filter replace dev X <direction> pref 1 handle 1 bpf da fd <fd> name <name>`."""
        msg = self._bpf_filter(index, direction)
        msg["attrs"] = [("TCA_KIND", "bpf"), ("TCA_OPTIONS", {"attrs": [
            ("TCA_BPF_FD", fd), ("TCA_BPF_NAME", name), ("TCA_BPF_FLAGS", TCA_BPF_FLAG_ACT_DIRECT)]})]
        self._request(msg, RTM_NEWTFILTER, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)

    def delete_bpf_filter(self, index: int, direction: str) -> None:
        msg = self._bpf_filter(index, direction)
        msg["attrs"] = [("TCA_KIND", "bpf")]
        self._request(msg, RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK)


def _maybe(field: Callable[[Any], templates.Field], value: Any) -> templates.Field | None:
    """A field where there is a value; None (no attribute: part of the message's shape) where not."""
    return None if value is None else field(value)
