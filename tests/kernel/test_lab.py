"""The lab core against the real kernel: what `up` builds, what `down` removes."""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import subprocess
import sys
from typing import Any, Callable

import pytest
from helpers import ns_of, pings, root_snapshot, run_in, two_nodes

from cni_lab import catalog, lifecycle, names, state
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.executor import apply
from cni_lab.kernel import netns

MakeLab = Callable[..., Lab]


def routes(ns: str) -> list[dict[str, Any]]:
    return json.loads(run_in(ns, "ip", "-j", "-4", "route", check=True).stdout)


def test_node_and_pod_look_like_a_cni_bridge_node(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    node1 = ns_of(lab, "node1")
    assert netns.read_sysctl(node1, "net/ipv4/ip_forward") == "1"
    cni0 = json.loads(run_in(node1, "ip", "-j", "-4", "addr", "show", "cni0", check=True).stdout)[0]
    assert [f"{a['local']}/{a['prefixlen']}" for a in cni0["addr_info"]] == ["10.244.0.1/24"]
    eth0 = json.loads(run_in(node1, "ip", "-j", "-4", "addr", "show", "eth0", check=True).stdout)[0]
    assert eth0["addr_info"][0]["local"] == "192.168.1.2"

    web = ns_of(lab, "node1/web")
    pod_addr = json.loads(run_in(web, "ip", "-j", "-4", "addr", "show", "eth0", check=True).stdout)[0]
    assert pod_addr["addr_info"][0]["local"] == "10.244.0.2"
    assert {"dst": "default", "gateway": "10.244.0.1"}.items() <= routes(web)[0].items()
    lo = json.loads(run_in(web, "ip", "-j", "link", "show", "lo", check=True).stdout)[0]
    assert "UP" in lo["flags"]
    # the host end of the pod's veth is a port of cni0
    ports = json.loads(run_in(node1, "ip", "-j", "link", "show", "master", "cni0", check=True).stdout)
    assert {p["ifname"] for p in ports} == {names.pod_host_veth(lab.name, "node1", p) for p in ("web", "db")}
    # and each node's eth0 peer is a port of the underlay bridge
    underlay = names.underlay_netns(lab.name)
    ports = json.loads(run_in(underlay, "ip", "-j", "link", "show", "master", names.UNDERLAY_BRIDGE, check=True).stdout)
    assert {p["ifname"] for p in ports} == {"node1-eth0", "node2-eth0"}


def test_host_gw_routes_are_exactly_one_per_other_node(make_lab: MakeLab) -> None:
    lab = make_lab({**two_nodes("host-gw"), "nodes": [*two_nodes()["nodes"], {"name": "node3", "pods": 1}]})
    for node in lab.nodes:
        table = routes(ns_of(lab, node.name))
        via = {(r["dst"], r.get("gateway"), r["dev"]) for r in table if "gateway" in r}
        expected = {(str(o.pod_cidr), str(o.ip), "eth0") for o in lab.nodes if o is not node}
        assert via == expected


def test_same_node_pods_reach_each_other_via_cni0(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("bridge"))
    assert pings(ns_of(lab, "node1/web"), lab.node("node1").pods[1].ip)


def test_bridge_only_cross_node_pods_do_not_reach(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("bridge"))
    assert not pings(ns_of(lab, "node1/web"), lab.node("node2").pods[0].ip)


def test_host_gw_cross_node_pods_and_nodes_reach(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    api = lab.node("node2").pods[0]
    assert pings(ns_of(lab, "node1/web"), api.ip)
    assert pings(ns_of(lab, "node1"), api.ip)  # node → pod on another node
    assert pings(ns_of(lab, "node2/api"), lab.node("node1").ip)  # pod → node on another node


def test_up_twice_is_a_no_op_and_a_different_scenario_is_refused(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("host-gw"))
    assert lifecycle.up(lab).created is False
    other = lifecycle.catalog.resolve(
        lifecycle.model.load_document({**two_nodes("bridge"), "name": lab.name}, "<other>")
    )
    with pytest.raises(LabError, match="different scenario"):
        lifecycle.up(other)


def test_failed_up_leaves_nothing(make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = make_lab(two_nodes("host-gw"), up=False)
    real = apply.apply_step
    calls = {"n": 0}

    def failing(session: apply.Session, step: object) -> None:
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt  # Ctrl-C half way
        real(session, step)  # type: ignore[arg-type]

    monkeypatch.setattr(apply, "apply_step", failing)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.up(lab)
    assert calls["n"] == 20
    assert [n for n in netns.listing() if names.lab_of_netns(n) == lab.name] == []
    assert state.read(lab.name) is None


def test_a_namespace_that_cannot_be_made_stops_up_and_removes_those_made_ahead(
        make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    # namespaces are made on a thread of their own, ahead of the steps: a failure must still
    # surface at its own step, and every namespace made before it must go
    lab = make_lab(two_nodes("host-gw"), up=False)
    blocked = names.pod_netns(lab.name, "node2", "api")
    real = netns.make_here

    def refusing(name: str) -> bool:
        if name == blocked:
            raise OSError(errno.ENOSPC, "No space left on device")  # what a full max_net_namespaces says
        return real(name)

    monkeypatch.setattr(netns, "make_here", refusing)
    with pytest.raises(LabError, match=rf"^ip netns add {re.escape(blocked)}: No space left on device$"):
        lifecycle.up(lab)
    assert [n for n in netns.listing() if names.lab_of_netns(n) == lab.name] == []
    assert state.read(lab.name) is None


def test_kernel_error_names_the_step_and_removes_everything(make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = make_lab(two_nodes("host-gw"), up=False)
    # A route to a gateway that is not on any link: the kernel refuses it (ENETUNREACH).
    from cni_lab import plan as planning

    real_build = planning.build

    def broken(lab: Lab) -> planning.Plan:
        p = real_build(lab)
        bad = planning.AddRoute(
            names.node_netns(lab.name, "node1"), ipaddress.IPv4Network("10.99.0.0/24"), "eth0",
            via=ipaddress.IPv4Address("172.16.0.1"),
        )
        return planning.Plan(lab=p.lab, steps=(*p.steps, bad))

    monkeypatch.setattr(planning, "build", broken)
    with pytest.raises(LabError, match=r"route add 10.99.0.0/24 via 172.16.0.1 dev eth0: .*unreachable"):
        lifecycle.up(lab)
    assert [n for n in netns.listing() if names.lab_of_netns(n) == lab.name] == []


def test_root_namespace_is_untouched_by_up_and_down(make_lab: MakeLab) -> None:
    before = root_snapshot()
    lab = make_lab(two_nodes("host-gw"))
    assert pings(ns_of(lab, "node1/web"), lab.node("node2").pods[0].ip)
    lifecycle.down(lab.name)
    assert root_snapshot() == before


def test_down_all_sweeps_what_a_killed_up_left(tmp_path: Any) -> None:
    scenario = tmp_path / "big.yaml"
    scenario.write_text("name: tkilled\ndataplane: host-gw\nnodes:\n" + "".join(
        f"  - {{name: n{i}, pods: 40}}\n" for i in range(5)))
    proc = subprocess.Popen([sys.executable, "-m", "cni_lab", "up", str(scenario)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):  # wait until it is half way
            if len([n for n in netns.listing() if names.lab_of_netns(n) == "tkilled"]) > 20:
                break
            subprocess.run(["sleep", "0.01"])
        proc.kill()
        proc.wait()
        assert any(names.lab_of_netns(n) == "tkilled" for n in netns.listing()), "up finished before the kill"
    finally:
        lifecycle.down_all()  # the sweep by name: what `down --all` runs
    assert [n for n in netns.listing() if names.lab_of_netns(n) == "tkilled"] == []
    assert state.read("tkilled") is None


def test_sigint_during_up_removes_everything(tmp_path: Any) -> None:
    scenario = tmp_path / "big.yaml"
    scenario.write_text("name: tsigint\ndataplane: host-gw\nnodes:\n" + "".join(
        f"  - {{name: n{i}, pods: 40}}\n" for i in range(5)))
    proc = subprocess.Popen([sys.executable, "-m", "cni_lab", "up", str(scenario)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if len([n for n in netns.listing() if names.lab_of_netns(n) == "tsigint"]) > 20:
                break
            subprocess.run(["sleep", "0.01"])
        proc.send_signal(2)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr
        assert [n for n in netns.listing() if names.lab_of_netns(n) == "tsigint"] == []
        assert state.read("tsigint") is None
    finally:
        proc.kill()
        lifecycle.down("tsigint")


def test_a_lab_is_found_by_its_scenario_file_name_too(tmp_path: Any) -> None:
    # a user types the name they ran: `up two-racks-vxlan` makes lab two-racks-vx
    scenario = tmp_path / "a-longer-file-name.yaml"
    scenario.write_text("name: tfile\ndataplane: bridge\nnodes: [{name: a, pods: 1}]\n")
    lab = catalog.load(str(scenario))
    lifecycle.up(lab)
    try:
        assert lifecycle.pick("a-longer-file-name") == "tfile"
        done = subprocess.run([sys.executable, "-m", "cni_lab", "status", "a-longer-file-name", "--json"],
                              capture_output=True, text=True)
        assert done.returncode == 0 and json.loads(done.stdout)["name"] == "tfile", done.stderr
        with pytest.raises(LabError, match="no lab named 'other-file'"):
            lifecycle.pick("other-file")
    finally:
        lifecycle.down("tfile")


def test_a_running_lab_is_read_as_it_was_built(make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    # an upgrade of cni-lab (another ipam.py or cluster.py) must not change what status, check and explain see
    lab = make_lab(two_nodes("host-gw"))

    def other_ipam(*_: object) -> Lab:
        raise AssertionError("a running lab was resolved again")

    monkeypatch.setattr(lifecycle.catalog, "resolve", other_ipam)
    recorded, _ = lifecycle.running_lab(lab.name)
    assert recorded == lab and recorded.pods == lab.pods
    assert lifecycle.check(lab.name).passed
