"""ClusterIP Services as kube-proxy's nftables mode makes them: load spread over the endpoints,
the client's address kept, hairpin masqueraded, on the data planes that have Services."""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in

from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import netns

MakeLab = Callable[..., Lab]


def doc(dataplane: str) -> dict[str, Any]:
    return {"dataplane": dataplane,
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}],
            "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}]}


def serve(lab: Lab, pods: list[str], stop: threading.Event) -> list[socket.socket]:
    """A TCP server on 8080 in each endpoint pod that answers with its name and the peer it saw."""
    socks = []
    for pod in pods:
        s = netns.open_socket(ns_of(lab, pod), socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 8080))
        s.listen(32)
        s.settimeout(0.2)
        socks.append(s)

        def loop(sock: socket.socket = s, name: str = pod) -> None:
            while not stop.is_set():
                try:
                    conn, peer = sock.accept()
                except OSError:
                    continue
                conn.sendall(f"{name}|{peer[0]}".encode())
                conn.close()

        threading.Thread(target=loop, daemon=True).start()
    return socks


def ask(lab: Lab, src: str, times: int) -> list[tuple[str, str]]:
    code = ("import socket\n"
            f"for _ in range({times}):\n"
            "    s = socket.create_connection(('10.96.0.2', 80), timeout=2); print(s.recv(200).decode())\n")
    out = run_in(ns_of(lab, src), "python3", "-c", code, check=True).stdout.split()
    return [tuple(line.split("|")) for line in out]  # type: ignore[misc]


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bgp", "cni"])
def test_a_cluster_ip_spreads_over_its_endpoints_and_keeps_the_clients_address(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(doc(dataplane))
    pods = {p.id: p for p in lab.pods}
    stop = threading.Event()
    socks = serve(lab, ["node1/web1", "node2/web2"], stop)
    try:
        answers = ask(lab, "node1/client", 30)
        assert {who for who, _ in answers} == {"node1/web1", "node2/web2"}  # both endpoints, at random
        assert {seen for _, seen in answers} == {str(pods["node1/client"].ip)}  # no SNAT
        hairpin = ask(lab, "node1/web1", 20)
        itself = {seen for who, seen in hairpin if who == "node1/web1"}
        assert itself and str(pods["node1/web1"].ip) not in itself  # reaching itself: masqueraded by the node
        assert {seen for who, seen in hairpin if who == "node2/web2"} == {str(pods["node1/web1"].ip)}
    finally:
        stop.set()
        for s in socks:
            s.close()
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "ip", "kube-proxy", check=True).stdout
    assert "10.96.0.2 . tcp . 80 : goto service-" in ruleset and "numgen random mod 2 vmap" in ruleset
    assert "dnat to 10.244." in ruleset and "masquerade fully-random" in ruleset


def test_status_lists_services_and_ebpf_refuses_them(make_lab: MakeLab) -> None:
    import json
    import subprocess
    import sys

    lab = make_lab(doc("host-gw"))
    status = json.loads(subprocess.run([sys.executable, "-m", "cni_lab", "status", lab.name, "--json"],
                                       capture_output=True, text=True).stdout)
    (svc,) = status["services"]
    assert svc["clusterIP"] == "10.96.0.2" and len(svc["endpoints"]) == 2
    assert svc["ports"] == [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": None}]
    with pytest.raises(LabError, match="dataplane ebpf does not load-balance Services yet"):
        make_lab(doc("ebpf"))


def test_endpoints_follow_pod_down_and_heal(make_lab: MakeLab) -> None:
    from cni_lab import faults

    lab = make_lab(doc("host-gw"))
    faults.inject(lab, "pod-down", ("node2/web2",))
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "ip", "kube-proxy", check=True).stdout
    web2 = next(p for p in lab.pods if p.id == "node2/web2")
    assert f"dnat to {web2.ip}:8080" not in ruleset and "numgen random mod 1" in ruleset
    stop = threading.Event()
    socks = serve(lab, ["node1/web1"], stop)
    try:
        assert {who for who, _ in ask(lab, "node1/client", 10)} == {"node1/web1"}  # only the pod that is up
    finally:
        stop.set()
        for s in socks:
            s.close()
    faults.heal(lab)
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "ip", "kube-proxy", check=True).stdout
    assert f"dnat to {web2.ip}:8080" in ruleset and "numgen random mod 2" in ruleset


@pytest.mark.parametrize("dataplane", ["host-gw", "bgp"])
def test_check_proves_pod_to_service(make_lab: MakeLab, dataplane: str) -> None:
    from cni_lab.probe import matrix

    lab = make_lab(doc(dataplane))
    result = matrix.run(lab)
    assert result.passed, [(s.src, s.problem) for s in result.services if not s.ok]
    assert {s.src for s in result.services} == {"node1/web1", "node1/client", "node2/web2"}
    answered = {who for s in result.services for who, _ in s.answers}
    assert answered == {"node1/web1", "node2/web2"}
    client = next(s for s in result.services if s.src == "node1/client")
    assert {seen for _, seen in client.answers} == {str(next(p.ip for p in lab.pods if p.id == "node1/client"))}


def nodeport_doc(dataplane: str) -> dict[str, Any]:
    """web (Cluster) has endpoints on both nodes; solo (Local) only on node1; node3 has none."""
    return {"dataplane": dataplane, "outside": {},
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]},
                      {"name": "node3", "pods": ["idle"]}],
            "services": [{"name": "web", "type": "NodePort", "selector": {"app": "web"},
                          "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]},
                         {"name": "solo", "type": "NodePort", "externalTrafficPolicy": "Local", "pods": ["node1/web1"],
                          "ports": [{"port": 81, "targetPort": 8080, "nodePort": 30081}]}]}


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bgp", "cni"])
def test_outside_to_node_port_with_both_traffic_policies(make_lab: MakeLab, dataplane: str) -> None:
    from cni_lab.probe import matrix, service_probes as probes

    lab = make_lab(nodeport_doc(dataplane))
    result = matrix.run(lab)
    assert result.passed, [(s.src, s.via, s.problem) for s in result.services if not s.ok]
    nodeport = {(s.service, s.via): s for s in result.services if s.kind == "nodePort"}
    assert set(nodeport) == {(svc, n) for svc in ("default/web", "default/solo") for n in ("node1", "node2", "node3")}
    for node in ("node1", "node2", "node3"):  # Cluster: every node answers, masqueraded to its own address
        cluster = nodeport[("default/web", node)]
        assert len(cluster.answers) == cluster.tries == probes.TRIES
        assert {seen for _, seen in cluster.answers} <= probes.node_addresses(lab.node(node))
    outside = str(lab.scenario.outside_ip)
    local = nodeport[("default/solo", "node1")]  # Local: the client's address kept
    assert {who for who, _ in local.answers} == {"node1/web1"} and {seen for _, seen in local.answers} == {outside}
    assert nodeport[("default/solo", "node2")].answers == () and nodeport[("default/solo", "node3")].answers == ()
    dropped = run_in(ns_of(lab, "node2"), "nft", "list", "map", "ip", "kube-proxy", "no-endpoint-nodeports", check=True).stdout
    assert "tcp . 30081 : drop" in dropped
    # pod ↔ pod and node ↔ pod verdicts are untouched by Services and masquerade
    inside = [r for one in result.by_family for r in one.results
              if r.pair.rule in ("pod-pod-same-node", "pod-pod-cross-node", "node-pod", "pod-node")]
    assert inside and all(r.met and r.verdict == "ok" for r in inside)


def test_down_leaves_no_kube_proxy_table_and_the_root_namespace_unchanged(make_lab: MakeLab) -> None:
    import subprocess

    from cni_lab import lifecycle
    from helpers import root_snapshot

    before = root_snapshot()
    lab = make_lab(nodeport_doc("host-gw"))
    lifecycle.down(lab.name)
    assert root_snapshot() == before
    assert "kube-proxy" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"cnilab-{lab.name}." not in leftovers and f"cnilab-{lab.name} " not in leftovers


def test_explain_trace_and_graph_show_nat_where_it_happens(make_lab: MakeLab) -> None:
    """explain reads kube-proxy's and flannel's tables back in words; trace to a ClusterIP goes
    through the DNAT to the endpoint the node's conntrack entry names; graph draws the Services."""
    from cni_lab import faults, plan
    from cni_lab.lesson import explain, service_trace
    from cni_lab.report import topology, trace_view

    lab = make_lab(nodeport_doc("host-gw"))
    facts = {nf.name: nf for nf in explain.read(lab)}
    one, two = facts["node1"].nat, facts["node2"].nat
    assert one is not None and two is not None and one.masquerade_table == "ip flannel-ipv4"
    assert any("masquerade" in rule and "leaves with the node's address" in words for _, rule, words in one.masquerade)
    assert any(w.startswith("NodePort 192.168.1.2:30081/tcp (default/solo) → only this node's endpoints: 10.244.0.2:8080")
               for w in one.services), one.services
    assert any(w.startswith("NodePort 192.168.1.3:30081/tcp (default/solo) → dropped here") for w in two.services)
    assert any("one of 10.244.0.2:8080 (node1/web1), 10.244.1.2:8080 (node2/web2)" in w for w in one.services)

    svc, port = service_trace.parse_destination(lab, "10.96.0.2:80") or (None, None)
    assert svc is not None and port is not None
    seen_endpoints = set()
    for _ in range(12):
        t = service_trace.trace(lab, "node1/client", svc, port)
        assert t.outcome == "ok", trace_view.service_summary(t)
        assert t.dnat_at == "node1" and t.connection is not None and t.connection.reply_dst == "10.244.0.3"
        assert t.onward is not None and t.onward.delivered_to == t.answered_by
        seen_endpoints.add(t.answered_by)
    assert seen_endpoints == {"node1/web1", "node2/web2"}  # conntrack names whichever numgen picked
    solo, solo_port = service_trace.parse_destination(lab, "10.96.0.3") or (None, None)
    assert solo is not None and solo_port is not None
    hairpin = service_trace.trace(lab, "node1/web1", solo, solo_port)
    assert hairpin.outcome == "ok" and hairpin.connection is not None
    assert hairpin.connection.reply_dst == "10.244.0.1" and hairpin.seen == "10.244.0.1"  # masqueraded to cni0's address

    svg = topology.svg(topology.of_plan(plan.build(lab)))
    assert "Service default/web · ClusterIP 10.96.0.2 · 80/TCP NodePort :30080 (Cluster)" in svg
    assert "outside 198.51.100.10" in svg

    faults.inject(lab, "pod-down", ("node2/web2",))
    words = explain.read(lab, "node1")[0].nat
    assert words is not None and not any("node2/web2" in w for w in words.services)
