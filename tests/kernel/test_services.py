"""ClusterIP Services as kube-proxy's nftables mode makes them (and Cilium's kube-proxy
replacement on ebpf): load spread over the endpoints, the client's address kept, hairpin
masqueraded (on ebpf seen from Cilium's 169.254.42.1), on every data plane.
The labs here run without cluster DNS (`dns: false`): these tests count Services, probes and
endpoints; kube-dns on every data plane is test_dns.py's."""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in

from cni_lab import names
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import netns

MakeLab = Callable[..., Lab]


def doc(dataplane: str) -> dict[str, Any]:
    return {"dataplane": dataplane,
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}],
            "dns": False, "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}]}


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


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bgp", "cni", "ebpf"])
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
        if dataplane == "ebpf":  # or by Cilium's BPF load balancer, to its service loopback address
            assert itself == {"169.254.42.1"}
        assert {seen for who, seen in hairpin if who == "node2/web2"} == {str(pods["node1/web1"].ip)}
    finally:
        stop.set()
        for s in socks:
            s.close()
    if dataplane == "ebpf":  # no kube-proxy: the maps
        assert run_in(ns_of(lab, "node1"), "nft", "list", "ruleset", check=True).stdout.strip() == ""
        return
    ruleset = run_in(ns_of(lab, "node1"), "nft", "list", "table", "ip", "kube-proxy", check=True).stdout
    assert "10.96.0.2 . tcp . 80 : goto service-" in ruleset and "numgen random mod 2 vmap" in ruleset
    assert "dnat to 10.244." in ruleset and "masquerade fully-random" in ruleset


def test_status_lists_services_and_ebpf_refuses_sctp_ones(make_lab: MakeLab) -> None:
    import json
    import subprocess
    import sys

    lab = make_lab(doc("host-gw"))
    status = json.loads(subprocess.run([sys.executable, "-m", "cni_lab", "status", lab.name, "--json"],
                                       capture_output=True, text=True).stdout)
    (svc,) = status["services"]
    assert svc["clusterIP"] == "10.96.0.2" and len(svc["endpoints"]) == 2
    assert svc["ports"] == [{"name": None, "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": None,
                             "endpoints": [f"{ip}:8080" for ip in svc["endpoints"]]}]  # each endpoint's own number
    sctp = doc("ebpf")
    sctp["services"][0]["ports"][0]["protocol"] = "SCTP"
    with pytest.raises(LabError, match="SCTP"):  # the kernel lacks SCTP here, or ebpf refuses it (unit-tested)
        make_lab(sctp)


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


@pytest.mark.parametrize("dataplane", ["host-gw", "bgp", "ebpf"])
def test_check_proves_pod_to_service(make_lab: MakeLab, dataplane: str) -> None:
    from cni_lab.probe import matrix

    lab = make_lab(doc(dataplane))
    result = matrix.run(lab)
    assert result.passed, [(s.src, s.problem) for s in result.services if not s.ok]
    assert {s.src for s in result.services} == {"node1/web1", "node1/client", "node2/web2"}
    answered = {a.endpoint for s in result.services for a in s.answers}
    assert answered == {"node1/web1", "node2/web2"}
    assert {a.port for s in result.services for a in s.answers} == {8080}  # reached on the targetPort
    client = next(s for s in result.services if s.src == "node1/client")
    assert {a.seen for a in client.answers} == {str(next(p.ip for p in lab.pods if p.id == "node1/client"))}


def nodeport_doc(dataplane: str) -> dict[str, Any]:
    """web (Cluster) has endpoints on both nodes; solo (Local) only on node1; node3 has none."""
    return {"dataplane": dataplane, "outside": {},
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]},
                      {"name": "node3", "pods": ["idle"]}],
            "dns": False, "services": [{"name": "web", "type": "NodePort", "selector": {"app": "web"},
                          "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]},
                         {"name": "solo", "type": "NodePort", "externalTrafficPolicy": "Local", "pods": ["node1/web1"],
                          "ports": [{"port": 81, "targetPort": 8080, "nodePort": 30081}]}]}


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bgp", "cni", "ebpf"])
def test_outside_to_node_port_with_both_traffic_policies(make_lab: MakeLab, dataplane: str) -> None:
    from cni_lab.probe import matrix, service_probes as probes

    lab = make_lab(nodeport_doc(dataplane))
    result = matrix.run(lab)
    assert result.passed, [(s.src, s.via, s.problem) for s in result.services if not s.ok]
    nodeport = {(s.service, s.via): s for s in result.services if s.kind == "nodePort"}
    assert set(nodeport) == {(svc, n) for svc in ("default/web", "default/solo") for n in ("node1", "node2", "node3")}
    outside = str(lab.scenario.outside_ip)
    for node in ("node1", "node2", "node3"):  # Cluster: every node answers, masqueraded to its own address
        cluster = nodeport[("default/web", node)]
        assert len(cluster.answers) == cluster.tries == probes.TRIES
        # (Cilium hands an endpoint on the node dialled the packet as it came: no SNAT needed)
        kept = {a.seen for a in cluster.answers if dataplane == "ebpf" and a.endpoint.startswith(f"{node}/")}
        assert kept <= {outside}
        assert {a.seen for a in cluster.answers} - kept <= probes.node_addresses(lab.node(node))
    local = nodeport[("default/solo", "node1")]  # Local: the client's address kept
    assert {a.endpoint for a in local.answers} == {"node1/web1"} and {a.seen for a in local.answers} == {outside}
    assert nodeport[("default/solo", "node2")].answers == () and nodeport[("default/solo", "node3")].answers == ()
    if dataplane == "ebpf":  # node2 and node3 hold the Local frontend with no backend: dropped in BPF
        from cni_lab.kernel import bpf
        frontends = [e for e in bpf.lb_services(names.bpf_node_dir(lab.name, "node2")) if e.port == 30081]
        assert [(e.address, e.slot, e.count) for e in frontends] == [(str(lab.node("node2").ip), 0, 0)]
        assert bpf.metrics(names.bpf_node_dir(lab.name, "node2"))["drops: no service backend"] >= probes.TRIES
        return
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


# -- the corners (#28): multi-port and UDP Services, the port reached, a pod's own server, SCTP --------------

def corners_doc(dataplane: str) -> dict[str, Any]:
    """web: two named TCP ports (80 → 8080, 81 → 9090) and a UDP one (53 → 5353), as a NodePort
    Service with endpoints on both nodes; an outside host dials the NodePorts."""
    return {"dataplane": dataplane, "outside": {},
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}],
            "dns": False, "services": [{"name": "web", "type": "NodePort", "selector": {"app": "web"},
                          "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                                    {"name": "metrics", "port": 81, "targetPort": 9090, "nodePort": 30081},
                                    {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP",
                                     "nodePort": 30053}]}]}


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bgp", "cni", "ebpf"])
def test_each_port_of_a_multi_port_service_and_udp_reach_their_target_ports(make_lab: MakeLab, dataplane: str) -> None:
    from cni_lab.probe import matrix, service_probes as probes

    lab = make_lab(corners_doc(dataplane))
    result = matrix.run(lab)
    assert result.passed, [(s.title, s.src, s.via, s.problem) for s in result.services if not s.ok]
    by_port: dict[tuple[str, str], list[Any]] = {}
    for s in result.services:
        by_port.setdefault((s.port_name, s.kind), []).append(s)
    for name, target in (("http", 8080), ("metrics", 9090), ("dns", 5353)):
        for kind in ("clusterIP", "nodePort"):
            found = by_port[(name, kind)]
            assert {a.port for s in found for a in s.answers} == {target}, (name, kind)  # each port its own chain
            assert sum(len(s.answers) for s in found) == sum(s.tries for s in found), (name, kind)  # every try answered
    udp = by_port[("dns", "clusterIP")]
    assert {s.protocol for s in udp} == {"UDP"}
    assert {a.endpoint for s in udp for a in s.answers} == {"node1/web1", "node2/web2"}
    client = next(s for s in udp if s.src == "node1/client")
    assert {a.seen for a in client.answers} == {str(next(p.ip for p in lab.pods if p.id == "node1/client"))}  # no SNAT
    for s in by_port[("dns", "nodePort")]:  # Cluster: masqueraded to the node dialled (Cilium: unless local)
        elsewhere = {a.seen for a in s.answers if not (dataplane == "ebpf" and a.endpoint.startswith(f"{s.via}/"))}
        assert elsewhere <= probes.node_addresses(lab.node(s.via))
    if dataplane == "ebpf":
        return
    table = run_in(ns_of(lab, "node1"), "nft", "list", "table", "ip", "kube-proxy", check=True).stdout
    for chain in ("default/web/tcp/http", "default/web/tcp/metrics", "default/web/udp/dns"):
        assert f"-{chain} {{" in table, chain
    assert "udp . 53 : goto service-" in table and "meta l4proto udp dnat to" in table


def test_every_udp_try_is_a_new_conntrack_entry_so_the_dnat_picks_again(make_lab: MakeLab) -> None:
    from cni_lab.kernel import readback
    from cni_lab.probe import service_probes as probes

    lab = make_lab(corners_doc("host-gw"))
    dial = next(d for d in probes.dials(lab, lab.services)
                if d.src == "node1/client" and d.port.name == "dns" and d.via is None)
    exchanged = probes.exchange(lab, [dial], 20)
    answers = [probes.parse_answer(r.data) for r in exchanged.replies]
    assert all(answers) and len({r.local_port for r in exchanged.replies}) == 20  # a fresh source port each
    assert {a.endpoint for a in answers if a} == {"node1/web1", "node2/web2"}  # one entry would pin all 20 to one
    client = str(next(p.ip for p in lab.pods if p.id == "node1/client"))
    entries = [c for c in readback.connections(ns_of(lab, "node1"))
               if c.src == client and c.dst == dial.address and c.dport == 53]
    assert len(entries) == 20 and len({c.reply_src for c in entries}) == 2


def test_check_fails_a_dnat_to_the_wrong_target_port(make_lab: MakeLab) -> None:
    """What shared chains did before ports had names: ClusterIP:80 DNATed to the other port's 9090."""
    from cni_lab import names
    from cni_lab.kernel import edit
    from cni_lab.probe import matrix
    from cni_lab.rulesets import kubeproxy

    lab = make_lab(corners_doc("host-gw"))
    for node in lab.nodes:  # every endpoint chain of port http sends to metrics' targetPort
        edit.nft_apply(names.node_netns(lab.name, node.name),
                       kubeproxy.ruleset(lab, lab.services, node).replace(":8080", ":9090"))
    result = matrix.run(lab)
    assert not result.passed
    http = [s for s in result.services if s.port_name == "http"]
    assert http and all("was reached on port 9090, not default/web:http's targetPort 8080" in s.problem for s in http), \
        [s.problem for s in http]
    assert all(s.ok for s in result.services if s.port_name != "http")


def test_a_server_of_the_pods_own_on_the_target_port_is_probed_through(make_lab: MakeLab) -> None:
    """A learner's own server on 8080 in node1/web1 (a plain listening socket that never answers):
    check no longer dies with `OSError: Address already in use`, counts what it accepts as reached
    and says the endpoint's identity is not confirmed."""
    from rich.console import Console

    from cni_lab.probe import matrix
    from cni_lab.report import terminal

    lab = make_lab(doc("host-gw"))
    own = netns.open_socket(ns_of(lab, "node1/web1"), socket.AF_INET, socket.SOCK_STREAM)
    try:
        own.bind(("0.0.0.0", 8080))
        own.listen(64)
        result = matrix.run(lab)
    finally:
        own.close()
    web = list(result.services)
    assert result.passed, [(s.src, s.problem) for s in web if not s.ok]
    assert {s.busy for s in web} == {("node1/web1 8080/TCP",)}
    assert {a.endpoint for s in web for a in s.answers} == {"node2/web2"}  # web1 cannot say who it is
    assert sum(s.unconfirmed for s in web) > 0 and all(len(s.answers) + s.unconfirmed == s.tries for s in web)
    console = Console(width=240, record=True)
    for part in terminal.services_view(result):
        console.print(part)
    assert "note: node1/web1 has a server of its own on 8080/TCP: the connections it accepted count as reached" \
        in console.export_text()


def named_doc(dataplane: str) -> dict[str, Any]:
    """web1 serves http on 8080, web2 on 9090, web3 (app: web too) declares no http; one
    NodePort Service sends targetPort http; dns (UDP) only web1 declares."""
    web = {"app": "web"}
    return {"dataplane": dataplane, "outside": {},
            "nodes": [{"name": "node1", "pods": [
                          {"name": "web1", "labels": web, "ports": [{"name": "http", "containerPort": 8080},
                                                                    {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]},
                          "client"]},
                      {"name": "node2", "pods": [
                          {"name": "web2", "labels": web, "ports": [{"name": "http", "containerPort": 9090}]},
                          {"name": "web3", "labels": web, "ports": [{"name": "metrics", "containerPort": 8080}]}]}],
            "dns": False, "services": [{"name": "web", "type": "NodePort", "selector": web,
                          "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                                    {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP", "nodePort": 30053}]}]}


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bgp", "cni"])
def test_a_named_target_port_reaches_each_endpoint_on_its_own_number(make_lab: MakeLab, dataplane: str) -> None:
    """FindPort per endpoint pod: ClusterIP:80 and the NodePort reach web1 on 8080 and web2 on
    9090, never web3 (no http: no endpoint of that port); dns reaches web1 only."""
    from cni_lab.probe import matrix

    lab = make_lab(named_doc(dataplane))
    result = matrix.run(lab)
    assert result.passed, [(s.title, s.src, s.via, s.problem) for s in result.services if not s.ok]
    http = [s for s in result.services if s.port_name == "http"]
    assert http and {s.target_port for s in http} == {"http"}
    assert {(a.endpoint, a.port) for s in http for a in s.answers} == {("node1/web1", 8080), ("node2/web2", 9090)}
    assert sum(len(s.answers) for s in http) == sum(s.tries for s in http)  # every try answered
    dns = [s for s in result.services if s.port_name == "dns"]
    assert {(a.endpoint, a.port) for s in dns for a in s.answers} == {("node1/web1", 5353)}
    table = run_in(ns_of(lab, "node2"), "nft", "list", "table", "ip", "kube-proxy", check=True).stdout
    pods = {p.id: p for p in lab.pods}
    assert f"dnat to {pods['node1/web1'].ip}:8080" in table and f"dnat to {pods['node2/web2'].ip}:9090" in table
    assert str(pods["node2/web3"].ip) not in table


def test_check_fails_an_endpoint_reached_on_another_pods_number(make_lab: MakeLab) -> None:
    """A kube-proxy that DNATed every endpoint to one number (the first endpoint's) would send
    web2's share to 8080, where web2 serves nothing (its responder answers on its own 9090): those
    connections are refused, and check fails the pairs (each pod's 4 tries all land on web1 with
    odds of 1 in 16, so some pod sees it)."""
    from cni_lab import names
    from cni_lab.kernel import edit
    from cni_lab.probe import matrix
    from cni_lab.rulesets import kubeproxy

    lab = make_lab(named_doc("host-gw"))
    for node in lab.nodes:
        edit.nft_apply(names.node_netns(lab.name, node.name),
                       kubeproxy.ruleset(lab, lab.services, node).replace(":9090", ":8080"))
    result = matrix.run(lab)
    assert not result.passed
    wrong = [s.problem for s in result.services if s.port_name == "http" and s.kind == "clusterIP" and not s.ok]
    assert wrong and all(p.endswith("connections got no answer") for p in wrong), wrong
    assert all(s.ok for s in result.services if s.port_name == "dns")


def test_sctp_is_refused_at_up_and_check_where_the_kernel_has_no_sctp_sockets(make_lab: MakeLab) -> None:
    from cni_lab import lifecycle
    from cni_lab.kernel import transports

    if not transports.missing("SCTP"):
        pytest.skip("this kernel has SCTP sockets: nothing to refuse")
    sctp = doc("host-gw")
    sctp["services"][0]["ports"] = [{"port": 80, "targetPort": 8080, "protocol": "SCTP"}]
    before = set(lifecycle.running())
    with pytest.raises(LabError, match=r"services\[0\]\.ports\[0\]\.protocol: SCTP needs the kernel's SCTP sockets "
                                       r"\(CONFIG_IP_SCTP, the sctp module\), which this kernel lacks"):
        make_lab(sctp)
    assert set(lifecycle.running()) == before  # refused before anything was made
    lab = make_lab(doc("host-gw"))
    with pytest.raises(LabError, match="probe port sctp/80: SCTP needs the kernel's SCTP sockets"):
        lifecycle.check(lab.name, ports=("sctp/80",))
