"""Dual-stack labs against the real kernel: every pair reaches every other over IPv6 too,
without NAT, and the data planes not built for it yet say so before building anything."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in, seen_as_sender

from cni_lab import state
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import netns
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]
DUAL = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}


def dual(dataplane: str) -> dict[str, Any]:
    return {"dataplane": dataplane, "networking": DUAL,
            "nodes": [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}]}


def endpoints(lab: Lab) -> list[tuple[str, str]]:
    """(target, IPv6 address) of every node and pod."""
    out = []
    for node in lab.nodes:
        out.append((node.name, str(node.ip6)))
        out += [(pod.id, str(pod.ip6)) for pod in node.pods]
    return out


@pytest.mark.parametrize("dataplane", ["bridge", "host-gw"])
def test_every_pair_reaches_every_other_over_ipv6_at_once(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(dual(dataplane))
    eps = endpoints(lab)
    failing = []
    for src, _ in eps:
        for dst, ip6 in eps:
            # one echo, one second, right after `up`: no address waits for duplicate address detection
            if src != dst and run_in(ns_of(lab, src), "ping", "-6", "-c1", "-W1", ip6).returncode != 0:
                failing.append((src, dst))
    if dataplane == "host-gw":
        assert failing == []
    else:  # bridge: no routes between nodes, in either family
        assert failing and all(s.split("/")[0] != d.split("/")[0] for s, d in failing)


@pytest.mark.parametrize("dataplane", ["bridge", "host-gw"])
def test_check_probes_each_family_and_sees_no_nat(make_lab: MakeLab, dataplane: str) -> None:
    result = matrix.run(make_lab(dual(dataplane)), mtu=True)
    assert result.ipv6 is not None and result.ipv6.family == 6
    v4 = {(r.pair.src.id, r.pair.dst.id): r.verdict for r in result.results}
    v6 = {(r.pair.src.id, r.pair.dst.id): r.verdict for r in result.ipv6.results}
    assert set(v4) == set(v6) and len(v6) == 20
    assert all(r.pair.src.ip.version == 6 and r.pair.dst.ip.version == 6 for r in result.ipv6.results)
    ok6 = [r for r in result.ipv6.results if r.verdict == "ok"]
    assert seen_as_sender(result.lab, ok6)  # the receiver saw an IPv6 address of the sender's own
    if dataplane == "host-gw":
        assert result.passed and set(v6.values()) == {"ok"}
        assert result.ipv6.mtu is not None and all(m.passed and m.size == 1500 for m in result.ipv6.mtu)
        assert result.ipv6.neighbours.table == "ndisc"
    else:  # the same pairs fail in both families, and IPv6's failures are said as ICMPv6 says them
        assert not result.passed
        assert {k for k, v in v4.items() if v != "ok"} == {k for k, v in v6.items() if v != "ok"}
        assert any("answered: no route to destination" in r.detail for r in result.ipv6.failures)


def test_the_receiver_sees_the_senders_own_ipv6_address(make_lab: MakeLab) -> None:
    lab = make_lab(dual("host-gw"))
    capture = subprocess.Popen(
        ["ip", "netns", "exec", ns_of(lab, "node2/api"), "tcpdump", "-l", "-n", "--immediate-mode", "-U", "-i", "eth0",
         "-c", "1", "icmp6 and ip6[40] == 128"],  # echo requests
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)
        assert run_in(ns_of(lab, "node1/web"), "ping", "-6", "-c2", "-W1", "fd00:10:244:1::2").returncode == 0
        out, _ = capture.communicate(timeout=10)
    finally:
        if capture.poll() is None:
            capture.send_signal(signal.SIGINT)
            capture.wait(timeout=5)
    assert re.search(r"IP6 fd00:10:244::2 > fd00:10:244:1::2: ICMP6, echo request", out), out


def test_a_node_routes_both_families_like_flannel_host_gw(make_lab: MakeLab) -> None:
    lab = make_lab(dual("host-gw"))
    node1 = ns_of(lab, "node1")
    assert "fd00:10:244:1::/64 via fd00:192:168:1::3 dev eth0" in run_in(node1, "ip", "-6", "route", check=True).stdout
    assert "10.244.1.0/24 via 192.168.1.3 dev eth0" in run_in(node1, "ip", "route", check=True).stdout
    addrs = run_in(node1, "ip", "-6", "addr", "show", "cni0", check=True).stdout
    assert "inet6 fd00:10:244::1/64" in addrs and "tentative" not in addrs
    assert netns.read_sysctl(node1, "net/ipv6/conf/all/forwarding") == "1"
    web = run_in(ns_of(lab, "node1/web"), "ip", "-6", "route", check=True).stdout
    assert "default via fd00:10:244::1 dev eth0" in web


def test_ebpf_carries_dual_stack_and_refuses_an_outside_host_with_it_before_building(make_lab: MakeLab) -> None:
    assert matrix.run(make_lab(dual("ebpf"))).passed  # both families (test_ebpf_ipv6.py says more)
    before = netns.listing()
    with pytest.raises(LabError, match="outside: IPv4-only labs for now"):
        make_lab({**dual("ebpf"), "outside": {}})
    assert netns.listing() == before


def test_a_calico_node_learns_the_other_nodes_ipv6_blocks_from_bird(make_lab: MakeLab) -> None:
    lab = make_lab(dual("bgp"))
    assert matrix.run(lab).passed
    node1 = ns_of(lab, "node1")
    routes6 = run_in(node1, "ip", "-6", "route", check=True).stdout
    assert "fd00:10:244::40/122 via fd00:192:168:1::3 dev eth0 proto bird" in routes6
    assert "blackhole fd00:10:244::/122 dev lo proto bird" in routes6
    # IPv4's routes as a Calico node shows them: proto bird and no metric
    assert "10.244.0.64/26 via 192.168.1.3 dev eth0 proto bird \n" in run_in(node1, "ip", "route", check=True).stdout
    web = ns_of(lab, "node1/web")
    assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in run_in(web, "ip", "-6", "route", check=True).stdout
    addrs = run_in(web, "ip", "-6", "addr", "show", "eth0", check=True).stdout
    assert "inet6 fd00:10:244::1/128" in addrs
    cali = next(line.split(":")[1].strip().split("@")[0] for line in run_in(node1, "ip", "-o", "link").stdout.splitlines()
                if ": cali" in line)
    assert "link/ether ee:ee:ee:ee:ee:ee" in run_in(node1, "ip", "link", "show", cali, check=True).stdout
    assert netns.read_sysctl(node1, f"net/ipv6/conf/{cali}/proxy_ndp") == "1"
    birdc = run_in(node1, "birdc", "-s", str(state.lab_dir(lab.name) / "bird" / "node1" / "bird.ctl"), "show", "protocols",
                   check=True).stdout
    assert re.search(r"Mesh_192_168_1_3\s+BGP.*Established", birdc), birdc
    assert re.search(r"Mesh_fd00_192_168_1__3\s+BGP.*Established", birdc), birdc


@pytest.mark.parametrize("routing", ["host-gw", "vxlan"])
def test_the_cni_plugins_give_each_pod_both_families(make_lab: MakeLab, routing: str) -> None:
    lab = make_lab({**dual("cni"), "cni": {"routing": routing}})
    result = matrix.run(lab)
    assert result.passed and result.ipv6 is not None
    record = json.loads((state.lab_dir(lab.name) / "cni" / "node1" / "web.json").read_text())["result"]
    assert [ip["address"] for ip in record["ips"]] == ["10.244.0.2/24", "fd00:10:244::2/64"]
    conflist = json.loads((state.lab_dir(lab.name) / "cni" / "node1" / "net.conflist").read_text())
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}], [{"subnet": "fd00:10:244::/64"}]]


def test_a_vxlan_node_is_shaped_like_flannels_dual_stack_node(make_lab: MakeLab) -> None:
    lab = make_lab(dual("vxlan"))
    result = matrix.run(lab, mtu=True)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.detail) for one in result.by_family for r in one.failures]
    # one MTU for pods of both families: IPv6's outer header makes the overlay cost 70 bytes
    assert result.ipv6 is not None and result.ipv6.mtu is not None
    assert {m.size for m in result.ipv6.mtu} == {1430} and all(m.passed for m in result.ipv6.mtu)
    node1 = ns_of(lab, "node1")
    routes = run_in(node1, "ip", "-6", "route", check=True).stdout
    assert "fd00:10:244:1::/64 via fd00:10:244:1:: dev flannel-v6.1 metric 1024 onlink" in routes
    neigh = run_in(node1, "ip", "-6", "neigh", "show", "dev", "flannel-v6.1", check=True).stdout
    fdb = run_in(node1, "bridge", "fdb", "show", "dev", "flannel-v6.1", check=True).stdout
    mac = neigh.split("lladdr ")[1].split()[0]
    assert neigh.startswith("fd00:10:244:1:: lladdr") and "PERMANENT" in neigh
    assert f"{mac} dst fd00:192:168:1::3 self permanent" in fdb
    link = run_in(node1, "ip", "-d", "link", "show", "flannel-v6.1", check=True).stdout
    assert "vxlan id 1 local fd00:192:168:1::2 dev eth0" in link and "dstport 8472" in link and "nolearning" in link
    env = (state.lab_dir(lab.name) / "flannel" / "node1" / "subnet.env").read_text()
    assert "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244::1/64\n" in env


def test_fabric_routes_both_families_across_racks(make_lab: MakeLab) -> None:
    racks = {"clusterCIDR": DUAL["clusterCIDR"], "underlay": {"segments": {
        "rack1": ["192.168.1.0/24", "fd00:192:168:1::/64"], "rack2": ["192.168.2.0/24", "fd00:192:168:2::/64"]}}}
    lab = make_lab({"dataplane": "fabric", "networking": racks,
                    "nodes": [{"name": "node1", "segment": "rack1", "pods": ["web"]},
                              {"name": "node3", "segment": "rack2", "pods": ["api"]}]})
    result = matrix.run(lab)
    assert result.passed and result.ipv6 is not None and len(result.ipv6) == 12


def test_explain_trace_and_graph_show_both_families(make_lab: MakeLab) -> None:
    from cni_lab.lesson import explain, trace
    from cni_lab.report import explain_view, topology

    lab = make_lab(dual("host-gw"))
    facts = explain.read(lab, "node1")
    doc = explain_view.to_json(lab, facts)
    node = doc["nodes"][0]
    assert node["underlay"]["addresses"] == ["192.168.1.2/24", "fd00:192:168:1::2/64"]
    assert {"route": "fd00:10:244:1::/64 via fd00:192:168:1::3 dev eth0", "dst": "fd00:10:244:1::/64",
            "gateway": "fd00:192:168:1::3", "dev": "eth0", "meaning": "route to node2's IPv6 pods via fd00:192:168:1::3"} \
        in node["routes6"]
    assert node["pods"][0]["addresses"] == ["10.244.0.2/24", "fd00:10:244::2/64"]
    t = trace.trace(lab, "node1/web", "node2/api", family=6)
    assert t.outcome == "ok" and str(t.dst.ip) == "fd00:10:244:1::2"
    assert [h.route for h in t.there.hops][:2] == ["default via fd00:10:244::1 dev eth0",
                                                    "fd00:10:244:1::/64 via fd00:192:168:1::3 dev eth0"]
    assert trace.verify(lab, t) == "ok"
    by_address = trace.trace(lab, "node2", "fd00:10:244::3")  # an IPv6 address decides the family
    assert by_address.outcome == "ok" and by_address.src.ip.version == 6
    labels = " ".join(line for link in topology.build(lab, topology.kernel_hops(explain.routing(lab, explain.read(lab))))
                      .links for line in [link.label])
    assert "fd00:10:244:1::/64 via fd00:192:168:1::3" in labels and "10.244.1.0/24 via 192.168.1.3" in labels


V6_ONLY = {"clusterCIDR": "fd00:10:244::/56"}


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "fabric", "bgp", "cni", "dual-stack"])
def test_every_data_plane_passes_the_full_matrix_in_both_kinds_of_ipv6_lab(make_lab: MakeLab, dataplane: str) -> None:
    """IPv6-only labs on every data plane that has IPv6 (and, last, a dual-stack lab on each one
    the tests above do not build): every ordered pair, without NAT."""
    if dataplane == "dual-stack":
        for plane in ("fabric", "bgp"):
            result = matrix.run(make_lab(dual(plane)))
            assert result.passed and result.ipv6 is not None and len(result.ipv6) == 20
        return
    lab = make_lab({"dataplane": dataplane, "networking": V6_ONLY,
                    "nodes": [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}]})
    result = matrix.run(lab, mtu=True)
    assert result.family == 6 and result.ipv6 is None
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.detail) for r in result.failures]
    assert all(r.pair.src.ip.version == 6 for r in result.results) and seen_as_sender(lab, result.results)
    assert "inet " not in run_in(ns_of(lab, "node1/web"), "ip", "addr", "show", "eth0", check=True).stdout  # no IPv4
    if dataplane == "vxlan":  # flannel-v6.1 alone, and the overlay's 70 bytes
        links = run_in(ns_of(lab, "node1"), "ip", "-o", "link", check=True).stdout
        assert "flannel-v6.1" in links and "flannel.1" not in links
        assert result.mtu is not None and {m.size for m in result.mtu} == {1430}


def test_colliding_ipv6_pod_cidrs_teach_the_seeds_lesson(make_lab: MakeLab) -> None:
    """allowOverlap in IPv6: both nodes' first pods get fd00:10:244::2, and a packet for the
    other node's pod is answered by the sender's own neighbour."""
    lab = make_lab({"dataplane": "host-gw", "networking": V6_ONLY, "allowOverlap": True,
                    "expect": [{"rule": "pod-pod-cross-node", "verdict": "fail"}, {"from": "*", "to": "node*/*", "verdict": ["ok", "wrong-peer", "timeout", "unreachable"]},
                               {"from": "node*/*", "to": "*", "verdict": ["ok", "wrong-peer", "timeout", "unreachable"]}],
                    "nodes": [{"name": "node1", "podCIDR": "fd00:10:244::/64", "pods": ["web", "db"]},
                              {"name": "node2", "podCIDR": "fd00:10:244::/64", "pods": ["api"]}]})
    assert lab.warnings and "share pod addresses" in lab.warnings[0]
    assert lab.nodes[0].pods[0].ip == lab.nodes[1].pods[0].ip
    result = matrix.run(lab)
    verdicts = {(r.pair.src.id, r.pair.dst.id): r.verdict for r in result.results}
    assert verdicts[("node1/db", "node2/api")] == "wrong-peer"  # node1/web has fd00:10:244::2 too
