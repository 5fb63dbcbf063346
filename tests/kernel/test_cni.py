"""The real CNI reference plugins, called as a container runtime calls them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in

from cni_lab import lifecycle, names, state
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import netns
from cni_lab.lesson import explain
from cni_lab.probe import matrix
from cni_lab.report import explain_view

MakeLab = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]


def cni_lab(routing: str = "host-gw", **cni: Any) -> dict[str, Any]:
    return {"dataplane": "cni", "cni": {"routing": routing, **cni},
            "nodes": [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}]}


def test_bridge_host_local_with_host_gw_passes_with_host_locals_addresses(make_lab: MakeLab) -> None:
    var_lib_cni = os.path.exists("/var/lib/cni")
    lab = make_lab(cni_lab())
    result = matrix.run(lab)
    assert {r.verdict for r in result.results} == {"ok"}
    folder = state.lab_dir(lab.name) / "cni"
    reserved = sorted(p.name for p in (folder / "node1/ipam" / f"cnilab-{lab.name}").iterdir() if p.name.startswith("10."))
    assert reserved == ["10.244.0.2", "10.244.0.3"]  # .1 is the gateway on cni0
    web = json.loads((folder / "node1/web.json").read_text())["result"]
    assert web["ips"][0]["address"] == "10.244.0.2/24" and web["ips"][0]["gateway"] == "10.244.0.1"
    addr = json.loads(run_in(ns_of(lab, "node1/web"), "ip", "-j", "-4", "addr", "show", "eth0", check=True).stdout)[0]
    assert addr["addr_info"][0]["local"] == "10.244.0.2"
    assert "cni0" in run_in(ns_of(lab, "node1"), "ip", "link", "show", "cni0", check=True).stdout
    assert os.path.exists("/var/lib/cni") == var_lib_cni  # nothing written outside the lab's folder
    facts = explain_view.to_json(lab, explain.read(lab, "node1"))
    assert facts["nodes"][0]["pods"][0]["cniResult"]["ips"][0]["address"] == "10.244.0.2/24"


def test_check_calls_cni_check_and_notices_a_broken_pod(make_lab: MakeLab) -> None:
    lab = make_lab(cni_lab())
    assert lifecycle.check(lab.name).cni_problems == ()
    run_in(ns_of(lab, "node1/web"), "ip", "addr", "flush", "dev", "eth0", check=True)
    result = lifecycle.check(lab.name)
    assert any("node1/web" in p or "web" in p for p in result.cni_problems), result.cni_problems
    assert not result.passed


def test_down_calls_del_and_host_local_releases_the_addresses(make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = make_lab(cni_lab())
    ipam_dir = state.lab_dir(lab.name) / "cni/node1/ipam" / f"cnilab-{lab.name}"
    assert (ipam_dir / "10.244.0.2").exists()
    monkeypatch.setattr(state, "remove", lambda name: None)  # keep the folder to look inside
    lifecycle.down(lab.name)
    assert not (ipam_dir / "10.244.0.2").exists() and not (ipam_dir / "10.244.0.3").exists()
    assert not list((state.lab_dir(lab.name) / "cni").glob("*/*.json"))  # every DEL succeeded
    monkeypatch.undo()
    state.remove(lab.name)


def test_bring_your_own_ptp_chain_and_vxlan_routing(make_lab: MakeLab) -> None:
    conflist = json.loads((ROOT / "scenarios/cni-ptp.conflist").read_text())
    for document in (cni_lab("host-gw", conflist=conflist), cni_lab("vxlan")):
        lab = make_lab(document)
        assert {r.verdict for r in matrix.run(lab).results} == {"ok"}
    ptp = make_lab(cni_lab("host-gw", conflist=conflist))
    assert "cni0" not in run_in(ns_of(ptp, "node1"), "ip", "link", check=True).stdout


@pytest.mark.parametrize(("plugin", "message"), [
    ({"type": "nosuchplugin"}, 'CNI ADD for pod node1/web: failed to find plugin "nosuchplugin" in path [/usr/lib/cni]'),
    ({"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.244.0.0/33"}},
     "CNI ADD for pod node1/web: plugin bridge: "),
])
def test_a_bad_conflist_is_one_line_and_leaves_nothing(trusted_dir: Path, plugin: dict[str, Any], message: str) -> None:
    conflist = trusted_dir / "bad.conflist"
    conflist.write_text(json.dumps({"cniVersion": "1.0.0", "name": "bad", "plugins": [plugin]}))
    scenario = trusted_dir / "bad.yaml"
    scenario.write_text(f"name: tbadcni\ndataplane: cni\ncni: {{conflist: {conflist}}}\n"
                        "nodes: [{name: node1, pods: [web]}, {name: node2, pods: [api]}]\n")
    done = subprocess.run([sys.executable, "-m", "cni_lab", "up", str(scenario)], capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not [n for n in netns.listing() if names.lab_of_netns(n) == "tbadcni"]
    assert state.read("tbadcni") is None


def test_model_rejects_a_conflist_without_plugins() -> None:
    from cni_lab import model

    with pytest.raises(LabError, match='cni.conflist: a network configuration list needs "plugins"'):
        model.load_document({"name": "x", "dataplane": "cni", "cni": {"conflist": {"name": "n"}},
                             "nodes": [{"name": "a"}]}, "s.yaml")


def test_plugins_others_could_change_are_refused_before_anything_is_built(make_lab: MakeLab, tmp_path: Path) -> None:
    # a scenario naming plugins is code run as root: a plugin folder anyone can write is refused
    plugins = tmp_path / "plugins"
    shutil.copytree("/usr/lib/cni", plugins)
    lab = make_lab(cni_lab(cniPath=str(plugins)), up=False)
    with pytest.raises(LabError, match=f"refusing to use {plugins}/bridge as root \\(cni\\)"):
        lifecycle.up(lab)
    assert not [n for n in netns.listing() if names.lab_of_netns(n) == lab.name]


def test_a_scenario_anyone_could_change_may_not_name_plugins(tmp_path: Path) -> None:
    conflist = json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]})
    scenario = tmp_path / "mine.yaml"
    scenario.write_text(f"name: tuntrust\ndataplane: cni\ncni: {{conflist: {conflist}}}\nnodes: [{{name: a, pods: 1}}]\n")
    done = subprocess.run([sys.executable, "-m", "cni_lab", "up", str(scenario)], capture_output=True, text=True)
    assert done.returncode == 2 and f"refusing to use {scenario} as root" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not [n for n in netns.listing() if names.lab_of_netns(n) == "tuntrust"]
