"""trace to a ClusterIP on a data plane whose programs balance Services (ebpf): which backend
cil_from_container gave a connection, read from hand-made rows of its maps (bpf.LbEntry as
lb_services reads cilium_lb4_services_v2 joined with _backends_v3, bpf.CtEntry as conntrack reads
cilium_ct4_global), and how the view and `--json` say it. No kernel needed."""

from __future__ import annotations

import dataclasses
import io
from ipaddress import ip_address

import pytest
from rich.console import Console, RenderableType

from cni_lab import catalog
from cni_lab.cluster import Lab, Service
from cni_lab.errors import LabError
from cni_lab.kernel import bpf
from cni_lab.lesson import service_trace
from cni_lab.lesson.service_trace import BackendChoice, BpfServiceTrace, ReverseNat, choose, reverse_nat_of
from cni_lab.lesson.trace import Hop, Leg
from cni_lab.model import ServicePort
from cni_lab.probe.pairs import Endpoint, endpoints
from cni_lab.report import trace_view

FRONTEND = "10.96.0.2"
CLIENT, WEB1, WEB2 = "10.244.0.3", "10.244.0.2", "10.244.1.2"


def lb(slot: int, backend_id: int = 0, backend: tuple[str, int] | None = None, *, address: str = FRONTEND,
       port: int = 80, protocol: str = "TCP", count: int = 2, rev_nat: int = 1) -> bpf.LbEntry:
    return bpf.LbEntry(address, port, protocol, slot, count if slot == 0 else 0, rev_nat, 0, backend_id, backend)


def ct(direction: str, src: str, dst: str, backend_id: int = 0, rev_nat: int = 1, *, protocol: str = "TCP",
       loopback: bool = False) -> bpf.CtEntry:
    return bpf.CtEntry(bpf.Tuple(protocol, direction, src, dst), 21600, 3, 180, rev_nat, backend_id, loopback, False)


# cilium_lb4_services_v2 as a node of the ebpf-svc scenario holds it: web's ClusterIP (two slots),
# its NodePort on the node's address, and another Service's frontend on the same port number
SERVICES = [
    lb(0), lb(1, 1, (WEB1, 8080)), lb(2, 2, (WEB2, 8080)),
    lb(0, address="192.168.1.2", port=30080, rev_nat=3), lb(1, 1, (WEB1, 8080), address="192.168.1.2", port=30080, rev_nat=3),
    lb(2, 2, (WEB2, 8080), address="192.168.1.2", port=30080, rev_nat=3),
    lb(0, address="10.96.0.3", count=1, rev_nat=2), lb(1, 3, ("10.244.1.3", 8080), address="10.96.0.3", rev_nat=2),
]
# cilium_ct4_global after three connections from the client (40000 → web2, 40001 → web1) and
# one from web1 that drew itself (41000, SNATed to the service loopback address)
CONNTRACK = [
    ct("SVC", f"{CLIENT}:40000", f"{FRONTEND}:80", 2), ct("OUT", f"{CLIENT}:40000", f"{WEB2}:8080", 2),
    ct("SVC", f"{CLIENT}:40001", f"{FRONTEND}:80", 1), ct("OUT", f"{CLIENT}:40001", f"{WEB1}:8080", 1),
    ct("SVC", f"{WEB1}:41000", f"{FRONTEND}:80", 1), ct("OUT", "169.254.42.1:41000", f"{WEB1}:8080", 1, loopback=True),
    ct("SVC", f"{CLIENT}:40000", f"{FRONTEND}:80", 1, protocol="UDP"),  # the same tuple in UDP: another map
    ct("SVC", f"{CLIENT}:40000", "10.96.0.3:80", 3, rev_nat=2),  # the same source port to another frontend
]
REVERSE = {1: (FRONTEND, 80), 2: ("10.96.0.3", 80), 3: ("192.168.1.2", 30080)}


def test_the_probes_source_port_picks_the_service_entry_and_so_the_backend() -> None:
    far = choose(SERVICES, CONNTRACK, CLIENT, 40000, FRONTEND, 80)
    assert far.why == "" and far.frontend == SERVICES[0] and [s.slot for s in far.slots] == [1, 2]
    assert far.service_entry == CONNTRACK[0] and far.slot == SERVICES[2] and far.backend == (WEB2, 8080)
    assert far.out_entry == CONNTRACK[1] and not far.loopback
    near = choose(SERVICES, CONNTRACK, CLIENT, 40001, FRONTEND, 80)
    assert near.backend == (WEB1, 8080) and near.slot is not None and near.slot.slot == 1
    assert near.out_entry == CONNTRACK[3]
    # the same source port to another frontend is another connection
    other = choose(SERVICES, CONNTRACK, CLIENT, 40000, "10.96.0.3", 80)
    assert other.backend == ("10.244.1.3", 8080) and other.frontend is not None and other.frontend.count == 1


def test_a_pod_that_drew_itself_is_found_from_the_service_loopback_address() -> None:
    itself = choose(SERVICES, CONNTRACK, WEB1, 41000, FRONTEND, 80)
    assert itself.loopback and itself.backend == (WEB1, 8080)
    assert itself.out_entry is not None and itself.out_entry.tuple.src == "169.254.42.1:41000"
    assert reverse_nat_of(itself, REVERSE) == ReverseNat(1, f"{FRONTEND}:80", "lb4_loopback_reply")


def test_the_reply_is_turned_back_with_the_out_entrys_index() -> None:
    choice = choose(SERVICES, CONNTRACK, CLIENT, 40000, FRONTEND, 80)
    assert reverse_nat_of(choice, REVERSE) == ReverseNat(1, f"{FRONTEND}:80", "local_delivery")
    assert reverse_nat_of(choice, {}) == ReverseNat(1, None, "local_delivery")  # the index names no entry
    no_out = choose(SERVICES, CONNTRACK[:1], CLIENT, 40000, FRONTEND, 80)
    assert no_out.backend == (WEB2, 8080) and no_out.out_entry is None and reverse_nat_of(no_out, REVERSE) is None


def test_what_is_missing_says_why_no_backend_is_named() -> None:
    gone = choose([e for e in SERVICES if e.address != FRONTEND], CONNTRACK, CLIENT, 40000, FRONTEND, 80)
    assert gone.frontend is None and gone.backend is None
    assert gone.why == f"{FRONTEND}:80/TCP is not in cilium_lb4_services_v2: cil_from_container does not balance it"
    assert choose(SERVICES, CONNTRACK, CLIENT, 40000, FRONTEND, 80, "UDP").why.startswith(f"{FRONTEND}:80/UDP is not in")
    fresh = choose(SERVICES, CONNTRACK, CLIENT, 45000, FRONTEND, 80)
    assert fresh.service_entry is None and fresh.backend is None
    assert fresh.why == f"no CT_SERVICE entry for {CLIENT}:45000 → {FRONTEND}:80/TCP: cil_from_container chose no backend"
    empty = choose([lb(0, count=0)], [], CLIENT, 40000, FRONTEND, 80)
    assert empty.why == f"{FRONTEND}:80/TCP has no backend slot: cil_from_container drops the packet (DROP_NO_SERVICE)"
    # fault bpf-backend-del: a slot names a backend the backends map lost
    lost = [lb(0), lb(1, 1, (WEB1, 8080)), lb(2, 2, None)]
    assert "(slot 2 of 2 names a backend cilium_lb4_backends_v3 lacks" in choose(lost, [], CLIENT, 40000, FRONTEND, 80).why
    stale = choose(lost, CONNTRACK, CLIENT, 40000, FRONTEND, 80)
    assert stale.service_entry == CONNTRACK[0] and stale.backend is None
    assert stale.why.startswith("the CT_SERVICE entry names backend 2 (slot 2), which cilium_lb4_backends_v3 lacks")
    moved = choose([lb(0, count=1), lb(1, 1, (WEB1, 8080))], CONNTRACK, CLIENT, 40000, FRONTEND, 80)
    assert moved.slot is None and "which no slot of 10.96.0.2:80/TCP holds" in moved.why


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=400, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def web(lab: Lab) -> tuple[Service, ServicePort]:
    svc = next(s for s in lab.services if s.spec.name == "web")
    return svc, svc.spec.ports[0]


def pod(lab: Lab, pod_id: str) -> Endpoint:
    return next(e for e in endpoints(lab) if e.id == pod_id)


def made(lab: Lab, sport: int, answered: bool = True) -> BpfServiceTrace:
    """A trace from node1/client as _trace_bpf would return it, from the rows above."""
    svc, port = web(lab)
    client, web2 = pod(lab, "node1/client"), pod(lab, "node2/web2")
    assert str(svc.cluster_ip) == FRONTEND and str(client.ip) == CLIENT and str(web2.ip) == WEB2
    to_lb = Leg(client, svc.cluster_ip, [
        Hop("node1/client", "ns-c", None, "forward", "default via 10.244.0.1 dev eth0", "eth0", "10.244.0.1",
            ["lxc1 (node1): cil_from_container answers the ARP for 10.244.0.1 with lxc1's MAC"]),
        Hop("node1", "ns-1", "lxc1", "arrive")])
    choice = choose(SERVICES, CONNTRACK, CLIENT, sport, FRONTEND, 80)
    onward = Leg(client, ip_address(WEB2), [
        Hop("node1", "ns-1", "lxc1", "forward", out="cilium_vxlan", next_hop="192.168.1.3",
            bpf="cil_from_container on lxc1: 10.244.1.0/24 is behind tunnel endpoint 192.168.1.3 in cilium_ipcache_v2"),
        Hop("node2/web2", "ns-w", "eth0", "deliver", f"local {WEB2}")])
    back = Leg(web2, client.ip, [
        Hop("node1", "ns-1", "cilium_vxlan", "forward", out="lxc1",
            bpf=f"cil_from_overlay on cilium_vxlan: local_delivery: source {WEB2}:8080 → {FRONTEND}:80; then ..."),
        Hop("node1/client", "ns-c", "eth0", "deliver", f"local {CLIENT}")])
    counted = {"node1": {"service (lb4 DNAT to a backend)": 3, "reverse NAT (reply from the frontend)": 3}}
    who, seen = ("node2/web2", CLIENT) if answered else ("", "")
    if choice.backend is None:
        return BpfServiceTrace(client, svc, port, to_lb, "node1", "lxc1", "cil_from_container", sport, choice,
                               "", who, seen, None, None, None, {"node1": {"drops: no service backend": 1}})
    return BpfServiceTrace(client, svc, port, to_lb, "node1", "lxc1", "cil_from_container", sport, choice,
                           "node2/web2", who, seen, onward, back if answered else None,
                           reverse_nat_of(choice, REVERSE), counted)


def test_the_view_and_the_json_say_the_lookup_the_entry_the_backend_and_the_reverse_nat() -> None:
    lab = catalog.load("ebpf-svc")
    t = made(lab, 40000)
    assert t.outcome == "ok"
    said = trace_view.bpf_service_summary(t)
    assert said == (f"cil_from_container on node1 (lxc1) rewrote {FRONTEND}:80 to {WEB2}:8080 (node2/web2): backend 2, "
                    f"slot 2 of 2, as the CT_SERVICE entry for {CLIENT}:40000 holds; the reply's source is turned back "
                    f"to {FRONTEND}:80 in local_delivery (cilium_lb4_reverse_nat[1]); answered by node2/web2, which saw "
                    f"{CLIENT}")
    doc = trace_view.service_to_json(t)  # the kube-proxy entry point hands a BPF trace on
    assert doc == trace_view.bpf_service_to_json(t)
    assert doc["bpfService"] == {
        "map": "cilium_lb4_services_v2", "frontend": f"{FRONTEND}:80/TCP", "slots": 2, "revNatIndex": 1,
        "backends": [{"slot": 1, "backendId": 1, "address": f"{WEB1}:8080", "pod": "node1/web1"},
                     {"slot": 2, "backendId": 2, "address": f"{WEB2}:8080", "pod": "node2/web2"}]}
    assert doc["ctEntry"] == {"map": "cilium_ct4_global", "direction": "SVC", "protocol": "TCP",
                              "src": f"{CLIENT}:40000", "dst": f"{FRONTEND}:80", "backendId": 2, "revNatIndex": 1,
                              "lbLoopback": False, "packets": 3, "bytes": 180}
    assert doc["backend"] == {"map": "cilium_lb4_backends_v3", "id": 2, "slot": 2, "address": WEB2, "port": 8080,
                              "pod": "node2/web2"}
    assert doc["outEntry"]["direction"] == "OUT" and doc["outEntry"]["dst"] == f"{WEB2}:8080"
    assert doc["reverseNat"] == {"map": "cilium_lb4_reverse_nat", "index": 1, "frontend": f"{FRONTEND}:80",
                                 "at": "local_delivery"}
    assert doc["loopback"] is None and doc["why"] is None and doc["sport"] == 40000
    assert doc["dnatAt"] == "node1" and doc["device"] == "lxc1" and doc["program"] == "cil_from_container"
    assert doc["answeredBy"] == "node2/web2" and doc["outcome"] == "ok" and doc["summary"] == said
    assert [h["action"] for h in doc["toDnat"]] == ["forward", "arrive"] and doc["back"][-1]["at"] == "node1/client"
    assert doc["bpfCounters"]["node1"]["reverse NAT (reply from the frontend)"] == 3
    shown = text(trace_view.service_view(t))
    for words in ("2. node1 (in on lxc1): arrives at cil_from_container (tc ingress of lxc1)",
                  f"lb4_lookup_service: {FRONTEND}:80/TCP in cilium_lb4_services_v2 (slot 0) → 2 backend slots, "
                  "rev_nat_index 1",
                  f"slot 1 → backend 1 {WEB1}:8080 (node1/web1); slot 2 → backend 2 {WEB2}:8080 (node2/web2)",
                  f"lb4_select: cilium_ct4_global SVC {CLIENT}:40000 → {FRONTEND}:80 holds backend 2",
                  f"DNAT → {WEB2}:8080 (node2/web2), cilium_lb4_backends_v3[2]",
                  f"for the reply: cilium_ct4_global OUT {CLIENT}:40000 → {WEB2}:8080 holds rev_nat_index 1",
                  f"on, rewritten: {CLIENT} → {WEB2}:8080 (node2/web2)",
                  f"reply {WEB2}:8080 → {CLIENT} (its source turned back to {FRONTEND}:80 on node1)",
                  f"cilium_lb4_reverse_nat[1] = {FRONTEND}:80: in local_delivery on node1, the reply's source "
                  f"{WEB2}:8080 becomes {FRONTEND}:80",
                  f"result: {said}",
                  "cilium_metrics on node1 during the probe: service (lb4 DNAT to a backend) +3, reverse NAT (reply "
                  "from the frontend) +3"):
        assert words in shown, words
    assert "kube-proxy's table" not in shown


def test_a_pod_that_reached_itself_and_what_went_wrong_are_said() -> None:
    lab = catalog.load("ebpf-svc")
    svc, port = web(lab)
    web1 = pod(lab, "node1/web1")
    choice = choose(SERVICES, CONNTRACK, WEB1, 41000, FRONTEND, 80)
    loop = BpfServiceTrace(web1, svc, port, Leg(web1, svc.cluster_ip, []), "node1", "lxc0", "cil_from_container",
                           41000, choice, "node1/web1", "node1/web1", "169.254.42.1",
                           Leg(web1, web1.ip, [Hop("node1/web1", "ns", "eth0", "deliver")]),
                           Leg(web1, ip_address("169.254.42.1"), [Hop("node1/web1", "ns", "eth0", "deliver")]),
                           reverse_nat_of(choice, REVERSE), {})
    assert loop.outcome == "ok"
    said = trace_view.bpf_service_summary(loop)
    assert "; the source was SNATed to 169.254.42.1 (the pod reached itself); the reply's source is turned back to " \
           f"{FRONTEND}:80 in lb4_loopback_reply" in said
    doc = trace_view.bpf_service_to_json(loop)
    assert doc["loopback"] == "169.254.42.1" and doc["outEntry"]["lbLoopback"]
    assert doc["reverseNat"]["at"] == "lb4_loopback_reply"
    shown = text(trace_view.bpf_service_view(loop))
    assert "SNAT → 169.254.42.1: the backend is the client itself" in shown
    assert f"reply {WEB1}:8080 → 169.254.42.1, back to {WEB1} at lxc0" in shown
    lost = dataclasses.replace(loop, reverse=reverse_nat_of(choice, {}))  # the index names no entry
    assert "; no reverse NAT for the reply: its source stays the backend's;" in trace_view.bpf_service_summary(lost)
    assert (f"cilium_lb4_reverse_nat[1]: no entry; the reply keeps {WEB1}:8080 as its source, and the client, "
            f"connected to {FRONTEND}:80, does not take it") in text(trace_view.bpf_service_view(lost))

    unanswered = made(lab, 40000, answered=False)
    assert unanswered.outcome == "dropped" and trace_view.bpf_service_summary(unanswered).endswith("but no endpoint answered")
    nothing = made(lab, 45000, answered=False)
    doc = trace_view.bpf_service_to_json(nothing)
    assert doc["ctEntry"] is None and doc["backend"] is None and doc["reverseNat"] is None
    assert doc["why"] == f"no CT_SERVICE entry for {CLIENT}:45000 → {FRONTEND}:80/TCP: cil_from_container chose no backend"
    assert doc["summary"] == f"node1: {doc['why']}" and doc["outcome"] == "dropped"
    assert doc["onward"] is None and doc["bpfCounters"] == {"node1": {"drops: no service backend": 1}}
    shown = text(trace_view.bpf_service_view(nothing))
    assert doc["why"] in shown and "reverse NAT" not in shown and "on, rewritten" not in shown


def test_a_nodes_own_connection_to_a_cluster_ip_is_refused_on_ebpf_before_the_kernel_is_asked() -> None:
    lab = catalog.load("ebpf-svc")
    svc, port = web(lab)
    with pytest.raises(LabError, match="starts at a pod: a node's own connections to a ClusterIP are not balanced"):
        service_trace.trace(lab, "node1", svc, port)


def test_the_words_go_before_what_the_program_did_next() -> None:
    from cni_lab.lesson.service_trace import _said

    hop = Hop("node1", "ns", "cilium_vxlan", "forward", out="lxc1",
              bpf="cil_from_overlay on cilium_vxlan: 10.244.0.3 is in cilium_lxc → bpf_redirect_peer")
    told = _said(hop, "local_delivery: source x → y")
    assert told.bpf == ("cil_from_overlay on cilium_vxlan: local_delivery: source x → y; then 10.244.0.3 is in "
                        "cilium_lxc → bpf_redirect_peer")
    assert hop.bpf is not None and hop.bpf.startswith("cil_from_overlay on cilium_vxlan: 10.244")  # left as it was
    plain = Hop("node1", "ns", "eth0", "deliver")
    assert _said(plain, "x") is plain
    assert BackendChoice(None, (), None, None, None, False, "why").backend is None
