"""observe against the real kernel, on every data plane with policies, Services and masquerade:
what check records while it probes (the same sources and decoder `cni-lab observe` uses) holds a
policy drop with its policy's name, a Service flow with the endpoint chosen, a pod's way out
masqueraded, and a fault's drop with the fault's kind; every flow's JSON validates against
docs/flow.schema.json. On host-gw: the CLI streams JSON lines while pings run, and a running
observer changes no verdict of check."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
from helpers import node_addresses, ns_of, run_in

from cni_lab import faults, lifecycle, observing
from cni_lab.cluster import Lab
from cni_lab.kernel import netns
from cni_lab.observe.flows import Flow, to_json

MakeLab = Callable[..., Lab]
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs/flow.schema.json").read_text())
DENY_TO_API = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny-to-api", "namespace": "default"},
               "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"]}}
PLANES = {"host-gw": {}, "vxlan": {}, "bgp": {}, "cni": {}, "ebpf": {"ebpf": {"routing": "tunnel"}}}


def doc(dataplane: str) -> dict[str, Any]:
    return {"dataplane": dataplane, **PLANES[dataplane], "outside": {}, "policies": [DENY_TO_API],
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}},
                                                 {"name": "api", "labels": {"app": "api"}}]}],
            "dns": False, "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}]}


def described(flows: tuple[Flow, ...]) -> list[str]:
    return sorted({f"{f.verdict} {f.source.name}>{f.destination.name} @{f.node}: {f.cause}" for f in flows})[:40]


@pytest.mark.parametrize("dataplane", list(PLANES))
def test_check_observes_policy_drops_service_endpoints_masquerade_and_faults(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(doc(dataplane))
    result = lifecycle.check(lab.name)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    flows = result.flows
    assert flows and not result.flows_note, result.flows_note
    for f in flows:
        jsonschema.validate(to_json(f), SCHEMA)
    # a policy drop, with its policy's name, at the node of the pod it isolates
    drops = [f for f in flows if f.verdict == "DROPPED" and f.drop_reason_desc == "POLICY_DENIED"]
    assert drops, described(flows)
    assert all(f.destination.name == "node2/api" and f.node == "node2" for f in drops), described(drops)
    assert all([(p.namespace, p.name) for p in f.ingress_denied_by] == [("default", "deny-to-api")] for f in drops)
    assert all("default/deny-to-api" in f.cause for f in drops)
    # a Service's connection, with the endpoint its DNAT chose
    services = [f for f in flows if f.verdict == "TRANSLATED" and "Service default/web 10.96.0." in f.cause]
    assert services, described(flows)
    assert {f.translated.name for f in services if f.translated} <= {"node1/web1", "node2/web2"}
    assert any(f.source.name == "node1/client" for f in services)
    # a pod's way out, masqueraded to its node's address
    masqueraded = [f for f in flows if f.verdict == "TRANSLATED" and f.cause.startswith("masquerade at")
                   and f.destination.kind == "outside"]
    assert masqueraded, described(flows)
    for f in masqueraded:
        assert f.source.kind == "pod" and f.source_xlated in node_addresses(lab, f.source.node), f
    # a fault, named with its kind
    if dataplane == "ebpf":
        backend_fault_is_observed(lab)
    else:
        forward_drop_is_observed(lab)


def forward_drop_is_observed(lab: Lab) -> None:
    injected = faults.inject(lab, "forward-drop", ("node1",))
    try:
        broken = lifecycle.check(lab.name)
    finally:
        faults.heal(lab)
    dropped = [f for f in broken.flows if f.drop_reason_desc == "FAULT_FORWARD_DROP"]
    assert dropped and all(f.node == "node1" and f.cause.startswith(f"fault {injected.describe()}") for f in dropped)
    observed = [r.failure.observed for one in broken.by_family for r in one.failures if r.failure and r.failure.observed]
    assert observed and all("fault forward-drop" in words for words in observed), observed


def backend_fault_is_observed(lab: Lab) -> None:
    """node1's backends map loses web2: of 32 new TCP connections from node1/client to the ClusterIP,
    those that land on web2's slot are dropped by cil_from_container, and the drop names the fault."""
    service_ip = str(next(s for s in lab.services if s.qualified == "default/web").cluster_ip)
    faults.inject(lab, "bpf-backend-del", ("node1", "node2/web2"))
    try:
        with observing.sources(lab) as reader:
            from cni_lab.observe.decode import Decoder

            decoder = Decoder(lab, faults.recorded(lab.name))
            opened = []
            for _ in range(32):  # a SYN each, from a port of its own: a new connection, a slot drawn
                s = netns.open_socket(ns_of(lab, "node1/client"), socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((service_ip, 80))
                opened.append(s)
            time.sleep(0.5)
            for s in opened:
                s.close()
            flows = [f for raw in reader.read(0.5) if (f := decoder.flow(raw)) is not None]
    finally:
        faults.heal(lab)
    dropped = [f for f in flows if f.drop_reason_desc == "SERVICE_BACKEND_NOT_FOUND"]
    assert dropped, described(tuple(flows))
    assert all(f.node == "node1" and f.cause.startswith("fault bpf-backend-del") for f in dropped)


def judged(result: Any) -> list[tuple[str, str, bool, str]]:
    """Each pair's verdict, and whether as expected; where either of two is (a blocked pair:
    timeout or unreachable, as the router's ARP and ICMP happen to answer), only that."""
    return [(r.pair.src.id, r.pair.dst.id, r.met, r.verdict if len(r.pair.expected) == 1 else "either")
            for r in result.results]


def test_the_cli_streams_json_lines_and_a_running_observer_changes_no_verdict(make_lab: MakeLab) -> None:
    lab = make_lab(doc("host-gw"))
    before = lifecycle.check(lab.name, observe=False)
    observer = subprocess.Popen([sys.executable, "-m", "cni_lab", "observe", lab.name, "--json", "--count", "3",
                                 "--from", "node1/client", "--to", "node2/api", "--protocol", "icmp",
                                 "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert observer.stderr is not None
        assert "observing lab" in observer.stderr.readline()
        during = lifecycle.check(lab.name)  # the observer holds the sources: check records nothing, says why
        assert "another observer" in during.flows_note and not during.flows
        assert judged(during) == judged(before)
        api = str(next(p.ip for p in lab.pods if p.id == "node2/api"))
        for _ in range(3):  # whatever check's own echoes left to count
            if observer.poll() is None:
                run_in(ns_of(lab, "node1/client"), "ping", "-c1", "-W1", api)
        out, _ = observer.communicate(timeout=30)
    finally:
        if observer.poll() is None:
            observer.kill()
            observer.wait()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3, out
    for line in lines:
        jsonschema.validate(line, SCHEMA)
        assert line["flow"]["l4"].keys() == {"ICMPv4"}
        names = line["flow"]["cni_lab"]
        assert (names["source_name"], names["destination_name"]) == ("node1/client", "node2/api")
    dropped = [line for line in lines if line["flow"]["verdict"] == "DROPPED"]
    assert dropped and dropped[0]["flow"]["ingress_denied_by"] == [
        {"name": "deny-to-api", "namespace": "default", "kind": "NetworkPolicy"}], lines


def test_the_bench_quick_mode_counts_flows_against_the_rules_counters(tmp_path: Path) -> None:
    """bench/observe.py --quick: observe, as a user runs it, against the nft counters of the
    rules that log; no figure is asserted (tests never judge speed), only that it measured."""
    out = tmp_path / "observe.json"
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "bench/observe.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert [r["rate"] for r in report["rates"]] == [2500, 5000]
    assert all(r["counted"] > 0 and 0 < r["observed"] <= r["counted"] for r in report["rates"]), report
    assert "observed without loss, against the rules' own counters" in done.stdout
