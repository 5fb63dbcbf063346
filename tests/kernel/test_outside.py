"""The edge of the cluster: an outside host behind the router, reached by every pod through the
node's masquerade (flannel's or Calico's rules), never leaking NAT into pod and node pairs."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any, Callable

import pytest
from helpers import ns_of, pings, run_in

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.probe import matrix
from cni_lab.report import terminal

MakeLab = Callable[..., Lab]
OUTSIDE = "198.51.100.10"


def lab_doc(dataplane: str, **networking: Any) -> dict[str, Any]:
    return {"dataplane": dataplane, "outside": {}, "networking": networking,
            "nodes": [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}]}


def seen_at_outside(lab: Lab, src: str) -> str:
    """The source address the outside host sees for a ping from `src`."""
    capture = subprocess.Popen(["ip", "netns", "exec", names.outside_netns(lab.name), "tcpdump", "-l", "-n", "-c", "1",
                                "--immediate-mode", "-i", "eth0", "icmp[icmptype] == icmp-echo"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.8)
        run_in(ns_of(lab, src), "ping", "-c2", "-W1", OUTSIDE)
        out, _ = capture.communicate(timeout=10)
    finally:
        if capture.poll() is None:
            capture.send_signal(signal.SIGINT)
            capture.wait(timeout=5)
    return out.split(" IP ")[1].split(" > ")[0] if " IP " in out else ""


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bridge", "fabric", "bgp", "ebpf"])
def test_every_pod_reaches_the_outside_masqueraded(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(lab_doc(dataplane))
    for pod in lab.pods:
        assert pings(ns_of(lab, pod.id), OUTSIDE), pod.id
    assert seen_at_outside(lab, "node2/api") == "192.168.1.3"  # node2's address, not the pod's
    result = matrix.run(lab)
    if dataplane != "bridge":  # no NAT leaks into pod and node pairs; pod → outside is nat at its node
        assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict, r.detail) for r in result.failures]
        outside = [r for r in result.results if r.pair.rule == "pod-outside"]
        assert len(outside) == 3 and all(r.verdict == "nat" for r in outside)
        assert {r.observed for r in outside if r.pair.src.node == "node1"} == {"192.168.1.2"}
        assert any("masqueraded at node1" in line for line in terminal.masquerade_lines(result))
    if dataplane == "ebpf":  # BPF masquerade: nothing in netfilter, the mapping in cilium_snat_v4_external
        from cni_lab.kernel import bpf
        assert run_in(ns_of(lab, "node2"), "nft", "list", "ruleset", check=True).stdout.strip() == ""
        api = str(next(p.ip for p in lab.pods if p.id == "node2/api"))
        mapped = [(e.tuple.direction, e.tuple.src, e.to) for e in bpf.nat(names.bpf_node_dir(lab.name, "node2"))
                  if e.tuple.protocol == "ICMP"]
        assert any(d == "OUT" and src.startswith(api + ":") and to.startswith("192.168.1.3:") for d, src, to in mapped)
        assert any(d == "IN" and src.startswith(OUTSIDE + ":") and to.startswith(api + ":") for d, src, to in mapped)
        return
    table = "calico" if dataplane == "bgp" else "flannel-ipv4"
    rules = run_in(ns_of(lab, "node1"), "nft", "list", "table", "ip", table, check=True).stdout
    assert "masquerade fully-random" in rules


def test_without_masquerade_the_outside_cannot_answer_pod_addresses(make_lab: MakeLab) -> None:
    lab = make_lab(lab_doc("host-gw", masquerade=False))
    assert not pings(ns_of(lab, "node1/web"), OUTSIDE)  # the outside host has no route to 10.244.0.0/16
    result = matrix.run(lab)
    assert result.passed  # check expects exactly that: pod → outside blocked, everything else as before
    pod_outside = {(r.pair.src.id, r.verdict) for r in result.results if r.pair.rule == "pod-outside"}
    assert {v for _, v in pod_outside} <= {"timeout", "unreachable"} and len(pod_outside) == 3
    assert pings(ns_of(lab, "node1"), OUTSIDE)  # the node itself is fine
    assert "flannel-ipv4" not in run_in(ns_of(lab, "node1"), "nft", "list", "tables").stdout


def test_flannels_rules_and_subnet_env(make_lab: MakeLab) -> None:
    from cni_lab import state

    lab = make_lab(lab_doc("vxlan"))
    post = run_in(ns_of(lab, "node1"), "nft", "list", "chain", "ip", "flannel-ipv4", "postrtg", check=True).stdout
    for line in ["meta mark 0x00004000 return", "ip saddr 10.244.0.0/24 ip daddr 10.244.0.0/16 return",
                 "ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/24 return",
                 "ip saddr != 10.244.0.0/24 ip daddr 10.244.0.0/16 return",
                 "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
                 "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random"]:
        assert line in post, post
    env = (state.lab_dir(lab.name) / "flannel" / "node1" / "subnet.env").read_text()
    assert "FLANNEL_IPMASQ=true" in env


def test_cni_honours_the_bridge_plugins_ip_masq_and_shows_why_flannel_turns_it_off(make_lab: MakeLab) -> None:
    """The default list delegates as flannel does (bridge ipMasq false, flannel's rules on the
    node): pods reach the outside masqueraded, pods keep their addresses. A list with ipMasq true
    makes the plugin masquerade everything that leaves the pod's own subnet (iptables, in the
    node's namespace): the outside still sees the node, but so do pods on other nodes."""
    from cni_lab.dataplanes import cni

    plain = make_lab(lab_doc("cni"))
    result = matrix.run(plain)
    assert result.passed and seen_at_outside(plain, "node1/web") == "192.168.1.2"
    conflist = cni.default_conflist(plain)
    conflist["plugins"][0]["ipMasq"] = True
    lab = make_lab({**lab_doc("cni"), "cni": {"conflist": conflist}})
    rules = run_in(ns_of(lab, "node1"), "iptables", "-t", "nat", "-S", check=True).stdout
    assert "-j MASQUERADE" in rules and "CNI-" in rules, rules
    result = matrix.run(lab)
    cross = [r for r in result.results if r.pair.rule == "pod-pod-cross-node"]
    assert cross and all(r.verdict == "nat" and not r.met for r in cross)  # the plugin's NAT breaks the model
    assert seen_at_outside(lab, "node1/web") == "192.168.1.2"
