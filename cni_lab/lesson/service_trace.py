"""`trace SRC CLUSTER-IP[:PORT]`: a packet to a Service, through kube-proxy's DNAT.

A ClusterIP is no one's address: the packet goes where the source's routes send it (a pod's
default route: its node) and, on the first node it reaches (or on the sending node itself),
kube-proxy's `nat-prerouting` (`nat-output`) hook rewrites its destination to one endpoint
picked at random. Which one is not predictable, so the trace asks the kernel: it makes one real
connection to the Service and reads the node's conntrack entry for it, whose reply tuple names
the endpoint the DNAT chose (and shows any masquerade: a hairpin's reply goes back to the node).
From there the packet is traced hop by hop to that endpoint, and the reply back, as `trace`
does for any pair.

Where the data plane balances Services itself (Capabilities.services "cilium-bpf", Cilium's
kube-proxy replacement) there is no kube-proxy table and no netfilter conntrack entry: the pod's
packet is balanced by cil_from_container at its lxc device, from the BPF maps. The frontend is
read from cilium_lb4_services_v2; the backend from the CT_SERVICE entry the real connection left
in cilium_ct4_global (keyed by the client's tuple to the frontend: the backend ID the random slot
named), resolved through the frontend's slots to cilium_lb4_backends_v3; the OUT entry of the
DNATed tuple holds the reverse NAT index that cilium_lb4_reverse_nat turns the reply's source
back with, where the reply is delivered to the client (or, for a pod that reached itself, from
169.254.42.1 in lb4_loopback_reply). `choose` and `reverse_nat_of` make that reading from the
maps' rows alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Mapping, Sequence

from cni_lab import names
from cni_lab.errors import LabError
from cni_lab.cluster import Lab, Service
from cni_lab.dataplanes.capabilities import CILIUM_LB_LOOPBACK
from cni_lab.kernel import bpf, readback
from cni_lab.lesson.trace import Hop, Leg, Wiring, bpf_counters, counters_moved, leg, resolve_endpoint
from cni_lab.model import ServicePort
from cni_lab.probe import service_probes as probes
from cni_lab.probe.pairs import Endpoint, endpoints
from cni_lab.rulesets import kubeproxy


@dataclass
class ServiceTrace:
    src: Endpoint
    service: Service
    port: ServicePort
    to_dnat: Leg  # from the source to the node whose kube-proxy table rewrites it ([] when the source is that node)
    dnat_at: str  # the node (lesson name)
    chain: str  # the Service's chain the map led to
    connection: readback.Connection | None  # the node's conntrack entry for the real connection
    answered_by: str  # the endpoint that answered the real connection ("" if none)
    seen: str  # the source address the endpoint saw
    onward: Leg | None  # from the DNAT node to the endpoint the conntrack entry names
    back: Leg | None  # the endpoint's reply, to the address it saw

    @property
    def outcome(self) -> str:
        if self.connection is None or not self.answered_by:
            return "dropped"
        if self.onward is None or self.onward.delivered_to != self.answered_by:
            return "wrong-peer"
        if self.back is None or self.back.delivered_to is None:
            return "dropped"
        return "ok"


# -- where the data plane's programs balance Services (Cilium's kube-proxy replacement) ----------------

LB_PROGRAM = "cil_from_container"  # a pod's packet to a frontend is balanced here (lb4_local), at its lxc device
SERVICES_MAP, BACKENDS_MAP, REVERSE_NAT_MAP = "cilium_lb4_services_v2", "cilium_lb4_backends_v3", "cilium_lb4_reverse_nat"


def ct_map(protocol: str) -> str:
    """The map a protocol's connections are tracked in (Cilium's get_ct_map4): TCP's, or the rest's."""
    return bpf.CT_MAPS[0] if protocol == "TCP" else bpf.CT_MAPS[1]


@dataclass(frozen=True)
class BackendChoice:
    """Which backend cil_from_container gave one connection to a frontend, as its maps recorded it."""

    frontend: bpf.LbEntry | None  # slot 0 of address:port/protocol in cilium_lb4_services_v2 (None: not there)
    slots: tuple[bpf.LbEntry, ...]  # its backend slots, 1 to count
    service_entry: bpf.CtEntry | None  # CT_SERVICE: the client's tuple to the frontend → the backend ID
    slot: bpf.LbEntry | None  # the slot with that backend ID, its backend resolved in cilium_lb4_backends_v3
    out_entry: bpf.CtEntry | None  # OUT: the rewritten tuple → the reverse NAT index for the reply
    loopback: bool  # the backend is the client itself: its source was SNATed to 169.254.42.1 too
    why: str = ""  # why no backend can be named ("" when one is)

    @property
    def backend(self) -> tuple[str, int] | None:
        """The backend's address and port, the destination the packet was rewritten to."""
        return self.slot.backend if self.slot is not None else None


@dataclass(frozen=True)
class ReverseNat:
    """What turns the reply's source back to the frontend the client dialled: the OUT entry's
    index in cilium_lb4_reverse_nat."""

    index: int
    frontend: str | None  # address:port the map holds for the index (None: no entry, the source stays the backend's)
    at: str  # where: local_delivery (into the client), or lb4_loopback_reply (a pod that reached itself)


def choose(services: Sequence[bpf.LbEntry], conntrack: Sequence[bpf.CtEntry], client: str, sport: int,
           address: str, port: int, protocol: str = "TCP") -> BackendChoice:
    """The backend of the connection client:sport → address:port/protocol, read back as lb4_select
    made it: the frontend's slot 0 (its slot count, its reverse NAT index), the CT_SERVICE entry
    keyed by the client's tuple to the frontend (the backend ID a random slot named when the
    connection's first packet came; every later packet follows it), the slot with that ID (the
    backend's address and port), and the OUT entry of the rewritten tuple (from 169.254.42.1
    when the backend is the client itself). Pure: the rows as bpf.lb_services and bpf.conntrack
    read them."""
    label = f"{address}:{port}/{protocol}"
    mine = [e for e in services if (e.address, e.port, e.protocol) == (address, port, protocol)]
    frontend = next((e for e in mine if e.slot == 0), None)
    slots = tuple(sorted((e for e in mine if e.slot), key=lambda e: e.slot))
    if frontend is None:
        return BackendChoice(None, slots, None, None, None, False,
                             f"{label} is not in {SERVICES_MAP}: {LB_PROGRAM} does not balance it")
    entry = next((c for c in conntrack if c.tuple.direction == "SVC" and c.tuple.protocol == protocol
                  and c.tuple.src == f"{client}:{sport}" and c.tuple.dst == f"{address}:{port}"), None)
    if entry is None:
        return BackendChoice(frontend, slots, None, None, None, False, _no_service_entry(frontend, slots, client, sport))
    slot = next((s for s in slots if s.backend_id == entry.backend_id), None)
    if slot is None:
        return BackendChoice(frontend, slots, entry, None, None, False,
                             f"the CT_SERVICE entry names backend {entry.backend_id}, which no slot of {label} holds "
                             "(the Service changed since the connection began)")
    if slot.backend is None:
        return BackendChoice(frontend, slots, entry, slot, None, False,
                             f"the CT_SERVICE entry names backend {entry.backend_id} (slot {slot.slot}), which "
                             f"{BACKENDS_MAP} lacks: the next packet draws another slot")
    backend_address, backend_port = slot.backend
    loopback = backend_address == client
    source = f"{CILIUM_LB_LOOPBACK if loopback else client}:{sport}"
    out = next((c for c in conntrack if c.tuple.direction == "OUT" and c.tuple.protocol == protocol
                and c.tuple.src == source and c.tuple.dst == f"{backend_address}:{backend_port}"), None)
    return BackendChoice(frontend, slots, entry, slot, out, loopback)


def _no_service_entry(frontend: bpf.LbEntry, slots: tuple[bpf.LbEntry, ...], client: str, sport: int) -> str:
    label = f"{frontend.address}:{frontend.port}/{frontend.protocol}"
    if not frontend.count:
        return f"{label} has no backend slot: {LB_PROGRAM} drops the packet (DROP_NO_SERVICE)"
    text = f"no CT_SERVICE entry for {client}:{sport} → {label}: {LB_PROGRAM} chose no backend"
    lacking = [str(s.slot) for s in slots if s.backend is None]
    if lacking:
        text += (f" (slot {', '.join(lacking)} of {frontend.count} names a backend {BACKENDS_MAP} lacks: a packet "
                 "that draws it is dropped)")
    return text


def reverse_nat_of(choice: BackendChoice, table: Mapping[int, tuple[str, int]]) -> ReverseNat | None:
    """The reverse NAT the reply gets: the OUT entry's rev_nat_index looked up in
    cilium_lb4_reverse_nat (`table`, as bpf.reverse_nat reads it). None: no OUT entry, or one
    without an index."""
    entry = choice.out_entry
    if entry is None or not entry.rev_nat_index:
        return None
    found = table.get(entry.rev_nat_index)
    return ReverseNat(entry.rev_nat_index, f"{found[0]}:{found[1]}" if found else None,
                      "lb4_loopback_reply" if entry.lb_loopback else "local_delivery")


@dataclass
class BpfServiceTrace:
    """pod → ClusterIP where the data plane's programs balance it (Capabilities.services "cilium-bpf")."""

    src: Endpoint
    service: Service
    port: ServicePort
    to_lb: Leg  # from the pod to its lxc device, where cil_from_container runs (the last hop: "arrive")
    lb_at: str  # the pod's node (lesson name)
    device: str  # the pod's lxc device ("" when the packet does not reach it)
    program: str | None  # the program at the device's tc ingress (None: none, as after `fault bpf-detach`)
    sport: int  # the real connection's source port (0: none was made)
    choice: BackendChoice
    backend_pod: str  # the endpoint whose address the backend is ("" if none)
    answered_by: str  # the endpoint that answered the real connection ("" if none)
    seen: str  # the source address it saw
    onward: Leg | None  # from the lxc device to the backend, rewritten
    back: Leg | None  # the backend's reply, to the client (through 169.254.42.1 for a pod that reached itself)
    reverse: ReverseNat | None
    counted: dict[str, dict[str, int]]  # node → the cilium_metrics counters that moved while the probe ran

    @property
    def outcome(self) -> str:
        if self.choice.backend is None or not self.answered_by:
            return "dropped"
        if self.onward is None or self.onward.delivered_to != self.answered_by:
            return "wrong-peer"
        if self.back is None or self.back.delivered_to != self.src.id:
            return "dropped"
        return "ok"


def parse_destination(lab: Lab, text: str) -> tuple[Service, ServicePort] | None:
    """`10.96.0.2` or `10.96.0.2:80` when that is a ClusterIP of the lab, else None."""
    address, _, port_text = text.partition(":")
    try:
        ip = ip_address(address)
    except ValueError:
        return None
    if not isinstance(ip, IPv4Address) or ip not in lab.scenario.service_cidr:
        return None
    found = lab.services
    svc = next((s for s in found if s.cluster_ip == ip), None)
    if svc is None:
        raise LabError(f"{ip} is in the Service CIDR {lab.scenario.service_cidr} but is no Service's ClusterIP "
                       f"(Services: {', '.join(f'{s.qualified} {s.cluster_ip}' for s in found) or 'none'})")
    # a port by number or by name; where 53/UDP and 53/TCP share a number, the TCP one (trace follows TCP)
    ports = sorted((p for p in svc.spec.ports if not port_text or port_text in (str(p.port), p.name)),
                   key=lambda p: p.protocol != "TCP")
    if not ports:
        raise LabError(f"{svc.qualified} has no port {port_text} (ports: {', '.join(p.label for p in svc.spec.ports)})")
    return svc, ports[0]


def trace(lab: Lab, src_text: str, svc: Service, port: ServicePort) -> ServiceTrace | BpfServiceTrace:
    if port.protocol != "TCP":
        raise LabError(f"trace follows TCP Services for now ({svc.qualified}{':' + port.name if port.name else ''} "
                       f"{port.port}/{port.protocol} is {port.protocol})")
    src = resolve_endpoint(lab, src_text, 4)
    if lab.capabilities.services == "cilium-bpf":
        return _trace_bpf(lab, src, svc, port)
    if src.kind not in ("pod", "node"):
        raise LabError(f"trace to a ClusterIP starts at a pod or a node, not {src.id}")
    w = Wiring(lab)
    kube_proxy = frozenset(names.node_netns(lab.name, n.name) for n in lab.nodes)
    to_dnat = leg(w, src, svc.cluster_ip, stop_at=kube_proxy)
    last = to_dnat.hops[-1] if to_dnat.hops else None
    if src.kind == "node":  # nat-output: rewritten before the node's own routing
        dnat_ns, came_in = src.netns, None
        to_dnat = Leg(src, svc.cluster_ip, [])
    elif last is not None and last.action == "arrive":
        dnat_ns, came_in = last.netns, last.came_in
    else:
        return ServiceTrace(src, svc, port, to_dnat, "", kubeproxy.service_chain(svc, port), None, "", "", None, None)
    dial = probes.Dial(src.id, src.netns, svc, port, str(svc.cluster_ip), port.port)
    (reply,) = probes.exchange(lab, [dial], 1).replies
    local_port, answer = reply.local_port, probes.parse_answer(reply.data)  # None: a server of the pod's own
    who, seen = (answer.endpoint, answer.seen) if answer else ("", "")
    connection = next((c for c in readback.connections(dnat_ns)
                       if c.src == str(src.ip) and c.sport == local_port and c.dst == str(svc.cluster_ip)), None)
    onward = back = None
    if connection is not None:
        endpoint_ip = ip_address(connection.reply_src)
        onward = leg(w, src, endpoint_ip, start=(dnat_ns, came_in), src_ip=ip_address(connection.reply_dst))
        answering = next((e for e in endpoints(lab, 4) if str(e.ip) == connection.reply_src), None)
        if answering is not None and onward.delivered_to == answering.id:
            back = leg(w, answering, ip_address(connection.reply_dst))
        if answer is None and reply.connected and answering is not None:
            # a server of the pod's own accepted it and says nothing we know: conntrack's reply
            # tuple still names the endpoint and the source it saw
            who, seen = answering.id, connection.reply_dst
    return ServiceTrace(src, svc, port, to_dnat, w.label.get(dnat_ns, dnat_ns), kubeproxy.service_chain(svc, port),
                        connection, who, seen, onward, back)


def _trace_bpf(lab: Lab, src: Endpoint, svc: Service, port: ServicePort) -> BpfServiceTrace:
    """The pod's packet to its lxc device; one real connection, what cil_from_container recorded
    for it in the node's maps, and the programs' counters around it; the path to the backend
    the maps name, and the reply back."""
    if src.kind != "pod":
        raise LabError(f"trace to a ClusterIP on dataplane {lab.dataplane} starts at a pod: a node's own connections "
                       "to a ClusterIP are not balanced (Cilium does that with socket LB, which the lab leaves out)")
    w = Wiring(lab)
    node_ns = names.node_netns(lab.name, src.node)
    where = w.label.get(node_ns, node_ns)
    to_lb = leg(w, src, svc.cluster_ip, stop_at=frozenset({node_ns}))
    last = to_lb.hops[-1] if to_lb.hops else None
    facts = w.bpf.get(node_ns)
    services = facts.services if facts is not None else []
    frontend = (str(svc.cluster_ip), port.port, port.protocol)
    device = (last.came_in or "") if last is not None and last.action == "arrive" else ""
    program = facts.program_on(device) if facts is not None and device else None
    if program != LB_PROGRAM:
        if not device:
            why = f"the packet does not reach {where}: nothing balances it"
        elif program is None:
            why = (f"no program on {device}: nothing balances the packet, and the node's stack does not forward "
                   "what comes in on an lxc device")
        else:
            why = f"{program} on {device} balances no Service"
        choice = dataclasses.replace(choose(services, [], str(src.ip), 0, *frontend), why=why)
        return BpfServiceTrace(src, svc, port, to_lb, where, device, program, 0, choice, "", "", "", None, None, None, {})
    pin = names.bpf_node_dir(lab.name, src.node)
    before = bpf_counters(lab)
    dial = probes.Dial(src.id, src.netns, svc, port, str(svc.cluster_ip), port.port)
    (reply,) = probes.exchange(lab, [dial], 1).replies
    counted = counters_moved(before, bpf_counters(lab))
    try:
        conntrack, reverse_table = bpf.conntrack(pin), bpf.reverse_nat(pin)
    except OSError as e:
        raise LabError(f"cannot read {where}'s conntrack and reverse NAT maps in {pin}: {e.strerror or e}") from None
    answer = probes.parse_answer(reply.data)  # None: a server of the pod's own
    who, seen = (answer.endpoint, answer.seen) if answer else ("", "")
    choice = choose(services, conntrack, str(src.ip), reply.local_port, *frontend)
    reverse = reverse_nat_of(choice, reverse_table)
    backend_pod, onward, back = "", None, None
    if choice.backend is not None:
        address = ip_address(choice.backend[0])
        answering = next((e for e in endpoints(lab, 4) if e.ip == address), None)
        backend_pod = answering.id if answering is not None else ""
        onward = leg(w, src, address, start=(node_ns, device),
                     src_ip=ip_address(CILIUM_LB_LOOPBACK) if choice.loopback else None)
        if answering is not None and onward.delivered_to == answering.id:
            back = _reply(w, answering, src, node_ns, device, choice, reverse)
        if answer is None and reply.connected and answering is not None:
            # a server of the pod's own accepted it and says nothing we know: the maps still name
            # the backend, and the source it saw
            who, seen = answering.id, CILIUM_LB_LOOPBACK if choice.loopback else str(src.ip)
    return BpfServiceTrace(src, svc, port, to_lb, where, device, program, reply.local_port, choice, backend_pod,
                           who, seen, onward, back, reverse, counted)


def _reply(w: Wiring, answering: Endpoint, src: Endpoint, node_ns: str, device: str, choice: BackendChoice,
           reverse: ReverseNat | None) -> Leg:
    """The backend's reply to the client, and where the programs turn its source back to the
    frontend: as it is handed to the client (local_delivery); for a pod that reached itself, at
    its own lxc device, where the reply to 169.254.42.1 comes back (lb4_loopback_reply)."""
    backend = f"{choice.backend[0]}:{choice.backend[1]}" if choice.backend else "?"
    frontend = reverse.frontend if reverse is not None else None
    turned = (f"source {backend} → {frontend} ({REVERSE_NAT_MAP}[{reverse.index}])" if reverse is not None and frontend
              else f"no {REVERSE_NAT_MAP} entry for the connection: the source stays {backend}")
    if not choice.loopback:
        back = leg(w, answering, src.ip)
        hops = [_said(h, f"local_delivery: {turned}") if h.netns == node_ns and h.out == device and h.bpf else h
                for h in back.hops]
        return Leg(back.src, back.dst_ip, hops)
    loopback = IPv4Address(CILIUM_LB_LOOPBACK)
    to_device = leg(w, answering, loopback, stop_at=frozenset({node_ns}))
    last = to_device.hops[-1] if to_device.hops else None
    if last is None or last.action != "arrive" or last.came_in is None:
        return to_device
    # what reaches the pod comes from the frontend (the program rewrote both ends)
    turned_from = IPv4Address(frontend.rpartition(":")[0]) if frontend else None
    on = leg(w, answering, src.ip, start=(node_ns, last.came_in), src_ip=turned_from)
    words = (f"lb4_loopback_reply: to {CILIUM_LB_LOOPBACK}, the OUT entry (lb_loopback) turns the destination back "
             f"to {src.ip}, {turned}")
    return Leg(answering, loopback, [*to_device.hops[:-1], *(_said(h, words) for h in on.hops[:1]), *on.hops[1:]])


def _said(hop: Hop, words: str) -> Hop:
    """The hop, its program saying first what it did before it moved the packet on."""
    if hop.bpf is None:
        return hop
    head, sep, rest = hop.bpf.partition(": ")
    return dataclasses.replace(hop, bpf=f"{head}{sep}{words}; then {rest}" if sep else f"{hop.bpf}; {words}")
