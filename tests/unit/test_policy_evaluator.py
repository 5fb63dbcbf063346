"""The NetworkPolicy evaluator, held against cases of the Kubernetes e2e suite
(test/e2e/network/netpol/network_policy.go): its model (namespaces x, y, z; pods a, b, c labelled
pod=<name>; ports 80 and 81) and, per case, which pairs its expected reachability allows."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from cni_lab import cluster, policy
from cni_lab.errors import LabError

from labs import make_lab, network_policy as np, pod

SPACES = ("x", "y", "z")
PODS = ("a", "b", "c")


# test/e2e/network/netpol/model.go: a container per port and protocol, its port named
# serve-<port>-<protocol> (Container.PortName), in the order `for port { for protocol }`
SERVED = [{"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
          for port in (80, 81) for proto in ("TCP", "UDP")]


def lab(*policies: dict[str, Any]) -> cluster.Lab:
    return make_lab([{"name": f"node{i + 1}", "pods": [{**pod(p, n, {"pod": p}), "ports": SERVED} for n in SPACES]}
                     for i, p in enumerate(PODS)],
                    name="np", namespaces={n: {"labels": {"ns": n}} for n in SPACES},
                    probe={"ports": ["tcp/80", "tcp/81", "udp/80", "udp/81"]}, policies=list(policies))


def allowed(the_lab: cluster.Lab, protocol: str = "TCP", port: int | None = 80) -> set[tuple[str, str]]:
    """Every (from, to) pair, as ns/pod, the policies allow (self pairs left out)."""
    pods = {w.qualified: w for w in the_lab.workloads}
    return {(s, d) for s in pods for d in pods if s != d
            and the_lab.evaluator.allowed(pods[s], pods[d], protocol, port)}


EVERYONE = {f"{n}/{p}" for n in SPACES for p in PODS}
ALL_PAIRS = {(s, d) for s in EVERYONE for d in EVERYONE if s != d}


def to(dst: str, *srcs: str) -> set[tuple[str, str]]:
    return {(s, dst) for s in srcs if s != dst}


def test_no_policy_allows_everything() -> None:
    assert allowed(lab()) == ALL_PAIRS


def test_default_deny_ingress() -> None:
    the_lab = lab(np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    denied = {(s, d) for s, d in ALL_PAIRS if d.startswith("x/")}
    assert allowed(the_lab) == ALL_PAIRS - denied
    assert allowed(the_lab, "ICMP", None) == ALL_PAIRS - denied


def test_default_deny_all_both_ways() -> None:
    the_lab = lab(np("deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    assert allowed(the_lab) == {(s, d) for s, d in ALL_PAIRS if not s.startswith("x/") and not d.startswith("x/")}


def test_pod_selector_within_the_namespace() -> None:
    the_lab = lab(np("allow-b", {"podSelector": {"matchLabels": {"pod": "a"}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    assert {p for p in allowed(the_lab) if p[1] == "x/a"} == to("x/a", "x/b")


def test_namespace_selector() -> None:
    the_lab = lab(np("allow-y", {"podSelector": {"matchLabels": {"pod": "a"}},
                                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    assert {p for p in allowed(the_lab) if p[1] == "x/a"} == to("x/a", "y/a", "y/b", "y/c")


def test_pod_or_namespace_selector_two_peers() -> None:
    the_lab = lab(np("or", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"pod": "b"}}}, {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    assert {p for p in allowed(the_lab) if p[1] == "x/a"} == to("x/a", "x/b", "y/a", "y/b", "y/c")


def test_pod_and_namespace_selector_one_peer() -> None:
    the_lab = lab(np("and", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"pod": "b"}}, "namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    assert {p for p in allowed(the_lab) if p[1] == "x/a"} == to("x/a", "y/b")


def test_match_expressions() -> None:
    not_in = lab(np("notin", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]}}]}]}))
    assert {p for p in allowed(not_in) if p[1] == "x/a"} == to("x/a", *(f"{n}/{p}" for n in ("x", "z") for p in PODS))
    exists = lab(np("exists", {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
                               "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                                   {"key": "pod", "operator": "In", "values": ["a", "c"]}]}}]}]}))
    assert {p for p in allowed(exists) if p[1] == "x/b"} == to("x/b", "x/a", "x/c")
    # NotIn holds for a pod without the key at all, as in Kubernetes
    missing = lab(np("missing", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}}]}]}))
    assert {p for p in allowed(missing) if p[1] == "x/a"} == to("x/a", "x/b", "x/c")


def test_ports_and_end_port() -> None:
    on_81 = lab(np("on-81", {"podSelector": {"matchLabels": {"pod": "a"}},
                            "ingress": [{"ports": [{"port": 81, "protocol": "TCP"}]}]}))
    assert not {p for p in allowed(on_81, "TCP", 80) if p[1] == "x/a"}
    assert {p for p in allowed(on_81, "TCP", 81) if p[1] == "x/a"} == to("x/a", *EVERYONE)
    assert not {p for p in allowed(on_81, "UDP", 81) if p[1] == "x/a"}  # TCP only
    assert not {p for p in allowed(on_81, "ICMP", None) if p[1] == "x/a"}  # ICMP is no port's
    ranged = lab(np("range", {"podSelector": {"matchLabels": {"pod": "a"}},
                             "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}]}))
    assert {p for p in allowed(ranged, "UDP", 81) if p[1] == "x/a"} == to("x/a", *EVERYONE)
    assert not {p for p in allowed(ranged, "TCP", 80) if p[1] == "x/a"}


# -- named ports: the e2e suite's cases, in its own words ------------------------------------------

# The suite builds its policies with GenNetworkPolicyWithNameAndPodMatchLabel and SetSpecIngressRules
# or SetSpecEgressRules (policies.go), which list the rule's direction in policyTypes.

def reachability(*denied: tuple[tuple[str | None, str | None], tuple[str | None, str | None]]) -> set[tuple[str, str]]:
    """NewReachability(AllPodStrings(), true) and ExpectPeer(from, to, false) per `denied`
    (test/e2e/network/netpol/reachability.go): a Peer with no namespace or pod matches every one.
    Self pairs are left out, as the suite ignores loopback."""
    def matches(peer: tuple[str | None, str | None], name: str) -> bool:
        ns, p = name.split("/")
        return peer[0] in (None, ns) and peer[1] in (None, p)
    return {(s, d) for s, d in ALL_PAIRS if not any(matches(f, s) and matches(t, d) for f, t in denied)}


ANY: tuple[str | None, str | None] = (None, None)


def test_e2e_should_allow_ingress_access_on_one_named_port() -> None:
    """network_policy.go, "should allow ingress access on one named port": x's pods take TCP
    only on serve-81-tcp; port 81 is open to all, port 80 closed to x."""
    the_lab = lab(np("allow-all", {"podSelector": {}, "policyTypes": ["Ingress"],
                                   "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))
    assert allowed(the_lab, "TCP", 81) == reachability()
    assert allowed(the_lab, "TCP", 80) == reachability((ANY, ("x", None)))
    # beyond the suite: the name is TCP's (the port's protocol defaults to TCP), so UDP 81 is closed too
    assert allowed(the_lab, "UDP", 81) == reachability((ANY, ("x", None)))


def test_e2e_should_allow_ingress_access_from_namespace_on_one_named_port() -> None:
    """network_policy.go, "should allow ingress access from namespace on one named port"."""
    the_lab = lab(np("allow-client-a-via-ns-selector-80", {"podSelector": {"matchLabels": {"pod": "a"}},
                                                          "policyTypes": ["Ingress"], "ingress": [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
        "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}]}))
    assert allowed(the_lab, "TCP", 80) == reachability((("x", None), ("x", "a")), (("z", None), ("x", "a")))
    assert allowed(the_lab, "TCP", 81) == reachability((ANY, ("x", "a")))  # ExpectAllIngress(x/a, false)


def test_e2e_should_allow_egress_access_on_one_named_port() -> None:
    """network_policy.go, "should allow egress access on one named port": resolved on the
    destination pod (every pod serves serve-80-tcp), so x's pods reach everyone on 80 only."""
    the_lab = lab(np("allow-egress", {"podSelector": {}, "policyTypes": ["Egress"],
                                      "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}))
    assert allowed(the_lab, "TCP", 80) == reachability()
    assert allowed(the_lab, "TCP", 81) == reachability((("x", None), ANY))
    assert allowed(the_lab, "ICMP", None) == reachability((("x", None), ANY))  # no port of ICMP's is named


def named_lab(*policies: dict[str, Any]) -> cluster.Lab:
    """x/a serves http on 8080, x/b on 9090, x/c no http; y/a serves http on 8080 over UDP."""
    return make_lab([{"name": "node1", "pods": [
        {**pod("a", "x", {"pod": "a"}), "ports": [{"name": "http", "containerPort": 8080}]},
        {**pod("b", "x", {"pod": "b"}), "ports": [{"name": "http", "containerPort": 9090}, {"containerPort": 8080}]},
        {**pod("c", "x", {"pod": "c"}), "ports": [{"name": "metrics", "containerPort": 8080}]},
        {**pod("a", "y", {"pod": "a"}), "ports": [{"name": "http", "containerPort": 8080, "protocol": "UDP"}]}]}],
        name="np", namespaces={"x": {}, "y": {}}, policies=list(policies))


def pairs_to(the_lab: cluster.Lab, protocol: str, port: int, dst: str) -> set[str]:
    return {s for s, d in allowed(the_lab, protocol, port) if d == dst}


def test_a_named_port_resolves_on_each_pod_the_policy_selects_and_a_pod_without_it_takes_nothing() -> None:
    """NetworkPolicyPort.port: "a numerical or named port on a pod": for ingress, the selected
    pod's own port of that name and protocol (FindPort's match); none: the rule matches nothing
    there (as network-config-analyzer resolves it, ConnectivityProperties._resolve_named_ports)."""
    the_lab = named_lab(np("http", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}))
    assert pairs_to(the_lab, "TCP", 8080, "x/a") == {"x/b", "x/c", "y/a"}
    assert pairs_to(the_lab, "TCP", 9090, "x/a") == set()
    assert pairs_to(the_lab, "TCP", 9090, "x/b") == {"x/a", "x/c", "y/a"}
    assert pairs_to(the_lab, "TCP", 8080, "x/b") == set()  # 8080 is x/b's too, but not named http
    assert pairs_to(the_lab, "TCP", 8080, "x/c") == pairs_to(the_lab, "TCP", 9090, "x/c") == set()


def test_a_named_port_of_an_egress_rule_resolves_on_the_destination_pod() -> None:
    the_lab = named_lab(np("out", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                                   "egress": [{"ports": [{"port": "http"}]}]}))
    out = {(d, port) for port in (8080, 9090) for s, d in allowed(the_lab, "TCP", port) if s == "x/a"}
    assert out == {("x/b", 9090)}  # x/c has no http, y/a's http is UDP
    assert {d for s, d in allowed(the_lab, "UDP", 8080) if s == "x/a"} == set()  # the rule's protocol is TCP
    udp = named_lab(np("out", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                               "egress": [{"ports": [{"port": "http", "protocol": "UDP"}]}]}))
    assert {d for s, d in allowed(udp, "UDP", 8080) if s == "x/a"} == {"y/a"}


def test_a_named_port_never_matches_a_node() -> None:
    """A node declares no container ports: a named port matches no traffic to it."""
    the_lab = named_lab(np("to-nodes", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
        "to": [{"ipBlock": {"cidr": "192.168.1.0/24"}}], "ports": [{"port": "http"}]}]}))
    a = {w.qualified: w for w in the_lab.workloads}["x/a"]
    node1 = policy.Workload("node1", "", (), the_lab.nodes[0].ips)
    assert not the_lab.evaluator.allowed(a, node1, "TCP", 8080)


def test_workloads_carry_their_pods_declared_ports() -> None:
    a = {w.qualified: w for w in named_lab().workloads}["x/a"]
    assert a.find_port("http", "TCP") == 8080 and a.find_port("http", "UDP") is None


def test_egress_to_an_ip_block_with_except() -> None:
    base = lab()
    xb = next(w for w in base.workloads if w.qualified == "x/b")
    the_lab = lab(np("egress", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                               "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{xb.ips[0]}/32"]}}]}]}))
    assert {p for p in allowed(the_lab) if p[0] == "x/a"} == {("x/a", d) for d in EVERYONE - {"x/a", "x/b"}}


def test_policies_add_up_and_both_ends_must_allow() -> None:
    the_lab = lab(np("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
                  np("allow-c", {"podSelector": {"matchLabels": {"pod": "a"}},
                                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                  np("egress-deny-y", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"]},
                     namespace="y"))
    assert {p for p in allowed(the_lab) if p[1].startswith("x/")} == {("x/c", "x/a")}
    assert not {p for p in allowed(the_lab) if p[0] == "y/c"}  # y/c may send nothing


def test_policy_types_default_from_the_rules() -> None:
    only_egress_rules = lab(np("e", {"podSelector": {}, "egress": [{"to": [{"podSelector": {}}]}]}))
    assert only_egress_rules.policies[0].policy_types == ("Ingress", "Egress")
    assert lab(np("i", {"podSelector": {}})).policies[0].policy_types == ("Ingress",)


@pytest.mark.parametrize(("spec", "types"), [
    ({}, ("Ingress",)),
    ({"egress": []}, ("Ingress",)),  # an empty egress list is no egress rule: len(spec.Egress) == 0
    ({"egress": None}, ("Ingress",)),
    ({"policyTypes": []}, ("Ingress",)),  # empty is defaulted like absent: Ingress, not "no isolation"
    ({"policyTypes": None, "egress": [{}]}, ("Ingress", "Egress")),
    ({"policyTypes": [], "egress": [{"to": [{"podSelector": {}}]}]}, ("Ingress", "Egress")),
    ({"policyTypes": ["Egress"]}, ("Egress",)),
    ({"policyTypes": ["Egress"], "ingress": [{}]}, ("Egress",)),  # given: taken as given, rules or not
    ({"policyTypes": ["Ingress", "Ingress"]}, ("Ingress",)),  # atomic list, only its length is checked
], ids=["absent", "egress-empty", "egress-null", "types-empty", "types-null-egress", "types-empty-egress",
        "egress-only", "egress-with-ingress-rules", "ingress-twice"])
def test_policy_types_default_exactly_as_the_api_server_does(spec: dict[str, Any], types: tuple[str, ...]) -> None:
    """pkg/apis/networking/v1/defaults.go, SetDefaults_NetworkPolicy: when len(policyTypes) == 0,
    [Ingress], plus Egress only when len(spec.egress) != 0."""
    assert lab(np("p", {"podSelector": {}, **spec})).policies[0].policy_types == types


def test_an_empty_egress_list_isolates_ingress_only_and_empty_policy_types_mean_ingress() -> None:
    egress_empty = lab(np("e", {"podSelector": {}, "egress": []}))
    assert {p for p in allowed(egress_empty) if p[0].startswith("x/")} == {p for p in ALL_PAIRS if p[0].startswith("x/")
                                                                         and not p[1].startswith("x/")}
    assert not {p for p in allowed(egress_empty) if p[1].startswith("x/")}
    types_empty = lab(np("t", {"podSelector": {}, "policyTypes": []}))
    assert not {p for p in allowed(types_empty) if p[1].startswith("x/")}


def test_more_than_two_policy_types_are_refused_as_the_api_server_does() -> None:
    with pytest.raises(LabError) as e:
        lab(np("p", {"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}))
    assert list(e.value.problems) == ["s.yaml: policies[0]: spec.policyTypes: may not specify more than two policyTypes"]


def nodes_of(the_lab: cluster.Lab) -> dict[str, policy.Workload]:
    """The nodes as check's pairs hand them to the evaluator (probe/pairs.py): no namespace, no labels."""
    return {n.name: policy.Workload(n.name, "", (), n.ips) for n in the_lab.nodes}


def test_a_pods_own_node_always_reaches_it_other_nodes_only_through_an_ip_block() -> None:
    """staging/src/k8s.io/api/networking/v1/types.go, NetworkPolicySpec.ingress: traffic is allowed
    "if the traffic source is the pod's local node", whatever the policies say; a node is no pod,
    so for the other nodes only an ipBlock naming their address lets them in."""
    deny = lab(np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    pods, nodes = {w.qualified: w for w in deny.workloads}, nodes_of(deny)
    x_a = pods["x/a"]  # on node1
    for protocol, port in (("TCP", 80), ("UDP", 81), ("ICMP", None)):
        assert deny.evaluator.allowed(nodes["node1"], x_a, protocol, port)
        assert not deny.evaluator.allowed(nodes["node2"], x_a, protocol, port)
    node2 = next(n for n in deny.nodes if n.name == "node2")
    by_block = lab(np("from-node2", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": f"{node2.ip}/32"}}]}]}))
    pods, nodes = {w.qualified: w for w in by_block.workloads}, nodes_of(by_block)
    assert by_block.evaluator.allowed(nodes["node2"], pods["x/a"], "TCP", 80)
    assert not by_block.evaluator.allowed(nodes["node3"], pods["x/a"], "TCP", 80)
    assert by_block.evaluator.allowed(nodes["node3"], pods["x/c"], "TCP", 80)  # x/c is node3's own
    # egress has no such rule: a pod isolated for egress reaches its own node only through an ipBlock
    no_egress = lab(np("deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}))
    a = {w.qualified: w for w in no_egress.workloads}["x/a"]
    assert not no_egress.evaluator.allowed(a, nodes_of(no_egress)["node1"], "TCP", 80)


def test_check_expects_a_node_to_reach_its_own_pods_under_default_deny() -> None:
    from cni_lab.probe import pairs

    the_lab = lab(np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    want = {(p.src.id, p.dst.id): p.expected for p in pairs.all_pairs(the_lab)}
    assert want[("node1", "node1/x/a")] == frozenset({"ok"})
    assert want[("node2", "node1/x/a")] == pairs.BLOCKED
    assert want[("node1", "node2/x/b")] == pairs.BLOCKED


def test_ip_block_cidrs_with_host_bits_mean_their_network_with_the_api_servers_warning() -> None:
    """Kubernetes 1.36 (StrictIPCIDRValidation alpha, off): ValidateIPBlock parses with
    ParseCIDRSloppy and accepts host bits; GetWarningsForCIDR warns; Calico's converter takes the
    masked network (net.ParseCIDR)."""
    the_lab = lab(np("host-bits", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.244.0.5/16", "except": ["10.244.1.7/24"]}}]}]}))
    block = the_lab.policies[0].ingress[0].peers[0].ip_block
    assert block is not None
    assert (block.cidr, block.excepted) == (ip_network("10.244.0.0/16"), (ip_network("10.244.1.0/24"),))
    assert the_lab.policies[0].warnings == (
        's.yaml: policies[0]: spec.ingress[0].from[0].ipBlock.cidr: CIDR value "10.244.0.5/16" is ambiguous in this '
        'context (should be "10.244.0.0/16" or "10.244.0.5/32"?)',
        's.yaml: policies[0]: spec.ingress[0].from[0].ipBlock.except[0]: CIDR value "10.244.1.7/24" is ambiguous in '
        'this context (should be "10.244.1.0/24" or "10.244.1.7/32"?)')
    inside = [w.qualified for w in the_lab.workloads if block.matches(w.ips[0])]
    assert sorted(inside) == ["x/a", "x/c", "y/a", "y/c", "z/a", "z/c"]  # node2's pods (10.244.1.0/24) excepted
    assert {p for p in allowed(the_lab) if p[1] == "x/a"} == to("x/a", *inside)
    six = parse_spec({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "fd00:10:244::5/64"}}]}]})
    assert six.egress[0].peers[0].ip_block == policy.IPBlock(ip_network("fd00:10:244::/64"))
    assert parse_spec({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}).warnings == ()


@pytest.mark.parametrize(("cidr", "network", "warning"), [
    ("010.244.000.000/16", "10.244.0.0/16", 'non-standard CIDR value "010.244.000.000/16" is invalid: use "10.244.0.0/16"'),
    ("10.244.0.0/016", "10.244.0.0/16", 'non-standard CIDR value "10.244.0.0/016" is invalid: use "10.244.0.0/16"'),
    ("FD00:10:244:0::/64", "fd00:10:244::/64",
     'IPv6 CIDR value "FD00:10:244:0::/64" should be in RFC 5952 canonical format ("fd00:10:244::/64")'),
])
def test_other_sloppy_cidrs_are_read_and_warned_of_as_the_api_server_does(cidr: str, network: str, warning: str) -> None:
    read = parse_spec({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}]})
    assert read.egress[0].peers[0].ip_block == policy.IPBlock(ip_network(network))
    assert read.warnings == (f"p.yaml: spec.egress[0].to[0].ipBlock.cidr: {warning}",)


@pytest.mark.parametrize("cidr", ["10.244.0.0", "10.244.0.0/255.255.0.0", "10.244.0.0/33", "fe80::/64%eth0", "10.244.0/16", 16])
def test_what_parse_cidr_sloppy_refuses_is_refused(cidr: object) -> None:
    with pytest.raises(LabError, match=r"spec.egress\[0\].to\[0\].ipBlock.cidr: .* is not a valid CIDR"):
        parse_spec({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}]})


def test_the_api_servers_warnings_are_the_labs(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cni_lab.cli import cli

    import dataclasses

    the_lab = lab(np("host-bits", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.5/16"}}]}]}))
    assert the_lab.policies[0].warnings and the_lab.all_warnings == the_lab.warnings + the_lab.policies[0].warnings
    # `policy delete` on a running lab replaces the scenario's policies (lifecycle.set_policies): the warning goes
    deleted = dataclasses.replace(the_lab, scenario=dataclasses.replace(the_lab.scenario, policies=()))
    assert deleted.all_warnings == the_lab.warnings
    scenario = tmp_path / "np.yaml"
    scenario.write_text("name: np\nnamespaces: {x: {}}\nnodes:\n  - {name: node1, pods: [{name: a, namespace: x}]}\n"
                        "policies:\n  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p, namespace: x},\n"
                        "     spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.244.0.5/16}}]}]}}\n")
    result = CliRunner().invoke(cli, ["validate", str(scenario)])
    assert result.exit_code == 0, result.output
    assert 'ipBlock.cidr: CIDR value "10.244.0.5/16" is ambiguous in this context' in " ".join(result.output.split())


def test_policy_apply_prints_the_api_servers_warnings_as_kubectl_does(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from click.testing import CliRunner

    from cni_lab import lifecycle
    from cni_lab.cli import cli

    running = lab()

    def set_policies(name: str | None, change: Any) -> tuple[cluster.Lab, cluster.Lab]:  # as lifecycle's, without the kernel
        return running, dataclasses.replace(running, scenario=dataclasses.replace(running.scenario, policies=change(running)))

    monkeypatch.setattr(lifecycle, "set_policies", set_policies)
    file = tmp_path / "p.yaml"
    file.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
                    "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.244.0.5/16}}]}]}\n")
    result = CliRunner().invoke(cli, ["policy", "apply", "np", str(file)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert 'Warning: ' in said and 'ipBlock.cidr: CIDR value "10.244.0.5/16" is ambiguous in this context' in said


def parse_spec(spec: dict[str, Any]) -> policy.Policy:
    return policy.parse(np("p", spec), "p.yaml", ("x",))


def test_truth_table_is_printed_as_the_e2e_suite_does() -> None:
    the_lab = lab(np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    table = policy.truth_table(the_lab.evaluator, the_lab.workloads, "TCP", 80).splitlines()
    assert table[0] == "-\tx/a\tx/b\tx/c\ty/a\ty/b\ty/c\tz/a\tz/b\tz/c"
    assert table[4] == "y/a\tX\tX\tX\t.\t.\t.\t.\t.\t."
    assert table[1] == "x/a\t.\tX\tX\t.\t.\t.\t.\t.\t."  # a pod always reaches itself
    observed = {("node2/y/b", "node1/x/a"): True}
    marked = policy.truth_table(the_lab.evaluator, the_lab.workloads, "TCP", 80, observed).splitlines()
    assert marked[5].split("\t")[1] == "!"  # y/b → x/a: denied, yet it got through


@pytest.mark.parametrize(("spec", "message"), [
    ({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Equals", "values": ["a"]}]}},
     "spec.podSelector.matchExpressions[0].operator: 'Equals' is not a valid selector operator"),
    ({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In"}]}},
     "spec.podSelector.matchExpressions[0].values: must be non-empty when operator is In"),
    ({"podSelector": {}, "ingress": [{"ports": [{"endPort": 81}]}]},
     "spec.ingress[0].ports[0].endPort: may not be specified when port is not specified"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 80}]}]},
     "spec.ingress[0].ports[0].endPort: 80 must be a port no lower than port (81)"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "HTTP"}]}]},
     "spec.ingress[0].ports[0].port: 'HTTP' is not a valid port name (IANA_SVC_NAME): must contain only alpha-numeric "
     "characters (a-z, 0-9), and hyphens (-); must contain at least one letter (a-z)"),
    ({"podSelector": {}, "egress": [{"ports": [{"port": "serve-80-tcp-and-more"}]}]},
     "spec.egress[0].ports[0].port: 'serve-80-tcp-and-more' is not a valid port name (IANA_SVC_NAME): must be no more "
     "than 15 characters"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp", "endPort": 81}]}]},
     "spec.ingress[0].ports[0].endPort: may not be specified when `port` is non-numeric"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
     "spec.ingress[0].ports[0].protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
     "spec.egress[0].to[0].ipBlock.except[0]: 11.0.0.0/16 must be a strict subset of 10.0.0.0/8"),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "spec.egress[0].to[0]: may not specify more than 1 peer type"),
    ({"podSelector": {}, "ingres": []}, "spec.ingres: unknown field"),
    ({"podSelector": {}, "policyTypes": ["Inbound"]}, "spec.policyTypes[0]: 'Inbound' is not one of Ingress, Egress"),
    ({}, "spec.podSelector: required"),
])
def test_what_the_api_server_refuses_is_one_line(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError) as e:
        lab(np("bad", spec))
    assert any(message in p for p in e.value.problems), e.value.problems


def test_a_policy_of_an_unknown_namespace_or_twice_the_same_is_refused() -> None:
    with pytest.raises(LabError, match="metadata.namespace: 'w' is not a namespace of the lab"):
        lab(np("p", {"podSelector": {}}, namespace="w"))
    with pytest.raises(LabError, match="policies: x/p is defined twice"):
        lab(np("p", {"podSelector": {}}), np("p", {"podSelector": {}}))


def test_plan_prints_the_truth_table_per_probe(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cni_lab.cli import cli

    scenario = tmp_path / "np.yaml"
    policies = tmp_path / "deny.yaml"
    policies.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\n"
                        "spec: {podSelector: {}, policyTypes: [Ingress]}\n")
    scenario.write_text("name: np\nnamespaces: {x: {}}\nprobe: {ports: [tcp/80]}\npolicies: [deny.yaml]\n"
                        "nodes:\n  - {name: node1, pods: [{name: a, namespace: x}, web]}\n")
    result = CliRunner().invoke(cli, ["plan", str(scenario)])
    assert result.exit_code == 0, result.output
    assert "What the 1 NetworkPolicies allow" in result.output
    assert "TCP/80" in result.output and "ICMP" in result.output
    assert "default/web\t.\tX" in result.output  # web → itself allowed, web → x/a denied
