"""The Kubernetes e2e NetworkPolicy suite's cases (test/e2e/network/netpol/network_policy.go), on
its model (namespaces x, y, z; pods a, b, c labelled pod=<name>, a on node1, b on node2, c on
node3), as the tests that hold something against them share them: the evaluator's causes
(test_policy_cause.py) and the ebpf data plane's policy maps (test_ebpf_policy.py)."""

from __future__ import annotations

from typing import Any

from cni_lab.policy import cases as policy_cases

from labs import network_policy as np

SERVER_A = {"matchLabels": {"pod": "a"}}
NODE2 = "192.168.1.3"  # node2's underlay address in the model lab (an ipBlock names it below)

# as test_policy_evaluator.py holds them
E2E: dict[str, list[dict[str, Any]]] = {
    "default-deny-ingress": [np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})],
    "default-deny-all": [np("deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
    "podSelector": [np("allow-b", {"podSelector": SERVER_A, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})],
    "namespaceSelector": [np("allow-y", {"podSelector": SERVER_A, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})],
    "pod OR namespace": [np("or", {"podSelector": SERVER_A, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"pod": "b"}}}, {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})],
    "pod AND namespace": [np("and", {"podSelector": SERVER_A, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"pod": "b"}}, "namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})],
    "matchExpressions": [np("notin", {"podSelector": SERVER_A, "ingress": [{"from": [
        {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]}}]}]}),
        np("exists", {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}, "ingress": [{"from": [
            {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "c"]}]}}]}]}, "y")],
    "ports": [np("on-81", {"podSelector": SERVER_A, "ingress": [{"ports": [{"port": 81, "protocol": "TCP"}]}]})],
    "endPort": [np("range", {"podSelector": SERVER_A, "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}]})],
    "egress ipBlock except": [np("egress", {"podSelector": SERVER_A, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{policy_cases.DEFAULT_IPS['x/b']}/32"]}}]}]})],
    "policies add up": [np("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
                        np("allow-c", {"podSelector": SERVER_A, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                        np("egress-deny-y", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"]}, namespace="y")],
    "deny egress on the client side": [np("deny-egress-a", {"podSelector": SERVER_A, "policyTypes": ["Egress"]}),
                                       np("allow-to-b", {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]}, "y")],
    "egress: [] isolates ingress only": [np("e", {"podSelector": {}, "egress": []})],
    "another node by ipBlock": [np("from-node2", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": f"{NODE2}/32"}}]}]})],
}

# the suite's named-port cases (test_policy_evaluator.py holds their truth tables): the model's
# container ports are serve-<port>-<protocol>
E2E_NAMED_PORTS: dict[str, list[dict[str, Any]]] = {
    "ingress on one named port": [np("allow-all", {"podSelector": {}, "policyTypes": ["Ingress"],
                                                   "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]})],
    "ingress from namespace on one named port": [np("allow-client-a-via-ns-selector-80", {
        "podSelector": SERVER_A, "policyTypes": ["Ingress"], "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
            "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}]})],
    "egress on one named port": [np("allow-egress", {"podSelector": {}, "policyTypes": ["Egress"],
                                                     "egress": [{"ports": [{"port": "serve-80-tcp"}]}]})],
}
