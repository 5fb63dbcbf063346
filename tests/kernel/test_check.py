"""The proof against real namespaces: verdicts for working, NATed, colliding and unrouted labs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import jsonschema
import pytest
from helpers import ns_of, run_in, two_nodes

from cni_lab import lifecycle, names
from cni_lab.cluster import Lab
from cni_lab.kernel import netns
from cni_lab.probe import matrix
from cni_lab.probe.budget import Budget
from cni_lab.report import json_junit

MakeLab = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]


def by_pair(result: matrix.CheckResult) -> dict[tuple[str, str], object]:
    return {(r.pair.src.id, r.pair.dst.id): r for r in result.results}


def test_host_gw_every_pair_ok_and_sources_are_the_senders(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    result = matrix.run(lab)
    assert len(result.results) == 5 * 4
    assert {r.verdict for r in result.results} == {"ok"}
    for r in result.results:
        # a pod sends from its address; a node lets its kernel pick: cni0's towards its own pods
        # (the route's source), the underlay's towards the rest
        own_pod = r.pair.src.kind == "node" and r.pair.dst.kind == "pod" and r.pair.dst.node == r.pair.src.node
        assert r.observed == str(lab.node(r.pair.src.node).gateway if own_pod else r.pair.src.ip)
        assert r.answered_by == f"{lab.name}/{r.pair.dst.id}"
        assert r.rtt_ms is not None and r.rtt_ms > 0
    assert result.passed
    assert all(s.passed and s.ok == s.total for s in result.summaries())


def test_masquerade_on_one_node_is_reported_as_nat_for_exactly_its_pairs(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    node1 = ns_of(lab, "node1")
    # The classic mistake: masquerade pod traffic leaving the node (not traffic staying on cni0).
    rules = (
        "add table ip lab\n"
        "add chain ip lab post { type nat hook postrouting priority 100; }\n"
        'add rule ip lab post ip saddr 10.244.0.0/24 oifname "eth0" masquerade\n'
    )
    subprocess.run(["ip", "netns", "exec", node1, "nft", "-f", "-"], input=rules, text=True, check=True)
    result = matrix.run(lab)
    nat = {(r.pair.src.id, r.pair.dst.id) for r in result.results if r.verdict == "nat"}
    assert nat == {(s, d) for s in ("node1/web", "node1/db") for d in ("node2", "node2/api")}
    for r in result.results:
        if r.verdict == "nat":
            assert r.observed == "192.168.1.2"
            assert "saw the packet come from 192.168.1.2" in r.detail
        else:
            assert r.verdict == "ok"
    assert not result.passed
    done = subprocess.run([sys.executable, "-m", "cni_lab", "check", lab.name], capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr


def test_overlapping_pod_cidrs_are_answered_by_the_wrong_pod(make_lab: MakeLab) -> None:
    lab = make_lab({
        "dataplane": "bridge",
        "allowOverlap": True,
        "nodes": [
            {"name": "node1", "podCIDR": "10.244.0.0/24", "pods": ["pod1"]},
            {"name": "node2", "podCIDR": "10.244.0.0/24", "pods": ["pod1"]},
        ],
    })
    pairs = by_pair(matrix.run(lab))
    r = pairs[("node1/pod1", "node2/pod1")]
    assert r.verdict == "wrong-peer"  # type: ignore[attr-defined]
    assert r.answered_by == f"{lab.name}/node1/pod1"  # type: ignore[attr-defined]
    assert "answered by" in r.detail and "node1/pod1" in r.detail  # type: ignore[attr-defined]
    assert pairs[("node2", "node1/pod1")].verdict == "wrong-peer"  # type: ignore[attr-defined]
    assert pairs[("node1", "node1/pod1")].verdict == "ok"  # type: ignore[attr-defined]


def test_bridge_lab_cross_node_pairs_fail_same_node_pairs_pass(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("bridge"))
    result = matrix.run(lab)
    for r in result.results:
        if r.pair.rule == "pod-pod-cross-node":
            # the node has no route to the other pod CIDR and says so (ICMP network unreachable)
            assert r.verdict in ("timeout", "unreachable"), r
        if r.pair.rule in ("pod-pod-same-node", "node-node"):
            assert r.verdict == "ok", r
    unreachable = by_pair(result)[("node1/web", "node2/api")]
    assert unreachable.verdict == "unreachable"  # type: ignore[attr-defined]
    assert "10.244.0.1 answered: network unreachable" in unreachable.detail  # type: ignore[attr-defined]
    assert by_pair(result)[("node1/web", "node2")].verdict == "timeout"  # type: ignore[attr-defined]


def test_json_follows_the_schema_and_junit_parses(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("bridge"))
    result = matrix.run(lab)
    schema = json.loads((ROOT / "docs/check.schema.json").read_text())
    document = json_junit.check_json(result)
    jsonschema.validate(document, schema)
    assert document["passed"] is False
    assert not any("cause" in p for p in document["pairs"])  # no policies: nothing decides by them, nothing computed
    suites = ET.fromstring(json_junit.check_junit(result))
    suite = suites.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [s.title for s in result.summaries()]
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures", "-1")) == len(failed) > 0
    assert "node1/web → node2/api: unreachable" in (failed[0].find("failure").text or "") + "".join(
        (c.find("failure").text or "") for c in failed)  # type: ignore[union-attr]


def test_check_leaves_no_responder_or_socket_behind(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    fds = len(os.listdir("/proc/self/fd"))
    matrix.run(lab)
    assert len(os.listdir("/proc/self/fd")) == fds
    namespaces = [n for n in netns.listing() if names.lab_of_netns(n) == lab.name]
    assert netns.pids_in(namespaces) == {}
    # nothing listens on the probe port in any namespace afterwards
    assert "31999" not in run_in(ns_of(lab, "node2/api"), "ss", "-uln").stdout


def test_run_is_up_check_down_with_checks_exit_code(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "cni_lab", "run", str(ROOT / "scenarios/bridge-only.yaml"),
                         "--name", "trun1", "--junit", str(tmp_path / "j.xml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and ET.parse(tmp_path / "j.xml").getroot().tag == "testsuites"
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: trun2\ndataplane: bridge\nnodes: [{name: a, pods: 1}, {name: b, pods: 1}]\n")
    bad = subprocess.run([sys.executable, "-m", "cni_lab", "run", str(scenario), "--json"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["passed"] is False
    assert not [n for n in netns.listing() if names.lab_of_netns(n) in ("trun1", "trun2")]


def test_a_lab_past_its_neighbour_budget_is_said_before_probing_and_probed_in_batches(
        make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = make_lab(two_nodes("host-gw"))
    monkeypatch.setattr(matrix, "table_room", lambda table=None: Budget(16, 0))  # as if the host allowed 16 ARP entries
    heard: list[tuple[str, int]] = []
    probed: list[int] = []
    result = lifecycle.check(lab.name, progress=lambda done, total: probed.append(done),
                             notice=lambda text: heard.append((text, len(probed))))
    assert [(n, 0) for n in result.notes] == heard  # once, before any progress
    assert "batches" in heard[0][0] and "--neighbour-cap" not in heard[0][0] and probed
    use = result.neighbours
    assert use.budget == 8 and use.batches > 1 and use.deleted > 0
    assert result.passed  # a small lab still passes, in small batches


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux's setpriv is not installed")
def test_check_without_cap_net_raw_says_so_in_one_line(make_lab: MakeLab) -> None:
    # podman's default capabilities leave NET_RAW out: check's ICMP probes need it
    lab = make_lab(two_nodes("host-gw"))
    done = subprocess.run(["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--",
                           sys.executable, "-m", "cni_lab", "check", lab.name], capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CAP_NET_RAW" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
