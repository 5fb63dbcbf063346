"""Real-looking packets for the observe tests, built with struct as the kernel lays them out
(RFC 791, 8200, 9293, 768, 792, 4443): from the IP header on, as nflog hands them over."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

SYN, ACK, RST, FIN = 0x02, 0x10, 0x04, 0x01


def tcp(sport: int, dport: int, flags: int = SYN) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHII", sport, dport, 0, 0)


def icmp(kind: int, code: int = 0, rest: bytes = b"\x00\x2a\x00\x01", payload: bytes = b"") -> bytes:
    """ICMP or ICMPv6: type, code, checksum, the 4 bytes after (echo id and sequence, an MTU)."""
    return struct.pack(">BBH", kind, code, 0) + rest + payload


def ipv4(src: str, dst: str, protocol: int, l4: bytes, ttl: int = 64, fragment_offset: int = 0) -> bytes:
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, fragment_offset, ttl, protocol, 0,
                         IPv4Address(src).packed, IPv4Address(dst).packed)
    return header + l4


def ipv6(src: str, dst: str, next_header: int, l4: bytes, hops: int = 64, extensions: bytes = b"") -> bytes:
    header = struct.pack(">IHBB16s16s", 6 << 28, len(extensions) + len(l4), next_header, hops,
                         IPv6Address(src).packed, IPv6Address(dst).packed)
    return header + extensions + l4


def unreachable4(sender: str, to: str, quoted: bytes, code: int, mtu: int = 0) -> bytes:
    """An ICMP destination unreachable quoting the IP header and 8 bytes of what caused it."""
    return ipv4(sender, to, 1, icmp(3, code, struct.pack(">HH", 0, mtu), quoted[:28]))
