"""The lesson against the kernel: demo acts, explain facts, traces that agree with real packets."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Callable

import pytest
from helpers import ns_of, run_in, two_nodes

from cni_lab.cluster import Lab
from cni_lab.lesson import explain, trace
from cni_lab.probe import matrix
from cni_lab.report import explain_view, trace_view

MakeLab = Callable[..., Lab]


def test_the_demo_shows_every_act_and_exits_zero() -> None:
    # the one run of the demo in the suite: it exits 0 only if every act's judgement passed
    # (act 2's pods answer for each other, act 3's pairs are all ok; tests/unit/test_demo.py
    # shows the judgement can fail)
    done = subprocess.run([sys.executable, "-m", "cni_lab", "demo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert all(f"Act {n}" in done.stdout for n in (1, 2, 3)) and done.stdout.count("PASS") >= 3


def test_explain_json_matches_the_kernel(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    facts = explain_view.to_json(lab, explain.read(lab))
    for node in facts["nodes"]:
        ns = ns_of(lab, node["name"])
        kernel_addrs = json.loads(run_in(ns, "ip", "-j", "-4", "addr", check=True).stdout)
        by_if = {a["ifname"]: f"{a['addr_info'][0]['local']}/{a['addr_info'][0]['prefixlen']}"
                 for a in kernel_addrs if a["addr_info"]}
        assert node["underlay"]["address"] == by_if["eth0"]
        assert node["bridge"]["address"] == by_if["cni0"]
        ports = json.loads(run_in(ns, "ip", "-j", "link", "show", "master", "cni0", check=True).stdout)
        assert node["bridge"]["ports"] == sorted(p["ifname"] for p in ports)
        kernel_routes = run_in(ns, "ip", "-4", "route", check=True).stdout.split("\n")
        assert len(node["routes"]) == len([r for r in kernel_routes if r.strip()])
        meanings = [r["meaning"] for r in node["routes"]]
        other = "node2" if node["name"] == "node1" else "node1"
        assert any(m.startswith(f"route to {other}'s pods via 192.168.1.") for m in meanings)
        for pod in node["pods"]:
            pod_ns = ns_of(lab, f"{node['name']}/{pod['name']}")
            addr = json.loads(run_in(pod_ns, "ip", "-j", "-4", "addr", "show", "eth0", check=True).stdout)[0]
            assert pod["address"] == f"{addr['addr_info'][0]['local']}/{addr['addr_info'][0]['prefixlen']}"
            assert pod["hostVeth"] in node["bridge"]["ports"]


def test_trace_json_follows_the_host_gw_path(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    t = trace_view.to_json(trace.trace(lab, "node1/web", "node2/api"))
    assert t["outcome"] == "ok"
    assert [h["at"] for h in t["there"]] == ["node1/web", "node1", "node2", "node2/api"]
    assert t["there"][1]["route"] == "10.244.1.0/24 via 192.168.1.3 dev eth0"
    assert t["there"][1]["in"] == "cni0" and t["there"][2]["in"] == "eth0"
    assert "br-underlay (underlay)" in t["there"][1]["wire"]
    assert t["summary"] == "delivered to node2/api, and the reply reaches node1/web"
    done = subprocess.run([sys.executable, "-m", "cni_lab", "trace", lab.name, "node1/web", "10.244.1.2", "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["agrees"] is True


def test_bridge_trace_ends_at_the_node_with_no_route(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("bridge"))
    t = trace.trace(lab, "node1/web", "node2/api")
    last = t.there.hops[-1]
    assert (last.where, last.action) == ("node1", "drop")
    assert "no route to 10.244.1.0/24" in last.reason
    assert t.outcome == "dropped"


@pytest.mark.parametrize("document", [
    two_nodes("host-gw"),
    two_nodes("bridge"),
    {"dataplane": "bridge", "allowOverlap": True, "nodes": [
        {"name": "node1", "podCIDR": "10.244.0.0/24", "pods": ["pod1"]},
        {"name": "node2", "podCIDR": "10.244.0.0/24", "pods": ["pod1"]}]},
], ids=["host-gw", "bridge", "conflict"])
def test_every_trace_agrees_with_the_real_packet(make_lab: MakeLab, document: dict) -> None:  # type: ignore[type-arg]
    lab = make_lab(document)
    for r in matrix.run(lab).results:
        t = trace.trace(lab, r.pair.src.id, r.pair.dst.id)
        assert trace.agrees(t, r.verdict), (r.pair.src.id, r.pair.dst.id, r.verdict, trace_view.summary(t))
