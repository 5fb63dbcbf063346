"""Every injected fault is attributed, against the real kernel: on each data plane that supports a
fault kind, the fault injected into a small running lab, `check` (lifecycle.check, as the CLI runs
it: probes, then lesson/causes.py traces the failing pairs) gives every pair and Service probe not
as expected a cause of kind "fault" that names the fault injected, in --json too; `heal`, and
check passes with no cause left.

One lab per data plane and the faults applied to it in turn (inject, check, heal, check), so the
file builds four labs: about two minutes (estimated, not yet measured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
from helpers import two_nodes

from cni_lab import faults, lifecycle
from cni_lab.cluster import Lab
from cni_lab.lesson import causes
from cni_lab.probe.matrix import CheckResult
from cni_lab.report import json_junit

MakeLab = Callable[..., Lab]
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs/check.schema.json").read_text())

# node1 holds web and db, node2 api (helpers.two_nodes): each fault breaks some pairs, not all
FAULTS = [("link-down", ("node2",)), ("route-del", ("node1", "node2")), ("pod-down", ("node2/api",)),
          ("forward-drop", ("node1",))]


def failing(result: CheckResult) -> list[tuple[str, str, Any]]:
    """(source, destination, cause) of every pair (both families) and Service probe not as expected."""
    pairs = [(r.pair.src.id, r.pair.dst.id, r.failure) for one in result.by_family for r in one.failures]
    services = [(s.src, s.title, result.service_causes.get(i)) for i, s in enumerate(result.services) if not s.ok]
    return pairs + services


def assert_attributed(result: CheckResult, injected: faults.Fault) -> None:
    bad = failing(result)
    assert bad, f"{injected.kind} broke nothing"
    wrong = [(s, d, c) for s, d, c in bad
             if c is None or c.kind != "fault" or c.fault != injected or causes.fault_words(injected) not in c.words]
    assert wrong == [], wrong
    # what check observed of them, where it saw a drop or an ICMP error, names the same fault
    observed = [c.observed for _, _, c in bad if c is not None and c.observed]
    assert all(causes.fault_words(injected) in words for words in observed), observed
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    jsonschema.validate(document, SCHEMA)
    said = [p["failureCause"] for p in document["pairs"] if not p["met"]]
    assert said and all(c["kind"] == "fault" and c["fault"]["kind"] == injected.kind
                        and c["fault"]["target"] == injected.target for c in said)


def inject_check_heal(lab: Lab, kind: str, args: tuple[str, ...]) -> None:
    injected = faults.inject(lab, kind, args)
    try:
        assert_attributed(lifecycle.check(lab.name), injected)
    finally:
        faults.heal(lab)
    healed = lifecycle.check(lab.name)
    assert failing(healed) == [] and healed.passed


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan"])
def test_every_fault_on_the_nftables_data_planes_is_named_as_the_cause(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(two_nodes(dataplane))
    for kind, args in FAULTS:
        inject_check_heal(lab, kind, args)


def test_a_detached_program_is_named_as_the_cause_of_its_pods_pairs(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("ebpf", ebpf={"routing": "tunnel"}))
    inject_check_heal(lab, "bpf-detach", ("node1/web",))


def test_a_backend_gone_from_a_nodes_map_is_named_as_the_cause_of_its_clients_service_probes(make_lab: MakeLab) -> None:
    """node1's backends map loses web2: node1's clients of web land on its empty slot now and then
    (check dials each Service port 4 times from each pod: all 8 tries of node1's two pods finding
    web1 happens once in 256 checks, so the check is repeated until one lands on the slot)."""
    lab = make_lab({"dataplane": "ebpf", "ebpf": {"routing": "tunnel"},
                    "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                              {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}],
                    "dns": False, "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}]})
    injected = faults.inject(lab, "bpf-backend-del", ("node1", "node2/web2"))
    try:
        for _ in range(3):
            result = lifecycle.check(lab.name)
            if failing(result):
                break
        bad = failing(result)
        assert bad and all(src.startswith("node1/") for src, _, _ in bad), bad
        assert all(c is not None and c.kind == "fault" and c.fault == injected for _, _, c in bad), bad
        services = json.loads(json_junit.dumps(json_junit.check_json(result)))["services"]
        assert all(s["failureCause"]["fault"]["kind"] == "bpf-backend-del" for s in services if not s["ok"])
    finally:
        faults.heal(lab)
    healed = lifecycle.check(lab.name)
    assert failing(healed) == [] and healed.passed
