"""explain and trace on an ebpf lab with a NetworkPolicy, against the real kernel: explain reads
each endpoint's identity and its policy map (cilium_policy_v2_<id>) back and prints them as
`cilium bpf policy get` does; trace names the identity the programs look up and the entry that
allows the packet, or the entry the map lacks where it is dropped, and the real probe, the
programs' counter and their drop event agree.

trace has no port option: it judges ICMP (the echo its probe sends). x/a takes x/b on TCP 80
only, so an echo from x/b is dropped as well as one from x/c, while x/b's TCP connection to port
80, which the map's entry for x/b's identity allows, gets through."""

from __future__ import annotations

import io
import socket
from typing import Any, Callable

import pytest
from helpers import ns_of, run_in
from rich.console import Console

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.dataplanes import ebpf_policy
from cni_lab.kernel import bpf, netns
from cni_lab.kernel.bpf import PolicyRow
from cni_lab.lesson import explain, policy_lookup, trace
from cni_lab.report import cilium_view, explain_view, trace_view

MakeLab = Callable[..., Lab]
A_FROM_B_ON_80 = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "a-from-b", "namespace": "x"},
                  "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                        "ports": [{"protocol": "TCP", "port": 80}]}]}}
DROP_POLICY = "dropped (DROP_POLICY, counted in cilium_metrics)"


def doc(routing: str) -> dict[str, Any]:
    return {"dataplane": "ebpf", "ebpf": {"routing": routing}, "namespaces": {"x": {}},
            "nodes": [{"name": "node1", "pods": [{"name": "a", "namespace": "x", "labels": {"pod": "a"}},
                                                 {"name": "b", "namespace": "x", "labels": {"pod": "b"}}]},
                      {"name": "node2", "pods": [{"name": "c", "namespace": "x", "labels": {"pod": "c"}}]}],
            "policies": [A_FROM_B_ON_80]}


def text(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=400, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("routing", ["tunnel", "native"])
def test_explain_and_trace_say_what_the_policy_maps_hold(make_lab: MakeLab, routing: str) -> None:
    lab = make_lab(doc(routing))
    ids = ebpf_policy.identities(lab)
    a, b, c = ids["node1/x/a"], ids["node1/x/b"], ids["node2/x/c"]
    ip = {p.id: p.ip for p in lab.pods}

    # explain node1: x/a is endpoint 1, its identity from its labels, its map as the kernel holds it
    (nf,) = explain.read(lab, "node1")
    assert nf.bpf is not None and nf.bpf.error == ""
    endpoint = next(e for e in nf.bpf.endpoints if e.ip == str(ip["node1/x/a"]))
    assert (endpoint.lxc_id, endpoint.identity) == (1, a)
    rows = nf.bpf.policy[1]
    assert sorted(rows, key=lambda r: (r.egress, r.identity)) == [
        PolicyRow(False, 1, 0, 0, 0, False), PolicyRow(False, b, 6, 80, 24, False), PolicyRow(True, 0, 0, 0, 0, False)]
    labels = ebpf_policy.labels_by_identity(lab)
    printed = cilium_view.policy_get(rows, labels)
    assert printed == [
        "POLICY   DIRECTION   LABELS (source:key[=value])         PORT/PROTO   PROXY PORT   AUTH TYPE   BYTES   PACKETS   PREFIX",
        "Allow    Ingress     reserved:host                       ANY          NONE         disabled    -       -         0",
        "Allow    Ingress     k8s:io.kubernetes.pod.namespace=x   80/TCP       NONE         disabled    -       -         24",
        "                     k8s:pod=b",
        "Allow    Egress      ANY                                 ANY          NONE         disabled    -       -         0",
    ]
    shown = text(explain_view.view(lab, [nf]))
    assert f"endpoint 1 (pod node1/x/a): identity {a} (k8s:io.kubernetes.pod.namespace=x, k8s:pod=a)" in shown
    assert "cilium bpf policy get 1  (cilium_policy_v2_00001" in shown
    assert all(line in shown for line in printed)
    entry = next(e for e in explain_view.to_json(lab, [nf])["nodes"][0]["bpf"]["endpoints"] if e["pod"] == "node1/x/a")
    assert (entry["id"], entry["identity"], entry["labels"]) == (1, a, ["k8s:io.kubernetes.pod.namespace=x", "k8s:pod=a"])
    assert [(p["policy"], p["direction"], p["labels"], p["portProto"]) for p in entry["policy"]] == [
        ("Allow", "Ingress", ["reserved:host"], "ANY"),
        ("Allow", "Ingress", ["k8s:io.kubernetes.pod.namespace=x", "k8s:pod=b"], "80/TCP"),
        ("Allow", "Egress", ["ANY"], "ANY")]

    # node2/x/c → node1/x/a: dropped at node1, where a's map has no entry for c's identity
    pin = names.bpf_node_dir(lab.name, "node1")
    bpf.events(pin)  # what came before
    denied = trace.trace(lab, "node2/x/c", "node1/x/a")
    last = denied.there.hops[-1]
    assert denied.outcome == "dropped" and last.where == "node1" and last.action == "drop"
    assert last.reason == f"no entry in cilium_policy_v2_00001 allows identity {c} on ICMP (Ingress): {DROP_POLICY}"
    assert f"identity {c} (k8s:io.kubernetes.pod.namespace=x, k8s:pod=c)" in (last.bpf or "")
    assert ("VNI" in (last.bpf or "")) == (routing == "tunnel")  # the sender's identity travels in the VNI
    before = trace.bpf_counters(lab)
    verdict = trace.verify(lab, denied)
    assert verdict in ("timeout", "unreachable") and trace.agrees(denied, verdict)
    assert trace.counters_moved(before, trace.bpf_counters(lab))["node1"].get("drops: policy denied", 0) >= 1
    assert any(e.type == "drop" and e.reason == 133 and e.endpoint == 1 and e.src_identity == c for e in bpf.events(pin))
    assert f"no entry in cilium_policy_v2_00001 allows identity {c} on ICMP (Ingress)" in trace_view.summary(denied)

    # node1/x/b → node1/x/a: b's identity has an entry, for 80/TCP: the echo is dropped, the connection is not
    echo = trace.trace(lab, "node1/x/b", "node1/x/a")
    assert echo.outcome == "dropped" and echo.there.hops[-1].where == "node1"
    assert echo.there.hops[-1].reason == f"no entry in cilium_policy_v2_00001 allows identity {b} on ICMP (Ingress): {DROP_POLICY}"
    assert policy_lookup.verdict("cilium_policy_v2_00001", rows, False, b, 6, 80) == (
        True, f"allowed by cilium_policy_v2_00001: Allow Ingress {b} 80/TCP")
    server = netns.open_socket(ns_of(lab, "node1/x/a"), socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((str(ip["node1/x/a"]), 80))
    server.listen(8)

    def connects(src: str) -> bool:
        return run_in(ns_of(lab, src), "python3", "-c", "import socket; s = socket.socket(); s.settimeout(1); "
                      f"s.connect(('{ip['node1/x/a']}', 80))").returncode == 0

    try:
        assert connects("node1/x/b") and not connects("node2/x/c")
    finally:
        server.close()

    # node1/x/a → node1/x/b: b is not isolated, a's egress is open; both entries named, the reply tracked
    allowed = trace.trace(lab, "node1/x/a", "node1/x/b")
    assert allowed.outcome == "ok"
    hop = next(h.bpf for h in allowed.there.hops if h.bpf)
    assert hop is not None and "allowed by cilium_policy_v2_00001: Allow Egress ANY ANY" in hop
    assert f"ipcache: {ip['node1/x/a']} → identity {a} " in hop
    assert "allowed by cilium_policy_v2_00002: Allow Ingress ANY ANY" in hop
    assert allowed.back is not None and any("(CT_REPLY), no policy lookup" in (h.bpf or "") for h in allowed.back.hops)
    assert trace.verify(lab, allowed) == "ok"
