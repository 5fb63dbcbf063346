"""Every pair check finds not as expected carries a cause (lesson/causes.py): the recorded fault
on its way, named as `fault` names it, else the trace's drop, else the policies, else
"unexplained"; and --json (`failureCause`, docs/check.schema.json), the terminal's rules and JUnit
say it. Labs built without root; traces made by hand."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console, RenderableType

from cni_lab import cluster, names
from cni_lab.faults import Fault
from cni_lab.kernel.edit import SavedRoute
from cni_lab.lesson import causes
from cni_lab.lesson import trace as tracing
from cni_lab.lesson.hops import Hop, Leg
from cni_lab.probe import pairs
from cni_lab.probe.engine import OK, TIMEOUT, Outcomes
from cni_lab.probe.matrix import CheckResult, FailureCause, NeighbourUse
from cni_lab.probe.pairs import AllPairs, Endpoint
from cni_lab.probe.service_probes import ServiceProbe
from cni_lab.report import json_junit, terminal

from labs import make_lab, network_policy as np, pod

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs/check.schema.json").read_text())
ROUTE = SavedRoute("10.244.1.0/24", "eth0", "192.168.1.3", text="10.244.1.0/24 via 192.168.1.3 dev eth0 proto boot")


def two_nodes(**keys: Any) -> cluster.Lab:
    return make_lab([{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}], name="cz", **keys)


def node_ns(lab: cluster.Lab, node: str) -> str:
    return names.node_netns(lab.name, node)


def pod_ns(lab: cluster.Lab, target: str) -> str:
    node, pod_name = target.split("/")
    return names.pod_netns(lab.name, node, pod_name)


def fault(lab: cluster.Lab, kind: str, target: str) -> Fault:
    """A fault as `inject` records it."""
    if kind in ("link-down", "forward-drop"):
        return Fault(kind, target, node_ns(lab, target), names.NODE_UPLINK if kind == "link-down" else "")
    if kind == "route-del":
        return Fault(kind, target, node_ns(lab, target.split(">")[0]), "eth0", ROUTE)
    if kind == "pod-down":
        return Fault(kind, target, pod_ns(lab, target), names.POD_IFNAME)
    if kind == "bpf-detach":
        node, pod_name = target.split("/")
        return Fault(kind, target, node_ns(lab, node), names.lxc_veth(lab.name, node, pod_name))
    return Fault(kind, target, node_ns(lab, target.split(">")[0]))


def ends(lab: cluster.Lab) -> dict[str, Endpoint]:
    return {e.id: e for e in pairs.endpoints(lab)}


def checked(lab: cluster.Lab, failing: set[tuple[str, str]], services: tuple[ServiceProbe, ...] = ()) -> CheckResult:
    """A check made by hand: the pairs named time out, the rest are ok."""
    eps = pairs.endpoints(lab)
    outcomes = Outcomes(AllPairs(len(eps)))
    for i, (s, d) in enumerate(outcomes.jobs[j] for j in range(len(outcomes.verdict))):
        outcomes.verdict[i] = TIMEOUT if (eps[s].id, eps[d].id) in failing else OK
    use = NeighbourUse("arp", 1024, True, 2, 511, 514, 12, 1, 14, 0, 0)
    return CheckResult(lab, eps, outcomes, 0.1, use, services=services)


def shown(renderable: RenderableType) -> str:
    console = Console(record=True, width=400, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_each_fault_is_named_as_fault_names_it() -> None:
    lab = two_nodes()
    assert causes.fault_words(fault(lab, "link-down", "node2")) == "fault link-down at node2: node2's eth0 is down"
    assert causes.fault_words(fault(lab, "route-del", "node1>node2")) == \
        "fault route-del node1>node2: node1 lost `10.244.1.0/24 via 192.168.1.3 dev eth0 proto boot`"
    assert causes.fault_words(fault(lab, "pod-down", "node2/api")) == "fault pod-down node2/api: its eth0 is down"
    assert causes.fault_words(fault(lab, "forward-drop", "node1")).startswith("fault forward-drop at node1: nft table")
    assert causes.fault_words(fault(lab, "bpf-detach", "node1/web")).startswith("fault bpf-detach node1/web: "
                                                                               "cil_from_container is off lxc")
    assert causes.fault_words(fault(lab, "bpf-backend-del", "node1>node2/api")).startswith(
        "fault bpf-backend-del node1>node2/api: node2/api's backends are gone from node1's")


RULES = [  # (kind, target, pairs it lies on, pairs it does not)
    ("link-down", "node2", [("node1/web", "node2/api"), ("node2", "node1"), ("node2/api", "node2")],
     [("node1/web", "node1/db"), ("node1", "node1/web")]),
    ("route-del", "node1>node2", [("node1/web", "node2/api"), ("node2/api", "node1"), ("node2", "node1/db")],
     [("node1/web", "node1/db"), ("node2/api", "node2")]),
    ("pod-down", "node2/api", [("node1/web", "node2/api"), ("node2/api", "node2")],
     [("node1/web", "node2"), ("node1/web", "node1/db")]),
    ("forward-drop", "node1", [("node1/web", "node2/api"), ("node2", "node1/db"), ("node1/web", "node1/db")],
     [("node1", "node1/web"), ("node2/api", "node1"), ("node1", "node2/api")]),
    ("bpf-detach", "node1/web", [("node1/web", "node2/api"), ("node2", "node1/web")], [("node1/db", "node2/api")]),
    ("bpf-backend-del", "node1>node2/api", [], [("node1/web", "node2/api")]),
]


@pytest.mark.parametrize(("kind", "target", "on", "off"), RULES, ids=[r[0] for r in RULES])
def test_a_fault_lies_on_the_pairs_its_rule_says(kind: str, target: str, on: list[tuple[str, str]],
                                                  off: list[tuple[str, str]]) -> None:
    lab = two_nodes()
    e, f = ends(lab), fault(lab, kind, target)
    assert [p for p in on if not causes.touches_pair(lab, f, e[p[0]], e[p[1]])] == []
    assert [p for p in off if causes.touches_pair(lab, f, e[p[0]], e[p[1]])] == []


def test_the_fabrics_router_losing_a_route_cuts_that_nodes_pods_off_from_everyone_else() -> None:
    lab = make_lab([{"name": "node1", "pods": ["web"]}, {"name": "node2", "pods": ["api"]}], name="fz",
                   dataplane="fabric")
    e = ends(lab)
    f = Fault("route-del", "router>node2", names.router_netns(lab.name), "eth0", ROUTE)
    assert causes.touches_pair(lab, f, e["node1/web"], e["node2/api"])
    assert not causes.touches_pair(lab, f, e["node2"], e["node2/api"])


def hop(where: str, netns: str, action: str = "forward", came_in: str | None = None, out: str | None = None,
        reason: str = "") -> Hop:
    return Hop(where, netns, came_in, action, out=out, reason=reason)


def test_a_traced_way_meets_a_fault_through_its_device_or_where_it_drops() -> None:
    lab = two_nodes()
    node2 = node_ns(lab, "node2")
    down = fault(lab, "link-down", "node2")
    through = [hop("node1", node_ns(lab, "node1"), out="eth0"), hop("node2", node2, "deliver", came_in="eth0")]
    assert causes.touched_by_hops(down, through)
    dropped = [hop("node2/api", pod_ns(lab, "node2/api")), hop("node2", node2, "drop", came_in="cni0", reason="no route")]
    assert causes.touched_by_hops(down, dropped)
    elsewhere = [hop("node1/web", pod_ns(lab, "node1/web"), out="eth0"), hop("node1", node_ns(lab, "node1"), "deliver", "veth")]
    assert not causes.touched_by_hops(down, elsewhere)


def a_trace(lab: cluster.Lab, src: str, dst: str, last: Hop) -> tracing.Trace:
    e = ends(lab)
    return tracing.Trace(e[src], e[dst], Leg(e[src], e[dst].ip, [hop(src, e[src].netns, out="eth0"), last]), None)


def test_the_fault_comes_first_then_the_traces_drop_then_unexplained() -> None:
    lab = two_nodes()
    result = checked(lab, {("node1/web", "node2/api")})
    r = result.failures[0]
    no_route = hop("node1", node_ns(lab, "node1"), "drop", came_in="veth", reason="no route to 10.244.1.0/24")
    t = a_trace(lab, "node1/web", "node2/api", no_route)
    got = causes.pair_cause(lab, [fault(lab, "route-del", "node1>node2"), fault(lab, "pod-down", "node1/db")], r, t)
    assert got.kind == "fault" and got.fault is not None and got.fault.kind == "route-del"
    assert got.words == "fault route-del node1>node2: node1 lost `10.244.1.0/24 via 192.168.1.3 dev eth0 proto boot`"
    assert causes.pair_cause(lab, [], r, t) == FailureCause("route", "node1: no route to 10.244.1.0/24")
    delivered = a_trace(lab, "node1/web", "node2/api", hop("node2/api", pod_ns(lab, "node2/api"), "deliver", "eth0"))
    delivered.back = Leg(delivered.dst, delivered.src.ip, [hop("node1/web", pod_ns(lab, "node1/web"), "deliver", "eth0")])
    assert causes.pair_cause(lab, [], r, delivered).words == "unexplained: trace delivers it but the probe did not"
    assert causes.pair_cause(lab, [], r, None, "not traced: why").words == "unexplained: not traced: why"


def test_a_policy_lab_names_the_policies_when_nothing_else_does() -> None:
    deny = np("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    lab = make_lab([{"name": "node1", "pods": [pod("a", "x", {"pod": "a"})]}, {"name": "node2", "pods": [pod("b", "y")]}],
                   name="pz", namespaces={"x": {}, "y": {}}, policies=[deny])
    result = checked(lab, set())  # everything delivered: y/b → x/a should not have been
    r = next(r for r in result.failures if r.pair.src.id == "node2/y/b")
    got = causes.pair_cause(lab, [fault(lab, "link-down", "node2")], r, None)  # a fault breaks nothing delivered
    assert got.kind == "policy"
    assert got.words == ("the policies deny it: x/deny isolates x/a for ingress; no rule allows y/b on ICMP; "
                         "the network delivered it")


def test_a_policy_chain_that_drops_it_is_a_policy_cause() -> None:
    lab = two_nodes()
    r = checked(lab, {("node1/web", "node2/api")}).failures[0]
    chain = hop("node2", node_ns(lab, "node2"), "drop", came_in="eth0",
                reason="cni-pol-ingress-api (default/deny isolates api for ingress; no rule allows web on ICMP): dropped")
    got = causes.pair_cause(lab, [], r, a_trace(lab, "node1/web", "node2/api", chain))
    assert got.kind == "route"  # the words alone do not make it a policy's: the hop's verdict does
    from cni_lab.lesson.hops import HookVerdict

    chain.policy = HookVerdict("forward", False, "dropped")
    assert causes.pair_cause(lab, [], r, a_trace(lab, "node1/web", "node2/api", chain)).kind == "policy"


def test_a_nat_that_rewrote_the_source_is_named() -> None:
    lab = two_nodes(outside={})
    result = checked(lab, set())
    r = next(r for r in result.failures if r.pair.rule == "pod-outside")  # expected nat, got ok
    assert causes.pair_cause(lab, [], r, None).kind == "nat"


def probe(src: str, problem: str = "answered by nobody") -> ServiceProbe:
    return ServiceProbe(src, "default/web", 80, (), 4, problem)


def service_lab() -> cluster.Lab:
    return make_lab([{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                     {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]},
                     {"name": "node3", "pods": ["idle"]}], name="sz", dataplane="ebpf",
                    services=[{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}])


def test_a_service_probe_is_blamed_on_the_backend_its_clients_node_lost() -> None:
    lab = service_lab()
    gone = fault(lab, "bpf-backend-del", "node1>node2/web2")
    assert causes.touches_service(lab, gone, probe("node1/client"))
    assert not causes.touches_service(lab, gone, probe("node3/idle"))
    got = causes.service_cause(lab, [gone], probe("node1/client"))
    assert got.kind == "fault" and got.words.startswith("fault bpf-backend-del node1>node2/web2: node2/web2's backends")
    assert causes.touches_service(lab, fault(lab, "pod-down", "node1/client"), probe("node1/client"))
    assert not causes.touches_service(lab, fault(lab, "pod-down", "node3/idle"), probe("node1/client"))
    assert causes.service_cause(lab, [], probe("node3/idle")).words == \
        "unexplained: no recorded fault lies on its way (answered by nobody)"


def attached(monkeypatch: pytest.MonkeyPatch, lab: cluster.Lab, result: CheckResult, recorded: list[Fault],
             cap: int = causes.TRACE_CAP) -> tuple[CheckResult, list[str]]:
    """causes.attach without a kernel: the faults as recorded, every trace dropped at the source's node."""
    traced: list[str] = []
    monkeypatch.setattr(causes.faults, "recorded", lambda name: recorded)
    monkeypatch.setattr(causes.tracing, "Wiring", lambda lab: object())

    def fake(lab: cluster.Lab, src: str, dst: str, family: int, wiring: object) -> tracing.Trace:
        traced.append(f"{src}>{dst}")
        assert wiring is not None
        e = ends(lab)
        return a_trace(lab, src, dst, hop(e[src].node, node_ns(lab, e[src].node), "drop", "veth", reason="no route"))

    monkeypatch.setattr(causes.tracing, "trace", fake)
    return causes.attach(result, cap), traced


def test_attach_traces_failing_pairs_only_and_every_one_gets_a_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = two_nodes()
    e = ends(lab)
    broken = {(s, d) for s in e for d in e if s != d and "node2/api" in (s, d)}
    down = fault(lab, "pod-down", "node2/api")
    result, traced = attached(monkeypatch, lab, checked(lab, broken), [down])
    assert sorted(traced) == sorted(f"{s}>{d}" for s, d in broken)
    assert {(r.pair.src.id, r.pair.dst.id) for r in result.failures} == broken
    assert all(r.failure is not None and r.failure.kind == "fault" and r.failure.fault == down for r in result.failures)
    assert all(r.failure is None for r in result.results if r.verdict == "ok")


def test_beyond_the_cap_the_rules_decide_and_a_note_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = two_nodes()
    e = ends(lab)
    broken = {(s, d) for s in e for d in e if s != d}
    result, traced = attached(monkeypatch, lab, checked(lab, broken), [], cap=3)
    assert len(traced) == 3
    kinds = [r.failure.kind for r in result.failures if r.failure is not None]
    assert len(kinds) == len(broken) and kinds.count("route") == 3 and kinds.count("unexplained") == len(broken) - 3
    assert any(n.startswith(f"causes: 3 failing pairs traced, {len(broken) - 3} more") for n in result.notes)


def test_json_terminal_and_junit_say_the_causes(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = two_nodes()
    e = ends(lab)
    broken = {(s, d) for s in e for d in e if s != d and "node2/api" in (s, d)}
    result, _ = attached(monkeypatch, lab, checked(lab, broken), [fault(lab, "pod-down", "node2/api")])
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    jsonschema.validate(document, SCHEMA)
    failing = [p for p in document["pairs"] if not p["met"]]
    assert failing and all(p["failureCause"]["kind"] == "fault" for p in failing)
    assert failing[0]["failureCause"] == {"kind": "fault", "words": "fault pod-down node2/api: its eth0 is down",
                                          "fault": {"kind": "pod-down", "target": "node2/api", "ifname": "eth0",
                                                    "netns": pod_ns(lab, "node2/api"), "route": None}}
    assert all("failureCause" not in p for p in document["pairs"] if p["met"])
    text = shown(terminal.check_view(result))
    cross = sum(1 for s, d in broken if e[s].kind == e[d].kind == "pod" and e[s].node != e[d].node)
    assert f"{cross} × fault pod-down node2/api: its eth0 is down" in text
    suite = ET.fromstring(json_junit.check_junit(result)).find("testsuite")
    assert suite is not None
    case = next(c for c in suite.iter("testcase") if c.get("name") == "pod → pod, across nodes")
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message") == f"{cross}/{cross} pairs not as expected: fault pod-down node2/api: its eth0 is down ({cross})"
    assert "— cause: fault pod-down node2/api: its eth0 is down" in (failure.text or "")


def test_service_probes_carry_their_cause_in_json_junit_and_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = service_lab()
    gone = fault(lab, "bpf-backend-del", "node1>node2/web2")
    result, _ = attached(monkeypatch, lab, checked(lab, set(), (probe("node1/client"), probe("node3/idle", ""))), [gone])
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    jsonschema.validate(document, SCHEMA)
    by_src = {s["src"]: s for s in document["services"]}
    assert by_src["node1/client"]["failureCause"]["fault"]["kind"] == "bpf-backend-del"
    assert "failureCause" not in by_src["node3/idle"]
    assert "— cause: fault bpf-backend-del node1>node2/web2" in shown(terminal.check_view(result))
    said = "".join(f.get("message", "") + (f.text or "") for f in ET.fromstring(json_junit.check_junit(result)).iter("failure"))
    assert "1/2 not as Cilium's kube-proxy replacement does it: fault bpf-backend-del node1>node2/web2: " in said
    assert "(its slots stay) (1)" in said  # the message: each cause once, with its count
    assert "node1/client: answered by nobody — cause: fault bpf-backend-del node1>node2/web2" in said


def test_nothing_attached_shows_as_before() -> None:
    lab = two_nodes()
    result = checked(lab, {("node1/web", "node2/api")})
    assert "×" not in shown(terminal.check_view(result))
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    assert all("failureCause" not in p for p in document["pairs"])
    assert ip_address(document["pairs"][0]["srcIP"])
