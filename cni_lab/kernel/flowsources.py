"""What the lab's namespaces report about their packets, read for `observe` and `check`: nflog
messages from the lab's log rules (nfnetlink_log, NFNL_SUBSYS_ULOG), conntrack NEW events
(ctnetlink's NFNLGRP_CONNTRACK_NEW group) and the ebpf programs' ring buffer. One netlink socket
per namespace and source, opened inside the namespace; nothing is read outside the lab.

The values here are the kernel's words, decoded but not interpreted: `observe/` names the ends,
the verdict and the cause (pure, testable without root).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Sequence

from cni_lab.kernel import bpf, netns
from cni_lab.kernel.bpf import Event

# NF_INET_* hook numbers (include/uapi/linux/netfilter.h), as NFULA_PACKET_HDR carries them
HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}


@dataclass(frozen=True)
class Logged:
    """One packet an nft `log group` rule sent to nflog."""

    time: float  # seconds since the epoch, when read
    netns: str  # the lab namespace whose rule logged it
    prefix: str  # the rule's `prefix` (NFULA_PREFIX), e.g. "cni-lab forward", "cni-lab policy-drop ingress"
    hook: str  # prerouting | input | forward | output | postrouting (HOOKS), "" if unknown
    indev: str  # interface names in that namespace, "" where none or unknown
    outdev: str
    packet: bytes  # from the IP header on (NFULA_PAYLOAD, the first COPY_RANGE bytes)


@dataclass(frozen=True)
class Tracked:
    """A conntrack entry the namespace confirmed (IPCTNL_MSG_CT_NEW event): its two tuples. Where
    the reply tuple is not the original turned around, NAT rewrote the flow."""

    time: float
    netns: str
    protocol: int  # IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP)
    orig_src: str
    orig_dst: str
    orig_sport: int  # ICMP: the echo id, both ports
    orig_dport: int
    reply_src: str
    reply_dst: str
    reply_sport: int
    reply_dport: int


@dataclass(frozen=True)
class Reported:
    """An event from a node's cilium_events ring buffer (kernel/bpf.py Event)."""

    time: float
    netns: str  # the node's namespace
    event: Event


Raw = Logged | Tracked | Reported
Chunk = tuple[float, str, str, "bytes | Event"]  # (time, netns, source kind, netlink datagram or ring event)


# -- reading them --------------------------------------------------------------------------------------

GROUP = 1  # the nflog group every lab log rule sends to (groups are per namespace)
COPY_RANGE = 128  # bytes of each logged packet handed over: IP and L4 headers, an ICMP error's quote
NETLINK_NETFILTER = 12
NFNLGRP_CONNTRACK_NEW = 1  # include/uapi/linux/netfilter/nfnetlink.h
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1  # include/uapi/linux/netfilter/nfnetlink_log.h
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
SOCKET_BUFFER = 8 << 20  # what a burst may queue before the reader drains it (SO_RCVBUFFORCE, as root)


def _messages() -> tuple[type, type]:
    """nflog's two messages, defined on pyroute2's nfnetlink base (pyroute2 ships none for nflog):
    the config request a listener binds with, and the packet the kernel sends (nfulnl_msg_*)."""
    from pyroute2.netlink import nla
    from pyroute2.netlink.nfnetlink import nfgen_msg

    class nflog_config(nfgen_msg):
        nla_map = (("NFULA_CFG_UNSPEC", "none"),
                   ("NFULA_CFG_CMD", "cmd"),
                   ("NFULA_CFG_MODE", "mode"),
                   ("NFULA_CFG_NLBUFSIZ", "be32"),
                   ("NFULA_CFG_TIMEOUT", "be32"),
                   ("NFULA_CFG_QTHRESH", "be32"),
                   ("NFULA_CFG_FLAGS", "be16"))

        class cmd(nla):
            fields = (("command", "B"),)

        class mode(nla):
            fields = (("copy_range", ">I"), ("copy_mode", "B"), ("pad", "B"))

    class nflog_packet(nfgen_msg):
        nla_map = (("NFULA_UNSPEC", "none"),
                   ("NFULA_PACKET_HDR", "packet_hdr"),
                   ("NFULA_MARK", "be32"),
                   ("NFULA_TIMESTAMP", "hex"),
                   ("NFULA_IFINDEX_INDEV", "be32"),
                   ("NFULA_IFINDEX_OUTDEV", "be32"),
                   ("NFULA_IFINDEX_PHYSINDEV", "be32"),
                   ("NFULA_IFINDEX_PHYSOUTDEV", "be32"),
                   ("NFULA_HWADDR", "hex"),
                   ("NFULA_PAYLOAD", "cdata"),
                   ("NFULA_PREFIX", "asciiz"))

        class packet_hdr(nla):
            fields = (("hw_protocol", ">H"), ("hook", "B"), ("pad", "B"))

    return nflog_config, nflog_packet


NLA = struct.Struct("=HH")  # struct nlattr: length, type (NLA_F_* bits in the type's top two)
NLMSG_HDR, NFGEN_HDR = 16, 4
NFULA_PACKET_HDR, NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV, NFULA_PAYLOAD, NFULA_PREFIX = 1, 4, 5, 9, 10


def packet_fields(chunk: bytes) -> tuple[int | None, int, int, bytes, str]:
    """(hook, in ifindex, out ifindex, payload, prefix) of one nflog packet message: its
    attributes walked with struct, not decoded by pyroute2's nflog_packet (which defines them):
    ~2 µs a message against ~60, what lets `observe` keep up with 5,000 flows a second
    (bench/observe.py; a unit test holds both readings equal)."""
    hook, indev, outdev, payload, prefix = None, 0, 0, b"", ""
    at, end = NLMSG_HDR + NFGEN_HDR, len(chunk)
    while at + 4 <= end:
        length, kind = NLA.unpack_from(chunk, at)
        if length < 4 or at + length > end:  # garbage, or cut inside the attribute
            break
        kind &= 0x3FFF
        value = chunk[at + 4:at + length]
        if kind == NFULA_PACKET_HDR and len(value) >= 3:
            hook = value[2]
        elif kind == NFULA_IFINDEX_INDEV and len(value) == 4:
            indev = int.from_bytes(value, "big")
        elif kind == NFULA_IFINDEX_OUTDEV and len(value) == 4:
            outdev = int.from_bytes(value, "big")
        elif kind == NFULA_PAYLOAD:
            payload = bytes(value)
        elif kind == NFULA_PREFIX:
            prefix = value.split(b"\0", 1)[0].decode(errors="replace")
        at += (length + 3) & ~3
    return hook, indev, outdev, payload, prefix


def config_request(sequence: int, family: int, group: int, attrs: list[tuple[str, object]]) -> bytes:
    from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_ULOG

    config, _ = _messages()
    msg = config()
    msg["header"]["type"] = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = sequence
    msg["nfgen_family"] = family
    msg["version"] = 0
    msg["res_id"] = group
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _acked(s: socket.socket, sequence: int, what: str) -> None:
    """Wait for the kernel's answer to request `sequence` (OSError with its errno if refused)."""
    while True:
        data = s.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                break
            if kind == NLMSG_ERROR and seq == sequence:
                error = -struct.unpack_from("=i", data, offset + 16)[0]
                if error:
                    raise OSError(error, f"{what}: {os.strerror(error)}")
                return
            offset += (length + 3) & ~3


def _tuple(msg: Any, name: str) -> tuple[int, str, str, int, int]:
    """(protocol, src, dst, sport, dport) of a conntrack tuple; ICMP: the echo id both ways."""
    t = msg.get_attr(name)
    ip, proto = t.get_attr("CTA_TUPLE_IP"), t.get_attr("CTA_TUPLE_PROTO")
    src = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC") or ""
    dst = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST") or ""
    number = proto.get_attr("CTA_PROTO_NUM") or 0
    sport = proto.get_attr("CTA_PROTO_SRC_PORT")
    dport = proto.get_attr("CTA_PROTO_DST_PORT")
    if sport is None:  # ICMP, ICMPv6: the id names the flow
        sport = dport = proto.get_attr("CTA_PROTO_ICMP_ID") or proto.get_attr("CTA_PROTO_ICMPV6_ID") or 0
    return number, str(src), str(dst), int(sport), int(dport)


class Reader:
    """The lab's flow sources, open: per namespace an nflog listener bound to GROUP and a
    conntrack event listener; per ebpf node its ring buffer (polled: `bpf.events` consumes it).
    `read()` hands over what arrived. A namespace whose nflog group already has a listener (another
    `observe`, or `check` observing) is refused by the kernel (EPERM): `busy` names them, and
    that namespace's nflog is not read here."""

    def __init__(self, namespaces: Sequence[str], rings: dict[str, str] | None = None,
                 conntrack: bool = True) -> None:
        self.sockets: dict[int, tuple[str, str, socket.socket]] = {}  # fd → (netns, kind, socket)
        self.ifnames: dict[str, dict[int, str]] = {}
        self.rings = dict(rings or {})
        self.busy: list[str] = []
        self.sequence = 0

        def open_here(name: str) -> None:
            self.ifnames[name] = {i: n for i, n in socket.if_nameindex()}
            log = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self._buffer(log)
            log.bind((0, 0))
            log.settimeout(2.0)
            try:
                self._bind_group(log, name)
            except OSError as e:
                log.close()
                # a group bound by another socket: EPERM (nfulnl_recv_config: the instance's peer
                # is not us); as root nothing else refuses a bind with it
                if e.errno not in (errno.EPERM, errno.EBUSY):
                    raise
                self.busy.append(name)
            else:
                log.setblocking(False)
                self.sockets[log.fileno()] = (name, "nflog", log)
            if conntrack:
                ct = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
                self._buffer(ct)
                ct.bind((0, 1 << (NFNLGRP_CONNTRACK_NEW - 1)))
                ct.setblocking(False)
                self.sockets[ct.fileno()] = (name, "conntrack", ct)

        try:
            netns.visit(list(namespaces), open_here)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _buffer(s: socket.socket) -> None:
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, SOCKET_BUFFER)  # SO_RCVBUFFORCE: past rmem_max, as root
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)

    def _request(self, s: socket.socket, name: str, family: int, attrs: list[tuple[str, object]], what: str) -> None:
        self.sequence += 1
        s.sendto(config_request(self.sequence, family, GROUP, attrs), (0, 0))
        _acked(s, self.sequence, f"nflog {what} in {name}")

    def _bind_group(self, s: socket.socket, name: str) -> None:
        self._request(s, name, socket.AF_UNSPEC, [("NFULA_CFG_CMD", {"command": NFULNL_CFG_CMD_BIND})], "bind")
        self._request(s, name, socket.AF_UNSPEC, [
            ("NFULA_CFG_MODE", {"copy_range": COPY_RANGE, "copy_mode": NFULNL_COPY_PACKET, "pad": 0}),
            ("NFULA_CFG_NLBUFSIZ", 1 << 16),
            ("NFULA_CFG_TIMEOUT", 1),  # hundredths of a second a batch may wait
            ("NFULA_CFG_QTHRESH", 64),
        ], "config")

    def receive(self, timeout: float) -> list[Chunk]:
        """What arrived within `timeout` seconds (at once where something is waiting), undecoded:
        cheap enough to run beside the probes; `decode` later."""
        out: list[Chunk] = []
        ready: list[int] = []
        if self.sockets:
            ready, _, _ = select.select(list(self.sockets), [], [], timeout if not self.rings else min(timeout, 0.05))
        elif timeout:
            time.sleep(min(timeout, 0.05))
        now = time.time()
        for fd in ready:
            name, kind, s = self.sockets[fd]
            while True:
                try:
                    out.append((now, name, kind, s.recv(1 << 20)))
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    self.lost += 1  # the socket's buffer overflowed: the kernel dropped messages
        for name, pin in self.rings.items():
            try:
                out += [(now, name, "bpf", e) for e in bpf.events(pin)]
            except OSError:
                pass  # the node's programs are gone (down under way)
        return out

    def decode(self, chunks: Sequence[Chunk]) -> list[Raw]:
        out: list[Raw] = []
        for now, name, kind, data in chunks:
            if isinstance(data, Event):
                out.append(Reported(now, name, data))
            else:
                out += self._decode(name, kind, data, now)
        return out

    def read(self, timeout: float) -> list[Raw]:
        return self.decode(self.receive(timeout))

    lost = 0  # reads the kernel could not deliver (ENOBUFS: a socket's buffer overflowed)

    def _decode(self, name: str, kind: str, data: bytes, now: float) -> list[Raw]:
        out: list[Raw] = []
        offset = 0
        while offset + 16 <= len(data):
            length, msg_type = struct.unpack_from("=IH", data, offset)
            if length < 16:
                break
            chunk = data[offset:offset + length]
            offset += (length + 3) & ~3
            if kind == "nflog" and msg_type == (4 << 8 | NFULNL_MSG_PACKET):
                out.append(self._logged(name, chunk, now))
            elif kind == "conntrack" and msg_type >> 8 == 1 and msg_type & 0xFF == 0:
                tracked = self._tracked(name, chunk, now)
                if tracked is not None:
                    out.append(tracked)
        return out

    def _logged(self, name: str, chunk: bytes, now: float) -> Logged:
        hook, indev, outdev, payload, prefix = packet_fields(chunk)
        names = self.ifnames.get(name, {})
        return Logged(now, name, prefix, HOOKS.get(hook, "") if hook is not None else "",
                      names.get(indev, str(indev)) if indev else "", names.get(outdev, str(outdev)) if outdev else "",
                      payload)

    @staticmethod
    def _tracked(name: str, chunk: bytes, now: float) -> Tracked | None:
        from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

        msg = nfct_msg(chunk)
        msg.decode()
        if msg.get_attr("CTA_TUPLE_ORIG") is None or msg.get_attr("CTA_TUPLE_REPLY") is None:
            return None
        proto, osrc, odst, osport, odport = _tuple(msg, "CTA_TUPLE_ORIG")
        _, rsrc, rdst, rsport, rdport = _tuple(msg, "CTA_TUPLE_REPLY")
        return Tracked(now, name, proto, osrc, odst, osport, odport, rsrc, rdst, rsport, rdport)

    def close(self) -> None:
        for _, _, s in self.sockets.values():
            s.close()
        self.sockets.clear()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
