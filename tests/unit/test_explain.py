"""explain's wording for the routes a learner meets, on hand-made routes (no kernel needed)."""

from __future__ import annotations

import pytest

from cni_lab import catalog
from cni_lab.kernel.readback import Route
from cni_lab.lesson import explain


def route(dst: str, dev: str | None, gateway: str | None = None, proto: str = "boot", kind: str = "unicast") -> Route:
    return Route(dst, dev, gateway, "global", proto, kind, None, False)


@pytest.mark.parametrize("scenario,node,r,words", [
    ("two-nodes", "node1", route("10.244.1.0/24", "eth0", "192.168.1.3"), "route to node2's pods via 192.168.1.3"),
    ("two-nodes", "node1", route("10.244.0.0/24", "cni0"), "this node's pod CIDR, on the bridge cni0"),
    ("two-nodes", "node1", route("192.168.1.0/24", "eth0"), "the underlay LAN: other nodes are reached directly"),
    ("vxlan", "node1", route("10.244.1.0/24", "flannel.1", "10.244.1.0"), "through the VXLAN tunnel (its VTEP 10.244.1.0)"),
    ("bgp", "node1", route("10.244.0.64/26", "eth0", "192.168.1.3", "bird"), "learned over BGP"),
    ("bgp", "node1", route("10.244.0.0/26", None, kind="blackhole"), "this node's IPAM block"),
    ("two-racks", "node1", route("default", "eth0", "192.168.1.1"), "the segment's router 192.168.1.1"),
])
def test_a_route_is_said_in_the_lessons_words(scenario: str, node: str, r: Route, words: str) -> None:
    assert words in explain.meaning(catalog.load(scenario), node, r)


def test_a_pods_own_subnet_route_is_about_arp_on_the_bridge() -> None:
    said = explain.meaning(catalog.load("two-nodes"), "node1", route("10.244.0.0/24", "eth0"), in_pod=True)
    assert "pods of this node are reached directly" in said


def test_policy_words_say_the_pods_own_node_always_gets_in_and_show_its_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """explain agrees with the evaluator and the rules: under a default-deny ingress policy the
    pod's own node still reaches it (NetworkPolicySpec.ingress, "the pod's local node")."""
    from cni_lab.kernel import edit
    from cni_lab.rulesets import netpol

    from labs import make_lab, network_policy, pod

    lab = make_lab([{"name": "node1", "pods": [pod("a", "x", {"pod": "a"}), pod("b", "x-a", {"pod": "b"})]},
                    {"name": "node2", "pods": [pod("c", "x", {"pod": "c"})]}],
                   namespaces={"x": {}, "x-a": {}},
                   policies=[network_policy("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})])
    monkeypatch.setattr(edit, "nft_text", lambda ns, *args: netpol.ruleset(lab, lab.node(ns.rsplit(".", 1)[-1])))
    said = {pp.pod: pp for pp in explain.pod_policies(lab, "node1")}
    a = said["node1/x/a"]
    assert a.ingress == ["x/deny-ingress: nothing (ingress denied unless another policy allows it)",
                         "node1 itself, always: a pod's own node is never denied (Kubernetes' NetworkPolicySpec.ingress; "
                         "Felix does not police host → local pod)"]
    assert a.egress is None
    assert a.rules.startswith("chain to-wl-x/a {") and "jump pi-x/deny-ingress" in a.rules
    assert said["node1/x-a/b"].ingress is None and said["node1/x-a/b"].rules == ""


def test_no_kube_proxy_table_is_looked_for_where_the_data_plane_balances_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """ebpf balances Services in its BPF maps: explain must not say kube-proxy's table is missing."""
    from cni_lab.kernel import edit

    def no_table(ns: str, *args: str) -> str:
        raise OSError("No such file or directory")

    monkeypatch.setattr(edit, "nft_text", no_table)
    gone = explain.read_nat(catalog.load("services"), "node1")
    assert gone is not None and gone.services == ["kube-proxy's table is missing on this node"]
    bpf = explain.read_nat(catalog.load("ebpf-svc"), "node1")
    assert bpf is not None and bpf.services == [] and bpf.masquerade == []
