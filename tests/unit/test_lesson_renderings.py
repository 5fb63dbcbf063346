"""explain's, trace's and check's renderings in report/, from hand-made lesson values: no kernel
needed to test what `--json`, the trees and the check's record say."""

from __future__ import annotations

import io
import json
from ipaddress import IPv4Interface, IPv6Interface, ip_address
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from cni_lab import catalog, lifecycle, names, state
from cni_lab.cluster import Lab
from cni_lab.kernel.readback import Connection, Link, NetnsView, Route
from cni_lab.lesson import explain
from cni_lab.lesson.service_trace import ServiceTrace
from cni_lab.lesson.trace import Hop, Leg, Trace
from cni_lab.probe import pairs
from cni_lab.probe.engine import NAT, Extra, Outcomes
from cni_lab.probe.matrix import CheckResult, NeighbourUse
from cni_lab.probe.pairs import AllPairs, Endpoint
from cni_lab.report import explain_view, json_junit, terminal, trace_view


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def route(dst: str, dev: str | None, gateway: str | None = None) -> Route:
    return Route(dst, dev, gateway, "global", "boot", "unicast", None, False)


def two(lab: Lab) -> tuple[Endpoint, Endpoint]:
    pods = [ep for ep in pairs.endpoints(lab) if ep.kind == "pod"]
    return next(p for p in pods if p.node == "node1"), next(p for p in pods if p.node == "node2")


def test_a_trace_is_said_and_written_as_json_from_its_hops() -> None:
    lab = catalog.load("two-nodes")
    src, dst = two(lab)
    there = Leg(src, dst.ip, [
        Hop(src.id, "ns-a", None, "forward", "default via 10.244.0.1 dev eth0", "eth0", "10.244.0.1", ["cni0 (node1)"]),
        Hop(dst.id, "ns-b", "eth0", "deliver", f"local {dst.ip}")])
    back = Leg(dst, src.ip, [Hop("node2", "ns-n2", "cni0", "drop", reason="no route to 10.244.0.0/24")])
    t = Trace(src, dst, there, back)
    assert trace_view.summary(t) == f"delivered to {dst.id}, but the reply is dropped at node2: no route to 10.244.0.0/24"
    doc = trace_view.to_json(t)
    assert doc["outcome"] == "dropped" and doc["summary"] == trace_view.summary(t)
    assert doc["there"][0] == {"at": src.id, "netns": "ns-a", "in": None, "action": "forward",
                               "route": "default via 10.244.0.1 dev eth0", "out": "eth0", "nextHop": "10.244.0.1",
                               "wire": ["cni0 (node1)"], "reason": "", "bpf": None,
                               "bridge": None, "policy": None}
    assert [h["action"] for h in doc["back"]] == ["drop"]
    # `trace --json` adds the real probe; the programs' counters only where there are programs
    probed = trace_view.probed_json(lab, t, "timeout", True, {"node1": {"forwarded": 1}})
    assert list(probed)[-3:] == ["probe", "agrees", "bpfCounters"] and probed["bpfCounters"] is None
    assert trace_view.probed_json(catalog.load("ebpf"), t, "ok", False, {"node1": {"x": 1}})["bpfCounters"] == {"node1": {"x": 1}}
    shown = text(trace_view.view(t, "timeout", True))
    assert f"result: {trace_view.summary(t)}" in shown and "real probe: timeout ✓ agrees" in shown
    wrong = Trace(src, dst, Leg(src, dst.ip, [Hop("node1/other", "ns", "eth0", "deliver")]), None)
    assert trace_view.summary(wrong) == (f"delivered to node1/other, not {dst.id}: the address {dst.ip} is also "
                                         "node1/other's")


def test_a_service_trace_says_the_dnat_and_the_masquerade_conntrack_saw() -> None:
    lab = catalog.load("services")
    svc = lab.services[0]
    port = svc.spec.ports[0]
    src = two(lab)[0]
    c = Connection(str(src.ip), 40000, str(svc.cluster_ip), port.port, "10.244.1.2", 8080, "10.244.0.1", 40000, "ASSURED")
    onward = Leg(src, ip_address("10.244.1.2"), [Hop("node2/web", "ns", "eth0", "deliver", "local 10.244.1.2")])
    t = ServiceTrace(src, svc, port, Leg(src, svc.cluster_ip, []), "node1", "svc-x", c, "node2/web", "10.244.0.1",
                     onward, None)
    assert trace_view.service_summary(t) == (
        f"node1 rewrote {svc.cluster_ip}:{port.port} to 10.244.1.2:8080 (conntrack: reply from 10.244.1.2:8080 to "
        "10.244.0.1:40000); the source was masqueraded to 10.244.0.1; answered by node2/web, which saw 10.244.0.1")
    doc = trace_view.service_to_json(t)
    assert doc["conntrack"]["reply"] == {"src": "10.244.1.2", "sport": 8080, "dst": "10.244.0.1", "dport": 40000}
    assert doc["toDnat"] == [] and doc["back"] is None and doc["onward"][0]["action"] == "deliver"
    assert doc["summary"] == trace_view.service_summary(t) and doc["outcome"] == t.outcome
    nothing = ServiceTrace(src, svc, port, Leg(src, svc.cluster_ip, []), "node1", "svc-x", None, "", "", None, None)
    assert trace_view.service_to_json(nothing)["conntrack"] is None
    assert trace_view.service_summary(nothing).startswith("no conntrack entry on node1")


def node_facts(lab: Lab) -> explain.NodeFacts:
    node = lab.node("node1")
    pod = node.pods[0]
    eth0 = Link(1, names.NODE_UPLINK, "veth", True, 1500, "aa:00:00:00:00:01",
                addresses=[IPv4Interface(f"{node.ip}/24")],
                addresses6=[IPv6Interface("fe80::1/64"), IPv6Interface("fd00::2/64")])
    bridge = Link(2, names.CNI_BRIDGE, "bridge", True, 1500, "aa:00:00:00:00:02",
                  addresses=[IPv4Interface(f"{node.gateway}/24")])
    veth = Link(3, "veth1", "veth", True, 1500, "aa:00:00:00:00:03", master=names.CNI_BRIDGE)
    vtep = Link(4, names.FLANNEL_DEVICE, "vxlan", True, 1450, "aa:00:00:00:00:04",
                addresses=[IPv4Interface("10.244.0.0/32")], vxlan={"id": 1, "port": 8472, "local": str(node.ip), "learning": False},
                neighbours=[("10.244.1.0", "bb:00:00:00:00:04", "PERMANENT")], fdb=[("bb:00:00:00:00:04", "192.168.1.3")])
    view = NetnsView("ns-node1", [eth0, bridge, veth, vtep], [route(str(node.pod_cidr), names.CNI_BRIDGE)], True)
    pod_view = NetnsView("ns-pod", [Link(2, names.POD_IFNAME, "veth", True, 1500, "aa:00:00:00:00:05",
                                         addresses=[IPv4Interface(f"{pod.ip}/24")])],
                         [route("default", names.POD_IFNAME, str(node.gateway))], True)
    pf = explain.PodFacts(pod.name, "ns-pod", pod_view, "veth1")
    nf = explain.NodeFacts("node1", "ns-node1", view, [pf], "u-node1")
    nf.nat = explain.NatFacts("ip flannel-ipv4", [("postrtg", "ip saddr 10.244.0.0/16 masquerade", "leaves")], [])
    return nf


def test_explain_json_and_tree_say_what_the_facts_hold() -> None:
    lab = catalog.load("two-nodes")
    nf = node_facts(lab)
    doc = explain_view.to_json(lab, [nf])
    assert doc["lab"] == lab.name and doc["dataplane"] == lab.dataplane
    node = doc["nodes"][0]
    node_ip = str(lab.node("node1").ip)
    assert node["underlay"] == {"ifname": "eth0", "address": f"{node_ip}/24",
                                "addresses": [f"{node_ip}/24", "fd00::2/64"], "peer": "u-node1"}
    assert node["bridge"]["ports"] == ["veth1"] and node["bridge"]["mtu"] == 1500
    assert node["vxlan"]["id"] == 1 and node["vxlan"]["fdb"] == [{"mac": "bb:00:00:00:00:04", "dst": "192.168.1.3"}]
    assert node["routes"][0]["meaning"] == explain.meaning(lab, "node1", nf.view.routes[0])
    assert node["nat"]["masquerade"] == [{"chain": "postrtg", "rule": "ip saddr 10.244.0.0/16 masquerade", "meaning": "leaves"}]
    assert node["bgp"] is None and node["bpf"] is None and node["policies"] is None and node["datapath"] == []
    assert node["pods"][0]["hostVeth"] == "veth1" and node["pods"][0]["routes6"] == []
    shown = text(explain_view.view(lab, [nf]))
    assert f"underlay {node_ip}/24, fd00::2/64" in shown and "port veth1 ⇄ veth pair ⇄ eth0 of pod" in shown
    assert "postrtg: ip saddr 10.244.0.0/16 masquerade  ← leaves" in shown


def outside_result() -> CheckResult:
    lab = catalog.load("outside")
    endpoints = pairs.endpoints(lab)
    outcomes = Outcomes(AllPairs(len(endpoints)))
    for i in range(len(outcomes.jobs)):
        s, d = outcomes.jobs[i]
        if endpoints[s].kind == "pod" and endpoints[d].kind == "outside":
            outcomes.verdict[i] = NAT
            outcomes.extra[i] = Extra(observed=str(lab.node(endpoints[s].node).ip))
    return CheckResult(lab, endpoints, outcomes, 0.1, NeighbourUse("arp", 1024, True, 2, 511, 514, 12, 1, 14, 0, 0))


def test_the_masquerade_lines_name_each_node_and_what_the_outside_saw() -> None:
    result = outside_result()
    lines = terminal.masquerade_lines(result)
    assert [line.split(" (")[0] for line in lines] == ["pod → outside: masqueraded at node1",
                                                      "pod → outside: masqueraded at node2"]
    assert lines[0].endswith(f"(the outside host saw {result.lab.node('node1').ip}), as flannel --ip-masq does")


def test_a_check_is_recorded_as_its_json_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = outside_result()
    monkeypatch.setattr(state, "STATE_ROOT", tmp_path)
    state.lab_dir(result.lab.name).mkdir()
    written = lifecycle.record_check(result)
    assert written == json_junit.dumps(json_junit.check_json(result))  # what `check --json` prints
    assert lifecycle.last_check(result.lab.name) == json.loads(written)
