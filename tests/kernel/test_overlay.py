"""VXLAN, routed segments, the fabric and MTU against real namespaces."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from typing import Any, Callable

import pytest
from helpers import ns_of, pings, run_in, seen_as_sender, two_nodes

from cni_lab import names, state
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import netns
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]


def three_nodes(dataplane: str, **extra: Any) -> dict[str, Any]:
    return {**two_nodes(dataplane), "nodes": [*two_nodes()["nodes"], {"name": "node3", "pods": ["cache"]}], **extra}


def racks(dataplane: str) -> dict[str, Any]:
    return {
        "dataplane": dataplane,
        "networking": {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}},
        "nodes": [
            {"name": "node1", "segment": "rack1", "pods": ["web"]},
            {"name": "node2", "segment": "rack1", "pods": ["db"]},
            {"name": "node3", "segment": "rack2", "pods": ["api"]},
        ],
    }


@pytest.mark.parametrize("document", [two_nodes("vxlan"), three_nodes("vxlan")], ids=["two", "three"])
def test_vxlan_full_matrix_without_nat(make_lab: MakeLab, document: dict[str, Any]) -> None:
    lab = make_lab(document)
    result = matrix.run(lab)
    assert {r.verdict for r in result.results} == {"ok"}
    assert seen_as_sender(lab, result.results)
    for r in result.results:  # a node reaches other nodes' pods from its flannel.1 address, 10.244.X.0
        if r.pair.src.kind == "node" and r.pair.dst.kind == "pod" and r.pair.dst.node != r.pair.src.node:
            assert r.observed == str(lab.node(r.pair.src.node).pod_cidr.network_address), r


def test_vxlan_node_looks_like_a_flannel_node(make_lab: MakeLab) -> None:
    lab = make_lab(three_nodes("vxlan"))
    node1 = ns_of(lab, "node1")
    link = json.loads(run_in(node1, "ip", "-d", "-j", "link", "show", "flannel.1", check=True).stdout)[0]
    data = link["linkinfo"]["info_data"]
    assert link["linkinfo"]["info_kind"] == "vxlan"
    assert (data["id"], data["port"], data["local"], data.get("learning")) == (1, 8472, "192.168.1.2", False)
    assert link["mtu"] == 1450
    addrs = json.loads(run_in(node1, "ip", "-j", "-4", "addr", "show", "flannel.1", check=True).stdout)[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [("10.244.0.0", 32)]
    routes = run_in(node1, "ip", "route", check=True).stdout
    assert "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in routes
    assert "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink" in routes
    macs = {}
    for other, ip in (("node2", "192.168.1.3"), ("node3", "192.168.1.4")):
        macs[other] = json.loads(run_in(ns_of(lab, other), "ip", "-j", "link", "show", "flannel.1", check=True).stdout)[0]["address"]
    neigh = run_in(node1, "ip", "neigh", "show", "dev", "flannel.1", check=True).stdout
    assert f"10.244.1.0 lladdr {macs['node2']} PERMANENT" in neigh
    assert f"10.244.2.0 lladdr {macs['node3']} PERMANENT" in neigh
    fdb = run_in(node1, "bridge", "fdb", "show", "dev", "flannel.1", check=True).stdout
    assert f"{macs['node2']} dst 192.168.1.3 self permanent" in fdb
    assert f"{macs['node3']} dst 192.168.1.4 self permanent" in fdb
    for ifname in ("cni0",):
        assert json.loads(run_in(node1, "ip", "-j", "link", "show", ifname, check=True).stdout)[0]["mtu"] == 1450
    assert json.loads(run_in(ns_of(lab, "node1/web"), "ip", "-j", "link", "show", "eth0", check=True).stdout)[0]["mtu"] == 1450
    env = (state.lab_dir(lab.name) / "flannel/node1/subnet.env").read_text()
    assert env == "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"


def test_pod_traffic_crosses_the_underlay_as_udp_8472_between_node_ips(make_lab: MakeLab) -> None:
    lab = make_lab(two_nodes("vxlan"))
    underlay = names.underlay_netns(lab.name)
    capture = subprocess.Popen(
        ["ip", "netns", "exec", underlay, "tcpdump", "-l", "-n", "-T", "vxlan", "--immediate-mode", "-U",
         "-i", names.UNDERLAY_BRIDGE, "-c", "2", "udp port 8472"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)  # let tcpdump attach
        assert pings(ns_of(lab, "node1/web"), "10.244.1.2")
        out, _ = capture.communicate(timeout=10)
    finally:
        if capture.poll() is None:
            capture.send_signal(signal.SIGINT)
            capture.wait(timeout=5)
    lines = [line for line in out.splitlines() if "VXLAN" in line]
    assert lines, out
    assert re.search(r"192\.168\.1\.2\.\d+ > 192\.168\.1\.3\.8472: VXLAN.*vni 1", lines[0]), lines[0]
    assert "10.244.0.2 > 10.244.1.2: ICMP echo request" in out  # the inner packet, on the next line


def test_host_gw_across_segments_is_refused_before_anything_is_built(make_lab: MakeLab) -> None:
    before = netns.listing()
    with pytest.raises(LabError, match="host-gw needs every node on one L2 segment.*not on-link"):
        make_lab(racks("host-gw"))
    assert netns.listing() == before


@pytest.mark.parametrize("dataplane", ["vxlan", "fabric"])
def test_vxlan_and_fabric_pass_across_segments(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(racks(dataplane))
    result = matrix.run(lab)
    assert {r.verdict for r in result.results} == {"ok"}, [(r.pair.src.id, r.pair.dst.id, r.detail) for r in result.failures]
    router = names.router_netns(lab.name)
    routes = run_in(router, "ip", "route", check=True).stdout
    if dataplane == "fabric":
        assert "10.244.2.0/24 via 192.168.2.2 dev rack2" in routes
        assert "10.244.0.0/24 via 192.168.1.2 dev rack1" in routes
    else:
        assert "10.244." not in routes  # the router knows nothing of pods: the overlay hides them


def test_mtu_black_hole_pings_pass_full_size_packets_do_not(make_lab: MakeLab) -> None:
    lab = make_lab({**two_nodes("vxlan"), "networking": {"podMTU": 1500}})
    assert pings(ns_of(lab, "node1/web"), "10.244.1.2")
    result = matrix.run(lab, mtu=True)
    assert all(r.met for r in result.results)  # every pair "works"...
    assert result.mtu and not any(m.passed for m in result.mtu)  # ...until a packet is full-size
    assert {m.largest for m in result.mtu} == {1450}
    assert not result.passed
    healthy = matrix.run(make_lab(two_nodes("vxlan")), mtu=True)
    assert healthy.mtu and all(m.passed and m.size == 1450 for m in healthy.mtu)
