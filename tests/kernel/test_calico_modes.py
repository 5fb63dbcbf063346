"""Calico's IP pool modes on real namespaces: VXLAN always, CrossSubnet across two racks (seen
on the underlay with tcpdump), VXLAN without BGP, a pool at Never across racks failing at the
router as a cluster would, IPIP where the kernel has it. Needs root, bird2 and tcpdump."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers import ns_of, pings, run_in

from cni_lab import names, state
from cni_lab.cluster import Lab
from cni_lab.kernel import features
from cni_lab.lesson import explain
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]
RACKS = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}


def calico(mode: dict[str, Any], racks: bool = False) -> dict[str, Any]:
    """node1 and node2 on rack1, node3 on rack2 (or all on one segment), a pod or two each."""
    nodes = [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]},
             {"name": "node3", "pods": ["cache"]}]
    if racks:
        nodes = [{**n, "segment": "rack2" if n["name"] == "node3" else "rack1"} for n in nodes]
    return {"dataplane": "bgp", "calico": mode, "nodes": nodes, **({"networking": RACKS} if racks else {})}


def pod(lab: Lab, pod_id: str) -> Any:
    return next(p for p in lab.pods if p.id == pod_id)


def link(ns: str, ifname: str) -> dict[str, Any]:
    return json.loads(run_in(ns, "ip", "-j", "-d", "link", "show", ifname, check=True).stdout)[0]


def bird_processes(lab: Lab) -> list[int]:
    """BIRD processes running in any of the lab's node namespaces."""
    found = []
    for node in lab.nodes:
        pids = subprocess.run(["ip", "netns", "pids", names.node_netns(lab.name, node.name)],
                              capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "bird":
                    found.append(int(pid))
            except OSError:
                continue
    return found


def capture(lab: Lab, bridge: str, pinging: Callable[[], None]) -> str:
    """What crosses one underlay switch while `pinging` runs: tcpdump started with --immediate-mode
    -U, given a second to attach, stopped with SIGINT (REFERENCE: otherwise the last packets go missing)."""
    tcpdump = subprocess.Popen(
        ["ip", "netns", "exec", names.underlay_netns(lab.name), "tcpdump", "-l", "-n", "--immediate-mode", "-U",
         "-i", bridge, "icmp or udp port 4789"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)
        pinging()
        time.sleep(0.5)
    finally:
        tcpdump.send_signal(signal.SIGINT)
        out, _ = tcpdump.communicate(timeout=10)
    return out


def test_vxlan_always_looks_like_felixs_and_passes_at_its_mtu(make_lab: MakeLab) -> None:
    lab = make_lab(calico({"vxlanMode": "Always"}))
    result = matrix.run(lab, mtu=True)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    assert result.mtu and {m.size for m in result.mtu} == {1450} and all(m.passed for m in result.mtu)
    node1 = ns_of(lab, "node1")
    vx = link(node1, "vxlan.calico")
    info = vx["linkinfo"]["info_data"]
    assert (vx["mtu"], vx["address"]) == (1450, names.calico_vtep_mac("node1"))
    assert (info["id"], info["port"], info["local"], info.get("learning", False)) == (4096, 4789, "192.168.1.2", False)
    assert "inet 10.244.0.0/32" in run_in(node1, "ip", "-4", "addr", "show", "vxlan.calico", check=True).stdout
    routes = run_in(node1, "ip", "route", check=True).stdout
    assert "blackhole 10.244.0.0/26 proto 80" in routes
    assert "10.244.0.64/26 via 10.244.0.64 dev vxlan.calico onlink mtu 1450" in routes
    assert "10.244.0.128/26 via 10.244.0.128 dev vxlan.calico onlink mtu 1450" in routes
    assert "proto bird" not in routes  # BIRD peers, Felix programs
    neigh = run_in(node1, "ip", "neigh", "show", "dev", "vxlan.calico", check=True).stdout
    fdb = run_in(node1, "bridge", "fdb", "show", "dev", "vxlan.calico", check=True).stdout
    for other in ("node2", "node3"):
        mac, vtep = names.calico_vtep_mac(other), lab.node(other).pod_cidr.network_address
        assert f"{vtep} lladdr {mac} PERMANENT" in neigh
        assert f"{mac} dst {lab.node(other).ip} self permanent" in fdb
    assert link(ns_of(lab, "node1/web"), "eth0")["mtu"] == 1450
    sessions = explain.read(lab, "node1")[0].bgp
    assert sessions is not None and {s.name: s.info for s in sessions if s.proto == "BGP"} == {
        "Mesh_192_168_1_3": "Established", "Mesh_192_168_1_4": "Established"}


def test_cross_subnet_encapsulates_only_across_racks(make_lab: MakeLab) -> None:
    lab = make_lab(calico({"vxlanMode": "CrossSubnet"}, racks=True))
    result = matrix.run(lab, mtu=True)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    assert result.mtu and {m.size for m in result.mtu} == {1450} and all(m.passed for m in result.mtu)
    routes = run_in(ns_of(lab, "node1"), "ip", "route", check=True).stdout
    assert "10.244.0.64/26 via 192.168.1.3 dev eth0 proto 80 onlink" in routes
    assert "10.244.0.128/26 via 10.244.0.128 dev vxlan.calico onlink mtu 1450" in routes
    web, api, cache = pod(lab, "node1/web"), pod(lab, "node2/api"), pod(lab, "node3/cache")
    src = ns_of(lab, web.id)

    def both() -> None:
        assert pings(src, api.ip) and pings(src, cache.ip)

    out = capture(lab, names.segment_bridge("rack1"), both)
    # same rack: the pods' own packet on the wire, no tunnel
    assert re.search(rf"^\S+ IP {re.escape(str(web.ip))} > {re.escape(str(api.ip))}: ICMP echo request", out, re.M), out
    assert not re.search(r"> 192\.168\.1\.3\.4789", out), out
    # other rack: UDP 4789 between node IPs, VNI 4096, the pods' packet inside
    assert re.search(r"192\.168\.1\.2\.\d+ > 192\.168\.2\.2\.4789: VXLAN.*vni 4096", out), out
    assert not re.search(rf"^\S+ IP {re.escape(str(web.ip))} > {re.escape(str(cache.ip))}: ICMP", out, re.M), out
    assert "10.244." not in run_in(names.router_netns(lab.name), "ip", "route", check=True).stdout


@pytest.mark.parametrize("mode,racks", [("Always", True), ("CrossSubnet", False)])
def test_always_tunnels_across_racks_too_and_cross_subnet_on_one_rack_tunnels_nothing(
        make_lab: MakeLab, mode: str, racks: bool) -> None:
    """The other two of {Always, CrossSubnet} × {one rack, two racks}: Always puts every other
    node's block behind vxlan.calico wherever it is; CrossSubnet on one segment is plain routes."""
    lab = make_lab(calico({"vxlanMode": mode}, racks=racks))
    result = matrix.run(lab, mtu=True)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    assert result.mtu and {m.size for m in result.mtu} == {1450} and all(m.passed for m in result.mtu)
    routes = run_in(ns_of(lab, "node1"), "ip", "route", check=True).stdout
    for other in ("node2", "node3"):
        block = lab.node(other).pod_cidr
        tunnelled = f"{block} via {block.network_address} dev vxlan.calico onlink mtu 1450"
        direct = f"{block} via {lab.node(other).ip} dev eth0 proto 80 onlink"
        assert (tunnelled if mode == "Always" else direct) in routes, routes


def test_vxlan_without_bgp_runs_no_bird(make_lab: MakeLab) -> None:
    lab = make_lab(calico({"vxlanMode": "CrossSubnet", "backend": "vxlan"}, racks=True))
    result = matrix.run(lab)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    assert bird_processes(lab) == []
    assert not (state.lab_dir(lab.name) / "bird").exists()
    routes = run_in(ns_of(lab, "node1"), "ip", "route", check=True).stdout
    assert "10.244.0.128/26 via 10.244.0.128 dev vxlan.calico onlink" in routes and "proto bird" not in routes


def test_never_across_racks_builds_and_fails_at_the_router(make_lab: MakeLab) -> None:
    """The mesh comes up over the router (multihop); BIRD resolves a peer's next hop in the other
    subnet through the default route, so pods of the other rack are sent to the router, which has
    no route to pods: every cross-rack pod pair fails, the rest passes."""
    lab = make_lab(calico({}, racks=True))
    sessions = explain.read(lab, "node1")[0].bgp
    assert sessions is not None and {s.info for s in sessions if s.proto == "BGP"} == {"Established"}
    routes = run_in(ns_of(lab, "node1"), "ip", "route", check=True).stdout
    assert re.search(r"10\.244\.0\.64/26 via 192\.168\.1\.3 dev eth0 proto bird", routes), routes
    assert re.search(r"10\.244\.0\.128/26 via 192\.168\.1\.1 dev eth0 proto bird", routes), routes  # the router
    result = matrix.run(lab)
    rack = {"node1": 1, "node2": 1, "node3": 2}
    for r in result.results:
        across = rack[r.pair.src.node] != rack[r.pair.dst.node]
        if across and "pod" in (r.pair.src.kind, r.pair.dst.kind):
            assert r.verdict != "ok", (r.pair.src.id, r.pair.dst.id)
        elif not across or (r.pair.src.kind, r.pair.dst.kind) == ("node", "node"):
            assert r.verdict == "ok", (r.pair.src.id, r.pair.dst.id, r.verdict)
    assert not result.passed


IPIP_MISSING = "needs root" if os.geteuid() != 0 else features.ipip_missing()  # what `up` says, one line


@pytest.mark.skipif(IPIP_MISSING is not None, reason=IPIP_MISSING or "")
@pytest.mark.parametrize("mode", ["Always", "CrossSubnet"])
def test_ipip_routes_through_tunl0(make_lab: MakeLab, mode: str) -> None:
    lab = make_lab(calico({"ipipMode": mode}, racks=True))
    result = matrix.run(lab, mtu=True)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    assert result.mtu and {m.size for m in result.mtu} == {1480} and all(m.passed for m in result.mtu)
    node1 = ns_of(lab, "node1")
    assert link(node1, "tunl0")["mtu"] == 1480
    routes = run_in(node1, "ip", "route", check=True).stdout
    assert "10.244.0.128/26 via 192.168.2.2 dev tunl0 proto 80 onlink mtu 1480" in routes
    same_rack = "eth0 proto 80 onlink" if mode == "CrossSubnet" else "tunl0 proto 80 onlink mtu 1480"
    assert f"10.244.0.64/26 via 192.168.1.3 dev {same_rack}" in routes


@pytest.mark.skipif(IPIP_MISSING is None or os.geteuid() != 0, reason="this kernel makes ipip devices")
def test_ipip_where_the_kernel_has_none_is_one_line_exit_2_and_nothing_made(tmp_path: Path) -> None:
    scenario = tmp_path / "ipip.yaml"
    scenario.write_text("name: ipipno\ndataplane: bgp\ncalico: {ipipMode: Always}\n"
                        "nodes:\n  - {name: node1, pods: 1}\n  - {name: node2, pods: 1}\n")
    done = subprocess.run([sys.executable, "-m", "cni_lab", "up", str(scenario)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {scenario}: {IPIP_MISSING}"]
    assert not [n for n in os.listdir("/run/netns") if "ipipno" in n or "features" in n]
