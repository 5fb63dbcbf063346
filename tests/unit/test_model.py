"""Scenario validation: every bad input is one line naming the file and the key."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cni_lab import model
from cni_lab.errors import LabError

from labs import lab_of, scenario_doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"nodes": [{"name": "n1"}]}, "s.yaml: name: missing"),
        (scenario_doc(name="Lab_1"), "s.yaml: name: 'Lab_1' is not a valid name"),
        (scenario_doc(name="a-very-long-name"), "s.yaml: name:"),
        (scenario_doc(dataplane="hostgw"), "s.yaml: dataplane: 'hostgw' is not one of bridge, host-gw, vxlan, fabric, bgp, cni, ebpf (did you mean 'host-gw'?)"),
        (scenario_doc(nodez=[]), "s.yaml: nodez: unknown key (did you mean 'nodes'?)"),
        (scenario_doc(dataplane="ebpf", ebpf={"routing": "direct"}), "s.yaml: ebpf.routing: 'direct' is not one of tunnel, native"),
        (scenario_doc(dataplane="ebpf", ebpf={"routingmode": "native"}), "s.yaml: ebpf.routingmode: unknown key (did you mean 'routingMode'?)"),
        (scenario_doc(ebpf="native"), "s.yaml: ebpf: must be a mapping with keys routing"),
        (scenario_doc(networking={"clusterCidr": "10.0.0.0/8"}), "s.yaml: networking.clusterCidr: unknown key (did you mean 'clusterCIDR'?)"),
        (scenario_doc(networking={"clusterCIDR": "10.244.0.1/16"}), "s.yaml: networking.clusterCIDR: '10.244.0.1/16' is not an IPv4 CIDR"),
        (scenario_doc(networking={"nodeCIDRMaskSize": 40}), "s.yaml: networking.nodeCIDRMaskSize: 40 is not a prefix length"),
        (scenario_doc(networking={"nodeCIDRMaskSize": 12}), "s.yaml: networking.nodeCIDRMaskSize: /12 is larger than the cluster CIDR"),
        ({"name": "lab", "nodes": []}, "s.yaml: nodes: must be a non-empty list"),
        ({"name": "lab", "nodes": [{"name": "n1"}, {"name": "n1"}]}, "s.yaml: nodes[1].name: duplicate node name 'n1'"),
        ({"name": "lab", "nodes": [{"name": "node-number-1"}]}, "s.yaml: nodes[0].name: 'node-number-1' is not a valid name"),
        ({"name": "lab", "nodes": [{"name": "underlay"}]}, "s.yaml: nodes[0].name: 'underlay' is reserved"),
        ({"name": "lab", "nodes": [{"name": "n1", "pods": ["a", "a"]}]}, "s.yaml: nodes[0].pods[1]: duplicate pod name 'a'"),
        ({"name": "lab", "nodes": [{"name": "n1", "pods": ["a/b"]}]}, "s.yaml: nodes[0].pods[0]: 'a/b' is not a valid pod name"),
        ({"name": "lab", "nodes": [{"name": "n1", "pods": -1}]}, "s.yaml: nodes[0].pods: -1 pods"),
        ({"name": "lab", "nodes": [{"name": "n1", "ip": "192.168.2.5"}]}, "s.yaml: nodes[0].ip: 192.168.2.5 is outside the underlay 192.168.1.0/24"),
        ({"name": "lab", "nodes": [{"name": "n1", "ip": "192.168.1.255"}]}, "s.yaml: nodes[0].ip: 192.168.1.255 is the underlay's network or broadcast address"),
        ({"name": "lab", "nodes": [{"name": "n1", "ip": "192.168.1.9"}, {"name": "n2", "ip": "192.168.1.9"}]}, "s.yaml: nodes[1].ip: 192.168.1.9 is already n1's address"),
        ({"name": "lab", "nodes": [{"name": "n1", "podCIDR": "10.0.0.0/24"}]}, "s.yaml: nodes[0].podCIDR: 10.0.0.0/24 is outside the cluster CIDR 10.244.0.0/16"),
        (
            {"name": "lab", "nodes": [{"name": "n1", "podCIDR": "10.244.0.0/24"}, {"name": "n2", "podCIDR": "10.244.0.0/25"}]},
            "s.yaml: nodes[1].podCIDR: 10.244.0.0/25 overlaps n1's 10.244.0.0/24 (set allowOverlap: true",
        ),
        ({"name": "lab", "nodes": [{"name": "n1", "podCIDR": "10.244.0.0/29", "pods": 6}]}, "s.yaml: nodes[0].pods: 6 pods do not fit n1's pod CIDR 10.244.0.0/29 (5 addresses"),
        (scenario_doc(networking={"clusterCIDR": "192.168.0.0/16"}), "s.yaml: networking.clusterCIDR: 192.168.0.0/16 overlaps the underlay"),
        (scenario_doc(allowOverlap="yes"), "s.yaml: allowOverlap: 'yes' is not true or false"),
        (scenario_doc(networking={"underlay": {"segments": {"Rack 1": "192.168.1.0/24"}}}), "s.yaml: networking.underlay.segments.Rack 1: 'Rack 1' is not a valid segment name"),
        (scenario_doc(networking={"underlay": {"segments": {"a": "192.168.1.0/24", "b": "192.168.1.128/25"}}}), "s.yaml: networking.underlay.segments.b: 192.168.1.128/25 overlaps segment a"),
        (scenario_doc(networking={"underlay": {"racks": {}}}), "s.yaml: networking.underlay.racks: unknown key"),
        ({"name": "lab", "nodes": [{"name": "n1", "segment": "rack9"}]}, "s.yaml: nodes[0].segment: no segment 'rack9' (segments: underlay)"),
        ({"name": "lab", "dataplane": "fabric", "nodes": [{"name": "n1", "ip": "192.168.1.1"}]}, "s.yaml: nodes[0].ip: 192.168.1.1 is the address of the underlay's router"),
        (scenario_doc(networking={"podMTU": 100}), "s.yaml: networking.podMTU: 100 is not an MTU between 576 and 9000"),
        ({"name": "lab", "nodes": [{"name": "router"}]}, "s.yaml: nodes[0].name: 'router' is reserved"),
        (scenario_doc(expect=[{"from": "node1", "verdict": "nope"}]), "s.yaml: expect[0].verdict: 'nope'"),
        (scenario_doc(expect=[{"rule": "pod-to-pod"}]), "s.yaml: expect[0].rule: 'pod-to-pod' is not one of"),
    ],
)
def test_bad_scenarios_name_file_and_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError) as e:
        lab_of(doc)
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems
    assert all("\n" not in p for p in e.value.problems)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(LabError) as e:
        lab_of({"name": "BAD", "dataplane": "x", "nodes": [{"name": "n1", "pods": "three"}]})
    assert len(e.value.problems) == 3


def test_not_yaml_and_not_a_mapping() -> None:
    with pytest.raises(LabError, match=r"s.yaml: not valid YAML \(line 1"):
        model.load_text("name: [unclosed", "s.yaml")
    with pytest.raises(LabError, match="s.yaml: a scenario is a mapping"):
        model.load_text("- 1\n- 2\n", "s.yaml")


def test_missing_file() -> None:
    with pytest.raises(LabError, match="nope.yaml: cannot read scenario"):
        model.load_file("nope.yaml")


def test_name_override_wins() -> None:
    assert model.load_document(scenario_doc(), "s.yaml", name_override="other").name == "other"
    with pytest.raises(LabError, match="name:"):
        model.load_document(scenario_doc(), "s.yaml", name_override="../etc")


def test_expectations_expand_fail() -> None:
    s = model.load_document(scenario_doc(expect=[{"from": "node1/*", "to": "node2/*", "verdict": "fail"}]), "s.yaml")
    assert s.expect[0].verdicts == frozenset(model.VERDICTS) - {"ok"}


def test_counted_node_groups_expand_in_order() -> None:
    s = model.load_document({"name": "lab", "nodes": [{"name": "edge", "pods": 1},
                                                      {"name": "node", "count": 3, "pods": 2, "segment": "underlay"}]}, "s.yaml")
    assert [n.name for n in s.nodes] == ["edge", "node1", "node2", "node3"]
    assert all(len(n.pods) == 2 for n in s.nodes[1:])


@pytest.mark.parametrize(("group", "message"), [
    ({"name": "n", "count": 0}, "s.yaml: nodes[0].count: 0 is not a node count"),
    ({"name": "n", "count": 2, "ip": "192.168.1.9"}, "s.yaml: nodes[0].ip: cannot be given for a counted group"),
    ({"name": "node-long", "count": 20}, "s.yaml: nodes[0].name: 'node-long10' is not a valid name"),
])
def test_bad_counted_groups(group: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError) as e:
        model.load_document({"name": "lab", "nodes": [group]}, "s.yaml")
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("where,document", [
    ("nodes[0].pods[0].namespace", {"name": "l", "nodes": [{"name": "n1", "pods": [{"name": "a", "namespace": ["x"]}]}]}),
    ("services[0].namespace", {"name": "l", "nodes": [{"name": "n1", "pods": ["a"]}],
                               "services": [{"name": "w", "namespace": {"a": 1}, "selector": {"app": "w"},
                                             "ports": [{"port": 80}]}]}),
])
def test_a_namespace_that_is_no_name_is_a_problem_not_a_traceback(where: str, document: dict) -> None:
    with pytest.raises(LabError, match=f"s.yaml: {re.escape(where)}: .* is not a namespace of the lab"):
        model.load_document(document, "s.yaml")


@pytest.mark.parametrize("document,where", [
    ({"name": "l", "nodes": [{"name": "n1", "pods": ["web\n"]}]}, "nodes[0].pods[0]"),
    ({"name": "l", "nodes": [{"name": "n1\n"}]}, "nodes[0].name"),
    ({"name": "l", "nodes": [{"name": "n1", "pods": [{"name": "a", "labels": {"app": "web\n"}}]}]}, "nodes[0].pods[0].labels"),
    ({"name": "l", "namespaces": {"x\n": {}}, "nodes": [{"name": "n1"}]}, "namespaces"),
])
def test_a_name_or_label_ending_in_a_newline_is_refused_as_the_api_server_refuses_it(document: dict, where: str) -> None:
    """A regex's `$` also matches before a final newline: the patterns end at the string's end (\\Z)."""
    with pytest.raises(LabError, match=re.escape(f"s.yaml: {where}")):
        model.load_document(document, "s.yaml")
