"""Dual-stack scenarios: both families' addresses, allocated per family as Kubernetes does, and
bad IPv6 input caught with one line naming the file and the key."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any

import pytest

from cni_lab import cluster, model
from cni_lab.errors import LabError

from labs import make_lab

DUAL = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}


def lab(networking: dict[str, Any] | None = None, nodes: list[Any] | None = None, **extra: Any) -> cluster.Lab:
    return make_lab(nodes or [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}],
                    name="ds", networking=networking or DUAL, **extra)


def test_each_family_is_allocated_in_node_order() -> None:
    node1, node2 = lab().nodes
    assert node1.ips == (IPv4Address("192.168.1.2"), IPv6Address("fd00:192:168:1::2"))
    assert node2.ips == (IPv4Address("192.168.1.3"), IPv6Address("fd00:192:168:1::3"))
    assert [str(c) for c in node1.pod_cidrs] == ["10.244.0.0/24", "fd00:10:244::/64"]
    assert [str(c) for c in node2.pod_cidrs] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert node1.gateway6 == IPv6Address("fd00:10:244::1")
    assert [tuple(str(a) for a in p.ips) for p in node1.pods] == [("10.244.0.2", "fd00:10:244::2"),
                                                                 ("10.244.0.3", "fd00:10:244::3")]
    assert str(node2.pods[0].interface6) == "fd00:10:244:1::2/64"


def test_explicit_addresses_and_masks_are_taken() -> None:
    nodes = [{"name": "node1", "ips": ["192.168.1.9", "fd00:192:168:1::9"], "podCIDRs": ["10.244.7.0/24", "fd00:10:244:7::/64"], "pods": 1},
             {"name": "node2", "pods": 1}]
    node1, node2 = lab(nodes=nodes).nodes
    assert node1.ips == (IPv4Address("192.168.1.9"), IPv6Address("fd00:192:168:1::9"))
    assert node1.pod_cidr6 == IPv6Network("fd00:10:244:7::/64")
    assert node2.ip6 == IPv6Address("fd00:192:168:1::2") and node2.pod_cidr6 == IPv6Network("fd00:10:244::/64")
    masked = lab({**DUAL, "nodeCIDRMaskSizeIPv6": 72})
    assert masked.nodes[1].pod_cidr6 == IPv6Network("fd00:10:244:0:100::/72")
    calico = lab(dataplane="bgp")
    assert calico.nodes[0].pod_cidr6 is not None and calico.nodes[0].pod_cidr6.prefixlen == model.DEFAULT_BLOCK_SIZE6


def test_single_stack_labs_are_unchanged() -> None:
    plain = make_lab([{"name": "n1", "pods": 1}], name="p")
    assert plain.nodes[0].ip6 is None and plain.nodes[0].pods[0].ip6 is None
    assert plain.nodes[0].ips == (IPv4Address("192.168.1.2"),)


@pytest.mark.parametrize(("networking", "nodes", "message"), [
    ({**DUAL, "clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "nodeCIDRMaskSizeIPv6": 48}, None,
     "s.yaml: networking.nodeCIDRMaskSizeIPv6: /48 is larger than the cluster CIDR fd00:10:244::/56"),
    ({**DUAL, "clusterCIDR": ["10.244.0.0/16", "fd00:10::/32"]}, None,
     "s.yaml: networking.nodeCIDRMaskSizeIPv6: /64 cuts fd00:10::/32 into more than 2^16 node CIDRs"),
    ({"clusterCIDR": "fd00:10:244::/56", "underlay": "192.168.1.0/24"}, None,
     "s.yaml: networking.underlay: an IPv6 cluster needs an IPv6 underlay"),
    ({"clusterCIDR": ["fd00:10:244::/56", "10.244.0.0/16"], "underlay": DUAL["underlay"]}, None,
     "s.yaml: networking.clusterCIDR: list the IPv4 CIDR first"),
    ({"clusterCIDR": "fd00:10:244::/56"}, [{"name": "node1", "ip": "192.168.1.5"}],
     "s.yaml: nodes[0].ip: 192.168.1.5 is outside the underlay fd00:192:168:1::/64"),
    ({**DUAL, "clusterCIDR": ["10.244.0.0/16", "10.245.0.0/16"]}, None,
     "s.yaml: networking.clusterCIDR[1]: 10.245.0.0/16: a second IPv4 CIDR; give one CIDR per family"),
    ({**DUAL, "clusterCIDR": ["10.244.0.0/16", "fd00:10:244::1/56"]}, None,
     "s.yaml: networking.clusterCIDR[1]: 'fd00:10:244::1/56' is not an IPv4 or IPv6 CIDR with host bits zero"),
    ({"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"]}, None,
     "s.yaml: networking.underlay: a dual-stack cluster needs an IPv6 underlay too"),
    ({"underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}, None,
     "s.yaml: networking.underlay: an IPv6 underlay needs an IPv6 cluster CIDR too"),
    ({**DUAL, "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64", "fd00:1::/64"]}, None,
     "s.yaml: networking.underlay: must be one CIDR, or a list of two"),
    (DUAL, [{"name": "node1", "ips": ["192.168.1.5", "fd00:1::5"]}],
     "s.yaml: nodes[0].ips[1]: fd00:1::5 is outside the underlay's IPv6 network fd00:192:168:1::/64"),
    (DUAL, [{"name": "node1", "ips": ["192.168.1.5", "192.168.1.6"]}],
     "s.yaml: nodes[0].ips[1]: 192.168.1.6: a second IPv4 address; give one per family"),
    (DUAL, [{"name": "node1", "ip": "192.168.1.5", "ips": ["192.168.1.5"]}], "s.yaml: nodes[0].ips: give ip or ips, not both"),
    (DUAL, [{"name": "node1", "podCIDRs": ["10.244.0.0/24", "fd00:10:245::/64"]}],
     "s.yaml: nodes[0].podCIDRs[1]: fd00:10:245::/64 is outside the cluster CIDR fd00:10:244::/56"),
    (DUAL, [{"name": "a", "podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"]},
            {"name": "b", "podCIDRs": ["10.244.1.0/24", "fd00:10:244::/64"]}],
     "s.yaml: nodes[1].podCIDRs[1]: fd00:10:244::/64 overlaps a's fd00:10:244::/64"),
])
def test_bad_ipv6_input_is_one_line(networking: dict[str, Any], nodes: list[Any] | None, message: str) -> None:
    with pytest.raises(LabError) as e:
        lab(networking, nodes)
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems


def test_one_ipv6_cidr_makes_an_ipv6_only_lab() -> None:
    v6 = lab({"clusterCIDR": "fd00:10:244::/56"})
    node1, node2 = v6.nodes
    assert v6.ipv6_only and not v6.dual_stack and v6.families == (6,)
    assert node1.ips == (IPv6Address("fd00:192:168:1::2"),) and node2.ip == IPv6Address("fd00:192:168:1::3")
    assert [str(c) for c in node1.pod_cidrs] == ["fd00:10:244::/64"]
    assert [str(p.ip) for p in node1.pods] == ["fd00:10:244::2", "fd00:10:244::3"]
    explicit = lab({"clusterCIDR": "fd00:10:244::/56", "underlay": "fd00:aa::/64"},
                   [{"name": "node1", "ip": "fd00:aa::9", "podCIDR": "fd00:10:244:5::/64", "pods": 1}])
    assert str(explicit.nodes[0].ip) == "fd00:aa::9" and str(explicit.nodes[0].pod_cidr) == "fd00:10:244:5::/64"
    calico = lab({"clusterCIDR": "fd00:10:244::/56"}, dataplane="bgp")
    assert calico.nodes[1].pod_cidr == IPv6Network("fd00:10:244::40/122")

