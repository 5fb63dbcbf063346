"""JSON and JUnit of a hand-made check result: no kernel needed to test the rendering."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema

from cni_lab.probe import pairs
from cni_lab.probe.matrix import CheckResult, NeighbourUse
from cni_lab.probe.engine import OK, Outcomes
from cni_lab.probe.pairs import AllPairs
from cni_lab.report import json_junit

from labs import make_lab

ROOT = Path(__file__).resolve().parents[2]


def result(dataplane: str, cni_problems: list[str]) -> CheckResult:
    lab = make_lab([{"name": "a", "pods": 1}, {"name": "b", "pods": 1}], name="hand", dataplane=dataplane, source="hand.yaml")
    endpoints = pairs.endpoints(lab)
    outcomes = Outcomes(AllPairs(len(endpoints)))
    outcomes.verdict[:] = bytes([OK]) * len(outcomes.verdict)
    use = NeighbourUse("arp", 1024, True, 2, 511, 514, 12, 1, 14, 0, 0)
    return CheckResult(lab, endpoints, outcomes, 0.1, use, (), None, tuple(cni_problems))


def test_a_failing_cni_check_fails_the_junit_file_too() -> None:
    bad = ET.fromstring(json_junit.check_junit(result("cni", ["node1/pod-1: bridge: cni0 has no address"])))
    suite = bad.find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    case = [c for c in suite.iter("testcase") if c.get("name") == "CNI CHECK"]
    assert case and case[0].find("failure") is not None
    good = ET.fromstring(json_junit.check_junit(result("cni", [])))
    assert good.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]
    assert "CNI CHECK" not in json_junit.check_junit(result("host-gw", []))


def test_the_json_of_a_hand_made_result_follows_the_schema() -> None:
    document = json.loads(json_junit.dumps(json_junit.check_json(result("host-gw", []))))
    jsonschema.validate(document, json.loads((ROOT / "docs/check.schema.json").read_text()))
    assert document["passed"] and document["neighbours"]["batches"] == 1
