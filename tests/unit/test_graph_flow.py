"""`graph --flow SRC DST`: the pair's recorded flows over the lab's picture, in the order observed,
drops in red with their cause; `graph` without --flow draws what it always drew."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner

from cni_lab import catalog, lifecycle, names, plan
from cni_lab.cli import cli
from cni_lab.errors import LabError
from cni_lab.faults import Fault
from cni_lab.observe.decode import Decoder
from cni_lab.observe.flows import Flow, to_json
from cni_lab.report import flow_path, html, topology

from test_observe_decode import SERVICES, T, logged, tracked
from wire import ACK, ipv4, tcp, udp

SVG = "{http://www.w3.org/2000/svg}"
WEB2_VETH = names.pod_host_veth(SERVICES.name, "node2", "web2")


def recorded() -> list[Flow]:
    """node1/client → Service web ⇒ node2/web2 as check might record it, oldest last on purpose,
    with a flow of another pair between them."""
    n2 = names.node_netns(SERVICES.name, "node2")
    syn = ipv4("10.244.0.3", "10.244.1.2", 6, tcp(40000, 8080))
    made = [
        (0.003, logged(SERVICES, "node2", "cni-lab forward", ipv4("10.244.1.2", "10.244.0.3", 6, tcp(8080, 40000, ACK)),
                       indev=WEB2_VETH, outdev="eth0"), ()),
        (0.002, logged(SERVICES, "node2", "cni-lab fault forward-drop", syn, indev="eth0", outdev=WEB2_VETH),
         (Fault("forward-drop", "node2", n2),)),
        (0.001, logged(SERVICES, "node1", "cni-lab forward", syn), ()),
        (0.0015, logged(SERVICES, "node1", "cni-lab forward", ipv4("10.244.0.3", "198.51.100.10", 17, udp(1, 53))), ()),
        (0.0, tracked(SERVICES, "node1", 6, ("10.244.0.3", "10.96.0.2", 40000, 80), ("10.244.1.2", "10.244.0.3", 8080, 40000)), ()),
    ]
    flows = []
    for dt, raw, faults in made:
        f = Decoder(SERVICES, faults).flow(raw)
        assert f is not None
        flows.append(replace(f, time=T + dt))
    return flows


FLOWS = recorded()
TOPO = topology.of_plan(plan.build(SERVICES))


def test_the_path_is_the_pairs_flows_in_the_order_observed() -> None:
    p = flow_path.path(FLOWS, "node1/client", "node2/web2")
    assert [h.step for h in p.hops] == [1, 2, 3, 4]
    assert [(h.flow.node, h.flow.verdict) for h in p.hops] == [
        ("node1", "TRANSLATED"), ("node1", "FORWARDED"), ("node2", "DROPPED"), ("node2", "FORWARDED")]
    assert [h.back for h in p.hops] == [False, False, False, True]
    assert p.moves({"node1", "node2"}) == [("node1", "node2", [3])]
    assert [h.step for h in p.places()["node2"]] == [3, 4]
    by_address = flow_path.path(FLOWS, "10.244.0.3", "10.244.1.2/32")
    assert [h.flow for h in by_address.hops] == [h.flow for h in p.hops]


def test_no_flow_between_them_is_one_line() -> None:
    with pytest.raises(LabError) as e:
        flow_path.path(FLOWS, "node2/solo", "node1/client")
    assert e.value.problems == ("the last check recorded no flow between node2/solo and node1/client (5 flows recorded: "
                                "`sudo cni-lab observe --last-check` lists them)",)


def test_a_long_record_is_cut_and_says_how_much() -> None:
    many = [replace(FLOWS[2], time=T + i) for i in range(flow_path.MAX_HOPS + 7)]
    p = flow_path.path(many, "node1/client", "node2/web2")
    assert len(p.hops) == flow_path.MAX_HOPS and p.more == 7
    assert "… and 7 more flows" in flow_path.svg(TOPO, p)


def test_the_svg_outlines_the_observers_numbers_the_hops_and_says_why_the_drop() -> None:
    p = flow_path.path(FLOWS, "node1/client", "node2/web2")
    drawn = flow_path.svg(TOPO, p)
    root = ET.fromstring(drawn)
    observed = {r.get("id"): r.get("stroke") for r in root.iter(f"{SVG}rect") if r.get("class") == "observed"}
    assert observed == {"observed-node1": flow_path.PATH, "observed-node2": html.FLOW_COLORS["DROPPED"]}
    hops = [g for g in root.iter(f"{SVG}g") if "hop" in (g.get("class") or "").split()]
    assert [g.find(f"{SVG}text").text for g in hops] == ["1", "2", "3", "4"]  # type: ignore[union-attr]
    assert [g.find(f"{SVG}circle").get("fill") for g in hops][2] == html.FLOW_COLORS["DROPPED"]  # type: ignore[union-attr]
    assert len([e for e in root.iter(f"{SVG}path") if e.get("class") == "move"]) == 1
    assert {r.get("class") for r in root.iter(f"{SVG}rect")} >= {"end"}
    drops = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "drop"]
    assert len(drops) == 1 and drops[0].startswith("3. ") and "@node2" in drops[0]
    assert "DROPPED FAULT_FORWARD_DROP — fault forward-drop at node2" in drops[0]
    lines = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "hop-line"]
    assert lines[-1].startswith("← 4. ") and "Service default/web" in lines[1]
    assert float(root.get("height") or 0) > float(ET.fromstring(topology.svg(TOPO)).get("height") or 0)


def test_under_the_overlay_is_graphs_own_picture() -> None:
    p = flow_path.path(FLOWS, "node1/client", "node2/web2")
    plain = topology.svg(TOPO).splitlines()
    assert "\n".join(plain[1:-1]) in flow_path.svg(TOPO, p)
    assert flow_path.dot(TOPO, p).startswith(topology.dot(TOPO).removesuffix("}\n"))
    assert flow_path.mermaid(TOPO, p).startswith(topology.mermaid(TOPO))


def test_dot_and_mermaid_mark_the_same_hops() -> None:
    p = flow_path.path(FLOWS, "node1/client", "node2/web2")
    dot = flow_path.dot(TOPO, p)
    assert '"node2" [color=red, penwidth=3, xlabel="3, 4"];' in dot and '"node1" [color="#1a73e8", penwidth=3' in dot
    assert '"drop 3" [shape=note, color=red' in dot and '"node1" -> "node2" [color="#1a73e8"' in dot
    mmd = flow_path.mermaid(TOPO, p)
    assert "style node2_box stroke:#d93025,stroke-width:4px" in mmd and 'node1 ==>|"3"| node2' in mmd
    assert "drop_3[" in mmd and "node2 -.- drop_3" in mmd


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz draws the DOT")
def test_graphviz_reads_the_highlighted_dot() -> None:
    p = flow_path.path(FLOWS, "node1/client", "node2/web2")
    done = subprocess.run(["dot", "-Tsvg"], input=flow_path.dot(TOPO, p), text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "FAULT_FORWARD_DROP" in done.stdout


# -- the command ----------------------------------------------------------------------------------

@pytest.fixture
def on_record(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A running `services` lab whose last check is `record` (None: no check yet)."""
    record: dict[str, Any] = {"check": {"passed": True, "flows": [json.loads(json.dumps(to_json(f))) for f in FLOWS],
                                        "flowsSeen": len(FLOWS)}}
    monkeypatch.setattr(lifecycle, "pick", lambda name: "services")
    monkeypatch.setattr(lifecycle, "running", lambda: [])
    monkeypatch.setattr(lifecycle, "running_lab", lambda name: (SERVICES, None))
    monkeypatch.setattr(lifecycle, "last_check", lambda name: record["check"])
    return record


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["graph", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("fmt", ["svg", "dot", "mermaid"])
def test_graph_flow_draws_the_path(on_record: dict[str, Any], fmt: str) -> None:
    code, output = run("services", "--flow", "node1/client", "node2/web2", "--format", fmt)
    p = flow_path.path(FLOWS, "node1/client", "node2/web2")
    assert code == 0, output
    assert output == {"svg": flow_path.svg, "dot": flow_path.dot, "mermaid": flow_path.mermaid}[fmt](TOPO, p)


@pytest.mark.parametrize(("check", "message"), [
    (None, "lab services has no check on record: run `sudo cni-lab check services` first"),
    ({"passed": True}, "lab services's last check recorded no flows: run `sudo cni-lab check services` again"),
])
def test_graph_flow_without_a_record_is_one_line(on_record: dict[str, Any], check: Any, message: str) -> None:
    on_record["check"] = check
    code, output = run("--flow", "node1/client", "node2/web2")
    assert (code, output) == (2, f"error: {message}\n")


def test_graph_flow_between_strangers_is_one_line(on_record: dict[str, Any]) -> None:
    code, output = run("--flow", "node2/solo", "outside")
    assert code == 2 and output.startswith("error: the last check recorded no flow between node2/solo and outside (5 flows")
    assert len(output.splitlines()) == 1


@pytest.mark.parametrize("fmt", ["svg", "dot", "mermaid"])
def test_graph_without_flow_draws_what_it_always_drew(fmt: str) -> None:
    code, output = run("services", "--format", fmt)
    assert code == 0 and output == {"svg": topology.svg, "dot": topology.dot, "mermaid": topology.mermaid}[fmt](
        topology.of_plan(plan.build(catalog.load("services"))))
    assert run()[0] == 2  # no scenario and no --flow: a usage error, as before
