"""Cilium's kube-proxy replacement and BPF masquerade on the ebpf data plane, against the real
kernel and real clients: `check` in both routing modes and across two racks, curl to a ClusterIP
and a NodePort, tcpdump on the outside host and on an endpoint, the maps as Cilium names them,
the netfilter bypass with Services, and the faults a learner diagnoses from the maps."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from typing import Any, Callable, Iterator

import pytest
from helpers import ns_of, run_in

from cni_lab import faults, names
from cni_lab.cluster import Lab
from cni_lab.dataplanes.capabilities import CILIUM_LB_LOOPBACK
from cni_lab.kernel import bpf, netns
from cni_lab.probe import matrix, service_probes as probes

MakeLab = Callable[..., Lab]
OUTSIDE = "198.51.100.10"


def services_doc(dataplane: str = "ebpf", routing: str = "tunnel", racks: bool = False) -> dict[str, Any]:
    """web (Cluster) over a pod on node1 and one on node2; solo (Local, UDP) on node2 only; self
    over node1/web1 alone, so web1 dialling it always reaches itself; node3 has no endpoint."""
    doc: dict[str, Any] = {
        "dataplane": dataplane, "outside": {},
        "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                  {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}},
                                             {"name": "solo", "labels": {"app": "solo"}}]},
                  {"name": "node3", "pods": ["idle"]}],
        "dns": False, "services": [{"name": "web", "type": "NodePort", "selector": {"app": "web"},
                      "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]},
                     {"name": "solo", "type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"app": "solo"},
                      "ports": [{"port": 81, "targetPort": 8080, "nodePort": 30081, "protocol": "UDP"}]},
                     {"name": "self", "pods": ["node1/web1"], "ports": [{"port": 82, "targetPort": 8080}]}],
    }
    if dataplane == "ebpf":
        doc["ebpf"] = {"routing": routing}
    if racks:
        doc["networking"] = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}
        for node, rack in zip(doc["nodes"], ("rack1", "rack1", "rack2")):
            node["segment"] = rack
    return doc


def pin(lab: Lab, node: str) -> str:
    return names.bpf_node_dir(lab.name, node)


def failed(result: matrix.CheckResult) -> list[tuple[str, str, str]]:
    return [(s.title, s.src, s.problem) for s in result.services if not s.ok] + \
           [(r.pair.src.id, r.pair.dst.id, r.verdict) for r in result.failures]


@pytest.mark.parametrize("routing,racks", [("tunnel", False), ("native", False), ("tunnel", True)],
                         ids=["tunnel", "native", "racks"])
def test_check_proves_services_nodeports_and_masquerade(make_lab: MakeLab, routing: str, racks: bool) -> None:
    lab = make_lab(services_doc("ebpf", routing, racks))
    result = matrix.run(lab)
    assert result.passed, failed(result)
    by = {(s.service, s.src, s.via): s for s in result.services}
    # every pod reached every Service port; web's endpoints both answered somewhere
    assert {a.endpoint for s in result.services if s.service == "default/web" for a in s.answers} == \
        {"node1/web1", "node2/web2"}
    # the pod reaching itself through `self` is seen from Cilium's service loopback address
    hairpin = by[("default/self", "node1/web1", "")]
    assert {(a.endpoint, a.seen) for a in hairpin.answers} == {("node1/web1", CILIUM_LB_LOOPBACK)}
    # NodePort, Cluster, dialled on node3 (no endpoint): SNATed to node3, the reply turned around there
    node3 = by[("default/web", "outside", "node3")]
    assert len(node3.answers) == probes.TRIES
    assert {a.seen for a in node3.answers} <= probes.node_addresses(lab.node("node3"))
    # Local: only node2 answers, with the client's address
    assert {a.seen for a in by[("default/solo", "outside", "node2")].answers} == {OUTSIDE}
    assert by[("default/solo", "outside", "node1")].answers == ()
    # pods reach the outside masqueraded to their node's address; the rest NAT-free
    outside = [r for one in result.by_family for r in one.results if r.pair.rule == "pod-outside"]
    assert outside and all(r.verdict == "nat" and r.observed == str(lab.node(r.pair.src.node).ip) for r in outside)
    # and nothing of it lives in netfilter
    for node in lab.nodes:
        assert run_in(ns_of(lab, node.name), "nft", "list", "ruleset", check=True).stdout.strip() == ""


def test_the_maps_hold_what_cilium_holds_after_check(make_lab: MakeLab) -> None:
    lab = make_lab(services_doc())
    web1, web2 = (str(next(p.ip for p in lab.pods if p.id == i)) for i in ("node1/web1", "node2/web2"))
    node1 = pin(lab, "node1")
    listed = {e.address: e for e in bpf.lb_services(node1) if e.slot == 0}
    assert set(listed) == {"10.96.0.2", "10.96.0.3", "10.96.0.4", str(lab.node("node1").ip)}
    assert (listed["10.96.0.2"].count, listed["10.96.0.2"].flags) == (2, 0)  # ClusterIP: non-routable
    slots = {(e.port, e.slot): e.backend for e in bpf.lb_services(node1) if e.address == "10.96.0.2"}
    assert {slots[(80, 1)], slots[(80, 2)]} == {(web1, 8080), (web2, 8080)}
    nodeports = sorted((e.port, e.count, e.flags) for e in bpf.lb_services(node1)
                       if e.address == str(lab.node("node1").ip) and e.slot == 0)
    assert nodeports == [(30080, 2, 0x42), (30081, 0, 0x46)]  # Local on node1: no backend of its own
    assert set(bpf.reverse_nat(node1).values()) >= {("10.96.0.2", 80), (str(lab.node("node1").ip), 30080)}
    assert matrix.run(lab).passed
    # connection tracking: the client's Service connections (their backend) and the DNATed ones
    ct = bpf.conntrack(node1)
    client = str(next(p.ip for p in lab.pods if p.id == "node1/client"))
    svc = [e for e in ct if e.tuple.direction == "SVC" and e.tuple.src.startswith(client + ":")
           and e.tuple.dst == "10.96.0.2:80"]
    assert svc and all(e.backend_id in {b for b in _backend_ids(node1)} for e in svc)
    out = [e for e in ct if e.tuple.direction == "OUT" and e.tuple.src.startswith(client + ":")
           and e.tuple.dst in (f"{web1}:8080", f"{web2}:8080")]
    frontends = bpf.reverse_nat(node1)  # each DNATed connection names the ClusterIP to answer from
    assert out and all(frontends[e.rev_nat_index][0] in ("10.96.0.2", "10.96.0.4") for e in out)
    if not any(e.lb_loopback for e in ct):  # web1's 4 tries all drew web2 (once in 16 checks): 16 more
        syns(ns_of(lab, "node1/web1"), "10.96.0.2", 80)
        ct = bpf.conntrack(node1)
    assert any(e.lb_loopback for e in ct)  # web1 → self → web1
    # the NodePort on node1 handed to web2 on node2: SNATed, both directions in the NAT map (check
    # dials it 4 times, each drawing a backend at random: all 4 drew web1 once in 16 checks)
    if not any(n.tuple.direction == "OUT" for n in bpf.nat(node1)):
        syns(names.outside_netns(lab.name), str(lab.node("node1").ip), 30080)
    nat = bpf.nat(node1)
    assert any(n.tuple.direction == "OUT" and n.tuple.src.startswith(OUTSIDE + ":") for n in nat)
    assert any(n.tuple.direction == "IN" and n.to.startswith(OUTSIDE + ":") for n in nat)
    counted = bpf.metrics(node1)
    assert counted["service (lb4 DNAT to a backend)"] > 0 and counted["reverse NAT (reply from the frontend)"] > 0
    assert counted["masquerade (SNAT to the node)"] > 0 and counted["reverse SNAT (reply to a masqueraded client)"] > 0


def syns(netns_name: str, address: str, port: int, count: int = 16) -> None:
    """`count` new TCP connections from a namespace (a SYN each, from a port of its own): each
    draws a Service backend anew. Where check's few tries all drew the same one, these reach
    the rest, but for one time in 2^count."""
    opened = []
    for _ in range(count):
        s = netns.open_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((address, port))
        opened.append(s)
    time.sleep(0.3)
    for s in opened:
        s.close()


def _backend_ids(pin_dir: str) -> set[int]:
    return {e.backend_id for e in bpf.lb_services(pin_dir) if e.slot and e.backend is not None}


def serve_http(lab: Lab, pods: list[str]) -> list[subprocess.Popen[bytes]]:
    """A real HTTP server on 8080 in each pod, whose one page says which pod it is."""
    servers = []
    for pod in pods:
        ns = ns_of(lab, pod)
        www = f"/tmp/cnilab-www-{lab.name}-{pod.replace('/', '-')}"
        command = f"mkdir -p {www} && cd {www} && echo {pod} > index.html && exec python3 -m http.server 8080"
        servers.append(subprocess.Popen(["ip", "netns", "exec", ns, "sh", "-c", command],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    return servers


def curl(lab: Lab, where: str, url: str) -> str:
    done = run_in(where, "curl", "-s", "--max-time", "3", url)
    return done.stdout.strip()


@pytest.fixture
def http_lab(make_lab: MakeLab) -> Iterator[Lab]:
    lab = make_lab(services_doc())
    servers = serve_http(lab, ["node1/web1", "node2/web2"])
    try:
        yield lab
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=5)
        subprocess.run(["rm", "-rf", *[f"/tmp/cnilab-www-{lab.name}-{p}" for p in ("node1-web1", "node2-web2")]])


def capture(netns: str, expression: str, count: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-c", str(count),
                                "--immediate-mode", "-i", "eth0", expression],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.8)
    return process


def captured(process: subprocess.Popen[str]) -> str:
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=5)
    return out


def test_curl_through_a_cluster_ip_and_a_node_port_and_tcpdump_sees_the_nat(http_lab: Lab) -> None:
    lab = http_lab
    client = ns_of(lab, "node1/client")
    answered = {curl(lab, client, "http://10.96.0.2/") for _ in range(16)}
    assert answered == {"node1/web1", "node2/web2"}  # curl through the ClusterIP, both endpoints
    outside = names.outside_netns(lab.name)
    node3 = str(lab.node("node3").ip)
    # the outside host's curl to node3's NodePort: node3 has no endpoint, so the one chosen is on
    # another node and sees node3's address (its router IP behind the tunnel), not the client's
    web2 = capture(ns_of(lab, "node2/web2"), "tcp dst port 8080 and tcp[tcpflags] & tcp-syn != 0", 1)
    for _ in range(8):
        got = curl(lab, outside, f"http://{node3}:30080/")
        assert got in ("node1/web1", "node2/web2"), got
        if got == "node2/web2":
            break
    seen = captured(web2)
    assert f"{OUTSIDE}." not in seen and " > " in seen, seen
    source = seen.split(" IP ")[1].split(" > ")[0].rsplit(".", 1)[0]
    assert source in probes.node_addresses(lab.node("node3")), seen
    # a pod's ping to the outside host arrives from its node's address (tcpdump on the outside host)
    at_outside = capture(outside, "icmp[icmptype] == icmp-echo", 1)
    run_in(ns_of(lab, "node2/web2"), "ping", "-c2", "-W1", OUTSIDE)
    assert f"IP {lab.node('node2').ip} > {OUTSIDE}: ICMP echo request" in captured(at_outside)


def test_a_drop_all_forward_hook_changes_no_verdict_on_ebpf_and_breaks_host_gw(make_lab: MakeLab) -> None:
    lab = make_lab(services_doc())
    for node in lab.nodes:
        faults.inject(lab, "forward-drop", (node.name,))
    result = matrix.run(lab)
    assert result.passed, failed(result)
    assert all(faults.dropped(ns_of(lab, n.name)) == 0 for n in lab.nodes)
    gw = make_lab(services_doc("host-gw"))
    for node in gw.nodes:
        faults.inject(gw, "forward-drop", (node.name,))
    broken = matrix.run(gw)
    assert not broken.passed
    assert [s for s in broken.services if not s.ok and s.service == "default/web"]


def test_a_backend_gone_from_the_backends_map_only_drops_what_lands_there(make_lab: MakeLab) -> None:
    lab = make_lab(services_doc())
    node1 = pin(lab, "node1")
    faults.inject(lab, "bpf-backend-del", ("node1", "node2/web2"))
    slots = [e for e in bpf.lb_services(node1) if e.address == "10.96.0.2" and e.slot]
    assert len(slots) == 2 and [e.backend for e in slots].count(None) == 1  # the slot stays, its backend gone
    before = bpf.metrics(node1)["drops: no service backend"]
    exchanged = probes.exchange(lab, [d for d in probes.dials(lab, lab.services)
                                      if d.src == "node1/client" and d.service.spec.name == "web" and d.via is None], 24)
    answers = [probes.parse_answer(r.data) for r in exchanged.replies]
    assert {a.endpoint for a in answers if a} == {"node1/web1"} and None in answers  # some dropped
    assert bpf.metrics(node1)["drops: no service backend"] > before
    # node2's maps are untouched: its clients still reach both
    assert all(e.backend is not None for e in bpf.lb_services(pin(lab, "node2")) if e.slot)
    assert "bpf-backend-del" in faults.recorded(lab.name)[0].describe()
    faults.heal(lab)
    assert all(e.backend is not None for e in bpf.lb_services(node1) if e.slot)
    assert matrix.run(lab).passed


def test_pod_down_takes_its_backend_out_of_every_nodes_maps_and_heal_puts_it_back(make_lab: MakeLab) -> None:
    lab = make_lab(services_doc())
    web2 = str(next(p.ip for p in lab.pods if p.id == "node2/web2"))
    faults.inject(lab, "pod-down", ("node2/web2",))
    for node in lab.nodes:
        entries = bpf.lb_services(pin(lab, node.name))
        assert not [e for e in entries if e.backend and e.backend[0] == web2]
        assert next(e.count for e in entries if e.address == "10.96.0.2" and e.slot == 0) == 1
    faults.heal(lab)
    for node in lab.nodes:
        assert [e for e in bpf.lb_services(pin(lab, node.name)) if e.backend and e.backend[0] == web2]
