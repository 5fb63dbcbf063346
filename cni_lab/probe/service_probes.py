"""pod → Service and outside → NodePort: every pod dials every Service port (TCP, UDP and SCTP
alike) a few times, the outside host every NodePort on every node. Each endpoint pod answers on
the target port with who it is, the source address it saw and the port it was reached on
(service_exchange.py), so check knows which endpoint the DNAT chose, whether anything was SNATed
on the way, and whether the DNAT went to the Service port's targetPort.

Expected, as kube-proxy does it: answered by one of the Service port's endpoints on the port's
targetPort (a named one: that endpoint's own number for it), the client's own address kept; except hairpin (a pod reaching itself through its
Service), which is masqueraded: the endpoint sees an address of the node, not its own. Through a
NodePort: with externalTrafficPolicy Cluster any endpoint answers and sees the node dialled
(masqueraded, in case the endpoint is elsewhere); with Local only that node's endpoints answer,
seeing the client's own address, and a node without one does not answer.

Expected, as Cilium's kube-proxy replacement does it (Capabilities.services "cilium-bpf"): the
same, except that a pod reaching itself is seen from 169.254.42.1 (IPV4_LOOPBACK), and a Cluster
NodePort connection is SNATed to the node only when the endpoint chosen is on another node (one
on the dialled node sees the client's own address: the reply passes that node anyway).

An endpoint whose targetPort a server of its own holds cannot answer for itself: what that server
accepts counts as reached, and the probe says that who answered, and the source it saw, are not
confirmed. A learner's server keeps running and the rest of the proof still holds; refusing to
check would make them stop it first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from cni_lab import names
from cni_lab.cluster import Lab, Node, Service
from cni_lab.dataplanes.capabilities import CILIUM_LB_LOOPBACK
from cni_lab.model import is_cluster_dns
from cni_lab.probe.service_exchange import Dial, Exchange, Reply, exchange

__all__ = ["Answer", "Dial", "Exchange", "Reply", "ServiceProbe", "dials", "exchange", "judge", "node_addresses",
           "parse_answer", "run"]  # Dial, Exchange, Reply and exchange: the sockets' side, for service_trace too

TRIES = 4  # connections (datagrams) per pod and Service port: enough to see the load spread


class Answer(NamedTuple):
    endpoint: str  # the endpoint pod that answered
    seen: str  # the source address it saw
    port: int  # the port it was reached on: the DNAT's target


@dataclass(frozen=True)
class ServiceProbe:
    src: str  # pod id, or "outside"
    service: str  # namespace/name
    port: int  # the port dialled: the Service's port, or the nodePort
    answers: tuple[Answer, ...]  # one per try a responder answered
    tries: int
    problem: str = ""  # why it is not as kube-proxy does it ("" when it is)
    via: str = ""  # NodePort: the node whose address was dialled ("" for a ClusterIP)
    policy: str = ""  # NodePort: the externalTrafficPolicy
    protocol: str = "TCP"
    port_name: str = ""  # the Service port's name ("" for a one-port Service)
    target_port: int | str = 0  # where the DNAT must go: a number, or a name each endpoint declares
    unconfirmed: int = 0  # tries a server of an endpoint's own accepted: reached, who and what it saw unknown
    busy: tuple[str, ...] = ()  # `node1/web 8080/TCP`: endpoints whose targetPort such a server holds
    targets: tuple[tuple[str, int], ...] = ()  # each endpoint of the port and its own number: what it must be reached on

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def kind(self) -> str:
        return "nodePort" if self.via else "clusterIP"

    @property
    def service_port(self) -> str:
        """kube-proxy's ServicePortName.String(): `default/web`, or `default/web:http`."""
        return self.service + (f":{self.port_name}" if self.port_name else "")

    @property
    def title(self) -> str:
        """What was dialled, the same for every client of it: how reports group and name probes."""
        if self.via:
            return f"outside → NodePort {self.service_port} :{self.port}/{self.protocol} ({self.policy})"
        return f"pod → Service {self.service_port} :{self.port}/{self.protocol}"

    @property
    def stream(self) -> bool:
        """TCP and SCTP connect; UDP sends datagrams."""
        return self.protocol != "UDP"


def dials(lab: Lab, services: Sequence[Service]) -> list[Dial]:
    """Every pod to every port's ClusterIP of every Service port with endpoints; the outside host
    (when the lab has one) to every NodePort on every node."""
    # kube-dns's endpoint port is dnsmasq's, not a responder's: check's dns rule proves that Service
    ports = [(s, p) for s in services if not is_cluster_dns(s.spec) for p in s.spec.ports]
    out = [Dial(pod.id, names.pod_netns(lab.name, pod.node, pod.name), svc, port, str(svc.cluster_ip), port.port)
           for pod in lab.pods for svc, port in ports if svc.backends(port)]
    if lab.scenario.outside_ip is not None:
        outside = names.outside_netns(lab.name)
        out += [Dial("outside", outside, svc, port, str(node.ip), port.node_port, node)
                for svc, port in ports if port.node_port for node in lab.nodes]
    return out


def run(lab: Lab, services: Sequence[Service]) -> list[ServiceProbe]:
    found = dials(lab, services)
    return judge(lab, exchange(lab, found, TRIES)) if found else []


def parse_answer(data: bytes) -> Answer | None:
    """A responder's `<endpoint>|<source>|<port>`; None for anything else (nothing, or what a
    server of the pod's own said)."""
    try:
        parts = data.decode().split("|")
    except UnicodeDecodeError:
        return None
    if len(parts) != 3 or not parts[0] or not (parts[2].isascii() and parts[2].isdigit()):  # not "²"
        return None
    return Answer(parts[0], parts[1], int(parts[2]))


def node_addresses(node: Node) -> set[str]:
    """Where a node's masquerade can take its source from: its underlay address, the bridge
    gateway (cni0), the VTEP's (flannel.1 holds the pod CIDR's .0)."""
    return {str(node.ip), str(node.gateway), str(node.pod_cidr.network_address)}


@dataclass
class _Tries:
    """What one dial's tries got, in the order they were made."""

    answers: list[Answer]
    unconfirmed: int = 0  # accepted (or answered) by something that is not our responder
    tries: int = 0


def judge(lab: Lab, exchanged: Exchange) -> list[ServiceProbe]:
    got: dict[Dial, _Tries] = {}
    for r in exchanged.replies:
        t = got.setdefault(r.dial, _Tries([]))
        t.tries += 1
        answer = parse_answer(r.data)
        if answer is not None:
            t.answers.append(answer)
        elif r.connected or r.data:
            t.unconfirmed += 1
    out = []
    for d, t in got.items():
        port = d.port
        targets = tuple((ep.id, number) for ep, number in d.service.backends(port))
        busy = tuple(f"{pid} {number}/{port.protocol}" for pid, number in targets
                     if (pid, port.protocol, number) in exchanged.busy)
        probe = ServiceProbe(d.src, d.service.qualified, d.number, tuple(t.answers), t.tries, "", d.via.name if d.via else "",
                             d.service.spec.external_traffic_policy if d.via else "", port.protocol, port.name,
                             port.target_port, t.unconfirmed, busy, targets)
        problem = _nodeport_problem(lab, d, probe) if d.via else _cluster_ip_problem(lab, d, probe)
        out.append(dataclasses.replace(probe, problem=problem or _reach_problem(probe)))
    return sorted(out, key=lambda p: (p.service, p.via != "", p.port, p.protocol, p.src, p.via))


def _tries(probe: ServiceProbe) -> str:
    return "connections" if probe.stream else "datagrams"


def _reach_problem(probe: ServiceProbe) -> str:
    """What every answered try must show: a responder reached on the targetPort (a named one: the
    answering endpoint's own number for it); a server of the pod's own only where one holds that port."""
    own = dict(probe.targets)
    for a in probe.answers:
        want = own.get(a.endpoint, probe.target_port)
        if a.port != want:
            named = f" ({want} on {a.endpoint})" if isinstance(probe.target_port, str) else ""
            return f"{a.endpoint} was reached on port {a.port}, not {probe.service_port}'s targetPort {probe.target_port}{named}"
    if probe.unconfirmed and not probe.busy:
        return (f"{probe.unconfirmed} of {probe.tries} {_tries(probe)} were answered by something other than "
                "cni-lab's responder")
    return ""


def _cluster_ip_problem(lab: Lab, d: Dial, probe: ServiceProbe) -> str:
    pods = {p.id: p for p in lab.pods}
    own = str(pods[d.src].ip)
    node = lab.node(pods[d.src].node)
    endpoints = {pid for pid, _ in probe.targets}
    n, answered = probe.tries, len(probe.answers) + probe.unconfirmed
    problem = f"{n - answered} of {n} {_tries(probe)} got no answer" if answered < n else ""
    for who, seen, _ in probe.answers:
        if who not in endpoints:
            problem = f"answered by {who}, which is no endpoint of {probe.service_port}"
        elif who == d.src and seen == own:
            problem = f"hairpin: {who} saw its own address, not masqueraded"
        elif who != d.src and seen != own:
            problem = f"{who} saw {seen}, not {d.src}'s own {own} (SNAT)"
        elif who == d.src and seen not in _hairpin_sources(lab, node):
            problem = f"hairpin: {who} saw {seen}, not {' or '.join(sorted(_hairpin_sources(lab, node)))}"
    return problem


def _hairpin_sources(lab: Lab, node: Node) -> set[str]:
    """Where a pod that reached itself through its Service sees itself come from: the node
    (kube-proxy masquerades it), or Cilium's service loopback address."""
    if lab.capabilities.services == "cilium-bpf":
        return {CILIUM_LB_LOOPBACK}
    return node_addresses(node)


def _nodeport_problem(lab: Lab, d: Dial, probe: ServiceProbe) -> str:
    """Cluster: answered by any endpoint, masqueraded to an address of the node dialled. Local:
    answered by an endpoint on that node with the client's address kept, or (no endpoint there)
    not answered at all."""
    assert d.via is not None
    client = str(lab.scenario.outside_ip)
    policy = d.service.spec.external_traffic_policy
    local = {b.pod.id for b in d.service.backends(d.port) if b.pod.node == d.via.name}
    if policy == "Local" and not local:
        if probe.answers:
            return f"answered by {probe.answers[0].endpoint}, but {d.via.name} has no local endpoint (Local drops)"
        return f"{probe.unconfirmed} {_tries(probe)} accepted, but {d.via.name} has no local endpoint (Local drops)" \
            if probe.unconfirmed else ""
    expected = local if policy == "Local" else {pid for pid, _ in probe.targets}
    # Cilium SNATs only what it hands to another node's endpoint
    keeps_local = lab.capabilities.services == "cilium-bpf"
    n, answered = probe.tries, len(probe.answers) + probe.unconfirmed
    problem = f"{n - answered} of {n} {_tries(probe)} got no answer" if answered < n else ""
    for who, seen, _ in probe.answers:
        if who not in expected:
            problem = f"answered by {who}, not {' or '.join(sorted(expected))}"
        elif policy == "Local" and seen != client:
            problem = f"{who} saw {seen}, not the client's {client} (Local keeps it)"
        elif policy == "Cluster" and keeps_local and who in local and seen != client:
            problem = f"{who} saw {seen}, not the client's {client} (an endpoint on the node dialled is not SNATed)"
        elif policy == "Cluster" and not (keeps_local and who in local) and seen not in node_addresses(d.via):
            problem = f"{who} saw {seen}, not an address of {d.via.name} (Cluster masquerades)"
    return problem
