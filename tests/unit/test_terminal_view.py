"""report/terminal.py: what the terminal shows, rendered to a recording console and read as text."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from cni_lab import names, plan
from cni_lab.cluster import Lab
from cni_lab.probe import pairs
from cni_lab.probe.engine import OK, TIMEOUT, Outcomes
from cni_lab.probe.matrix import CheckResult, NeighbourUse
from cni_lab.probe.pairs import AllPairs
from cni_lab.report import terminal

from labs import make_lab

TWO = [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}]


def shown(renderable: RenderableType, width: int = 160) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def rows(text: str) -> list[list[str]]:
    """A rich table's body rows as cells (box lines and the header left out)."""
    return [[cell.strip() for cell in line.strip()[1:-1].split("│")] for line in text.splitlines() if line.startswith("│")]


def checked(lab: Lab, verdicts: dict[int, int] | None = None, **extra: Any) -> CheckResult:
    """A check result made by hand: every pair ok, but for the pairs given (index → verdict)."""
    endpoints = pairs.endpoints(lab)
    outcomes = Outcomes(AllPairs(len(endpoints)))
    outcomes.verdict[:] = bytes([OK]) * len(outcomes.verdict)
    for i, verdict in (verdicts or {}).items():
        outcomes.verdict[i] = verdict
    use = NeighbourUse("arp", 1024, True, 2, 511, 514, 12, 1, 14, 0, 0)
    return CheckResult(lab, endpoints, outcomes, 0.25, use, **extra)


def test_lab_table_has_a_row_per_node_with_its_addresses_and_pods() -> None:
    text = shown(terminal.lab_table(make_lab(TWO, dataplane="host-gw")))
    assert text.splitlines()[0].strip() == "lab lab · data plane host-gw · underlay 192.168.1.0/24"
    assert "┃ node  ┃ underlay IP ┃ pod CIDR      ┃ pod gateway       ┃ pods" in text
    assert rows(text) == [["node1", "192.168.1.2", "10.244.0.0/24", "10.244.0.1 (cni0)", "web 10.244.0.2"],
                          ["", "", "", "", "db 10.244.0.3"],
                          ["node2", "192.168.1.3", "10.244.1.0/24", "10.244.1.1 (cni0)", "api 10.244.1.2"]]


def test_the_pod_gateway_is_where_the_data_plane_puts_it() -> None:
    calico = rows(shown(terminal.lab_table(make_lab(TWO, dataplane="bgp"))))
    assert calico[0][3] == f"{names.CALICO_GATEWAY} (proxy ARP)" == "169.254.1.1 (proxy ARP)"
    cilium = rows(shown(terminal.lab_table(make_lab(TWO, dataplane="ebpf"))))
    assert cilium[0][3] == "10.244.0.1 (cilium_host)"
    dual = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
    both = rows(shown(terminal.lab_table(make_lab(TWO, networking=dual))))
    assert [r[1:4] for r in both[:2]] == [["192.168.1.2", "10.244.0.0/24", "10.244.0.1 (cni0)"],
                                          ["fd00:192:168:1::2", "fd00:10:244::/64", "fd00:10:244::1 (cni0)"]]
    assert both[0][4] == "web 10.244.0.2, fd00:10:244::2"


def test_a_node_with_many_pods_shows_them_as_a_range_and_namespaced_pods_by_namespace() -> None:
    lab = make_lab([{"name": "node1", "pods": 12}, {"name": "node2", "pods": [{"name": "a", "namespace": "x"}]}],
                   namespaces={"x": {}})
    table = rows(shown(terminal.lab_table(lab)))
    assert [r[4] for r in table] == ["12 pods", "10.244.0.2 … .13", "x/a 10.244.1.2"]


def test_missing_namespaces_are_marked_and_segments_named() -> None:
    racks = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}
    lab = make_lab([{"name": "a", "segment": "rack1", "pods": ["web"]}, {"name": "b", "segment": "rack2", "pods": ["api"]}],
                   dataplane="vxlan", networking=racks)
    present = {names.node_netns("lab", "a"): True, names.pod_netns("lab", "a", "web"): False,
               names.node_netns("lab", "b"): False, names.pod_netns("lab", "b", "api"): True}
    text = shown(terminal.lab_table(lab, present))
    assert "underlay rack1 192.168.1.0/24, rack2 192.168.2.0/24" in text.splitlines()[0]
    table = rows(text)
    assert table[0][:2] == ["a", "192.168.1.2 (rack1)"] and table[0][4] == "web 10.244.0.2 (missing)"
    assert table[1][:2] == ["b (missing)", "192.168.2.2 (rack2)"] and table[1][4] == "api 10.244.1.2"


def test_plan_view_lists_every_step_under_its_namespace_and_counts_them() -> None:
    the_plan = plan.build(make_lab([{"name": "node1", "pods": 1}]))
    lines = shown(terminal.plan_view(the_plan), width=400).splitlines()
    described = [line for line in lines if line and not line.startswith(("#", "┏", "┃", "┡", "│", "└", "lab "))]
    assert described[:-1] == the_plan.describe()
    assert described[-1] == (f"{len(the_plan.steps)} steps: 3 CreateNetns, 7 LinkUp, 2 AddBridge, 2 SetSysctl, "
                             "2 AddVeth, 3 AddAddress, 1 AddRoute")
    headers = [line for line in lines if line.startswith("# ")]
    runs = [the_plan.steps[0].netns] + [b.netns for a, b in zip(the_plan.steps, the_plan.steps[1:]) if a.netns != b.netns]
    assert headers == [f"# {ns}" for ns in runs]  # a header each time the namespace changes
    assert lines[0].startswith("lab lab · data plane")  # the lab's table first


def test_warnings_are_yellow_lines() -> None:
    lab = make_lab([{"name": "node1", "podCIDR": "10.244.0.0/24", "pods": 1},
                    {"name": "node2", "podCIDR": "10.244.0.0/24", "pods": 1}], allowOverlap=True)
    said = terminal.warnings(lab)
    assert len(said) == 1 and isinstance(said[0], Text) and said[0].style == "yellow"
    assert said[0].plain.startswith("warning: ") and "node2 and node1 share pod addresses" in said[0].plain
    assert terminal.warnings(make_lab(TWO)) == []


def test_check_view_of_a_passing_check() -> None:
    result = checked(make_lab(TWO, dataplane="host-gw"))
    text = shown(terminal.check_view(result))
    assert text.rstrip().endswith(f"PASS: {len(result)}/{len(result)} pairs as expected")
    assert "from ↓ to →" in text and terminal.GRID_LEGEND in text  # five endpoints: the grid is drawn
    assert f"lab lab · {len(result)} pairs in 0.25s" in text
    assert "pod → pod, across nodes" in text and "pairs not as expected" not in text and "CNI CHECK" not in text


def test_check_view_of_a_failing_cni_check_names_the_pair_and_the_problem() -> None:
    lab = make_lab(TWO, dataplane="cni")
    result = checked(lab, {0: TIMEOUT}, notes=("a note",), cni_problems=("node1/web: bridge: cni0 has no address",))
    failed = result.results[0].pair
    text = shown(terminal.check_view(result))
    assert "1 pairs not as expected" in text
    assert [r for r in rows(text) if "timeout" in r] == [
        [f"{failed.src.id} {failed.src.ip}", f"{failed.dst.id} {failed.dst.ip}", "timeout", "ok", ""]]
    assert "CNI CHECK  every plugin confirms what it set up for each pod  ✗" in text
    assert "  node1/web: bridge: cni0 has no address" in text and "note: a note" in text
    assert text.rstrip().endswith(f"FAIL: {len(result) - 1}/{len(result)} pairs as expected, but CNI CHECK failed")


def test_a_big_lab_gets_no_grid() -> None:
    lab = make_lab([{"name": "node1", "pods": 8}, {"name": "node2", "pods": 8}])  # 18 endpoints
    assert len(pairs.endpoints(lab)) > terminal.GRID_LIMIT
    text = shown(terminal.check_view(checked(lab)))
    assert "from ↓ to →" not in text and text.rstrip().endswith("PASS: 306/306 pairs as expected")


def test_status_view_says_how_the_recorded_lab_is_now() -> None:
    from cni_lab.state import Status

    lab = make_lab(TWO, dataplane="bgp")
    everything = {names.node_netns("lab", n.name): True for n in lab.nodes}
    everything |= {names.pod_netns("lab", p.node, p.name): True for p in lab.pods}
    up = shown(terminal.status_view(Status(lab, "up", everything, {"node1": (4242, True)})))
    assert "status: up · from s.yaml" in up and "bird on node1: running (pid 4242)" in up and "(missing)" not in up
    gone = {**everything, names.pod_netns("lab", "node2", "api"): False}
    degraded = shown(terminal.status_view(Status(lab, "up", gone, {"node1": (None, False)})))
    assert "status: degraded" in degraded and "api 10.244.0.65 (missing)" in degraded
    assert "bird on node1: NOT RUNNING" in degraded
    faulted = shown(terminal.status_view(Status(lab, "up", everything, faults=["forward-drop on node1"])))
    assert "status: faulted" in faulted and "fault: forward-drop on node1 (undo with `sudo cni-lab heal`)" in faulted
    assert "status: building" in shown(terminal.status_view(Status(lab, "building", everything)))
