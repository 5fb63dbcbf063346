"""NetworkPolicy enforced on the nodes (enforcement.py) and proved by check: every pair's verdict
is what the evaluator says for check's probes, on every data plane that enforces policy."""

from __future__ import annotations

import socket
import subprocess
import threading
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in

from cni_lab.errors import LabError
from cni_lab.ipam import Lab
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


def scenario(dataplane: str, *policies: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """x/a and x/b share node1 (bridged or routed on one node), the rest are elsewhere."""
    return {"dataplane": dataplane, "namespaces": {"x": {"labels": {"ns": "x"}}, "y": {"labels": {"ns": "y"}}},
            "nodes": [{"name": "node1", "pods": [{"name": "a", "namespace": "x", "labels": {"pod": "a"}},
                                                 {"name": "b", "namespace": "x", "labels": {"pod": "b"}}]},
                      {"name": "node2", "pods": [{"name": "c", "namespace": "x", "labels": {"pod": "c"}},
                                                 {"name": "c", "namespace": "y", "labels": {"pod": "c"}}]}],
            "policies": list(policies), **extra}


def verdicts(result: matrix.CheckResult) -> dict[tuple[str, str], str]:
    return {(r.pair.src.id, r.pair.dst.id): r.verdict for r in result.results}


@pytest.mark.parametrize("dataplane", ["bridge", "host-gw", "vxlan", "fabric", "bgp", "cni"])
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
    assert "chain to-wl-x-a" in ruleset and "chain pi-x-only-80" in ruleset
    assert "tcp dport 80" in ruleset and "ct state established,related accept" in ruleset
    assert "cni-lab-policy" not in run_in(ns_of(lab, "node2"), "nft", "list", "tables").stdout  # no pod of node2 is selected


def test_ebpf_refuses_policies_before_building(make_lab: MakeLab) -> None:
    before = netns.listing()
    with pytest.raises(LabError, match="dataplane ebpf does not enforce NetworkPolicy"):
        make_lab(scenario("ebpf", DENY_INGRESS_X))
    assert netns.listing() == before
    assert subprocess.run(["true"]).returncode == 0
