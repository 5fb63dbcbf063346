"""`demo`: the classic story in three acts, each built for real, read back, proved, torn down.

1. One node, one pod: the pod gets 10.244.0.2 on the bridge network 10.244.0.0/24.
2. Two nodes, the same network: both pods are 10.244.0.2, and a packet for the other node's
   pod is answered by the sender's own neighbour.
3. Every node its own pod CIDR, and routes between nodes: every pair passes, without NAT.

The acts are plain scenario files in scenarios/. This module yields events; the CLI shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

from cni_lab import catalog, lifecycle
from cni_lab.cluster import Lab
from cni_lab.lesson import explain, trace
from cni_lab.probe import matrix
from cni_lab.probe.matrix import CheckResult


@dataclass(frozen=True)
class Act:
    number: int
    title: str
    scenario: str  # a scenario shipped in scenarios/
    story: str  # what happens, before it is built
    notice: str  # what the learner should see in the kernel facts and the proof
    traces: tuple[tuple[str, str], ...] = ()


ACTS = (
    Act(1, "One node, one pod", "single-node",
        "A node at 192.168.1.2 runs the bridge plugin: a bridge cni0 holds 10.244.0.1, the first address "
        "of the node's pod network 10.244.0.0/24. A pod is a network namespace; its eth0 is one end of a "
        "veth pair whose other end is plugged into cni0.",
        "The pod got 10.244.0.2 (.1 is the bridge, the pod's gateway) and a default route via 10.244.0.1. "
        "The node reaches the pod and the pod reaches the node."),
    Act(2, "Two nodes, the same network", "conflict",
        "A second node at 192.168.1.3 runs the same plugin with the same settings: it also uses "
        "10.244.0.0/24, so its first pod also gets 10.244.0.2. Validation warns about it; build it anyway.",
        "Both pods have 10.244.0.2. A packet from node1's pod to 'node2's pod' never leaves node1: "
        "10.244.0.2 is its own address, so it answers itself: a wrong peer, not a connection.",
        (("node1/pod1", "node2/pod1"),)),
    Act(3, "A pod CIDR per node, and routes between them", "routed",
        "Give every node its own slice of the cluster CIDR (node1 10.244.0.0/24, node2 10.244.1.0/24), "
        "and on every node a route to each other node's pods via that node's underlay IP: flannel's host-gw.",
        "node1 has '10.244.1.0/24 via 192.168.1.3 dev eth0' and node2 the way back. Every pod reaches "
        "every pod, every node reaches every pod and back, and each receiver sees the sender's own IP.",
        (("node1/pod1", "node2/pod1"),)),
)


@dataclass
class ActStarted:
    act: Act
    lab: Lab


@dataclass
class Facts:
    act: Act
    lab: Lab
    nodes: list[explain.NodeFacts]


@dataclass
class Traced:
    act: Act
    trace: trace.Trace


@dataclass
class Proved:
    act: Act
    result: CheckResult


@dataclass
class ActDone:
    act: Act
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


Event = Union[ActStarted, Facts, Traced, Proved, ActDone]


def _pod_ips(facts: list[explain.NodeFacts]) -> dict[str, list[str]]:
    out = {}
    for nf in facts:
        for pf in nf.pods:
            eth0 = pf.eth0
            out[f"{nf.name}/{pf.name}"] = [str(a) for a in eth0.addresses] if eth0 else []
    return out


def judge(act: Act, lab: Lab, facts: list[explain.NodeFacts], result: CheckResult) -> list[str]:
    """Did the act show what it should? Each check reads kernel facts or real probe results."""
    problems = []
    ips = _pod_ips(facts)
    verdicts = {(r.pair.src.id, r.pair.dst.id): r.verdict for r in result.results}
    if act.number == 1:
        if ips.get("node1/pod1") != ["10.244.0.2/24"]:
            problems.append(f"the pod's address is {ips.get('node1/pod1')}, not 10.244.0.2/24")
        if not result.passed or {verdicts.get(("node1", "node1/pod1")), verdicts.get(("node1/pod1", "node1"))} != {"ok"}:
            problems.append("node and pod do not reach each other")
    elif act.number == 2:
        if not lab.warnings:
            problems.append("validation did not warn about the overlapping pod CIDRs")
        if ips.get("node1/pod1") != ips.get("node2/pod1"):
            problems.append(f"the pods did not collide: {ips}")
        if verdicts.get(("node1/pod1", "node2/pod1")) != "wrong-peer":
            problems.append("the matrix did not show node1's pod answering for node2's")
        if not result.passed:
            problems.append(f"{len(result.failures)} pairs were not as the conflict scenario expects")
    else:
        if not result.passed or any(r.verdict != "ok" for r in result.results):
            problems.append(f"{len(result.failures)} pairs failed")
    return problems


def run(acts: tuple[Act, ...] = ACTS, pause: Callable[[Act], None] | None = None) -> Iterator[Event]:
    for i, act in enumerate(acts):
        if pause is not None and i:
            pause(act)
        lab = catalog.load(act.scenario, name=f"demo-act{act.number}")
        yield ActStarted(act, lab)
        lifecycle.up(lab)
        try:
            facts = explain.read(lab)
            yield Facts(act, lab, facts)
            for src, dst in act.traces:
                yield Traced(act, trace.trace(lab, src, dst))
            result = matrix.run(lab)
            yield Proved(act, result)
            yield ActDone(act, judge(act, lab, facts, result))
        finally:
            lifecycle.down(lab.name)
