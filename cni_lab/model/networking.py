"""The `networking` section (the cluster's CIDRs, the underlay and its segments, MTUs, BGP's
numbers) and `outside` (a host behind the router standing for the internet)."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network
from typing import Any, TypeVar

from cni_lab.model.problems import Problems
from cni_lab.model.scenario import (DEFAULT_MTU, DEFAULT_NODE_MASK6, DEFAULT_OUTSIDE_IP, DEFAULT_SEGMENT,
                                    DEFAULT_UNDERLAY, OUTSIDE_NETWORK, Segment)

Net = TypeVar("Net", IPv4Network, IPv6Network)

NETWORKING_KEYS = ("clusterCIDR", "nodeCIDRMaskSize", "nodeCIDRMaskSizeIPv6", "underlay", "underlayMTU", "podMTU",
                   "blockSize", "asNumber", "masquerade", "serviceCIDR")
MAX_NODE_MASK_DIFF = 16  # kube-controller-manager: node CIDR mask - cluster CIDR mask <= 16
# a segment's bridge is "br-<segment>", its router port "r-<segment>": IFNAMSIZ (15) bounds it
SEGMENT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,9}\Z")


def read_cluster(problems: Problems, value: Any) -> tuple[IPv4Network | None, IPv6Network | None]:
    """`clusterCIDR`: one CIDR, or a list of one per family as kubeadm takes them."""
    key = "networking.clusterCIDR"
    v4, v6 = read_dual(problems, value, key)
    if isinstance(value, list) and len(value) == 2 and v4 is not None and v6 is not None \
            and str(value[0]).find(":") >= 0:
        problems.add(key, "list the IPv4 CIDR first: cni-lab's dual-stack labs are IPv4-first")
    return v4, v6


def read_dual(problems: Problems, value: Any, key: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    """A CIDR, or a list of one or two CIDRs of different families."""
    if not isinstance(value, list):
        if isinstance(value, str) and ":" in value:
            return None, read_network(problems, value, key, IPv6Network)
        return read_network(problems, value, key), None
    if not 1 <= len(value) <= 2:
        problems.add(key, "must be one CIDR, or a list of two: one IPv4, one IPv6")
        return None, None
    v4: IPv4Network | None = None
    v6: IPv6Network | None = None
    for j, item in enumerate(value):
        where = f"{key}[{j}]"
        try:
            net = ip_network(str(item), strict=True)
        except ValueError as e:
            problems.add(where, f"{item!r} is not an IPv4 or IPv6 CIDR with host bits zero ({e})")
            continue
        if isinstance(net, IPv4Network):
            if v4 is not None:
                problems.add(where, f"{net}: a second IPv4 CIDR; give one CIDR per family")
            v4 = v4 or net
        else:
            if v6 is not None:
                problems.add(where, f"{net}: a second IPv6 CIDR; give one CIDR per family")
            v6 = v6 or net
    return v4, v6


def check_families(problems: Problems, cluster: IPv4Network | IPv6Network | None, cluster6: IPv6Network | None,
                   segments: tuple[Segment, ...]) -> None:
    """Nodes have the families the cluster has: IPv4, IPv6, or both (then IPv6 second)."""
    if cluster is not None and any(s.cidr.version != cluster.version for s in segments):
        problems.add("networking.underlay", f"an IPv{cluster.version} cluster needs an IPv{cluster.version} "
                     "underlay (the first CIDR of each segment)")
        return
    if cluster6 is not None and any(s.cidr6 is None for s in segments):
        problems.add("networking.underlay", "a dual-stack cluster needs an IPv6 underlay too, e.g. "
                     "[192.168.1.0/24, fd00:192:168:1::/64] (or per segment)")
    if cluster6 is None and any(s.cidr6 is not None and s.cidr.version == 4 for s in segments):
        problems.add("networking.underlay", "an IPv6 underlay needs an IPv6 cluster CIDR too "
                     "(networking.clusterCIDR: [10.244.0.0/16, fd00:10:244::/56])")


def read_prefix6(problems: Problems, mapping: dict[str, Any], cluster6: IPv6Network | None) -> int:
    key = "nodeCIDRMaskSizeIPv6"
    value = mapping.get(key, DEFAULT_NODE_MASK6)
    if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 126:
        problems.add(f"networking.{key}", f"{value!r} is not a prefix length between 8 and 126")
        return DEFAULT_NODE_MASK6
    if cluster6 is not None:
        if value < cluster6.prefixlen:
            problems.add(f"networking.{key}", f"/{value} is larger than the cluster CIDR {cluster6}")
        elif value - cluster6.prefixlen > MAX_NODE_MASK_DIFF:
            problems.add(f"networking.{key}", f"/{value} cuts {cluster6} into more than 2^{MAX_NODE_MASK_DIFF} "
                         f"node CIDRs (kube-controller-manager allows a difference of {MAX_NODE_MASK_DIFF} bits)")
    return value


def read_network(problems: Problems, value: Any, key: str,
                 kind: type[Net] = IPv4Network) -> Net | None:  # type: ignore[assignment]
    try:
        return kind(str(value), strict=True)
    except ValueError as e:
        problems.add(key, f"{value!r} is not an IPv{4 if kind is IPv4Network else 6} CIDR with host bits zero ({e})")
        return None


def read_integer(problems: Problems, mapping: dict[str, Any], key: str, default: int, lo: int, hi: int,
                 what: str) -> int:
    value = mapping.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        problems.add(f"networking.{key}", f"{value!r} is not {what} between {lo} and {hi}")
        return default
    return value


def read_prefix(problems: Problems, mapping: dict[str, Any], key: str, default: int, lo: int,
                cluster: IPv4Network | None, what: str) -> int:
    """A prefix length the cluster CIDR is split by: no shorter than the cluster CIDR's own.
    (blockSize is only checked when given: only bgp labs use it.)"""
    value = read_integer(problems, mapping, key, default, lo, 30, what)
    if cluster is not None and value < cluster.prefixlen and (key in mapping or key == "nodeCIDRMaskSize"):
        problems.add(f"networking.{key}", f"/{value} is larger than the cluster CIDR {cluster}")
    return value


def read_mtu(problems: Problems, value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 576 <= value <= 9000:
        problems.add(key, f"{value!r} is not an MTU between 576 and 9000")
        return DEFAULT_MTU
    return value


def read_segments(problems: Problems, value: Any) -> tuple[Segment, ...]:
    """`underlay: 192.168.1.0/24`, or `underlay: {segments: {rack1: CIDR, rack2: CIDR}}`;
    each CIDR may be a list of one per family (dual-stack)."""
    if isinstance(value, dict):
        problems.unknown_keys(value, ("segments",), "networking.underlay.")
        raw = value.get("segments")
        if not isinstance(raw, dict) or not raw:
            problems.add("networking.underlay.segments", "must map segment names to CIDRs, e.g. {rack1: 192.168.1.0/24}")
            return (Segment(DEFAULT_SEGMENT, DEFAULT_UNDERLAY),)
        items = list(raw.items())
    else:
        items = [(DEFAULT_SEGMENT, value)]
    out: list[Segment] = []
    for seg_name, cidr in items:
        key = "networking.underlay" if len(items) == 1 and not isinstance(value, dict) else f"networking.underlay.segments.{seg_name}"
        if not isinstance(seg_name, str) or not SEGMENT_NAME.match(seg_name):
            problems.add(key, f"{seg_name!r} is not a valid segment name: use 1-10 of [a-z0-9-], starting with a letter")
            continue
        net4, net6 = read_dual(problems, cidr, key)
        net: IPv4Network | IPv6Network | None = net4
        if net4 is None:  # an IPv6-only underlay: IPv6 is its first family
            net, net6 = net6, None
        if net is None:
            continue
        if net.num_addresses < 4:
            problems.add(key, f"{net} is too small for nodes (use /30 or larger)")
        if net6 is not None and net6.num_addresses < 4:
            problems.add(key, f"{net6} is too small for nodes")
        for other in out:
            if net.version == other.cidr.version and net.overlaps(other.cidr):  # type: ignore[arg-type]
                problems.add(key, f"{net} overlaps segment {other.name} {other.cidr}")
            if net6 is not None and other.cidr6 is not None and net6.overlaps(other.cidr6):
                problems.add(key, f"{net6} overlaps segment {other.name} {other.cidr6}")
        out.append(Segment(seg_name, net, net6))
    return tuple(out) or (Segment(DEFAULT_SEGMENT, DEFAULT_UNDERLAY),)


def read_outside(problems: Problems, value: Any, present: bool) -> IPv4Address | None:
    """`outside: {ip: 198.51.100.10}` (that address the default, so `outside: {}` is enough)."""
    if not present:
        return None
    raw = value or {}
    if not isinstance(raw, dict):
        problems.add("outside", "must be a mapping with keys ip")
        return None
    problems.unknown_keys(raw, ("ip",), "outside.")
    try:
        ip = IPv4Address(str(raw.get("ip", DEFAULT_OUTSIDE_IP)))
    except ValueError:
        problems.add("outside.ip", f"{raw.get('ip')!r} is not an IPv4 address")
        return None
    if ip not in OUTSIDE_NETWORK or ip in (OUTSIDE_NETWORK.network_address, OUTSIDE_NETWORK.network_address + 1,
                                          OUTSIDE_NETWORK.broadcast_address):
        problems.add("outside.ip", f"{ip} is not a host of {OUTSIDE_NETWORK} other than the router's .1 "
                     "(the lab's internet stays inside lab namespaces)")
        return None
    return ip
