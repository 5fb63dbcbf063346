"""`trace SRC CLUSTER-IP[:PORT]`: a packet to a Service, through kube-proxy's DNAT.

A ClusterIP is no one's address: the packet goes where the source's routes send it (a pod's
default route: its node) and, on the first node it reaches (or on the sending node itself),
kube-proxy's `nat-prerouting` (`nat-output`) hook rewrites its destination to one endpoint
picked at random. Which one is not predictable, so the trace asks the kernel: it makes one real
connection to the Service and reads the node's conntrack entry for it, whose reply tuple names
the endpoint the DNAT chose (and shows any masquerade: a hairpin's reply goes back to the node).
From there the packet is traced hop by hop to that endpoint, and the reply back, as `trace`
does for any pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

from cni_lab import names
from cni_lab.errors import LabError
from cni_lab.cluster import Lab, Service
from cni_lab.kernel import readback
from cni_lab.lesson.trace import Leg, Wiring, leg, resolve_endpoint
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


def trace(lab: Lab, src_text: str, svc: Service, port: ServicePort) -> ServiceTrace:
    if port.protocol != "TCP":
        raise LabError(f"trace follows TCP Services for now ({svc.qualified}{':' + port.name if port.name else ''} "
                       f"{port.port}/{port.protocol} is {port.protocol})")
    src = resolve_endpoint(lab, src_text, 4)
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
