"""An IP packet as nflog hands it over (from the IP header on, at most the rule's copy range):
version, protocol, addresses, ports, TCP flags, ICMP type and code, and for an ICMP error the
tuple of the packet it quotes. Pure and forgiving: a short or garbled packet gives None (or, past
a whole IP header, what could be read), never an exception.

Header layouts: RFC 791 (IPv4), RFC 8200 (IPv6 and its extension headers), RFC 9293 (TCP),
RFC 792 / RFC 1191 (ICMP, the next-hop MTU of "fragmentation needed"), RFC 4443 (ICMPv6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from ipaddress import IPv6Address
from typing import Any

TCP, UDP, ICMP, ICMPV6, SCTP = 6, 17, 1, 58, 132
PORTED = (TCP, UDP, SCTP)  # their first four bytes are the source and destination ports
PROTOCOL_NAMES = {TCP: "TCP", UDP: "UDP", SCTP: "SCTP", ICMP: "ICMPv4", ICMPV6: "ICMPv6"}
# IPv6 extension headers skipped on the way to the upper layer: hop-by-hop, routing, destination options
_EXTENSIONS = (0, 43, 60)
_FRAGMENT = 44
# ICMP errors quote the packet that caused them after their 8-byte header
ICMP4_ERRORS = (3, 4, 5, 11, 12)  # destination unreachable, source quench, redirect, time exceeded, parameter problem
ICMP6_ERRORS = (1, 2, 3, 4)  # destination unreachable, packet too big, time exceeded, parameter problem
ECHO_REQUESTS = {ICMP: 8, ICMPV6: 128}
ECHOES = {ICMP: (0, 8), ICMPV6: (128, 129)}
TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")  # bit 0 first


@dataclass(frozen=True)
class Packet:
    version: int  # 4 | 6
    protocol: int  # the upper layer's number (after IPv6 extension headers)
    src: str
    dst: str
    sport: int | None = None  # TCP, UDP, SCTP; None where the packet ends before them
    dport: int | None = None
    tcp_flags: tuple[str, ...] = ()  # names set, in TCP_FLAGS order
    icmp_type: int | None = None
    icmp_code: int | None = None
    echo_id: int | None = None  # echo request and reply
    mtu: int | None = None  # fragmentation needed (IPv4 3/4), packet too big (ICMPv6 2)
    ttl: int = 0  # TTL or hop limit
    inner: Packet | None = None  # an ICMP error's quoted packet

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_NAMES.get(self.protocol, f"IP/{self.protocol}")

    @property
    def is_icmp_error(self) -> bool:
        errors = ICMP4_ERRORS if self.protocol == ICMP else ICMP6_ERRORS if self.protocol == ICMPV6 else ()
        return self.icmp_type in errors

    @property
    def is_echo_request(self) -> bool:
        return self.icmp_type is not None and ECHO_REQUESTS.get(self.protocol) == self.icmp_type


def parse(data: bytes, quoted: bool = False) -> Packet | None:
    """The packet, or None when not even its IP header is there (or it is no IP packet).
    `quoted`: an ICMP error's copy of the packet that caused it, not searched for a further one."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        return _ipv4(data, quoted)
    if version == 6:
        return _ipv6(data, quoted)
    return None


def _dotted(raw: bytes) -> str:
    """An IPv4 address as text: what str(IPv4Address(raw)) gives, at a tenth of its cost."""
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def _ipv4(data: bytes, quoted: bool) -> Packet | None:
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20 or len(data) < ihl:
        return None
    fragment_offset = struct.unpack_from(">H", data, 6)[0] & 0x1FFF
    base = Packet(4, data[9], _dotted(data[12:16]), _dotted(data[16:20]), ttl=data[8])
    if fragment_offset:  # a later fragment: no upper-layer header in it
        return base
    return _upper(base, data[ihl:], quoted)


def _ipv6(data: bytes, quoted: bool) -> Packet | None:
    if len(data) < 40:
        return None
    header, at = data[6], 40
    for _ in range(8):  # a bounded walk: garbage must not loop
        if header in _EXTENSIONS and len(data) >= at + 2:
            header, at = data[at], at + (data[at + 1] + 1) * 8
        elif header == _FRAGMENT and len(data) >= at + 8:
            offset = struct.unpack_from(">H", data, at + 2)[0] >> 3
            header, at = data[at], at + 8
            if offset:
                return Packet(6, header, str(IPv6Address(data[8:24])), str(IPv6Address(data[24:40])), ttl=data[7])
        else:
            break
    base = Packet(6, header, str(IPv6Address(data[8:24])), str(IPv6Address(data[24:40])), ttl=data[7])
    if header in _EXTENSIONS or header == _FRAGMENT:  # cut off inside its extension headers
        return base
    return _upper(base, data[at:], quoted)


def _upper(p: Packet, l4: bytes, quoted: bool) -> Packet:
    """The packet with what its upper-layer header holds, as far as it was captured."""
    fields: dict[str, Any] = {}
    if p.protocol in PORTED and len(l4) >= 4:
        fields["sport"], fields["dport"] = struct.unpack_from(">HH", l4, 0)
        if p.protocol == TCP and len(l4) >= 14:
            fields["tcp_flags"] = tuple(name for bit, name in enumerate(TCP_FLAGS) if l4[13] & (1 << bit))
    elif p.protocol in (ICMP, ICMPV6) and len(l4) >= 2:
        kind, code = l4[0], l4[1]
        fields["icmp_type"], fields["icmp_code"] = kind, code
        if kind in ECHOES[p.protocol] and len(l4) >= 6:
            fields["echo_id"] = struct.unpack_from(">H", l4, 4)[0]
        errors = ICMP4_ERRORS if p.protocol == ICMP else ICMP6_ERRORS
        if kind in errors and len(l4) >= 8:
            if p.protocol == ICMP and kind == 3 and code == 4:
                fields["mtu"] = struct.unpack_from(">H", l4, 6)[0]
            elif p.protocol == ICMPV6 and kind == 2:
                fields["mtu"] = struct.unpack_from(">I", l4, 4)[0]
            if not quoted:
                fields["inner"] = parse(l4[8:], quoted=True)
    return replace(p, **fields)
