"""IPv6 on the ebpf data plane, against the real kernel: dual-stack and IPv6-only labs in both
routing modes pass check with the MTU probe as host-gw does, the pods' neighbour solicitations
for their router are answered by cil_from_container (the lxc MAC, counted in cilium_metrics), and
the ipcache and endpoints maps hold IPv6 keys as Cilium's do."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.kernel import bpf
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]
DUAL = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
ONLY6 = {"clusterCIDR": "fd00:10:244::/56"}


def doc(networking: dict[str, Any], routing: str) -> dict[str, Any]:
    return {"dataplane": "ebpf", "ebpf": {"routing": routing}, "networking": networking,
            "nodes": [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}]}


@pytest.mark.parametrize("networking", [DUAL, ONLY6], ids=["dual-stack", "ipv6-only"])
@pytest.mark.parametrize("routing", ["tunnel", "native"])
def test_check_passes_in_both_families_with_the_mtu_probe(make_lab: MakeLab, networking: dict[str, Any],
                                                           routing: str) -> None:
    lab = make_lab(doc(networking, routing))
    result = matrix.run(lab, mtu=True)
    assert result.passed, [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]
    six = result.ipv6 if lab.dual_stack else result
    assert six is not None and six.mtu is not None and all(m.passed for m in six.mtu)
    # the tunnel's MTU in tunnel mode (the pods' routes carry it), the underlay's in native routing
    assert {m.size for m in six.mtu} == ({1430} if routing == "tunnel" else {1500})
    node1 = names.bpf_node_dir(lab.name, "node1")
    web = next(p for p in lab.pods if p.id == "node1/web")
    address6 = str(web.ip6 or web.ip)
    # the endpoints map holds the pod under its IPv6 address too, with the same endpoint
    by_ip = {e.ip: e for e in bpf.endpoints(node1)}
    assert address6 in by_ip and by_ip[address6].lxc_id >= 1
    # the ipcache: the other node's pod (and in tunnel mode its pod CIDR) behind its node
    api = next(p for p in lab.pods if p.id == "node2/api")
    cache = {e.prefix: e for e in bpf.ipcache(node1)}
    api6 = cache[f"{api.ip6 or api.ip}/128"]
    assert api6.tunnel_endpoint == (str(lab.node("node2").ip) if routing == "tunnel" else "0.0.0.0")


def test_the_pods_router_is_answered_in_bpf_with_the_lxc_mac(make_lab: MakeLab) -> None:
    lab = make_lab(doc(DUAL, "tunnel"))
    node1 = names.bpf_node_dir(lab.name, "node1")
    before = bpf.metrics(node1)["ARP replies and neighbour advertisements"]
    pod = ns_of(lab, "node1/web")
    router6 = str(lab.node("node1").gateway6)
    run_in(pod, "ip", "-6", "neigh", "flush", "dev", "eth0")
    assert run_in(pod, "ping", "-6", "-c1", "-W1", router6).returncode in (0, 1)  # the reply is the node's stack's affair
    neigh = json.loads(run_in(pod, "ip", "-6", "-j", "neigh", "show", "dev", "eth0", check=True).stdout)
    entry = next(n for n in neigh if n["dst"] == router6)
    lxc = names.lxc_veth(lab.name, "node1", "web")
    lxc_mac = json.loads(run_in(ns_of(lab, "node1"), "ip", "-j", "link", "show", lxc, check=True).stdout)[0]["address"]
    assert entry["lladdr"] == lxc_mac and "router" in entry  # R set, as icmp6_send_ndisc_adv answers
    assert bpf.metrics(node1)["ARP replies and neighbour advertisements"] > before
