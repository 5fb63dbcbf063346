"""pod → Service: every pod connects to every Service port (TCP) a few times. Each endpoint pod
listens on the target port and answers with who it is and the source address it saw, so check
knows which endpoint the DNAT chose and whether anything was SNATed on the way.

Expected, as kube-proxy does it: answered by one of the Service's endpoints, the client's own
address kept; except hairpin (a pod reaching itself through its Service), which is masqueraded:
the endpoint sees an address of the node, not its own.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from cni_lab.ipam import Lab
from cni_lab.kernel import netns
from cni_lab.services import Service

TRIES = 4  # connections per pod and Service port: enough to see the load spread
TIMEOUT = 2.0


@dataclass(frozen=True)
class ServiceProbe:
    src: str  # pod id
    service: str  # namespace/name
    port: int
    answers: tuple[tuple[str, str], ...]  # (endpoint pod id, the source it saw), one per answered try
    tries: int
    problem: str = ""  # why it is not as kube-proxy does it ("" when it is)

    @property
    def ok(self) -> bool:
        return not self.problem


def run(lab: Lab, services: list[Service]) -> list[ServiceProbe]:
    tcp = [(s, p) for s in services for p in s.spec.ports if p.protocol == "TCP" and s.endpoints]
    if not tcp:
        return []
    listeners: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    ids: dict[int, str] = {}
    try:
        wanted: dict[str, set[int]] = {}
        pods = {p.id: p for p in lab.pods}
        for svc, port in tcp:
            for ep in svc.endpoints:
                wanted.setdefault(ep.id, set()).add(port.target_port)
        from cni_lab import names

        ns_of = {pid: names.pod_netns(lab.name, pods[pid].node, pods[pid].name) for pid in pods}

        def listen(ns: str) -> None:
            for pid, ports in wanted.items():
                if ns_of[pid] != ns:
                    continue
                for number in ports:
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", number))
                    s.listen(64)
                    s.setblocking(False)
                    listeners.append(s)
                    ids[s.fileno()] = pid

        netns.visit(sorted({ns_of[p] for p in wanted}), listen)
        for s in listeners:
            sel.register(s, selectors.EVENT_READ)
        clients: list[tuple[socket.socket, str, Service, int]] = []

        def dial(ns: str) -> None:
            pid = next(p for p, n in ns_of.items() if n == ns)
            for svc, port in tcp:
                for _ in range(TRIES):
                    c = socket.socket()
                    c.setblocking(False)
                    c.connect_ex((str(svc.cluster_ip), port.port))
                    clients.append((c, pid, svc, port.port))

        netns.visit(sorted(ns_of.values()), dial)
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + TIMEOUT
        pending = {c.fileno(): c for c, *_ in clients}
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
        return _judge(lab, tcp, clients, got)
    finally:
        sel.close()
        for s in listeners:
            s.close()
        for c, *_ in locals().get("clients", []):
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


def _judge(lab: Lab, tcp: Sequence[tuple[Service, object]], clients: list[tuple[socket.socket, str, Service, int]],
           got: dict[int, bytes]) -> list[ServiceProbe]:
    pods = {p.id: p for p in lab.pods}
    by_key: dict[tuple[str, str, int], list[tuple[str, str]]] = {}
    tries: Counter[tuple[str, str, int]] = Counter()
    services = {}
    for c, pid, svc, port in clients:
        key = (pid, svc.qualified, port)
        services[svc.qualified] = svc
        tries[key] += 1
        data = got.get(c.fileno(), b"").decode(errors="replace")
        if "|" in data:
            who, seen = data.split("|", 1)
            by_key.setdefault(key, []).append((who, seen))
    out = []
    for key, n in tries.items():
        pid, name, port = key
        answers = by_key.get(key, [])
        svc = services[name]
        endpoints = {p.id for p in svc.endpoints}
        node = lab.node(pods[pid].node)
        problem = ""
        if len(answers) < n:
            problem = f"{n - len(answers)} of {n} connections got no answer"
        for who, seen in answers:
            if who not in endpoints:
                problem = f"answered by {who}, which is no endpoint of {name}"
            elif who == pid and seen in (str(pods[pid].ip),):
                problem = f"hairpin: {who} saw its own address, not masqueraded"
            elif who != pid and seen != str(pods[pid].ip):
                problem = f"{who} saw {seen}, not {pid}'s own {pods[pid].ip} (SNAT)"
            elif who == pid and seen not in {str(node.ip), str(node.gateway)}:
                problem = f"hairpin: {who} saw {seen}, not an address of {node.name}"
        out.append(ServiceProbe(pid, name, port, tuple(answers), n, problem))
    return sorted(out, key=lambda p: (p.service, p.port, p.src))
