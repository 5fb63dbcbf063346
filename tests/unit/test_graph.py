"""Pictures from scenario files (no root): SVG, DOT and Mermaid."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from cni_lab import catalog, plan
from cni_lab.report import topology

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("scenario", ["two-nodes", "conflict", "vxlan", "two-racks", "bgp", "cni"])
def test_svg_parses_and_shows_every_node_pod_and_ip(scenario: str) -> None:
    lab = catalog.load(scenario)
    root = ET.fromstring(topology.svg(topology.of_plan(plan.build(lab))))
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for node in lab.nodes:
        assert node.name in text and str(node.ip) in text and str(node.pod_cidr) in text
        for pod in node.pods:
            assert pod.name in text and str(pod.ip) in text


def test_conflict_svg_marks_the_collision_in_red() -> None:
    root = ET.fromstring(topology.svg(topology.of_plan(plan.build(catalog.load("conflict")))))
    marked = [g.get("id") for g in root.iter(f"{SVG}g") if "collision" in (g.get("class") or "")]
    assert {"node-node1", "node-node2", "pod-node1/pod1", "pod-node2/pod1"} <= set(marked)
    assert "#d93025" in ET.tostring(root, encoding="unicode")
    clean = ET.fromstring(topology.svg(topology.of_plan(plan.build(catalog.load("two-nodes")))))
    assert not [g for g in clean.iter(f"{SVG}g") if "collision" in (g.get("class") or "")]


def test_inter_node_mechanisms_are_drawn() -> None:
    kinds = {name: {lk.kind for lk in topology.of_plan(plan.build(catalog.load(name))).links}
             for name in ("two-nodes", "vxlan", "bgp", "two-racks")}
    assert kinds == {"two-nodes": {"route"}, "vxlan": {"tunnel"}, "bgp": {"bgp"}, "two-racks": {"fabric"}}
    labels = [lk.label for lk in topology.of_plan(plan.build(catalog.load("two-nodes"))).links]
    assert "10.244.1.0/24 via 192.168.1.3" in labels


def test_dot_and_mermaid_are_text_graphs() -> None:
    topo = topology.of_plan(plan.build(catalog.load("conflict")))
    dot = topology.dot(topo)
    assert dot.startswith('digraph "conflict"') and "color=red" in dot and "10.244.0.2" in dot
    mermaid = topology.mermaid(topo)
    assert mermaid.startswith("flowchart TB") and "stroke:#d93025" in mermaid


def test_each_rack_is_its_own_switch_with_the_router_between() -> None:
    root = ET.fromstring(topology.svg(topology.of_plan(plan.build(catalog.load("two-racks")))))
    groups = {g.get("id") for g in root.iter(f"{SVG}g")}
    assert {"segment-rack1", "segment-rack2"} <= groups
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "node1 · rack1" in text and "node3 · rack2" in text and "router" in text
    dot = topology.dot(topology.of_plan(plan.build(catalog.load("two-racks"))))
    assert '"segment rack1" -> "router"' in dot and '"segment rack2" -> "router"' in dot
    assert '"node3" -> "segment rack2"' in dot


def test_dot_puts_one_label_on_each_pair_of_nodes() -> None:
    # both directions of a tunnel on one edge: Graphviz prints one label, not two over each other
    dot = topology.dot(topology.of_plan(plan.build(catalog.load("two-racks-vxlan"))))
    edges = [line.split(" [")[0].strip() for line in dot.splitlines() if "constraint=false" in line]
    assert len(edges) == len(set(edges)) == 3
    assert all("dir=both" in line for line in dot.splitlines() if "constraint=false" in line)


def test_calico_cross_subnet_draws_tunnels_across_racks_and_routes_within() -> None:
    """CrossSubnet: node1 and node2 share rack1, node3 and node4 rack2; only pairs across racks go
    through vxlan.calico, and each node's box names its VTEP."""
    topo = topology.of_plan(plan.build(catalog.load("calico-vxlan-racks")))
    kinds = {(lk.src, lk.dst): lk.kind for lk in topo.links}
    rack = {"node1": 1, "node2": 1, "node3": 2, "node4": 2}
    assert kinds and all((kind == "tunnel") == (rack[a] != rack[b]) for (a, b), kind in kinds.items()), kinds
    assert all("VXLAN VNI 4096 (vxlan.calico)" in lk.label for lk in topo.links if lk.kind == "tunnel")
    svg = topology.svg(topo)
    assert "vxlan.calico 10.244.0.0/32, mtu 1450" in svg
