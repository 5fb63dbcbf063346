"""pod → Service and outside → NodePort: every pod connects to every Service port (TCP) a few
times, the outside host to every NodePort on every node. Each endpoint pod
listens on the target port and answers with who it is and the source address it saw, so check
knows which endpoint the DNAT chose and whether anything was SNATed on the way.

Expected, as kube-proxy does it: answered by one of the Service's endpoints, the client's own
address kept; except hairpin (a pod reaching itself through its Service), which is masqueraded:
the endpoint sees an address of the node, not its own. Through a NodePort: with
externalTrafficPolicy Cluster any endpoint answers and sees the node dialled (masqueraded, in case
the endpoint is elsewhere); with Local only that node's endpoints answer, seeing the client's own
address, and a node without one does not answer.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from cni_lab import names
from cni_lab.cluster import Lab, Node, Service
from cni_lab.kernel import netns
from cni_lab.model import ServicePort

TRIES = 4  # connections per pod and Service port: enough to see the load spread
TIMEOUT = 2.0


@dataclass(frozen=True)
class ServiceProbe:
    src: str  # pod id, or "outside"
    service: str  # namespace/name
    port: int  # the port dialled: the Service's port, or the nodePort
    answers: tuple[tuple[str, str], ...]  # (endpoint pod id, the source it saw), one per answered try
    tries: int
    problem: str = ""  # why it is not as kube-proxy does it ("" when it is)
    via: str = ""  # NodePort: the node whose address was dialled ("" for a ClusterIP)
    policy: str = ""  # NodePort: the externalTrafficPolicy

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def kind(self) -> str:
        return "nodePort" if self.via else "clusterIP"


@dataclass(frozen=True)
class Dial:
    src: str  # pod id or "outside"
    netns: str
    service: Service
    port: ServicePort
    address: str
    number: int
    via: Node | None = None


def run(lab: Lab, services: Sequence[Service]) -> list[ServiceProbe]:
    """Every pod to every TCP Service port's ClusterIP; the outside host (when the lab has one)
    to every NodePort on every node."""
    tcp = [(s, p) for s in services for p in s.spec.ports if p.protocol == "TCP"]
    dials = [Dial(pod.id, names.pod_netns(lab.name, pod.node, pod.name), svc, port, str(svc.cluster_ip), port.port)
             for pod in lab.pods for svc, port in tcp if svc.endpoints]
    if lab.scenario.outside_ip is not None:
        outside = names.outside_netns(lab.name)
        dials += [Dial("outside", outside, svc, port, str(node.ip), port.node_port, node)
                  for svc, port in tcp if port.node_port for node in lab.nodes]
    if not dials:
        return []
    return _judge(lab, exchange(lab, dials, TRIES))


def exchange(lab: Lab, dials: list[Dial], tries: int) -> list[tuple[Dial, bytes, int]]:
    """Each endpoint listens on its target ports; every dial connects `tries` times; what each
    connection got back (b"" when nothing) and the client's own port (to find it in conntrack)."""
    endpoints = {ep.id: ep for d in dials for ep in d.service.endpoints}
    wanted: dict[str, set[int]] = {}
    for d in dials:
        for ep in d.service.endpoints:
            wanted.setdefault(ep.id, set()).add(d.port.target_port)
    listeners: list[socket.socket] = []
    clients: list[tuple[socket.socket, Dial]] = []
    sel = selectors.DefaultSelector()
    ids: dict[int, str] = {}
    try:
        def listen(ns: str) -> None:
            for pid, ports in wanted.items():
                ep = endpoints[pid]
                if names.pod_netns(lab.name, ep.node, ep.name) != ns:
                    continue
                for number in sorted(ports):
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", number))
                    s.listen(64)
                    s.setblocking(False)
                    listeners.append(s)
                    ids[s.fileno()] = pid

        netns.visit(sorted({names.pod_netns(lab.name, ep.node, ep.name) for ep in endpoints.values()}), listen)
        for s in listeners:
            sel.register(s, selectors.EVENT_READ)

        def dial(ns: str) -> None:
            for d in dials:
                if d.netns != ns:
                    continue
                for _ in range(tries):
                    c = socket.socket()
                    c.setblocking(False)
                    c.connect_ex((d.address, d.number))
                    clients.append((c, d))

        netns.visit(sorted({d.netns for d in dials}), dial)
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + TIMEOUT
        pending = {c.fileno(): c for c, _ in clients}
        for c in pending.values():
            sel.register(c, selectors.EVENT_READ)
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.05):
                sock = key.fileobj
                if sock in listeners:
                    _answer(sock, ids[sock.fileno()])  # type: ignore[union-attr, arg-type]
                    continue
                try:
                    data = sock.recv(200)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                got[sock.fileno()] = data  # type: ignore[union-attr]
                sel.unregister(sock)
                pending.pop(sock.fileno(), None)  # type: ignore[union-attr]
        return [(d, got.get(c.fileno(), b""), c.getsockname()[1]) for c, d in clients]
    finally:
        sel.close()
        for s in listeners:
            s.close()
        for c, _ in clients:
            c.close()


def _answer(sock: socket.socket, pid: str) -> None:
    while True:
        try:
            conn, peer = sock.accept()
        except (BlockingIOError, InterruptedError, OSError):
            return
        try:
            conn.sendall(f"{pid}|{peer[0]}".encode())
        except OSError:
            pass
        conn.close()


def node_addresses(node: Node) -> set[str]:
    """Where a node's masquerade can take its source from: its underlay address, the bridge
    gateway (cni0), the VTEP's (flannel.1 holds the pod CIDR's .0)."""
    return {str(node.ip), str(node.gateway), str(node.pod_cidr.network_address)}


def _judge(lab: Lab, exchanged: list[tuple[Dial, bytes, int]]) -> list[ServiceProbe]:
    answers: dict[Dial, list[tuple[str, str]]] = {}
    tries: Counter[Dial] = Counter()
    for d, raw, _ in exchanged:
        tries[d] += 1
        data = raw.decode(errors="replace")
        if "|" in data:
            who, seen = data.split("|", 1)
            answers.setdefault(d, []).append((who, seen))
    out = []
    for d, n in tries.items():
        got_d = answers.get(d, [])
        problem = _nodeport_problem(lab, d, got_d, n) if d.via else _cluster_ip_problem(lab, d, got_d, n)
        out.append(ServiceProbe(d.src, d.service.qualified, d.number, tuple(got_d), n, problem,
                                d.via.name if d.via else "", d.service.spec.external_traffic_policy if d.via else ""))
    return sorted(out, key=lambda p: (p.service, p.via != "", p.port, p.src, p.via))


def _cluster_ip_problem(lab: Lab, d: Dial, answers: list[tuple[str, str]], n: int) -> str:
    pods = {p.id: p for p in lab.pods}
    own = str(pods[d.src].ip)
    node = lab.node(pods[d.src].node)
    endpoints = {p.id for p in d.service.endpoints}
    problem = f"{n - len(answers)} of {n} connections got no answer" if len(answers) < n else ""
    for who, seen in answers:
        if who not in endpoints:
            problem = f"answered by {who}, which is no endpoint of {d.service.qualified}"
        elif who == d.src and seen == own:
            problem = f"hairpin: {who} saw its own address, not masqueraded"
        elif who != d.src and seen != own:
            problem = f"{who} saw {seen}, not {d.src}'s own {own} (SNAT)"
        elif who == d.src and seen not in node_addresses(node):
            problem = f"hairpin: {who} saw {seen}, not an address of {node.name}"
    return problem


def _nodeport_problem(lab: Lab, d: Dial, answers: list[tuple[str, str]], n: int) -> str:
    """Cluster: answered by any endpoint, masqueraded to an address of the node dialled. Local:
    answered by an endpoint on that node with the client's address kept, or (no endpoint there)
    not answered at all."""
    assert d.via is not None
    client = str(lab.scenario.outside_ip)
    local = {p.id for p in d.service.endpoints if p.node == d.via.name}
    if d.service.spec.external_traffic_policy == "Local" and not local:
        return f"answered by {answers[0][0]}, but {d.via.name} has no local endpoint (Local drops)" if answers else ""
    expected = local if d.service.spec.external_traffic_policy == "Local" else {p.id for p in d.service.endpoints}
    problem = f"{n - len(answers)} of {n} connections got no answer" if len(answers) < n else ""
    for who, seen in answers:
        if who not in expected:
            problem = f"answered by {who}, not {' or '.join(sorted(expected))}"
        elif d.service.spec.external_traffic_policy == "Local" and seen != client:
            problem = f"{who} saw {seen}, not the client's {client} (Local keeps it)"
        elif d.service.spec.external_traffic_policy == "Cluster" and seen not in node_addresses(d.via):
            problem = f"{who} saw {seen}, not an address of {d.via.name} (Cluster masquerades)"
    return problem
