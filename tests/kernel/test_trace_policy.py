"""trace agrees with policy on the nftables data planes, against the real kernel: on the e2e suite's
model, each of its NetworkPolicy cases applied in turn to one running lab (as `policy apply` does),
every ordered pod pair is traced through the nodes' policy chains (lesson/policy_hooks.py) and
its real probe sent: trace's verdict, delivered or dropped, is the probe's, and where trace drops
a pair the hop that drops it names a chain of the table the kernel holds and a policy that selects
the destination (ingress, to-wl-…) or the source (egress, from-wl-…).

trace has no port option: it judges ICMP, the echo its probe sends with a UDP datagram; the cases'
rules without ports let both through or neither, and the one with ports (TCP 81) lets neither.
The lab's wiring is read once and the probes of a case go in one round (not a whole check), so a
data plane's 6 cases × 72 pairs stay well within three minutes (estimated, not yet measured)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from helpers import ns_of, run_in
from test_policy import E2E_CASES, E2E_MODEL, plane

from cni_lab import lifecycle, model
from cni_lab.cluster import Lab
from cni_lab.lesson import trace
from cni_lab.probe.engine import Prober, verdict_of
from cni_lab.probe.pairs import endpoints
from cni_lab.report import trace_view
from cni_lab.rulesets import netpol

MakeLab = Callable[..., Lab]


def pod_pairs(lab: Lab) -> list[tuple[int, int]]:
    """Every ordered pair of the lab's pods, as indexes into endpoints(lab)."""
    pods = [i for i, e in enumerate(endpoints(lab)) if e.kind == "pod"]
    return [(s, d) for s in pods for d in pods if s != d]


@pytest.mark.parametrize("dataplane", ["host-gw"])  # vxlan: the same chains (test_policy.py)
def test_trace_agrees_with_the_probe_on_every_e2e_case_and_names_the_dropping_policy(make_lab: MakeLab,
                                                                                    dataplane: str) -> None:
    lab = make_lab({**E2E_MODEL, **plane(dataplane)})
    eps = endpoints(lab)
    pairs = pod_pairs(lab)
    assert len(pairs) == 72
    wiring = trace.Wiring(lab)  # links, addresses and routes: policies change none of them
    checked = dropped_by_policy = 0
    for case, policies, _, _ in E2E_CASES:
        sources = tuple(model.PolicySource(f"<{case}>[{i}]", d) for i, d in enumerate(policies))
        _, running = lifecycle.set_policies(lab.name, lambda _: sources)
        chains = {node.name: run_in(ns_of(running, node.name), "nft", "list", "table", "inet", netpol.TABLE,
                                    check=True).stdout if netpol.Rules(running).node_table(node) else ""
                  for node in running.nodes}
        traces = [trace.trace(running, eps[s].id, eps[d].id, wiring=wiring) for s, d in pairs]
        with Prober(eps, running.name) as prober:
            outcomes = prober.run(pairs)
        workloads = {w.id: w for w in running.workloads}
        evaluator = running.evaluator
        for k, t in enumerate(traces):
            verdict = verdict_of(outcomes.verdict[k])
            where = (case, t.src.id, t.dst.id, verdict, trace_view.summary(t))
            assert trace.agrees(t, verdict), where
            assert t.outcome in ("ok", "dropped"), where  # delivered to the pod asked for, or not at all
            allowed = evaluator.allowed(workloads[t.src.id], workloads[t.dst.id], "ICMP", None)
            assert (t.outcome == "ok") == allowed, where  # and both are the evaluator's answer
            checked += 1
            if t.outcome == "ok":
                assert t.back is not None and all(h.policy is None or h.policy.allowed for h in t.back.hops), where
                continue
            last = t.there.hops[-1]
            assert last.action == "drop" and last.policy is not None and not last.policy.allowed, where
            decided = last.policy.deciding
            assert decided is not None, where
            # a chain the node's table holds, of the pod the direction says, and a policy selecting that pod
            node = last.where
            assert f"chain {decided.chain} {{" in chains[node], where
            direction = decided.side.direction
            pod = workloads[t.dst.id if direction == "Ingress" else t.src.id]
            assert pod.node == node and decided.chain == netpol.workload_chain_name(pod, direction), where
            selecting = {p.qualified for p in evaluator.selecting(pod, direction)}
            assert decided.side.isolating and set(decided.side.isolating) <= selecting, where
            assert any(name in last.reason for name in decided.side.isolating), where
            assert last.reason.startswith("forward hook") and "for ICMP (trace has no port option)" in last.reason, where
            assert trace_view.summary(t) == f"dropped at {node}: {last.reason}", where
            doc: dict[str, Any] = trace_view.to_json(t)["there"][-1]["policy"]
            assert (doc["verdict"], doc["chain"], doc["words"]) == ("dropped", decided.chain, last.reason), where
            dropped_by_policy += 1
    assert checked == 72 * len(E2E_CASES)
    assert dropped_by_policy > 0
