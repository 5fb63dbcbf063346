"""Exercise files without a kernel: the shipped ones validate, every kind of mistake is one line
naming the file and the field (exit 2), the assertions judge their facts, the CLI lists them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cni_lab.cli import cli
from cni_lab.errors import LabError
from cni_lab.exercise import assertions, library, spec
from cni_lab.exercise.assertions import Assertion, CheckFacts, LbSlot

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = library.load_all()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_the_shipped_exercises_span_the_data_planes() -> None:
    assert len(SHIPPED) >= 12 and all(e.shipped for e in SHIPPED)
    assert len({e.dataplane for e in SHIPPED}) >= 5
    assert {e.level for e in SHIPPED} == set(spec.LEVELS)
    kinds = {a.kind for e in SHIPPED for a in e.grade}
    assert kinds == set(assertions.KINDS), set(assertions.KINDS) - kinds  # every kind grades some exercise


@pytest.mark.parametrize("ex", SHIPPED, ids=[e.name for e in SHIPPED])
def test_a_shipped_exercise_is_complete_and_runnable_as_written(ex: spec.Exercise) -> None:
    assert ex.name == Path(ex.source).stem  # `exercise start NAME` finds its file
    assert len(ex.hints) >= 2 and ex.wrong_fixes and ex.lesson
    for command in [*ex.solution, *(c for fix in ex.wrong_fixes for c in fix)]:
        # from the repository's root, with sudo; a lab named must be the exercise's
        assert command.startswith("sudo "), command
        for lab in re.findall(r"cni-lab (?:exec|heal|policy \w+|service \w+) ([a-z][a-z0-9-]*)", command):
            assert lab == ex.name, command
    # the task says the symptom: never the break's own command
    for step in ex.breaks:
        assert not step.command or step.command not in ex.task


def test_the_exercises_ship_in_the_wheel() -> None:
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"]["cni_lab.exercises"] == "exercises"
    assert "*.yaml" in tool["package-data"]["cni_lab.exercises"]
    assert library.SHIPPED.resolve() == (ROOT / "exercises").resolve()


GOOD: dict[str, Any] = {
    "name": "ex", "title": "t", "level": "beginner", "scenario": "two-nodes",
    "break": [{"run": {"node": "node1", "command": "true"}}], "task": "t", "hints": ["a", "b"],
    "solution": ["sudo true"], "grade": [{"check": "pass"}],
}


def problems(tmp_path: Path, **changes: Any) -> list[str]:
    document = {**GOOD, **changes}
    path = tmp_path / "ex.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        spec.load_file(path)
    except LabError as e:
        return list(e.problems)
    return []


def test_a_good_file_has_no_problem(tmp_path: Path) -> None:
    assert problems(tmp_path) == []


@pytest.mark.parametrize(("changes", "line"), [
    ({"hint": ["x"]}, "hint: unknown key (did you mean 'hints'?)"),
    ({"level": "easy"}, "level: 'easy' is not a level"),
    ({"grade": [{"routes": {"node": "node1", "to": "10.0.0.0/8"}}]}, "grade[0]: unknown assertion 'routes' (did you mean 'route'?)"),
    ({"grade": [{"route": {"node": "node9", "to": "10.0.0.0/8"}}]}, "grade[0].route.node: the scenario has no node or pod 'node9'"),
    ({"grade": [{"route": {"node": "node1", "to": "10.0.0.0/33"}}]}, "grade[0].route.to: '10.0.0.0/33' is not an IP network"),
    ({"grade": [{"nft": {"node": "node1"}}]}, "grade[0].nft: give one of has: TEXT or absent: TEXT"),
    ({"grade": [{"check": {"rule": "pod-pod", "verdict": "ok"}}]}, "grade[0].check.rule: 'pod-pod' is not a rule"),
    ({"grade": [{"bgp": {"node": "node1", "established": 1}}]}, "grade[0].bgp: the scenario's data plane (host-gw) runs no BGP daemon"),
    ({"break": [{"fault": "link-up node1"}]}, "break[0].fault: unknown fault kind 'link-up' (did you mean 'link-down'?)"),
    ({"break": [{"fault": "route-del node1"}]}, "break[0].fault: usage: route-del NODE NODE"),
    ({"break": [{"run": {"node": "node3", "command": "true"}}]}, "break[0].run.node: the scenario has no node 'node3'"),
    ({"break": [{"run": {"node": "node1/api", "command": "true"}}]}, "break[0].run.node: node node1 has no pod 'api'"),
    ({"break": [{"reboot": "node1"}]}, "break[0]: a step is one of run:, fault:, policy:, service:"),
    ({"break": [{"service": {"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80}]}}]},
     "break: a service: step needs a scenario with Services"),
    ({"scenario": "no-such-scenario"}, "scenario:"),
    ({"scenario": {"dataplane": "host-gw", "nodes": [{"name": "node1", "podCIDR": "10.244.0.0/33"}]}}, "nodes[0].podCIDR"),
    ({"dataplane": "vxlan"}, "dataplane: 'vxlan', but the scenario's data plane is host-gw"),
    ({"name": "A name"}, "name: 'A name' is not a valid name"),
    ({"hints": []}, "hints: must be a non-empty list of text"),
])
def test_each_mistake_is_one_line_with_file_and_field(tmp_path: Path, changes: dict[str, Any], line: str) -> None:
    found = problems(tmp_path, **changes)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'ex.yaml'}: ") and line in found[0], found


def test_every_problem_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, level="easy", grade=[{"nope": {}}], solution=None)
    assert len(found) == 3, found


def test_validate_command(tmp_path: Path) -> None:
    code, output = run("exercise", "validate", str(ROOT / "exercises/hostgw-route.yaml"))
    assert code == 0 and "OK" in output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "grade": [{"sysctl": {"node": "node1", "key": "net/ipv4/ip_forward"}}]}))
    code, output = run("exercise", "validate", str(bad))
    assert code == 2 and output.strip().splitlines() == [f"error: {bad}: grade[0].sysctl.value: missing"]


def test_list_and_solution(tmp_path: Path) -> None:
    code, output = run("exercise", "list", "--json")
    listed = json.loads(output)
    assert code == 0 and {e["name"] for e in listed} == {e.name for e in SHIPPED}
    assert all(e["title"] and e["dataplane"] and e["level"] for e in listed)
    code, output = run("exercise", "solution", "hostgw-route", "--json")
    assert code == 0 and json.loads(output) == list(library.find("hostgw-route").solution)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**GOOD, "name": "mine"}))
    code, output = run("exercise", "list", "--dir", str(tmp_path), "--json")
    assert code == 0 and "mine" in {e["name"] for e in json.loads(output)}
    (tmp_path / "again.yaml").write_text(yaml.safe_dump({**GOOD, "name": "hostgw-route"}))
    code, output = run("exercise", "list", "--dir", str(tmp_path))
    assert code == 2 and "is also the name of" in output


def test_unknown_exercise_names_the_known_ones() -> None:
    code, output = run("exercise", "solution", "nope")
    assert code == 2 and "no exercise named 'nope'" in output and "hostgw-route" in output


# -- judging: each kind's pure function ------------------------------------------------------------

def judged(kind: str, args: dict[str, Any], fact: Any) -> bool:
    return assertions.judge(Assertion(kind, args, "grade[0]"), fact).ok


def test_check_and_pair() -> None:
    facts = CheckFacts(False, {("node1/web", "node2/api"): ("pod-pod-cross-node", "timeout"),
                               ("node1/web", "node1/db"): ("pod-pod-same-node", "ok")}, "1/2 pairs")
    assert not judged("check", {}, facts)
    assert judged("check", {"rule": "pod-pod-same-node", "verdict": "ok"}, facts)
    assert judged("check", {"rule": "pod-pod-cross-node", "verdict": "fail"}, facts)
    assert not judged("check", {"rule": "node-node", "verdict": "ok"}, facts)  # no pair of that rule
    assert judged("pair", {"from": "node1/web", "to": "node2/api", "verdict": "timeout"}, facts)
    assert not judged("pair", {"from": "node1/web", "to": "node2/api", "verdict": "ok"}, facts)


def test_route() -> None:
    routes = [("10.244.1.0/24", "192.168.1.3", "eth0"), ("default", "192.168.1.1", "eth0")]
    assert judged("route", {"node": "node1", "to": "10.244.1.0/24", "via": "192.168.1.3"}, routes)
    assert not judged("route", {"node": "node1", "to": "10.244.1.0/24", "via": "192.168.1.4"}, routes)
    assert not judged("route", {"node": "node1", "to": "10.244.0.0/16"}, routes)  # exactly that destination
    assert judged("route", {"node": "node1", "to": "10.244.2.0/24", "present": False}, routes)


def test_the_other_kinds() -> None:
    assert judged("sysctl", {"node": "n", "key": "net/ipv4/ip_forward", "value": "1"}, "1")
    assert not judged("sysctl", {"node": "n", "key": "net/ipv4/ip_forward", "value": "1"}, "0")
    assert judged("nft", {"node": "n", "has": "masquerade"}, "ip saddr 10.244.0.0/16 masquerade")
    assert not judged("nft", {"node": "n", "absent": "quick fix"}, 'masquerade comment "quick fix"')
    assert judged("bgp", {"node": "n", "established": 2}, {"Mesh_a": "Established", "Mesh_b": "Established"})
    assert not judged("bgp", {"node": "n", "established": 2}, {"Mesh_a": "Established", "Mesh_b": "Active"})
    assert judged("link", {"node": "n", "name": "flannel.1", "mtu": 1450}, (1450, True))
    assert not judged("link", {"node": "n", "name": "flannel.1", "mtu": 1450}, None)
    assert not judged("mtu", {"from": "a", "to": "b"}, (1500, False, "Frag needed"))
    assert judged("fdb", {"node": "n", "device": "flannel.1", "neighbour": "10.244.1.0", "dst": "192.168.1.3"},
                  ("0a:aa", ["192.168.1.3"]))
    assert not judged("fdb", {"node": "n", "device": "flannel.1", "neighbour": "10.244.1.0", "dst": "192.168.1.3"},
                      ("0a:aa", ["192.168.1.4", "192.168.1.3"]))
    assert not judged("bpf", {"pod": "node1/web"}, [])
    slots = [LbSlot("10.96.0.2:80/TCP", 0, 0, None), LbSlot("10.96.0.2:80/TCP", 1, 1, ("10.244.0.2", 8080)),
             LbSlot("10.96.0.2:80/TCP", 2, 2, None)]
    wanted = {1: ("10.244.0.2", 8080), 2: ("10.244.1.2", 8080)}
    assert not judged("lb", {"node": "node1"}, (slots, wanted))
    slots[2] = LbSlot("10.96.0.2:80/TCP", 2, 2, ("10.244.1.2", 36895))  # the port's bytes swapped
    assert not judged("lb", {"node": "node1"}, (slots, wanted))
    slots[2] = LbSlot("10.96.0.2:80/TCP", 2, 2, ("10.244.1.2", 8080))
    assert judged("lb", {"node": "node1"}, (slots, wanted))


def test_heal_refuses_while_an_exercise_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from cni_lab import lifecycle, privileges
    from cni_lab.exercise import session

    monkeypatch.setattr(privileges, "require_root", lambda command: None)
    monkeypatch.setattr(lifecycle, "pick", lambda name: "hostgw-route")
    monkeypatch.setattr(session, "recorded", lambda lab: {"name": lab, "hints": 0})
    code, output = run("heal", "hostgw-route")
    assert code == 2 and "runs exercise hostgw-route" in output and len(output.strip().splitlines()) == 1


SERVICES = {"dataplane": "host-gw",
            "nodes": [{"name": "node1", "pods": [{"name": "web", "labels": {"app": "web"}}]},
                      {"name": "node2", "pods": [{"name": "api", "labels": {"app": "api"}}]}],
            "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}]}


@pytest.mark.parametrize("changes, line", [
    ({"break": [{"service": {"name": "web", "selector": {"app": "web"}, "ports": [{"port": 0}]}}]},
     "break[0].service: services[0].ports[0]: port 0"),
    ({"break": [{"service": {"name": "web", "clusterIP": "10.96.0.9", "selector": {"app": "x"}, "ports": [{"port": 80}]}}]},
     "break[0].service: services[0].clusterIP: 10.96.0.9: field is immutable (default/web has 10.96.0.2)"),
    ({"break": [{"service": "files/nope.yaml"}]}, "break[0].service: cannot read"),
    ({"grade": [{"service": {"name": "db", "endpoints": 1}}]}, "grade[0].service.name: the lab has no Service 'default/db'"),
    ({"grade": [{"service": {"name": "web", "endpoints": "two"}}]}, "grade[0].service.endpoints: 'two' is not a number"),
    ({"grade": [{"service": {"name": "web", "endpoints": 1, "node": "node1/web"}}]}, "grade[0].service.node: must name a node"),
])
def test_a_service_step_and_assertion_are_checked_as_service_apply_checks(tmp_path: Path, changes: dict[str, Any],
                                                                          line: str) -> None:
    found = problems(tmp_path, scenario=SERVICES, **changes)
    assert len(found) == 1 and line in found[0], found


def test_a_service_step_adds_the_services_the_grade_names(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
                                                       "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]}}))
    assert problems(tmp_path, scenario=SERVICES, **{"break": [{"service": "api.yaml"}]},
                    grade=[{"service": {"name": "api", "endpoints": 1}}]) == []
    ex = library.find("svc-selector")
    [step] = ex.breaks
    assert step.kind == "service" and step.services[0].selector == (("app", "wbe"),)
    assert step.describe() == "service apply (default/web)"
    assert next(a for a in ex.grade if a.kind == "service").args == {"name": "default/web", "endpoints": 2}


def test_service_endpoints_are_judged_on_every_node_read() -> None:
    args = {"name": "default/web", "endpoints": 2}
    both = {"node1": ["10.244.0.2:8080", "10.244.1.2:8080"], "node2": ["10.244.0.2:8080", "10.244.1.2:8080"]}
    assert judged("service", args, both)
    assert not judged("service", args, {**both, "node2": []})
    outcome = assertions.judge(Assertion("service", args, "grade[1]"), {"node1": [], "node2": []})
    assert not outcome.ok and "node1, node2" in outcome.words and "none" in outcome.words
    # two ports of one pod are one endpoint
    assert judged("service", {"name": "default/web", "endpoints": 1}, {"node1": ["10.244.0.2:8080", "10.244.0.2:9090"]})
    assert not judged("service", args, {})
