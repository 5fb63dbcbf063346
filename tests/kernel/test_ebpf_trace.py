"""trace to a ClusterIP on ebpf, against the real kernel: no kube-proxy table and no netfilter
conntrack entry, so the trace reads the BPF side: the frontend in cilium_lb4_services_v2 at
cil_from_container, the backend from the CT_SERVICE entry the real connection left, the path on as
pod → pod traces it, the reply's source turned back from cilium_lb4_reverse_nat (or, for a pod
that reached itself, from 169.254.42.1), and what cilium_metrics counted meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Callable

from cni_lab.cluster import Lab
from cni_lab.lesson import service_trace
from cni_lab.lesson.service_trace import BpfServiceTrace
from cni_lab.report import trace_view

MakeLab = Callable[..., Lab]
LB, REV_NAT = "service (lb4 DNAT to a backend)", "reverse NAT (reply from the frontend)"


def doc() -> dict[str, Any]:
    return {"dataplane": "ebpf",
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}],
            "dns": False, "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}]}


def traced(lab: Lab, src: str) -> BpfServiceTrace:
    svc, port = service_trace.parse_destination(lab, "10.96.0.2:80") or (None, None)
    assert svc is not None and port is not None
    t = service_trace.trace(lab, src, svc, port)
    assert isinstance(t, BpfServiceTrace)
    assert t.outcome == "ok", trace_view.bpf_service_summary(t)
    return t


def test_trace_to_a_cluster_ip_reads_the_lookup_the_ct_entry_and_the_reverse_nat(make_lab: MakeLab) -> None:
    lab = make_lab(doc())
    ip = {p.id: str(p.ip) for p in lab.pods}
    client = ip["node1/client"]
    backends = set()
    for _ in range(12):
        t = traced(lab, "node1/client")
        c = t.choice
        # (1) the lookup, at cil_from_container on the client's lxc device
        assert t.lb_at == "node1" and t.device.startswith("lxc") and t.program == "cil_from_container"
        assert t.to_lb.hops[-1].action == "arrive" and t.to_lb.hops[-1].came_in == t.device
        f = c.frontend
        assert f is not None and (f.address, f.port, f.protocol, f.slot, f.count) == ("10.96.0.2", 80, "TCP", 0, 2)
        # (2) the backend: the CT_SERVICE entry of the probe's own tuple names it, and its pod answered
        e = c.service_entry
        assert e is not None and e.tuple.direction == "SVC" and e.tuple.protocol == "TCP"
        assert e.tuple.src == f"{client}:{t.sport}" and e.tuple.dst == "10.96.0.2:80"
        assert c.slot is not None and c.slot.backend_id == e.backend_id and 1 <= c.slot.slot <= 2
        assert t.backend_pod in ("node1/web1", "node2/web2") and c.backend == (ip[t.backend_pod], 8080)
        assert t.answered_by == t.backend_pod and t.seen == client and not c.loopback
        # (3) on to the backend, as pod → pod traces it from the lxc device
        assert t.onward is not None and t.onward.delivered_to == t.backend_pod
        first = t.onward.hops[0]
        assert first.came_in == t.device and first.bpf is not None
        assert first.bpf.startswith(f"cil_from_container on {t.device}: ")
        # (4) the reply: the OUT entry's index, cilium_lb4_reverse_nat's frontend, at delivery to the client
        assert c.out_entry is not None and c.out_entry.tuple.src == f"{client}:{t.sport}"
        assert c.out_entry.tuple.dst == f"{ip[t.backend_pod]}:8080" and not c.out_entry.lb_loopback
        assert t.reverse is not None and t.reverse.index == c.out_entry.rev_nat_index == f.rev_nat_index
        assert t.reverse.frontend == "10.96.0.2:80" and t.reverse.at == "local_delivery"
        assert t.back is not None and t.back.delivered_to == "node1/client"
        assert any(h.bpf and "local_delivery: source " in h.bpf and "cilium_lb4_reverse_nat[" in h.bpf for h in t.back.hops)
        # the programs counted the DNAT and the reverse NAT on the client's node while the probe ran
        assert t.counted["node1"].get(LB, 0) >= 1 and t.counted["node1"].get(REV_NAT, 0) >= 1
        shown = trace_view.bpf_service_summary(t)
        assert f"rewrote 10.96.0.2:80 to {ip[t.backend_pod]}:8080 ({t.backend_pod})" in shown
        assert "cilium_lb4_reverse_nat[" in shown
        backends.add(t.backend_pod)
    assert backends == {"node1/web1", "node2/web2"}  # the CT entries name whichever slot was drawn

    # a pod that reaches itself: SNATed to 169.254.42.1, the reply turned back in lb4_loopback_reply
    for _ in range(24):
        itself = traced(lab, "node1/web1")
        if itself.backend_pod == "node1/web1":
            break
    else:
        raise AssertionError("24 connections from node1/web1 never drew node1/web1")
    c = itself.choice
    assert c.loopback and itself.seen == "169.254.42.1" and itself.answered_by == "node1/web1"
    assert c.out_entry is not None and c.out_entry.lb_loopback
    assert c.out_entry.tuple.src == f"169.254.42.1:{itself.sport}" and c.out_entry.tuple.dst == f"{ip['node1/web1']}:8080"
    assert itself.reverse is not None and itself.reverse.at == "lb4_loopback_reply"
    assert itself.reverse.frontend == "10.96.0.2:80"
    assert itself.back is not None and itself.back.delivered_to == "node1/web1"
    assert any(h.bpf and "lb4_loopback_reply: to 169.254.42.1" in h.bpf for h in itself.back.hops)
    assert itself.counted["node1"].get(REV_NAT, 0) >= 1

    # the CLI: the same facts in --json (the port as `:80`; trace has no --port option)
    done = subprocess.run([sys.executable, "-m", "cni_lab", "trace", lab.name, "node1/client", "10.96.0.2:80", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    out = json.loads(done.stdout)
    assert out["outcome"] == "ok" and out["dnatAt"] == "node1" and out["program"] == "cil_from_container"
    service = out["bpfService"]
    assert service["map"] == "cilium_lb4_services_v2" and service["frontend"] == "10.96.0.2:80/TCP"
    assert service["slots"] == 2 and {b["pod"] for b in service["backends"]} == {"node1/web1", "node2/web2"}
    entry = out["ctEntry"]
    assert entry["map"] == "cilium_ct4_global" and entry["direction"] == "SVC"
    assert entry["src"] == f"{client}:{out['sport']}" and entry["dst"] == "10.96.0.2:80"
    backend = out["backend"]
    assert backend["id"] == entry["backendId"] and backend["pod"] == out["answeredBy"] in ("node1/web1", "node2/web2")
    assert backend["address"] == ip[backend["pod"]] and backend["port"] == 8080
    assert out["reverseNat"] == {"map": "cilium_lb4_reverse_nat", "index": service["revNatIndex"],
                                 "frontend": "10.96.0.2:80", "at": "local_delivery"}
    assert out["observedSource"] == client and out["loopback"] is None and out["why"] is None
    assert out["bpfCounters"]["node1"][LB] >= 1 and out["bpfCounters"]["node1"][REV_NAT] >= 1
    assert out["onward"][-1]["at"] == backend["pod"] and out["back"][-1]["at"] == "node1/client"
