"""Why the evaluator allows or denies a connection (`Evaluator.explain`, cni_lab/policy_cause.py):
per direction, the policies that isolate the pod and the rule that let the other end in. The
explanation is held against `allowed` on every pair of the e2e suite's cases and on generated
cases: `explain(...).allowed == allowed(...)`, always."""

from __future__ import annotations

from typing import Any

import pytest

from cni_lab import cluster, policy

from cni_lab.policy import cases as policy_cases
from cni_lab.policy.cause import Cause

from labs import make_lab, pod

SPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
# every probe check makes of a policy lab: its pair's echo and UDP datagram, the e2e ports, and
# two more that ranges and protocol-only rules reach
PROBES = (("ICMP", None), ("UDP", 31999), ("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81), ("SCTP", 80), ("TCP", 82))
from netpol_e2e import E2E, NODE2


def lab(*policies: dict[str, Any]) -> cluster.Lab:
    return make_lab([{"name": f"node{i + 1}", "pods": [pod(p, n, {"pod": p}) for n in SPACES]} for i, p in enumerate(PODS)],
                    name="np", namespaces={n: {"labels": {"ns": n}} for n in SPACES}, policies=list(policies))


def everyone(the_lab: cluster.Lab) -> dict[str, policy.Workload]:
    """Pods by ns/name and nodes by name, as check's pairs hand them to the evaluator."""
    return {**{w.qualified: w for w in the_lab.workloads},
            **{n.name: policy.Workload(n.name, "", (), n.ips) for n in the_lab.nodes}}


def explained(the_lab: cluster.Lab, src: str, dst: str, protocol: str = "TCP", port: int | None = 80) -> Cause:
    w = everyone(the_lab)
    return the_lab.evaluator.explain(w[src], w[dst], protocol, port)


def disagreements(evaluator: policy.Evaluator, workloads: dict[str, policy.Workload]) -> list[tuple[str, str, str, int | None]]:
    return [(s, d, proto, port) for s in workloads for d in workloads if s != d for proto, port in PROBES
            if evaluator.explain(workloads[s], workloads[d], proto, port).allowed
            != evaluator.allowed(workloads[s], workloads[d], proto, port)]


def test_the_model_lab_has_node2_where_the_ip_block_names_it() -> None:
    assert str(lab().node("node2").ip) == NODE2


@pytest.mark.parametrize("case", list(E2E))
def test_the_cause_agrees_with_allowed_on_every_pair_of_the_e2e_cases(case: str) -> None:
    the_lab = lab(*E2E[case])
    assert disagreements(the_lab.evaluator, everyone(the_lab)) == []


def test_the_cause_agrees_with_allowed_on_generated_cases() -> None:
    the_lab = lab()
    workloads = everyone(the_lab)
    spaces = {ns.name: ns.labels for ns in the_lab.scenario.namespaces}
    for case in policy_cases.cases(2028, 300, named_ports=True):
        evaluator = policy.Evaluator(spaces, [policy.parse(d, case.name, SPACES) for d in case.policies])
        assert disagreements(evaluator, workloads) == [], case.name


def test_an_allow_names_the_policy_the_rule_and_the_peer_that_matched() -> None:
    the_lab = lab(*E2E["podSelector"])
    cause = explained(the_lab, "x/b", "x/a")
    assert cause.allowed and cause.ingress.policy == "x/allow-b" and cause.ingress.rule == 0
    assert cause.ingress.isolating == ("x/allow-b",) and cause.egress.isolating == ()
    assert cause.describe() == "x/allow-b ingress rule 0 (from podSelector pod=b); x/b is not isolated for egress"


@pytest.mark.parametrize(("case", "src", "dst", "words"), [
    ("namespaceSelector", "y/c", "x/a", "x/allow-y ingress rule 0 (from namespaceSelector ns=y)"),
    ("pod OR namespace", "y/a", "x/a", "x/or ingress rule 0 (from namespaceSelector ns=y)"),  # the peer that matched
    ("pod OR namespace", "x/b", "x/a", "x/or ingress rule 0 (from podSelector pod=b)"),
    ("pod AND namespace", "y/b", "x/a", "x/and ingress rule 0 (from namespaceSelector ns=y and podSelector pod=b)"),
    ("matchExpressions", "y/c", "y/a", "y/exists ingress rule 0 (from podSelector pod In (a, c))"),
    ("matchExpressions", "z/b", "x/a", "x/notin ingress rule 0 (from namespaceSelector ns NotIn (y))"),
    ("ports", "y/b", "x/a", "x/on-81 ingress rule 0 (from anywhere)"),
    ("deny egress on the client side", "x/b", "y/b", "y/allow-to-b ingress rule 0 (from anywhere)"),
    ("egress ipBlock except", "x/a", "y/a", "x/egress egress rule 0 (to ipBlock 10.244.0.0/16 except 10.244.1.2/32)"),
    ("another node by ipBlock", "node2", "x/a", f"x/from-node2 ingress rule 0 (from ipBlock {NODE2}/32)"),
])
def test_the_peer_is_named_as_the_policy_writes_it(case: str, src: str, dst: str, words: str) -> None:
    port = 81 if case == "ports" else 80
    cause = explained(lab(*E2E[case]), src, dst, "TCP", port)
    assert cause.allowed and cause.describe().startswith(words + "; ")


def test_without_isolation_an_allow_says_so_for_both_directions() -> None:
    cause = explained(lab(*E2E["default-deny-ingress"]), "x/a", "y/b")
    assert cause.allowed and cause.describe() == "not isolated: x/a for egress, y/b for ingress"


def test_a_deny_names_the_policies_that_isolate_and_the_peer_no_rule_allows() -> None:
    cause = explained(lab(*E2E["default-deny-ingress"]), "y/b", "x/a")
    assert not cause.allowed and cause.egress.allowed and not cause.ingress.allowed
    assert cause.describe() == "x/deny-ingress isolates x/a for ingress; no rule allows y/b on TCP/80"
    several = explained(lab(*E2E["policies add up"]), "y/b", "x/a", "ICMP", None)
    assert several.describe() == "x/deny, x/allow-c isolate x/a for ingress; no rule allows y/b on ICMP"


def test_a_deny_on_the_client_side_names_egress() -> None:
    cause = explained(lab(*E2E["deny egress on the client side"]), "x/a", "y/b")
    assert not cause.allowed and cause.ingress.allowed and not cause.egress.allowed
    assert cause.describe() == "x/deny-egress-a isolates x/a for egress; no rule allows y/b on TCP/80"


def test_both_sides_denying_are_both_named_egress_first() -> None:
    cause = explained(lab(*E2E["default-deny-all"]), "x/a", "x/b", "UDP", 81)
    assert cause.describe() == ("x/deny-all isolates x/a for egress; no rule allows x/b on UDP/81 · "
                                "x/deny-all isolates x/b for ingress; no rule allows x/a on UDP/81")


def test_a_port_rule_does_not_let_icmp_in_and_the_cause_says_on_what() -> None:
    the_lab = lab(*E2E["ports"])
    assert explained(the_lab, "y/b", "x/a", "ICMP", None).describe() == (
        "x/on-81 isolates x/a for ingress; no rule allows y/b on ICMP")
    assert not explained(the_lab, "y/b", "x/a", "TCP", 80).allowed


def test_the_pods_own_node_is_always_allowed_and_another_node_is_named_with_its_address() -> None:
    the_lab = lab(*E2E["default-deny-ingress"])
    own = explained(the_lab, "node1", "x/a")
    assert own.allowed and own.ingress.own_node and own.describe() == "the pod's own node (always allowed)"
    other = explained(the_lab, "node2", "x/a")
    assert other.describe() == f"x/deny-ingress isolates x/a for ingress; no rule allows node2 ({NODE2}) on TCP/80"


def test_a_pod_to_a_node_is_never_isolated_at_the_node() -> None:
    cause = explained(lab(*E2E["default-deny-ingress"]), "x/a", "node2")
    assert cause.describe() == "not isolated: x/a for egress, node2 for ingress"
