"""NetworkPolicy enforced on the nodes (rulesets/netpol.py) and proved by check: every pair's verdict
is what the evaluator says for check's probes, on every data plane that enforces policy."""

from __future__ import annotations

import socket
import subprocess
import threading
from typing import Any, Callable

import pytest
from helpers import ns_of, pings, run_in

from cni_lab import names, model
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import netns
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]


def np(name: str, spec: dict[str, Any], namespace: str = "x") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


DENY_INGRESS_X = np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_B_TO_A = np("allow-b-to-a", {"podSelector": {"matchLabels": {"pod": "a"}},
                                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
DENY_EGRESS_Y_C = np("deny-egress", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"]}, "y")


def plane(name: str) -> dict[str, Any]:
    """A data plane by name, or ebpf-native: ebpf in native routing (ebpf alone is its tunnel mode)."""
    if name == "ebpf-native":
        return {"dataplane": "ebpf", "ebpf": {"routing": "native"}}
    return {"dataplane": name}


def scenario(dataplane: str, *policies: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """x/a and x/b share node1 (bridged or routed on one node), the rest are elsewhere."""
    return {**plane(dataplane), "namespaces": {"x": {"labels": {"ns": "x"}}, "y": {"labels": {"ns": "y"}}},
            "nodes": [{"name": "node1", "pods": [{"name": "a", "namespace": "x", "labels": {"pod": "a"}},
                                                 {"name": "b", "namespace": "x", "labels": {"pod": "b"}}]},
                      {"name": "node2", "pods": [{"name": "c", "namespace": "x", "labels": {"pod": "c"}},
                                                 {"name": "c", "namespace": "y", "labels": {"pod": "c"}}]}],
            "policies": list(policies), **extra}


def verdicts(result: matrix.CheckResult) -> dict[tuple[str, str], str]:
    return {(r.pair.src.id, r.pair.dst.id): r.verdict for r in result.results}


@pytest.mark.parametrize("dataplane", ["bridge", "host-gw", "vxlan", "fabric", "bgp", "cni", "ebpf", "ebpf-native"])
def test_check_sees_exactly_what_the_policies_allow(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(scenario(dataplane, DENY_INGRESS_X, ALLOW_B_TO_A, DENY_EGRESS_Y_C))
    result = matrix.run(lab)
    # bridge: no routes between nodes, so only the pairs within a node can show the policies
    unmet = [(r.pair.src.id, r.pair.dst.id, r.verdict, sorted(r.pair.expected)) for r in result.failures
             if dataplane != "bridge" or r.pair.src.node == r.pair.dst.node]
    assert not unmet
    seen = verdicts(result)
    assert seen[("node1/x/b", "node1/x/a")] == "ok"  # allowed, and on one node (bridged where there is a bridge)
    assert seen[("node2/x/c", "node1/x/a")] in ("timeout", "unreachable")  # x/a takes only x/b
    assert seen[("node1/x/a", "node1/x/b")] in ("timeout", "unreachable")  # x denies all ingress
    assert seen[("node2/y/c", "node2")] in ("timeout", "unreachable")  # y/c may send nothing, to nodes neither
    if dataplane != "bridge":
        assert seen[("node1/x/a", "node2/y/c")] == "ok"  # y/c's ingress is open, and replies pass


@pytest.mark.parametrize("dataplane", ["bridge", "host-gw", "vxlan", "fabric", "bgp", "cni", "ebpf", "ebpf-native"])
def test_a_node_reaches_its_own_pods_under_default_deny_ingress_and_other_nodes_do_not(make_lab: MakeLab,
                                                                                     dataplane: str) -> None:
    """NetworkPolicySpec.ingress: allowed "if the traffic source is the pod's local node". The node
    sends as its agents do (no bind: the kernel picks cni0's, the underlay's or a tunnel's
    address), and check, which binds to the underlay, expects and sees the same."""
    lab = make_lab(scenario(dataplane, DENY_INGRESS_X))
    a = next(p for p in lab.pods if p.id == "node1/x/a")
    server = netns.open_socket(ns_of(lab, "node1/x/a"), socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((str(a.ip), 80))
    server.listen(8)

    def connects(src: str) -> bool:
        return run_in(ns_of(lab, src), "python3", "-c",
                      f"import socket; s = socket.socket(); s.settimeout(1); s.connect(('{a.ip}', 80))").returncode == 0

    try:
        assert pings(ns_of(lab, "node1"), a.ip) and connects("node1")  # its own node: always
        assert not pings(ns_of(lab, "node2"), a.ip) and not connects("node2")  # another node: no ipBlock names it
        assert not pings(ns_of(lab, "node2/x/c"), a.ip)  # and pods stay out
    finally:
        server.close()
    result = matrix.run(lab)
    seen = verdicts(result)
    assert seen[("node1", "node1/x/a")] == "ok" and seen[("node1", "node1/x/b")] == "ok"
    assert seen[("node2", "node1/x/a")] in ("timeout", "unreachable")
    assert not [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures
                if dataplane != "bridge" or r.pair.src.node == r.pair.dst.node]


def test_chains_named_namespace_slash_name_and_hashed_long_names_load_and_hold(make_lab: MakeLab) -> None:
    """Chain names carry "/" (no namespace or name has one), may be 255 characters long (the kernel's
    NFT_CHAIN_MAXNAMELEN, 256, counts the NUL) and past that are a hash."""
    long_name = "deny-" + "x" * 248  # 253 characters, the longest a name may be: hashed
    fits = "q" * 250  # pi-x/ + 250 = 255 characters: kept
    lab = make_lab(scenario("host-gw", np(long_name, {"podSelector": {}, "policyTypes": ["Ingress"]}),
                            np(fits, {"podSelector": {}, "policyTypes": ["Ingress"]}), ALLOW_B_TO_A))
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "inet", "cni-lab-policy", check=True).stdout
    assert "chain to-wl-x/a {" in ruleset and "jump pi-x/allow-b-to-a" in ruleset and "chain pi-_" in ruleset
    assert f"chain pi-x/{fits} {{" in ruleset
    a = next(p for p in lab.pods if p.id == "node1/x/a")
    assert pings(ns_of(lab, "node1/x/b"), a.ip)
    assert not pings(ns_of(lab, "node2/x/c"), a.ip)


def test_tcp_ports_are_enforced_and_the_rules_read_like_the_policy(make_lab: MakeLab) -> None:
    only_80 = np("only-80", {"podSelector": {"matchLabels": {"pod": "a"}},
                            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                         "ports": [{"protocol": "TCP", "port": 80}]}]})
    lab = make_lab(scenario("host-gw", only_80))
    a = next(p for p in lab.pods if p.id == "node1/x/a")
    server = netns.open_socket(ns_of(lab, "node1/x/a"), socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((str(a.ip), 80))
    server.listen(8)
    server.settimeout(5)

    def accept_all() -> None:
        try:
            while True:
                conn, _ = server.accept()
                conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept_all, daemon=True)
    thread.start()

    def connects(src: str, port: int) -> bool:
        done = run_in(ns_of(lab, src), "python3", "-c",
                      f"import socket; s = socket.socket(); s.settimeout(1); s.connect(('{a.ip}', {port}))")
        return done.returncode == 0

    try:
        assert connects("node2/y/c", 80)
        assert not connects("node2/x/c", 80)  # not from namespace y
        assert not connects("node2/y/c", 81)  # refused at 81: dropped before the pod can say no
    finally:
        server.close()
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "inet", "cni-lab-policy", check=True).stdout
    assert "chain to-wl-x/a" in ruleset and "chain pi-x/only-80" in ruleset
    assert "tcp dport 80" in ruleset and "ct state established,related accept" in ruleset
    assert "cni-lab-policy" not in run_in(ns_of(lab, "node2"), "nft", "list", "tables").stdout  # no pod of node2 is selected


def test_ebpf_refuses_a_policy_its_identities_cannot_hold_before_building(make_lab: MakeLab) -> None:
    """In a dual-stack lab an IPv4 ipBlock holding x/a's IPv4 address does not hold its IPv6 one:
    a map keyed by identity would let x/a's IPv6 traffic through as well, so ebpf refuses it."""
    dual = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
    to_a = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "to-a", "namespace": "y"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.2/32"}}]}]}}
    before = netns.listing()
    with pytest.raises(LabError, match="policy y/to-a: egress ipBlock 10.244.0.2/32"):
        make_lab(scenario("ebpf", to_a, networking=dual))
    assert netns.listing() == before


# the e2e model's containers serve each port and protocol on a port named serve-<port>-<protocol> (model.go)
SERVED = [{"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
          for port in (80, 81) for proto in ("TCP", "UDP")]
E2E_MODEL = {"dataplane": "host-gw", "namespaces": {n: {} for n in "xyz"},
             "probe": {"ports": ["tcp/80", "tcp/81", "udp/80"]},
             "nodes": [{"name": f"node{i + 1}", "pods": [{"name": p, "namespace": n, "labels": {"pod": p}, "ports": SERVED}
                                                        for n in "xyz"]}
                       for i, p in enumerate("abc")]}
SERVER_A = {"matchLabels": {"pod": "a"}}
# (name in network_policy.go, policies, (from, to, protocol, port) pairs its expected reachability allows / denies)
E2E_CASES = [
    ("should support a 'default-deny-ingress' policy", [np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})],
     [("y/a", "y/b", "TCP", 80)], [("y/a", "x/a", "TCP", 80), ("x/b", "x/c", "UDP", 80)]),
    ("should support a 'default-deny-all' policy", [np("deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
     [("y/a", "z/b", "TCP", 81)], [("x/a", "y/a", "TCP", 80), ("y/a", "x/a", "TCP", 80)]),
    ("should enforce policy to allow traffic from pods within server namespace based on PodSelector",
     [np("allow-b", {"podSelector": SERVER_A, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})],
     [("x/b", "x/a", "TCP", 80)], [("x/c", "x/a", "TCP", 80), ("y/b", "x/a", "TCP", 80)]),
    ("should enforce policy based on PodSelector and NamespaceSelector",
     [np("and", {"podSelector": SERVER_A, "ingress": [{"from": [
         {"podSelector": {"matchLabels": {"pod": "b"}}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]})],
     [("y/b", "x/a", "TCP", 80)], [("x/b", "x/a", "TCP", 80), ("y/c", "x/a", "TCP", 80)]),
    ("should enforce policy based on Ports",
     [np("ports", {"podSelector": SERVER_A, "ingress": [{"ports": [{"port": 81, "protocol": "TCP"}]}]})],
     [("y/b", "x/a", "TCP", 81)], [("y/b", "x/a", "TCP", 80), ("x/b", "x/a", "UDP", 80)]),
    ("should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
     [np("deny-egress-a", {"podSelector": SERVER_A, "policyTypes": ["Egress"]}),
      np("allow-to-b", {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]}, "y")],
     [("x/b", "y/b", "TCP", 80)], [("x/a", "y/b", "TCP", 80)]),
]
# the suite's named-port cases (SetSpecIngressRules / SetSpecEgressRules list their direction in policyTypes)
E2E_NAMED_PORT_CASES = [
    ("should allow ingress access on one named port",
     [np("allow-all", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]})],
     [("y/a", "x/a", "TCP", 81), ("x/b", "x/c", "TCP", 81)],
     [("y/a", "x/a", "TCP", 80), ("x/b", "x/c", "TCP", 80), ("y/a", "x/a", "UDP", 80)]),
    ("should allow ingress access from namespace on one named port",
     [np("allow-client-a-via-ns-selector-80", {"podSelector": SERVER_A, "policyTypes": ["Ingress"], "ingress": [{
         "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
         "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}]})],
     [("y/b", "x/a", "TCP", 80), ("z/b", "x/b", "TCP", 81)],
     [("z/b", "x/a", "TCP", 80), ("x/b", "x/a", "TCP", 80), ("y/b", "x/a", "TCP", 81)]),
    ("should allow egress access on one named port",
     [np("allow-egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-tcp"}]}]})],
     [("x/a", "y/b", "TCP", 80), ("y/a", "x/a", "TCP", 81)],
     [("x/a", "y/b", "TCP", 81), ("x/b", "z/c", "UDP", 80)]),
]


@pytest.mark.parametrize(("case", "policies", "allowed", "denied"), E2E_CASES, ids=[c[0][:60] for c in E2E_CASES])
def test_e2e_cases_on_the_suites_model(make_lab: MakeLab, case: str, policies: list[dict[str, Any]],
                                       allowed: list[tuple[str, str, str, int]], denied: list[tuple[str, str, str, int]]) -> None:
    lab = make_lab({**E2E_MODEL, "policies": policies})
    result = matrix.run(lab)
    assert not result.port_failures, [(r.src.id, r.dst.id, r.protocol, r.port, r.verdict) for r in result.port_failures]
    assert result.passed
    qualified = {p.id: p.qualified for p in lab.pods}
    seen = {(qualified[r.src.id], qualified[r.dst.id], r.protocol, r.port): r.verdict for r in result.ports}
    for probe in allowed:
        assert seen[probe] == "ok", (case, probe)
    for probe in denied:
        assert seen[probe] == "timeout", (case, probe)


@pytest.mark.parametrize("dataplane", ["host-gw", "bgp", "ebpf"])
def test_e2e_cases_named_ports_included_on_each_way_of_enforcing(make_lab: MakeLab, dataplane: str) -> None:
    """The suite's cases, its three named-port cases included, applied one after another to one
    running lab (as `policy apply` does): check's every port probe agrees with the evaluator, and
    the cells the suite names are as it expects. One data plane per way policies meet packets:
    pods bridged on cni0 with br_netfilter (host-gw; vxlan and cni put pods on the same bridge
    under the same chains, and run the generated cases in test_conformance.py), routed cali veths
    (bgp), the BPF policy maps (ebpf; native routing runs the generated cases)."""
    from cni_lab import lifecycle

    lab = make_lab({**E2E_MODEL, **plane(dataplane), "probe": {"ports": ["tcp/80", "tcp/81", "udp/80", "udp/81"]}})
    qualified = {p.id: p.qualified for p in lab.pods}
    for case, policies, allowed, denied in [*E2E_CASES, *E2E_NAMED_PORT_CASES]:
        sources = tuple(model.PolicySource(f"<{case}>[{i}]", d) for i, d in enumerate(policies))
        _, running = lifecycle.set_policies(lab.name, lambda _: sources)
        result = matrix.run(running)
        assert not result.port_failures, (case, [(r.src.id, r.dst.id, r.protocol, r.port, r.verdict)
                                                 for r in result.port_failures])
        assert result.passed, case
        seen = {(qualified[r.src.id], qualified[r.dst.id], r.protocol, r.port): r.verdict for r in result.ports}
        for probe in allowed:
            assert seen[probe] == "ok", (dataplane, case, probe)
        for probe in denied:
            assert seen[probe] == "timeout", (dataplane, case, probe)


def test_a_named_port_is_each_pods_own_number_and_the_declared_ports_are_probed(make_lab: MakeLab) -> None:
    """x/a serves http on 8080, x/b on 9090, x/c no http: a policy letting in `http` opens 8080
    on x/a only and 9090 on x/b only. No probe.ports: check probes the declared 8080 and 9090."""
    def serving(name: str, *ports: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "namespace": "x", "labels": {"pod": name}, "ports": list(ports)}

    http_in = np("http-in", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": "http"}]}]})
    lab = make_lab({"dataplane": "host-gw", "namespaces": {"x": {}, "y": {}},
                    "nodes": [{"name": "node1", "pods": [serving("a", {"name": "http", "containerPort": 8080}),
                                                         serving("b", {"name": "http", "containerPort": 9090})]},
                              {"name": "node2", "pods": [serving("c", {"name": "metrics", "containerPort": 8080}),
                                                         {"name": "d", "namespace": "y"}]}],
                    "policies": [http_in]})
    assert [(p.protocol, p.port) for p in lab.probe_ports] == [("TCP", 8080), ("TCP", 9090)]
    result = matrix.run(lab)
    assert result.passed, [(r.src.id, r.dst.id, r.protocol, r.port, r.verdict) for r in result.port_failures]
    seen = {(r.src.id, r.dst.id, r.port): r.verdict for r in result.ports}
    assert seen[("node2/y/d", "node1/x/a", 8080)] == "ok" and seen[("node2/y/d", "node1/x/a", 9090)] == "timeout"
    assert seen[("node2/y/d", "node1/x/b", 9090)] == "ok" and seen[("node2/y/d", "node1/x/b", 8080)] == "timeout"
    assert seen[("node2/y/d", "node2/x/c", 8080)] == "timeout" and seen[("node1/x/a", "node2/x/c", 9090)] == "timeout"
    assert seen[("node1/x/a", "node1/x/b", 9090)] == "ok"  # bridged on one node: the same rule
    a, b = (next(p for p in lab.pods if p.id == i) for i in ("node1/x/a", "node1/x/b"))
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "inet", "cni-lab-policy", check=True).stdout
    assert "ip daddr . tcp dport {" in ruleset and f"{a.ip} . 8080" in ruleset and f"{b.ip} . 9090" in ruleset


def test_without_its_rules_the_network_disagrees_and_check_says_where(make_lab: MakeLab) -> None:
    lab = make_lab({**E2E_MODEL, "policies": [np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})]})
    for node in lab.nodes:  # the enforcement taken away behind the lab's back
        run_in(ns_of(lab, node.name), "nft", "delete", "table", "inet", "cni-lab-policy")
    result = matrix.run(lab)
    assert not result.passed
    wrong = {(r.src.id, r.dst.id) for r in result.port_failures}
    assert ("node2/y/b", "node1/x/a") in wrong and ("node1/y/a", "node2/y/b") not in wrong


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan"])
def test_every_pair_names_its_cause_and_the_cause_agrees_with_what_the_network_did(make_lab: MakeLab,
                                                                                   dataplane: str) -> None:
    import json
    from pathlib import Path

    import jsonschema

    from cni_lab.policy.cause import Cause
    from cni_lab.report import json_junit

    lab = make_lab(scenario(dataplane, DENY_INGRESS_X, ALLOW_B_TO_A, DENY_EGRESS_Y_C))
    result = matrix.run(lab)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    causes = {(r.pair.src.id, r.pair.dst.id): r.cause for r in result.results}
    seen = verdicts(result)
    wrong = [(pair, cause.describe() if cause else None, seen[pair]) for pair, cause in causes.items()
             if not isinstance(cause, Cause) or cause.allowed != (seen[pair] == "ok")]
    assert not wrong
    said = {pair: cause.describe() for pair, cause in causes.items() if cause is not None}
    assert said[("node1/x/b", "node1/x/a")] == "x/allow-b-to-a ingress rule 0 (from podSelector pod=b); x/b is not isolated for egress"
    assert said[("node1", "node1/x/a")] == "the pod's own node (always allowed)"
    assert said[("node2/x/c", "node1/x/a")] == "x/deny-ingress, x/allow-b-to-a isolate x/a for ingress; no rule allows x/c on ICMP"
    assert said[("node2/y/c", "node2")].startswith("y/deny-egress isolates y/c for egress; no rule allows node2 (")
    assert said[("node1/x/a", "node2/y/c")] == "not isolated: x/a for egress, y/c for ingress"
    document = json_junit.check_json(result)
    jsonschema.validate(document, json.loads((Path(__file__).resolve().parents[2] / "docs/check.schema.json").read_text()))
    assert all(p.get("cause") for p in document["pairs"])


def test_where_the_network_disagrees_check_names_the_policies_cause(make_lab: MakeLab, tmp_path: Any) -> None:
    """The terminal under the port's grid, JUnit's failure and --json's cell all say why the
    policies deny what the network (its rules taken away) let through."""
    import json
    import os
    import sys

    lab = make_lab({**E2E_MODEL, "policies": [np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})]})
    for node in lab.nodes:
        run_in(ns_of(lab, node.name), "nft", "delete", "table", "inet", "cni-lab-policy")
    junit = tmp_path / "check.xml"
    cli = [sys.executable, "-m", "cni_lab", "check", lab.name]
    shown = subprocess.run([*cli, "--junit", str(junit)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    assert shown.returncode == 1, shown.stderr
    why = "x/deny-ingress isolates x/a for ingress; no rule allows y/b on TCP/80"
    assert f"node2/y/b → node1/x/a TCP/80: the policies say denied, the network said ok: {why}" in shown.stdout
    assert f"node2/y/b → node1/x/a: ok ({why})" in junit.read_text()
    assert "x/deny-ingress isolates x/a for ingress; no rule allows y/b on ICMP" in shown.stdout  # the pair's own
    document = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True).stdout)
    cell = next(p for p in document["pairs"] if (p["src"], p["dst"], p["protocol"], p["port"]) == ("node2/y/b", "node1/x/a", "TCP", 80))
    assert cell["cause"] == why and not cell["met"]


def test_policies_change_on_a_running_lab_without_rebuilding_it(make_lab: MakeLab) -> None:
    import sys

    from cni_lab import state

    lab = make_lab(E2E_MODEL)
    cli = [sys.executable, "-m", "cni_lab"]
    policy_file = state.lab_dir(lab.name).parent / f"{lab.name}-policy.yaml"
    policy_file.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                           "metadata: {name: deny-ingress, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n")
    try:
        inode = netns.inode(ns_of(lab, "node1/x/a"))
        assert subprocess.run([*cli, "policy", "apply", lab.name, str(policy_file)], capture_output=True).returncode == 0
        result = matrix.run(lab_of(lab.name))
        assert result.passed and any(r.verdict == "timeout" for r in result.ports)
        assert subprocess.run([*cli, "policy", "delete", lab.name, "x/deny-ingress"], capture_output=True).returncode == 0
        result = matrix.run(lab_of(lab.name))
        assert result.passed and all(r.verdict == "ok" for r in result.ports)
        assert netns.inode(ns_of(lab, "node1/x/a")) == inode  # the same pod: nothing was rebuilt
    finally:
        policy_file.unlink(missing_ok=True)


def test_a_policy_that_denies_what_check_just_probed_holds_at_once(make_lab: MakeLab) -> None:
    """check, then a policy that denies pairs check just probed, then check again at once: every
    probe run is a new flow (fresh ICMP ids, fresh UDP source ports), so the last run's conntrack
    entries (ICMP 30 s) do not let the denied echoes through as "established"."""
    import sys

    from cni_lab import state

    lab = make_lab(E2E_MODEL)
    assert matrix.run(lab).passed
    policy_file = state.lab_dir(lab.name).parent / f"{lab.name}-policy.yaml"
    policy_file.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                           "metadata: {name: deny-ingress, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n")
    try:
        applied = subprocess.run([sys.executable, "-m", "cni_lab", "policy", "apply", lab.name, str(policy_file)],
                                 capture_output=True, text=True)
        assert applied.returncode == 0, applied.stderr
        result = matrix.run(lab_of(lab.name))
        assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
        assert verdicts(result)[("node2/y/b", "node1/x/a")] == "timeout"
    finally:
        policy_file.unlink(missing_ok=True)


def lab_of(name: str) -> Lab:
    from cni_lab import lifecycle

    return lifecycle.running_lab(name)[0]


def test_explain_says_which_policies_select_a_pod_and_what_they_allow(make_lab: MakeLab) -> None:
    from cni_lab.lesson import explain
    from cni_lab.report import explain_view

    lab = make_lab(scenario("host-gw", DENY_INGRESS_X, ALLOW_B_TO_A))
    facts = explain.read(lab, "node1")[0]
    assert facts.policies is not None
    a = next(p for p in facts.policies if p.pod == "node1/x/a")
    assert a.egress is None and a.ingress is not None
    assert "x/allow-b-to-a: from pods with pod=b in x, on any port and protocol" in a.ingress
    assert "chain to-wl-x/a {" in a.rules and "jump pi-x/allow-b-to-a" in a.rules
    assert "node1 itself, always" in a.ingress[-1]  # the pod's own node, as the evaluator and the rules
    doc = explain_view.to_json(lab, [facts])
    assert doc["nodes"][0]["policies"][0]["pod"] == "node1/x/a"


@pytest.mark.parametrize("dataplane", ["host-gw", "ebpf", "ebpf-native"])
def test_policies_hold_over_ipv6_in_a_dual_stack_lab(make_lab: MakeLab, dataplane: str) -> None:
    dual = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
    lab = make_lab(scenario(dataplane, DENY_INGRESS_X, ALLOW_B_TO_A, DENY_EGRESS_Y_C, networking=dual))
    result = matrix.run(lab)
    assert result.passed and result.ipv6 is not None, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    seen6 = verdicts(result.ipv6)
    assert seen6[("node1/x/b", "node1/x/a")] == "ok"
    assert seen6[("node2/x/c", "node1/x/a")] in ("timeout", "unreachable")
    assert seen6[("node2/y/c", "node2")] in ("timeout", "unreachable")  # y/c's egress, over IPv6 too
    if lab.capabilities.policy == "cilium-bpf":  # the same maps, by identity, for both families
        from cni_lab.kernel import bpf
        assert bpf.metrics(names.bpf_node_dir(lab.name, "node1"))["drops: policy denied"] > 0
        assert run_in(ns_of(lab, "node1"), "nft", "list", "ruleset", check=True).stdout.strip() == ""
        return
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "inet", "cni-lab-policy", check=True).stdout
    assert "ip6 daddr fd00:10:244::2 jump to-wl-x/a" in ruleset


def test_the_report_shows_the_grid_per_port(make_lab: MakeLab, tmp_path: Any) -> None:
    import sys

    lab = make_lab({**E2E_MODEL, "policies": [DENY_INGRESS_X]})
    cli = [sys.executable, "-m", "cni_lab"]
    assert subprocess.run([*cli, "check", lab.name], capture_output=True).returncode == 0
    out = tmp_path / "report.html"
    assert subprocess.run([*cli, "report", lab.name, "-o", str(out)], capture_output=True).returncode == 0
    page = out.read_text()
    assert 'id="truth-TCP-80"' in page and 'id="truth-UDP-80"' in page and "as the policies say" in page
    row = next(line for line in page.splitlines() if line.startswith("node2/y/b\t"))
    cell = row.split("\t")[1]  # y/b → x/a: blocked, as deny-ingress says, and why as the cell's tooltip
    assert cell == ('<span title="node2/y/b → node1/x/a TCP/80: x/deny-ingress isolates x/a for ingress; '
                    'no rule allows y/b on TCP/80">X</span>')


def test_a_pods_own_server_on_a_probed_port_is_probed_through_and_udp_says_which(make_lab: MakeLab) -> None:
    """A learner's TCP server on x/a:80 accepts check's connects (the pod is reached, as through
    check's own listener); a UDP one cannot answer as check's responder does: one line names it."""
    import socket as sockets

    from cni_lab import lifecycle

    lab = make_lab({**E2E_MODEL, "policies": [DENY_INGRESS_X]})
    a = ns_of(lab, "node1/x/a")
    own = netns.open_socket(a, sockets.AF_INET, sockets.SOCK_STREAM)
    try:
        own.bind(("0.0.0.0", 80))
        own.listen(64)
        result = lifecycle.check(lab.name)
        assert result.passed, [(r.src.id, r.dst.id, r.protocol, r.port, r.verdict) for r in result.port_failures]
        cells = {(r.src.id, r.dst.id, r.protocol, r.port): r.verdict for r in result.ports}
        assert cells[("node2/y/b", "node1/x/a", "TCP", 80)] == "timeout"  # x's ingress denied: the server is behind it
        assert cells[("node1/y/a", "node2/y/b", "TCP", 80)] == "ok"
    finally:
        own.close()
    own = netns.open_socket(a, sockets.AF_INET, sockets.SOCK_DGRAM)
    try:
        own.bind(("0.0.0.0", 80))
        with pytest.raises(LabError, match="node1/x/a has a server of its own on UDP/80"):
            lifecycle.check(lab.name)
    finally:
        own.close()
