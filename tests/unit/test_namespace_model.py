"""Namespaces and labels in scenarios: pods of several namespaces, named unambiguously."""

from __future__ import annotations

from typing import Any

import pytest

from cni_lab import catalog, cluster, model
from cni_lab.errors import LabError

from labs import lab_of, make_lab, pod


def lab(**extra: Any) -> cluster.Lab:
    return make_lab([{"name": "node1", "pods": ["web", pod("a", "x", {"pod": "a"}), pod("a", "y")]},
                     {"name": "node2", "pods": [pod("b", "x", {"pod": "b"})]}],
                    name="ns", namespaces={"x": {"labels": {"team": "red"}}, "y": {}}, **extra)


def test_pods_carry_their_namespace_and_labels_and_ids_tell_them_apart() -> None:
    found = {p.id: p for p in lab().pods}
    assert list(found) == ["node1/web", "node1/x/a", "node1/y/a", "node2/x/b"]
    assert found["node1/web"].namespace == "default" and found["node1/web"].labels == ()
    assert found["node1/x/a"].qualified == "x/a" and dict(found["node1/x/a"].labels) == {"pod": "a"}
    assert found["node1/y/a"].name == "y.a"  # its key: its network namespace is cnilab-ns.node1.y.a
    spaces = {ns.name: dict(ns.labels) for ns in lab().scenario.namespaces}
    assert spaces == {"default": {"kubernetes.io/metadata.name": "default"},
                      "x": {"kubernetes.io/metadata.name": "x", "team": "red"}, "y": {"kubernetes.io/metadata.name": "y"}}


@pytest.mark.parametrize(("nodes", "namespaces", "message"), [
    ([{"name": "n1", "pods": [{"name": "a", "namespace": "z"}]}], None, "s.yaml: nodes[0].pods[0].namespace: 'z' is not a namespace"),
    ([{"name": "n1", "pods": [{"name": "a", "namespace": "x"}, {"name": "a", "namespace": "x"}]}], {"x": {}},
     "s.yaml: nodes[0].pods[1]: duplicate pod name 'x/a'"),
    ([{"name": "n1", "pods": [{"name": "a", "namespace": "x"}]}, {"name": "n2", "pods": [{"name": "a", "namespace": "x"}]}],
     {"x": {}}, "s.yaml: nodes[1].pods: pod x/a is already on n1"),
    ([{"name": "n1", "pods": [{"name": "a", "labels": {"-bad": "v"}}]}], None, "s.yaml: nodes[0].pods[0].labels.-bad: '-bad' is not a valid label key"),
    ([{"name": "n1", "pods": [{"name": "a", "labels": {"k": "a b"}}]}], None, "s.yaml: nodes[0].pods[0].labels.k: 'a b' is not a valid label value"),
    ([{"name": "n1", "pods": [{"name": "a", "nmespace": "x"}]}], None, "s.yaml: nodes[0].pods[0].nmespace: unknown key"),
    ([{"name": "n1"}], {"X_1": {}}, "s.yaml: namespaces.X_1: 'X_1' is not a valid namespace name"),
])
def test_bad_namespaces_and_labels_are_one_line(nodes: list[Any], namespaces: Any, message: str) -> None:
    doc: dict[str, Any] = {"name": "ns", "nodes": nodes}
    if namespaces is not None:
        doc["namespaces"] = namespaces
    with pytest.raises(LabError) as e:
        model.load_document(doc, "s.yaml")
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems


def test_the_same_pod_name_in_two_namespaces_on_one_node_is_fine_and_plain_names_are_as_before() -> None:
    assert {p.name for p in lab().nodes[0].pods} == {"web", "x.a", "y.a"}
    plain = make_lab([{"name": "n1", "pods": 2}, {"name": "n2", "pods": 2}], name="p")
    assert [p.id for p in plain.pods] == ["n1/pod-1", "n1/pod-2", "n2/pod-1", "n2/pod-2"]  # per node, as before


@pytest.mark.parametrize(("outside", "message"), [
    ({"ip": "10.0.0.1"}, "s.yaml: outside.ip: 10.0.0.1 is not a host of 198.51.100.0/24"),
    ({"ip": "198.51.100.1"}, "s.yaml: outside.ip: 198.51.100.1 is not a host of 198.51.100.0/24 other than the router's"),
    ({"address": "x"}, "s.yaml: outside.address: unknown key"),
])
def test_bad_outside_hosts_are_one_line(outside: Any, message: str) -> None:
    with pytest.raises(LabError) as e:
        model.load_document({"name": "o", "outside": outside, "nodes": [{"name": "n1"}]}, "s.yaml")
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems


def test_an_outside_host_brings_a_router_and_masquerade_by_default() -> None:
    plain = model.load_document({"name": "o", "outside": {}, "nodes": [{"name": "n1"}]}, "s.yaml")
    assert str(plain.outside_ip) == "198.51.100.10" and plain.masquerade
    off = model.load_document({"name": "o", "outside": None, "networking": {"masquerade": False}, "nodes": [{"name": "n1"}]}, "s.yaml")
    assert not off.masquerade and off.outside_ip is not None
    assert catalog.resolve(plain).has_router


def test_services_get_cluster_ips_in_order_and_their_endpoints() -> None:
    doc = {"name": "s", "nodes": [{"name": "n1", "pods": [{"name": "a", "labels": {"app": "web"}}, "b"]}],
           "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
                        {"name": "none", "selector": {"app": "db"}, "ports": [{"port": 5432}]}]}
    found = lab_of(doc).services
    # and kube-dns, the lab's cluster DNS, at the tenth address (kubeadm's clusterDNS), over its DNS pod
    assert [str(s.cluster_ip) for s in found] == ["10.96.0.2", "10.96.0.3", "10.96.0.10"]
    assert [p.id for p in found[0].endpoints] == ["n1/a"] and found[1].endpoints == ()
    assert found[2].qualified == "kube-system/kube-dns" and [p.id for p in found[2].endpoints] == ["n1/kube-system/coredns"]


def _services(*specs: dict) -> list:
    lab = make_lab([{"name": "n1", "pods": [pod("a", labels={"app": "web"}), "b"]},
                    {"name": "n2", "pods": [pod("c", labels={"app": "web"})]}],
                   name="s", outside={}, services=list(specs), dns=False)  # these Services alone
    return [lab, lab.services]


def test_node_ports_are_given_or_allocated_in_order_and_refused_as_the_api_server_refuses_them() -> None:
    lab, found = _services({"name": "w", "type": "NodePort", "selector": {"app": "web"},
                            "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]},
                           {"name": "x", "type": "NodePort", "externalTrafficPolicy": "Local", "pods": ["n2/c"],
                            "ports": [{"port": 80, "nodePort": 30000}]})
    assert [p.node_port for s in found for p in s.spec.ports] == [30001, 30002, 30000]  # the given one is kept
    assert [p.id for p in found[1].endpoints] == ["n2/c"] and found[1].spec.external_traffic_policy == "Local"
    refusals = {
        "services[0].type: 'LoadBalancer' is not one of ClusterIP, NodePort": {"type": "LoadBalancer"},
        "services[0].externalTrafficPolicy: may only be set for externally-accessible Services": {"externalTrafficPolicy": "Local"},
        "services[0].externalTrafficPolicy: 'local' is not Cluster or Local": {"type": "NodePort", "externalTrafficPolicy": "local"},
        "services[0].ports[0].nodePort: may not be used when type is ClusterIP": {"ports": [{"port": 80, "nodePort": 30000}]},
        "services[0].ports[0].nodePort: 80 is not in the valid range 30000-32767": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
        "services[0]: give a selector or pods, not both": {"pods": ["n1/a"]},
    }
    for message, change in refusals.items():
        with pytest.raises(LabError, match=message.replace("[", "\\[").replace("]", "\\]")):
            _services({"name": "w", "selector": {"app": "web"}, "ports": [{"port": 80}], **change})
    with pytest.raises(LabError, match="services\\[1\\].ports\\[0\\].nodePort: 30000/TCP: provided port is already allocated"):
        _services({"name": "w", "type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30000}]},
                  {"name": "v", "type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30000}]})
    with pytest.raises(LabError, match="services\\[0\\].pods: n9/a is no pod of the lab"):
        _services({"name": "w", "pods": ["n9/a"], "ports": [{"port": 80}]})


def test_kube_proxys_table_differs_per_node_in_its_address_and_local_endpoints() -> None:
    from cni_lab.rulesets import kubeproxy

    lab, found = _services({"name": "w", "type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                            "ports": [{"port": 80, "nodePort": 30080}]},
                           {"name": "empty", "selector": {"app": "none"}, "ports": [{"port": 90}]})
    one, two = (kubeproxy.ruleset(lab, found, lab.node(n)) for n in ("n1", "n2"))
    assert "elements = { 192.168.1.2 }" in one and "elements = { 192.168.1.3 }" in two
    assert "tcp . 30080 : goto external-" in one
    local = [line for line in one.splitlines() if "numgen random mod 1" in line]
    assert len(local) == 1 and "__10.244.0.2/80" in local[0] and "10.244.1.2" not in local[0]
    assert "10.96.0.3 . tcp . 90 : goto reject-chain" in one  # no endpoints: rejected in the filter hooks
    assert 'ip saddr 10.244.0.0/16 goto service-' in one and "fib saddr type local jump mark-for-masquerade" in one
    # a node with no pod of a Local Service drops what is not short-circuited
    lab, found = _services({"name": "w", "type": "NodePort", "externalTrafficPolicy": "Local", "pods": ["n1/a"],
                            "ports": [{"port": 80, "nodePort": 30080}]})
    assert "tcp . 30080 : drop" in kubeproxy.ruleset(lab, found, lab.node("n2"))
    assert "tcp . 30080 : drop" not in kubeproxy.ruleset(lab, found, lab.node("n1"))
    assert kubeproxy.service_chain(found[0], found[0].spec.ports[0]).startswith("service-")
