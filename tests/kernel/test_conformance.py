"""`cni-lab conformance` on real namespaces: generated NetworkPolicy cases applied live, one after
another, on the shipped netpol model, every cell held against the reference; the lab's own
policies back afterwards, whatever ended the run; a node that stops enforcing is caught."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner
from helpers import ns_of, run_in

from cni_lab import lifecycle
from cni_lab.cli import cli
from cni_lab.cluster import Lab
from cni_lab.conformance import Selection
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]
DENY_INGRESS_X = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "deny-ingress", "namespace": "x"},
                  "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
CELLS = 12 * 11 + 9 * 8 * 4  # the matrix of 3 nodes and 9 pods, and the pods on TCP/UDP 80 and 81


def netpol(**changes: Any) -> dict[str, Any]:
    """scenarios/netpol.yaml, as shipped (the name is the fixture's)."""
    return {**yaml.safe_load((ROOT / "scenarios/netpol.yaml").read_text()), **changes}


def conformance(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["conformance", *args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def tables(lab: Lab) -> dict[str, str]:
    """Each node's policy table as nft lists it without counters ("" where there is none)."""
    out = {}
    for node in lab.nodes:
        listed = run_in(ns_of(lab, node.name), "nft", "-s", "list", "table", "inet", "cni-lab-policy")
        out[node.name] = listed.stdout if listed.returncode == 0 else ""
    return out


def differing(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(r["case"], c) for r in document["results"] for c in r["differing"]]


def test_a_hundred_generated_cases_agree_with_the_reference_and_the_lab_is_as_it_was(make_lab: MakeLab) -> None:
    lab = make_lab(netpol())
    before = tables(lab)
    assert before == {n.name: "" for n in lab.nodes}  # the shipped model has no policies
    code, document = conformance(lab.name, "--cases", "100", "--seed", "28")
    assert code == 0 and document["passed"], differing(document)[:20]
    assert (document["cases"], document["casesDiffering"], document["cells"]) == (100, 0, 100 * CELLS)
    rate = document["casesPerMinute"]
    print(f"conformance on {lab.name}: {rate} cases a minute, per case {document['perCaseSeconds']}, "
          f"{document['reprobedCells']} cells probed again", file=sys.stderr)
    assert rate >= 50, document["perCaseSeconds"]  # the goal is 100 on 2 cores: bench/ measures it
    assert tables(lab) == before  # put back: no table, as the lab had none
    after = lifecycle.running_lab(lab.name)[0]
    assert after.policies == () and matrix.run(after).passed  # the record unchanged, and the lab proves so


@pytest.mark.parametrize(("routing", "count"), [("tunnel", 100), ("native", 30)])
def test_generated_cases_agree_on_ebpf_by_identity_in_both_routing_modes(make_lab: MakeLab, routing: str,
                                                                        count: int) -> None:
    """Cilium's way (identities, per-endpoint policy maps, conntrack in BPF) against the same
    reference as host-gw's nftables: the same 100 cases in tunnel mode (30 of them in native
    routing, whose policy path is the same code), not one cell apart; the policy maps and the
    ipcache as they were after the run (the shipped model has no policies)."""
    from cni_lab import names
    from cni_lab.kernel import bpf

    lab = make_lab(netpol(dataplane="ebpf", ebpf={"routing": routing}))
    pin = names.bpf_node_dir(lab.name, "node1")
    maps = {p.name: bpf.policy(pin, i) for i, p in enumerate(lab.node("node1").pods, 1)}
    cache = bpf.ipcache(pin)
    code, document = conformance(lab.name, "--cases", str(count), "--seed", "28")
    assert code == 0 and document["passed"], differing(document)[:20]
    assert (document["cases"], document["casesDiffering"]) == (count, 0)
    assert {p.name: bpf.policy(pin, i) for i, p in enumerate(lab.node("node1").pods, 1)} == maps
    assert bpf.ipcache(pin) == cache  # the cases' ipBlock prefixes gone with them
    counted = bpf.metrics(pin)
    assert counted["drops: policy denied"] > 0
    print(f"ebpf {routing}: {document['casesPerMinute']} cases a minute", file=sys.stderr)


@pytest.mark.parametrize("dataplane", ["vxlan", "bgp", "cni"])
def test_generated_cases_agree_on_the_other_data_planes_that_enforce_policies(make_lab: MakeLab,
                                                                              dataplane: str) -> None:
    lab = make_lab(netpol(dataplane=dataplane))
    code, document = conformance(lab.name, "--cases", "20", "--seed", "7")
    assert code == 0, differing(document)[:20]


def test_the_labs_own_policies_come_back_after_a_run_and_after_an_error_in_it(make_lab: MakeLab,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from cni_lab.probe.cases import CaseProber

    lab = make_lab(netpol(policies=[DENY_INGRESS_X]))
    before = tables(lab)
    assert "chain to-wl-x/a" in before["node1"]
    assert conformance(lab.name, "--cases", "5", "--seed", "1")[0] == 0
    assert tables(lab) == before
    observe = CaseProber.observe
    calls: list[int] = []

    def breaks_at_the_third(self: CaseProber, probes: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the prober broke")
        return observe(self, probes)

    monkeypatch.setattr(CaseProber, "observe", breaks_at_the_third)
    with pytest.raises(RuntimeError, match="the prober broke"):
        lifecycle.run_cases(lab.name, Selection.of(10, 1))
    assert tables(lab) == before
    monkeypatch.undo()
    result = matrix.run(lifecycle.running_lab(lab.name)[0])
    assert result.passed and any(r.verdict == "timeout" for r in result.ports)  # enforced again, as its own


def test_a_node_that_stops_enforcing_is_caught_cell_by_cell_and_its_case_runs_again_alike(
        make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """node2 deletes its policy table whenever it is given one (a data plane that drops its rules on
    one node): every differing cell is a pod of node2 reached where the reference denies it."""
    from cni_lab.rulesets import netpol as rules
    from cni_lab.rulesets import nft

    lab = make_lab(netpol())
    ruleset = rules.ruleset

    def forgetful(the_lab: Lab, node: Any) -> str:
        if node.name == "node2":
            return "\n".join(nft.replace("inet", rules.TABLE)) + "\n"
        return ruleset(the_lab, node)

    monkeypatch.setattr(rules, "ruleset", forgetful)
    code, document = conformance(lab.name, "--cases", "20", "--seed", "3")
    assert code == 1 and not document["passed"] and document["casesDiffering"] > 0
    found = differing(document)
    on_node2 = {"x/b", "y/b", "z/b"}
    assert [c for _, c in found if not (c["expected"] == "denied" and c["observed"] == "ok"
                                        and on_node2 & {c["src"], c["dst"]})] == []
    first = next(r for r in document["results"] if not r["passed"])
    assert first["policies"] and first["grids"] and first["rerun"].endswith(f"--case {first['case']}")
    code, again = conformance(lab.name, "--case", first["case"])
    assert code == 1 and again["results"][0]["differing"] == first["differing"]  # the same case, the same cells
