"""observe/packets.py: IP packets from their header on, IPv4 and IPv6, truncated and garbled."""

from __future__ import annotations

import struct

import pytest

from cni_lab.observe import packets

from wire import ACK, SYN, icmp, ipv4, ipv6, sctp, tcp, udp, unreachable4


def test_an_ipv4_tcp_syn() -> None:
    p = packets.parse(ipv4("10.244.0.2", "10.244.1.3", 6, tcp(40000, 80, SYN)))
    assert p is not None
    assert (p.version, p.protocol_name, p.src, p.dst, p.sport, p.dport) == (4, "TCP", "10.244.0.2", "10.244.1.3", 40000, 80)
    assert p.tcp_flags == ("SYN",) and p.ttl == 64 and p.inner is None and not p.is_icmp_error


def test_tcp_flags_are_named_in_order() -> None:
    p = packets.parse(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, SYN | ACK)))
    assert p is not None and p.tcp_flags == ("SYN", "ACK")


def test_udp_and_sctp_ports() -> None:
    u = packets.parse(ipv4("10.0.0.1", "10.0.0.2", 17, udp(5353, 53)))
    s = packets.parse(ipv4("10.0.0.1", "10.0.0.2", 132, sctp(7, 9)))
    assert u is not None and (u.protocol_name, u.sport, u.dport, u.tcp_flags) == ("UDP", 5353, 53, ())
    assert s is not None and (s.protocol_name, s.sport, s.dport) == ("SCTP", 7, 9)


def test_an_ipv4_echo_request() -> None:
    p = packets.parse(ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, struct.pack(">HH", 42, 1))))
    assert p is not None and (p.icmp_type, p.icmp_code, p.echo_id) == (8, 0, 42)
    assert p.is_echo_request and not p.is_icmp_error and p.sport is None


def test_an_ipv6_udp_packet_past_a_hop_by_hop_header() -> None:
    hop_by_hop = bytes([17, 0]) + bytes(6)  # next header UDP, length 0 (8 bytes)
    p = packets.parse(ipv6("fd00:10:244::2", "fd00:10:244:1::3", 0, udp(1000, 80), extensions=hop_by_hop))
    assert p is not None
    assert (p.version, p.protocol, p.src, p.dst, p.sport, p.dport) == (6, 17, "fd00:10:244::2", "fd00:10:244:1::3", 1000, 80)


def test_an_icmpv6_echo_request() -> None:
    p = packets.parse(ipv6("fd00::1", "fd00::2", 58, icmp(128, 0, struct.pack(">HH", 7, 1)), hops=63))
    assert p is not None and (p.protocol_name, p.icmp_type, p.echo_id, p.ttl) == ("ICMPv6", 128, 7, 63)
    assert p.is_echo_request


def test_an_ipv4_error_quotes_the_packet_that_caused_it() -> None:
    original = ipv4("10.244.0.2", "10.244.1.3", 6, tcp(40000, 80))
    p = packets.parse(unreachable4("192.168.1.3", "10.244.0.2", original, code=1))
    assert p is not None and p.is_icmp_error and (p.icmp_type, p.icmp_code) == (3, 1)
    assert p.inner is not None
    assert (p.inner.src, p.inner.dst, p.inner.sport, p.inner.dport) == ("10.244.0.2", "10.244.1.3", 40000, 80)
    assert p.inner.tcp_flags == ()  # 8 bytes of TCP quoted: the ports, not the flags


def test_fragmentation_needed_carries_the_next_hop_mtu() -> None:
    original = ipv4("10.244.0.2", "10.244.1.3", 17, udp(1, 2))
    p = packets.parse(unreachable4("10.244.0.1", "10.244.0.2", original, code=4, mtu=1450))
    assert p is not None and p.mtu == 1450 and p.inner is not None and p.inner.dport == 2


def test_an_icmpv6_packet_too_big_quotes_its_packet_and_mtu() -> None:
    original = ipv6("fd00::2", "fd00:1::3", 17, udp(9, 53, b"x" * 1400))
    p = packets.parse(ipv6("fd00::1", "fd00::2", 58, icmp(2, 0, struct.pack(">I", 1280), original[:100])))
    assert p is not None and p.is_icmp_error and p.mtu == 1280
    assert p.inner is not None and (p.inner.src, p.inner.dport) == ("fd00::2", 53)


def test_a_quoted_error_is_not_searched_for_a_further_one() -> None:
    deepest = ipv4("10.0.0.9", "10.0.0.8", 17, udp(1, 2))
    middle = unreachable4("10.0.0.8", "10.0.0.9", deepest, code=3)
    p = packets.parse(ipv4("10.0.0.7", "10.0.0.8", 1, icmp(3, 1, bytes(4), middle)))
    assert p is not None and p.inner is not None and p.inner.is_icmp_error and p.inner.inner is None


def test_a_later_fragment_has_no_ports() -> None:
    p = packets.parse(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), fragment_offset=185))
    assert p is not None and p.protocol == 17 and p.sport is None


def test_a_truncated_upper_layer_keeps_the_addresses() -> None:
    p = packets.parse(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2))[:22])
    assert p is not None and p.src == "10.0.0.1" and p.sport is None and p.tcp_flags == ()


@pytest.mark.parametrize("data", [
    b"", b"\x45", bytes(19), ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2))[:19], b"\x4f" + bytes(30),
    ipv6("fd00::1", "fd00::2", 17, udp(1, 2))[:39], b"\x75" + bytes(60), b"\x41" + bytes(40), bytes(range(256)),
], ids=["empty", "one-byte", "zeros", "short-v4", "ihl-past-end", "short-v6", "version-7", "ihl-4", "garbage"])
def test_short_or_garbled_input_is_none(data: bytes) -> None:
    assert packets.parse(data) is None


def test_any_prefix_of_a_packet_parses_without_raising() -> None:
    full = unreachable4("192.168.1.3", "10.244.0.2", ipv4("10.244.0.2", "10.244.1.3", 6, tcp(40000, 80)), code=1)
    v6 = ipv6("fd00::1", "fd00::2", 0, udp(1, 2), extensions=bytes([44, 0]) + bytes(6))
    parsed = [packets.parse(data[:n]) for data in (full, v6) for n in range(len(data) + 1)]
    assert parsed[-1] is not None and parsed[-1].version == 6
    assert sum(p is None for p in parsed) == 20 + 40  # every prefix shorter than an IP header
