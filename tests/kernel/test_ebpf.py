"""The ebpf data plane against the real kernel: tc programs compiled with clang and loaded for
real, the matrix in both routing modes, the node's state as Cilium's, the bypass, the faults."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest
from helpers import ns_of, pings, run_in, seen_as_sender, two_nodes

from cni_lab import faults, lifecycle, names
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import bpf, netns
from cni_lab.lesson import explain, trace
from cni_lab.probe import matrix
from cni_lab.report import trace_view

MakeLab = Callable[..., Lab]


def ebpf(routing: str, nodes: int = 2) -> dict[str, Any]:
    document = two_nodes("ebpf", ebpf={"routing": routing})
    if nodes == 3:
        document["nodes"] = [*document["nodes"], {"name": "node3", "pods": ["cache"]}]
    return document


def racks() -> dict[str, Any]:
    return {
        "dataplane": "ebpf",
        "networking": {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}},
        "nodes": [
            {"name": "node1", "segment": "rack1", "pods": ["web"]},
            {"name": "node2", "segment": "rack1", "pods": ["db"]},
            {"name": "node3", "segment": "rack2", "pods": ["api"]},
        ],
    }


def all_ok(result: matrix.CheckResult) -> bool:
    """Every pair ok, a pod seen as itself, a node as one of its own addresses (the kernel picks a
    node's source: cilium_host's router IP towards pods in tunnel mode)."""
    return all(r.verdict == "ok" for r in result.results) and seen_as_sender(result.lab, result.results)


@pytest.mark.parametrize("document", [ebpf("tunnel"), ebpf("native"), racks()], ids=["tunnel", "native", "racks"])
def test_a_node_pings_every_pod_as_its_agents_do(make_lab: MakeLab, document: dict[str, Any]) -> None:
    """A node's own `ping` (the kernel picks its source: cilium_host's address towards pods behind
    it in tunnel mode) reaches every pod on every node, and check sees the source the pod saw."""
    lab = make_lab(document)
    for node in lab.nodes:
        for pod in lab.pods:
            assert pings(names.node_netns(lab.name, node.name), pod.ip), f"{node.name} cannot ping {pod.id}"
    result = matrix.run(lab)
    assert all_ok(result), [(r.pair.src.id, r.pair.dst.id, r.verdict, r.observed, r.detail) for r in result.results
                            if r.verdict != "ok" or r.pair.src.kind == "node"]


@pytest.mark.parametrize("routing,nodes", [("native", 2), ("native", 3), ("tunnel", 2), ("tunnel", 3)])
def test_full_matrix_without_nat(make_lab: MakeLab, routing: str, nodes: int) -> None:
    result = matrix.run(make_lab(ebpf(routing, nodes)), mtu=True)
    assert all_ok(result), [(r.pair.src.id, r.pair.dst.id, r.verdict, r.detail) for r in result.failures]
    assert result.mtu is not None and all(m.passed for m in result.mtu)
    expected = 1450 if routing == "tunnel" else 1500  # the overlay's 50 bytes
    assert {m.size for m in result.mtu} == {expected}


def test_tunnel_crosses_a_router_and_native_is_refused_there(make_lab: MakeLab) -> None:
    result = matrix.run(make_lab(racks()))
    assert all_ok(result), [(r.pair.src.id, r.pair.dst.id, r.detail) for r in result.failures]
    before = netns.listing()
    with pytest.raises(LabError, match="needs every node on one L2 segment"):
        make_lab({**racks(), "ebpf": {"routing": "native"}})
    assert netns.listing() == before


def test_a_node_holds_what_a_cilium_node_holds(make_lab: MakeLab) -> None:
    lab = make_lab(ebpf("tunnel", 3))
    node1 = ns_of(lab, "node1")
    pin = names.bpf_node_dir(lab.name, "node1")
    lxcs = {p.name: names.lxc_veth(lab.name, "node1", p.name) for p in lab.node("node1").pods}
    assert all(re.fullmatch(r"lxc[0-9a-f]{12}", x) for x in lxcs.values())
    # programs where stated, as bpftool net lists them
    listed = run_in(node1, "bpftool", "net", check=True).stdout
    for line in ["eth0(", "clsact/ingress cil_from_netdev", "cilium_host(", "clsact/egress cil_from_host",
                 "cilium_vxlan(", "clsact/ingress cil_from_overlay"]:
        assert line in listed, listed
    for lxc in lxcs.values():
        assert re.search(rf"{lxc}\(\d+\) clsact/ingress cil_from_container", listed), listed
    assert "cni0" not in run_in(node1, "ip", "link", check=True).stdout  # no bridge
    # the endpoints map holds exactly this node's pods, with their lxc devices and MACs
    by_index = {lk["ifindex"]: lk for lk in json.loads(run_in(node1, "ip", "-j", "link", check=True).stdout)}
    entries = {e.ip: e for e in bpf.endpoints(pin)}
    assert set(entries) == {str(p.ip) for p in lab.node("node1").pods}
    for pod in lab.node("node1").pods:
        e = entries[str(pod.ip)]
        assert by_index[e.ifindex]["ifname"] == lxcs[pod.name]
        assert by_index[e.ifindex]["address"] == e.node_mac
        pod_eth0 = json.loads(run_in(ns_of(lab, f"node1/{pod.name}"), "ip", "-j", "link", "show", "eth0").stdout)[0]
        assert pod_eth0["address"] == e.mac
    # the ipcache (no tunnel map since cilium/cilium#38839): other nodes' pod CIDRs and pods behind
    # their node's IP, this node's pods and every node without a tunnel endpoint
    tunnelled = {(e.prefix, e.tunnel_endpoint) for e in bpf.ipcache(pin) if e.tunnel_endpoint != "0.0.0.0"}
    assert {(p, t) for p, t in tunnelled if p.endswith("/24")} == {("10.244.1.0/24", "192.168.1.3"),
                                                                   ("10.244.2.0/24", "192.168.1.4")}
    remote_pods = {f"{p.ip}/32" for n in ("node2", "node3") for p in lab.node(n).pods}
    routers = {f"{lab.node(n).gateway}/32" for n in ("node2", "node3")}  # cilium_host's, behind its node too
    assert {p for p, _ in tunnelled if p.endswith("/32")} == remote_pods | routers
    listed = subprocess.run(["bpftool", "map", "show", "pinned", f"{pin}/cilium_ipcache_v2"], capture_output=True,
                            text=True, check=True).stdout  # read by pin: bpffs is not mounted under `ip netns exec`
    assert "lpm_trie" in listed
    # cilium_vxlan: flow based (external), UDP 8472
    vx = json.loads(run_in(node1, "ip", "-d", "-j", "link", "show", names.CILIUM_VXLAN, check=True).stdout)[0]
    data = vx["linkinfo"]["info_data"]
    assert vx["linkinfo"]["info_kind"] == "vxlan" and data.get("external") is True and data["port"] == 8472
    # cilium_host/cilium_net, the router IP, the routes of Cilium's tunnel mode
    host = json.loads(run_in(node1, "ip", "-j", "addr", "show", names.CILIUM_HOST, check=True).stdout)[0]
    assert [(a["local"], a["prefixlen"]) for a in host["addr_info"] if a["family"] == "inet"] == [("10.244.0.1", 32)]
    assert "NOARP" in host["flags"]
    routes = run_in(node1, "ip", "route", check=True).stdout
    assert "10.244.0.0/24 via 10.244.0.1 dev cilium_host src 10.244.0.1" in routes
    assert "10.244.1.0/24 via 10.244.0.1 dev cilium_host src 10.244.0.1 mtu 1450" in routes
    pod_routes = run_in(ns_of(lab, "node1/web"), "ip", "route", check=True).stdout
    assert "default via 10.244.0.1 dev eth0 mtu 1450" in pod_routes
    assert "10.244.0.1 dev eth0 scope link" in pod_routes
    web = json.loads(run_in(ns_of(lab, "node1/web"), "ip", "-j", "addr", "show", "eth0", check=True).stdout)[0]
    assert [(a["local"], a["prefixlen"]) for a in web["addr_info"] if a["family"] == "inet"] == [("10.244.0.2", 32)]


def _capture(lab: Lab, bpf_filter: str, ping_from: str, ping_to: str) -> str:
    underlay = names.underlay_netns(lab.name)
    capture = subprocess.Popen(
        ["ip", "netns", "exec", underlay, "tcpdump", "-l", "-n", "-T", "vxlan", "--immediate-mode", "-U",
         "-i", names.UNDERLAY_BRIDGE, "-c", "2", bpf_filter],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)  # let tcpdump attach
        assert run_in(ns_of(lab, ping_from), "ping", "-c2", "-W1", ping_to).returncode == 0
        out, _ = capture.communicate(timeout=10)
    finally:
        if capture.poll() is None:
            capture.send_signal(signal.SIGINT)
            capture.wait(timeout=5)
    return out


def test_underlay_sees_vxlan_in_tunnel_mode_and_pod_addresses_in_native(make_lab: MakeLab) -> None:
    from cni_lab.dataplanes import ebpf_policy

    lab = make_lab(ebpf("tunnel"))
    tunnel = _capture(lab, "udp port 8472", "node1/web", "10.244.1.2")
    assert re.search(r"192\.168\.1\.2\.\d+ > 192\.168\.1\.3\.8472: VXLAN", tunnel), tunnel
    assert "10.244.0.2 > 10.244.1.2: ICMP echo request" in tunnel  # the inner packet
    # the sender's security identity travels as the VNI, as Cilium's encap does it
    vnis = set(re.findall(r"vni (\d+)", tunnel))
    assert vnis == {str(ebpf_policy.identities(lab)["node1/web"]), str(ebpf_policy.identities(lab)["node2/api"])}, tunnel
    native = _capture(make_lab(ebpf("native")), "icmp", "node1/web", "10.244.1.2")
    assert "10.244.0.2 > 10.244.1.2: ICMP echo request" in native
    assert "VXLAN" not in native


def _failing(result: matrix.CheckResult) -> set[tuple[str, str]]:
    return {(r.pair.src.id, r.pair.dst.id) for r in result.failures}


def bridge_netfilter(ns: str) -> bool:
    try:
        return netns.read_sysctl(ns, "net/bridge/bridge-nf-call-iptables") == "1"
    except OSError:
        return False  # br_netfilter is not loaded


def test_the_programs_bypass_the_nodes_forward_hook(make_lab: MakeLab) -> None:
    """The same nftables rule in node1's forward hook: host-gw loses node1's pods' traffic,
    ebpf passes everything and the rule counts nothing."""
    gw = make_lab(two_nodes("host-gw"))
    faults.inject(gw, "forward-drop", ("node1",))
    result = matrix.run(gw)
    failing = _failing(result)
    node1_pods = {"node1/web", "node1/db"}
    # what node1 forwards: between its pods and anything not on node1 (in both directions)
    expected = {(s.id, d.id) for s in result.endpoints for d in result.endpoints
                if s != d and ((s.id in node1_pods) != (d.id in node1_pods)) and "node1" not in (s.id, d.id)}
    if bridge_netfilter(names.node_netns(gw.name, "node1")):
        # br_netfilter is loaded on this machine: what cni0 bridges passes the IP hooks too
        expected |= {("node1/web", "node1/db"), ("node1/db", "node1/web")}
    assert failing == expected
    assert faults.dropped(names.node_netns(gw.name, "node1")) > 0

    eb = make_lab(ebpf("native"))
    faults.inject(eb, "forward-drop", ("node1",))
    result = matrix.run(eb)
    assert all_ok(result)
    assert faults.dropped(names.node_netns(eb.name, "node1")) == 0
    readings = faults.readings(eb)
    assert readings and "dropped 0 packets" in readings[0]
    faults.heal(eb)
    assert faults.recorded(eb.name) == []


def test_detaching_a_program_cuts_that_pod_off_and_heal_restores_it(make_lab: MakeLab) -> None:
    lab = make_lab(ebpf("tunnel"))
    faults.inject(lab, "bpf-detach", ("node1/web",))
    node1 = ns_of(lab, "node1")
    assert "cil_from_container" not in run_in(node1, "tc", "filter", "show", "dev",
                                              names.lxc_veth(lab.name, "node1", "web"), "ingress").stdout
    result = matrix.run(lab)
    # every pair of web's, except with its own node (delivered and answered by the node's stack)
    expected = {(s.id, d.id) for s in result.endpoints for d in result.endpoints
                if s != d and "node1/web" in (s.id, d.id) and "node1" not in (s.id, d.id)}
    assert _failing(result) == expected
    facts = explain.read(lab, "node1")[0]
    assert any("no program" in line for line in explain.datapath_story(lab, facts))
    t = trace.trace(lab, "node1/web", "node1/db")
    assert t.outcome == "dropped" and "no program" in trace_view.summary(t)
    faults.heal(lab)
    assert all_ok(matrix.run(lab))


def test_trace_follows_the_programs_and_the_counters_agree(make_lab: MakeLab) -> None:
    lab = make_lab(ebpf("tunnel"))
    t = trace.trace(lab, "node1/web", "node2/api")
    assert t.outcome == "ok"
    bpf_hops = [h.bpf for h in t.there.hops if h.bpf]
    assert bpf_hops[0].startswith("cil_from_container on lxc") and "bpf_skb_set_tunnel_key" in bpf_hops[0]
    assert bpf_hops[1].startswith("cil_from_overlay on cilium_vxlan") and "bpf_redirect_peer" in bpf_hops[1]
    before = trace.bpf_counters(lab)
    assert trace.verify(lab, t) == "ok"
    moved = trace.counters_moved(before, trace.bpf_counters(lab))
    assert moved["node1"].get("tunnel (bpf_skb_set_tunnel_key)", 0) >= 1
    assert moved["node2"].get("local delivery (bpf_redirect_peer)", 0) >= 1
    local = trace.trace(lab, "node1/web", "node1/db")
    assert [h.where for h in local.there.hops] == ["node1/web", "node1", "node1/db"]
    assert "bpf_redirect_peer → node1/db eth0" in (local.there.hops[1].bpf or "")


def test_down_leaves_no_program_map_or_pin(make_lab: MakeLab) -> None:
    lab = make_lab(ebpf("tunnel"), up=False)
    lifecycle.up(lab)
    pin = names.bpf_dir(lab.name)
    assert os.path.isdir(f"{pin}/node1") and os.path.exists(f"{pin}/node1/cilium_lxc")
    lifecycle.up(lab)  # idempotent: the same pins, nothing loaded twice
    lifecycle.down(lab.name)
    assert not os.path.exists(pin)
    assert lab.name not in bpf.pinned_labs()


@pytest.mark.parametrize("routing", ["native", "tunnel"])
def test_a_bulk_tcp_stream_crosses_nodes(make_lab: MakeLab, routing: str) -> None:
    """Segmentation offload hands the programs packets far over the MTU: they must still pass
    (a FIB lookup that checks the MTU would give them back to the stack, which drops them)."""
    lab = make_lab(ebpf(routing))
    server = netns.open_socket(ns_of(lab, "node2/api"), socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("10.244.1.2", 0))
    server.listen(1)
    server.settimeout(10)
    port = server.getsockname()[1]
    size = 16 << 20
    received = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            total = 0
            while chunk := conn.recv(1 << 20):
                total += len(chunk)
            received.append(total)

    thread = threading.Thread(target=serve)
    thread.start()
    client = netns.open_socket(ns_of(lab, "node1/web"), socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.settimeout(10)
        client.connect(("10.244.1.2", port))
        client.sendall(b"x" * size)
        client.shutdown(socket.SHUT_WR)
        thread.join(timeout=15)
    finally:
        client.close()
        server.close()
    assert received == [size]


def test_without_clang_up_says_what_is_missing_and_builds_nothing(tmp_path: Any) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "nft"):  # what the lab itself runs, but no clang and no bpftool
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    before = netns.listing()
    done = subprocess.run([sys.executable, "-m", "cni_lab", "up", "ebpf", "--name", "tnoclang"],
                          env={**os.environ, "PATH": str(bin_dir)}, capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "dataplane ebpf needs clang and bpftool, not installed here" in done.stderr
    assert "Traceback" not in done.stderr
    assert netns.listing() == before and "tnoclang" not in bpf.pinned_labs()
