"""Address allocation the way kube-controller-manager and host-local do it."""

from __future__ import annotations

from typing import Any

from cni_lab import cluster

from labs import lab_of


def resolve(doc: dict[str, Any]) -> cluster.Lab:
    return lab_of({"name": "lab", **doc})


def test_defaults_follow_the_seed_picture() -> None:
    lab = resolve({"nodes": [{"name": "node1", "pods": 2}, {"name": "node2", "pods": ["api"]}]})
    n1, n2 = lab.nodes
    assert (str(n1.ip), str(n1.pod_cidr), str(n1.gateway)) == ("192.168.1.2", "10.244.0.0/24", "10.244.0.1")
    assert [str(p.ip) for p in n1.pods] == ["10.244.0.2", "10.244.0.3"]
    assert [p.id for p in n1.pods] == ["node1/pod-1", "node1/pod-2"]
    assert (str(n2.ip), str(n2.pod_cidr), str(n2.pods[0].ip)) == ("192.168.1.3", "10.244.1.0/24", "10.244.1.2")


def test_explicit_values_win_and_are_skipped_by_allocation() -> None:
    lab = resolve({"nodes": [
        {"name": "a", "pods": 1},
        {"name": "b", "ip": "192.168.1.2", "podCIDR": "10.244.0.0/24"},
        {"name": "c"},
    ]})
    assert [str(n.ip) for n in lab.nodes] == ["192.168.1.3", "192.168.1.2", "192.168.1.4"]
    assert [str(n.pod_cidr) for n in lab.nodes] == ["10.244.1.0/24", "10.244.0.0/24", "10.244.2.0/24"]


def test_mask_size_splits_the_cluster_cidr() -> None:
    lab = resolve({"networking": {"clusterCIDR": "10.0.0.0/8", "nodeCIDRMaskSize": 26}, "nodes": [{"name": "a"}, {"name": "b"}]})
    assert [str(n.pod_cidr) for n in lab.nodes] == ["10.0.0.0/26", "10.0.0.64/26"]
    assert lab.nodes[0].pods == ()


def test_allow_overlap_turns_the_collision_into_a_warning() -> None:
    lab = resolve({"allowOverlap": True, "nodes": [
        {"name": "node1", "podCIDR": "10.244.0.0/24", "pods": 1},
        {"name": "node2", "podCIDR": "10.244.0.0/24", "pods": 1},
    ]})
    assert lab.nodes[0].pods[0].ip == lab.nodes[1].pods[0].ip
    assert len(lab.warnings) == 1 and "node2 and node1 share pod addresses" in lab.warnings[0]


def test_segments_allocate_per_segment_and_reserve_the_router() -> None:
    lab = resolve({
        "dataplane": "vxlan",
        "networking": {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}},
        "nodes": [{"name": "a", "segment": "rack1"}, {"name": "b", "segment": "rack2"},
                  {"name": "c", "ip": "192.168.2.9"}, {"name": "d", "segment": "rack1"}],
    })
    assert [(n.segment.name, str(n.ip)) for n in lab.nodes] == [
        ("rack1", "192.168.1.2"), ("rack2", "192.168.2.2"), ("rack2", "192.168.2.9"), ("rack1", "192.168.1.3")]
    assert lab.has_router and str(lab.nodes[1].router) == "192.168.2.1"


def test_mtus_follow_the_data_plane_unless_mis_set() -> None:
    vx = resolve({"dataplane": "vxlan", "nodes": [{"name": "a"}]})
    assert (vx.overlay_mtu, vx.pod_mtu) == (1450, 1450)
    jumbo = resolve({"dataplane": "vxlan", "networking": {"underlayMTU": 9000}, "nodes": [{"name": "a"}]})
    assert jumbo.pod_mtu == 8950
    wrong = resolve({"dataplane": "vxlan", "networking": {"podMTU": 1500}, "nodes": [{"name": "a"}]})
    assert (wrong.overlay_mtu, wrong.pod_mtu) == (1450, 1500)
    assert resolve({"dataplane": "host-gw", "nodes": [{"name": "a"}]}).pod_mtu == 1500


def test_exhaustion_is_one_line_per_pool_not_one_per_node() -> None:
    import pytest as _pytest

    from cni_lab.errors import LabError

    with _pytest.raises(LabError) as e:
        resolve({"networking": {"underlay": "192.168.1.0/29"}, "nodes": [{"name": "n", "count": 40}]})
    assert e.value.problems == ("s.yaml: nodes: the underlay 192.168.1.0/29 has no address left for 35 nodes "
                                "(n6 … n40); use a larger underlay",)
    with _pytest.raises(LabError) as e:
        resolve({"networking": {"clusterCIDR": "10.244.0.0/23"}, "nodes": [{"name": "n", "count": 4}]})
    assert len(e.value.problems) == 1 and "has no /24 left for 2 nodes (n3 … n4)" in e.value.problems[0]
