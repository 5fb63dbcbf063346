"""The demo's judgement of an act, on hand-made results: it must fail an act that did not show its point."""

from __future__ import annotations

from cni_lab import catalog
from cni_lab.lesson import demo
from cni_lab.probe import pairs
from cni_lab.probe.engine import OK, TIMEOUT, Outcomes
from cni_lab.probe.matrix import CheckResult, NeighbourUse
from cni_lab.probe.pairs import AllPairs


def result_of(scenario: str, verdict: int) -> CheckResult:
    lab = catalog.load(scenario)
    endpoints = pairs.endpoints(lab)
    outcomes = Outcomes(AllPairs(len(endpoints)))
    outcomes.verdict[:] = bytes([verdict]) * len(outcomes.verdict)
    return CheckResult(lab, endpoints, outcomes, 0.1, NeighbourUse("arp", 1024, True, 2, 511, 514, 10, 1, 10, 0, 0))


def test_act_three_passes_only_when_every_pair_is_ok() -> None:
    act = demo.ACTS[2]
    lab = catalog.load(act.scenario)
    assert demo.judge(act, lab, [], result_of(act.scenario, OK)) == []
    assert demo.judge(act, lab, [], result_of(act.scenario, TIMEOUT))  # a lab without routes: not rubber-stamped


def test_act_two_needs_the_wrong_peer_it_is_about() -> None:
    act = demo.ACTS[1]
    problems = demo.judge(act, catalog.load(act.scenario), [], result_of(act.scenario, OK))
    assert any("answering for node2's" in p for p in problems)
