"""check's verdicts carry their cause in a policy lab (pairs.Expected.cause, PairResult.cause,
CheckResult.port_cause), and every rendering names it: `--json` (`cause`, docs/check.schema.json),
the terminal's grid (under it, each `!` cell), JUnit failures and the HTML report's cells. A lab
without policies computes none of it."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
from rich.console import Console, RenderableType

from cni_lab import cluster
from cni_lab.policy.cause import Cause
from cni_lab.probe import pairs
from cni_lab.probe.engine import OK, TIMEOUT, Outcomes
from cni_lab.probe.matrix import CheckResult, NeighbourUse
from cni_lab.probe.pairs import AllPairs
from cni_lab.probe.ports import PortResult
from cni_lab.report import html, json_junit, terminal

from labs import make_lab, network_policy as np, pod

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs/check.schema.json").read_text())
DENY_INGRESS_X = np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
DENIED = "x/deny-ingress isolates x/a for ingress; no rule allows y/b"


def lab(*policies: dict[str, Any], **keys: Any) -> cluster.Lab:
    """x/a and y/a on node1, y/b on node2 (probed on TCP/80 besides ICMP)."""
    return make_lab([{"name": "node1", "pods": [pod("a", "x", {"pod": "a"}), pod("a", "y", {"pod": "a"})]},
                     {"name": "node2", "pods": [pod("b", "y", {"pod": "b"})]}],
                    name="why", namespaces={"x": {}, "y": {}}, probe={"ports": ["tcp/80"]}, policies=list(policies), **keys)


def checked(the_lab: cluster.Lab, verdict: int = OK, port_verdict: str = "ok") -> CheckResult:
    """A check made by hand: every pair and port probe ends with the verdict given."""
    endpoints = pairs.endpoints(the_lab)
    outcomes = Outcomes(AllPairs(len(endpoints)))
    outcomes.verdict[:] = bytes([verdict]) * len(outcomes.verdict)
    pods = [e for e in endpoints if e.kind == "pod"]
    ports = tuple(PortResult(s, d, "TCP", 80, port_verdict) for s in pods for d in pods if s is not d)
    use = NeighbourUse("arp", 1024, True, 2, 511, 514, 12, 1, 14, 0, 0)
    return CheckResult(the_lab, endpoints, outcomes, 0.1, use, ports=ports)


def shown(renderable: RenderableType) -> str:
    console = Console(record=True, width=400, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def by_ids(result: CheckResult) -> dict[tuple[str, str], Any]:
    return {(r.pair.src.id, r.pair.dst.id): r for r in result.results}


def test_every_pair_of_a_policy_lab_has_a_cause_that_agrees_with_what_is_expected() -> None:
    the_lab = lab(DENY_INGRESS_X)
    expected = pairs.Expected(the_lab)
    for p in pairs.all_pairs(the_lab):
        cause = expected.cause(p.src, p.dst, p.rule)
        assert isinstance(cause, Cause) and cause.allowed == ("ok" in p.expected), (p.src.id, p.dst.id)
    result = by_ids(checked(the_lab))
    assert result[("node2/y/b", "node1/x/a")].cause.describe() == DENIED + " on ICMP"
    assert result[("node1", "node1/x/a")].cause.describe() == "the pod's own node (always allowed)"
    assert result[("node1/x/a", "node2/y/b")].cause.describe() == "not isolated: x/a for egress, y/b for ingress"


def test_a_node_is_named_with_the_source_its_kernel_picks() -> None:
    the_lab = lab(DENY_INGRESS_X)
    eps = {e.id: e for e in pairs.endpoints(the_lab)}
    expected = pairs.Expected(the_lab, {("node2", "node1/x/a"): "10.244.1.0"})  # flannel.1's, say
    cause = expected.cause(eps["node2"], eps["node1/x/a"], "node-pod")
    assert cause is not None and cause.describe().endswith("no rule allows node2 (10.244.1.0) on ICMP")


def test_where_the_scenario_expects_the_verdict_says_so() -> None:
    the_lab = lab(DENY_INGRESS_X, expect=[{"from": "node1", "to": "*", "verdict": "fail"},
                                          {"from": "node2/y/b", "to": "node1/x/a", "verdict": "ok"}])
    result = by_ids(checked(the_lab))
    assert result[("node2/y/b", "node1/x/a")].cause.describe() == "the scenario's expect[1] decides"
    assert result[("node1", "node2/y/b")].cause.describe() == "the scenario's expect[0] decides"


def test_the_outside_host_is_no_policys_and_the_cause_says_so() -> None:
    the_lab = lab(DENY_INGRESS_X, outside={})
    result = by_ids(checked(the_lab))
    assert result[("node1/x/a", "outside")].cause.describe() == "the edge of the cluster decides: no policy is held against the outside host"


def test_a_lab_without_policies_builds_no_evaluator_and_says_no_cause() -> None:
    the_lab = lab()
    result = checked(the_lab)
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    assert all("cause" not in p for p in document["pairs"]) and document["pairs"]
    assert all(r.cause is None for r in result.results) and result.port_cause(result.ports[0]) is None
    assert "evaluator" not in vars(the_lab)  # a 1,000-pod lab pays nothing for causes it has none of
    jsonschema.validate(document, SCHEMA)


def test_the_json_gives_every_pair_and_port_cell_its_cause() -> None:
    result = checked(lab(DENY_INGRESS_X))
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    jsonschema.validate(document, SCHEMA)
    assert all(isinstance(p["cause"], str) and p["cause"] for p in document["pairs"])
    cells = {(p["src"], p["dst"], p["protocol"]): p for p in document["pairs"]}
    assert cells[("node2/y/b", "node1/x/a", "ICMP")]["cause"] == DENIED + " on ICMP"
    assert cells[("node2/y/b", "node1/x/a", "TCP")]["cause"] == DENIED + " on TCP/80"
    assert cells[("node1/x/a", "node2/y/b", "TCP")]["cause"] == "not isolated: x/a for egress, y/b for ingress"
    assert "cause" in SCHEMA["properties"]["pairs"]["items"]["properties"]


def test_the_terminal_names_the_cause_of_every_mismatch_under_the_grid() -> None:
    result = checked(lab(DENY_INGRESS_X))  # everything reached: the pairs into x/a are `!`
    text = shown(Group_of(terminal.ports_view(result)))
    bad = [line.strip() for line in text.splitlines() if "→" in line]
    assert len(bad) == len(result.port_failures) == 2
    assert ("node2/y/b → node1/x/a TCP/80: the policies say denied, the network said ok: "
            + DENIED + " on TCP/80") in bad
    failures = shown(terminal.check_view(result))
    assert DENIED + " on ICMP" in failures  # the pairs' own table of those not as expected


def Group_of(parts: list[RenderableType]) -> RenderableType:
    from rich.console import Group

    return Group(*parts)


def test_the_terminal_names_why_a_blocked_cell_should_have_passed() -> None:
    result = checked(lab(DENY_INGRESS_X), TIMEOUT, "timeout")
    text = shown(Group_of(terminal.ports_view(result)))
    assert ("node1/x/a → node2/y/b TCP/80: the policies say allowed, the network said timeout: "
            "not isolated: x/a for egress, y/b for ingress") in text


def test_junit_failures_name_the_cause() -> None:
    suite = ET.fromstring(json_junit.check_junit(checked(lab(DENY_INGRESS_X)))).find("testsuite")
    assert suite is not None
    failures = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    port = failures["NetworkPolicy TCP/80"]
    assert port is not None and f"node2/y/b → node1/x/a: ok ({DENIED} on TCP/80)" in (port.text or "")
    cross = failures["pod → pod, across nodes"]
    assert cross is not None and f"{DENIED} on ICMP" in (cross.text or "")


def test_the_html_report_gives_each_grid_cell_its_cause_as_a_title() -> None:
    check = json.loads(json_junit.dumps(json_junit.check_json(checked(lab(DENY_INGRESS_X)))))
    facts: dict[str, Any] = {"dataplane": "host-gw", "nodes": []}
    page = html.page("why", "<svg/>", check, facts)
    # the matrix cell: what was seen, then why the policies say what they say
    assert f'title="node2/y/b → node1/x/a: ok, receiver saw 10.244.1.2. {DENIED} on ICMP"' in page
    assert f'<span title="node2/y/b → node1/x/a TCP/80: {DENIED} on TCP/80">!</span>' in page  # the port grid's
