"""The sockets of pod → Service and outside → NodePort: a responder in each endpoint pod on each
target port it serves, and every dial made `tries` times, all from one event loop.

A responder answers on each endpoint's own number for the port (a named targetPort is resolved
per pod), with `<endpoint>|<source it saw>|<port it was reached on>`: a TCP or SCTP
connection gets it and is closed, a UDP datagram gets it back. Each try is a socket of its own, so
a fresh source port and a fresh conntrack entry: one try's DNAT never decides the next's (a UDP
"connection" lives 30 s in conntrack and would otherwise pin every datagram to one endpoint).

A target port a server of the pod's own already holds (a learner's web server on 8080) cannot be
ours too: it is recorded as busy, and what that server accepts is probed through it.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from dataclasses import dataclass

from cni_lab import names
from cni_lab.cluster import Lab, Node, Service
from cni_lab.kernel import netns, transports
from cni_lab.model import ServicePort

TIMEOUT = 2.0
GRACE = 0.3  # a connection accepted this long ago with nothing said: a server of the pod's own
PROBE = b"cni-lab service probe"  # what a UDP dial sends; a responder answers nothing else


@dataclass(frozen=True)
class Dial:
    src: str  # pod id or "outside"
    netns: str
    service: Service
    port: ServicePort
    address: str
    number: int  # the port dialled: the Service's port, or the nodePort
    via: Node | None = None  # NodePort: the node whose address is dialled


@dataclass(frozen=True)
class Reply:
    """One try of a dial."""

    dial: Dial
    data: bytes  # what came back (b"" when nothing)
    local_port: int  # the client's own port (to find it in conntrack)
    connected: bool  # TCP, SCTP: the connection was accepted, by a responder or by anyone


@dataclass(frozen=True)
class Exchange:
    replies: list[Reply]
    busy: frozenset[tuple[str, str, int]]  # (endpoint pod id, protocol, port) a server of its own holds


def _stream(protocol: str) -> bool:
    return transports.socket_kind(protocol)[0] == socket.SOCK_STREAM


def responders(dials: list[Dial]) -> dict[str, set[tuple[str, int]]]:
    """Endpoint pod id → the (protocol, port) it answers on: each port's endpoints on their own
    number (a named targetPort differs from pod to pod; a pod without it serves none)."""
    wanted: dict[str, set[tuple[str, int]]] = {}
    for d in dials:
        for ep, number in d.service.backends(d.port):
            wanted.setdefault(ep.id, set()).add((d.port.protocol, number))
    return wanted


def _listen(lab: Lab, dials: list[Dial], busy: set[tuple[str, str, int]]) -> dict[socket.socket, str]:
    """A responder per endpoint, protocol and target port, in the endpoint's namespace; a port
    already taken there goes to `busy` instead."""
    wanted = responders(dials)
    endpoints = {ep.id: ep for d in dials for ep in d.service.endpoints if ep.id in wanted}
    by_netns = {names.pod_netns(lab.name, ep.node, ep.name): pid for pid, ep in endpoints.items()}
    opened: dict[socket.socket, str] = {}

    def open_here(ns: str) -> None:
        pid = by_netns[ns]
        for protocol, number in sorted(wanted[pid]):
            kind, proto = transports.socket_kind(protocol)
            s = socket.socket(socket.AF_INET, kind, proto)
            if kind == socket.SOCK_STREAM:  # our own TIME_WAIT from the last check must not stop us
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", number))
            except OSError as e:
                s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                busy.add((pid, protocol, number))
                continue
            if kind == socket.SOCK_STREAM:
                s.listen(128)
            s.setblocking(False)
            opened[s] = pid

    try:
        netns.visit(sorted(by_netns), open_here)
    except BaseException:
        for s in opened:
            s.close()
        raise
    return opened


def _dial(dials: list[Dial], tries: int) -> list[tuple[socket.socket, Dial]]:
    """Every dial `tries` times, each a socket of its own, connecting (TCP, SCTP) or sent (UDP)."""
    clients: list[tuple[socket.socket, Dial]] = []

    def dial_here(ns: str) -> None:
        for d in dials:
            if d.netns != ns:
                continue
            for _ in range(tries):
                c = socket.socket(socket.AF_INET, *transports.socket_kind(d.port.protocol))
                c.setblocking(False)
                clients.append((c, d))
                if _stream(d.port.protocol):
                    c.connect_ex((d.address, d.number))
                    continue
                try:
                    c.connect((d.address, d.number))  # the reply, un-NATed, comes from the address dialled
                    c.send(PROBE)
                except OSError:
                    pass  # unreachable at once: no answer, as a lost datagram

    try:
        netns.visit(sorted({d.netns for d in dials}), dial_here)
    except BaseException:
        for c, _ in clients:
            c.close()
        raise
    return clients


def exchange(lab: Lab, dials: list[Dial], tries: int) -> Exchange:
    """Each endpoint answers on its target ports; every dial is tried `tries` times; what each
    try got back."""
    busy: set[tuple[str, str, int]] = set()
    listeners = _listen(lab, dials, busy)
    clients: list[tuple[socket.socket, Dial]] = []
    sel = selectors.DefaultSelector()
    try:
        clients = _dial(dials, tries)
        for s, pid in listeners.items():
            sel.register(s, selectors.EVENT_READ, ("respond", pid))
        got: dict[int, bytes] = {}
        connected: dict[int, float] = {}  # client index → when its connection was accepted
        for i, (c, d) in enumerate(clients):
            sel.register(c, selectors.EVENT_WRITE if _stream(d.port.protocol) else selectors.EVENT_READ, ("client", i))
        pending = set(range(len(clients)))
        deadline = time.monotonic() + TIMEOUT
        while pending and time.monotonic() < deadline:
            now = time.monotonic()
            if busy and all(connected.get(i, now) <= now - GRACE for i in pending):
                break  # only connections a server of the pod's own accepted, saying nothing we know
            for key, events in sel.select(timeout=0.05):
                what, ref = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if what == "respond":
                    _respond(sock, ref)
                elif events & selectors.EVENT_WRITE:  # a stream's connect finished
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        sel.unregister(sock)
                        pending.discard(ref)
                    else:
                        connected[ref] = time.monotonic()
                        sel.modify(sock, selectors.EVENT_READ, key.data)
                else:
                    try:
                        got[ref] = sock.recv(200)
                    except OSError:  # refused, unreachable, reset
                        got[ref] = b""
                    sel.unregister(sock)
                    pending.discard(ref)
        return Exchange([Reply(d, got.get(i, b""), c.getsockname()[1], i in connected) for i, (c, d) in enumerate(clients)],
                        frozenset(busy))
    finally:
        sel.close()
        for s in listeners:
            s.close()
        for c, _ in clients:
            c.close()


def _respond(sock: socket.socket, pid: str) -> None:
    """Answer what waits at a responder: who it is, the source it saw, the port it was reached on."""
    port = sock.getsockname()[1]
    while True:
        try:
            if sock.type == socket.SOCK_STREAM:
                conn, peer = sock.accept()
                try:
                    conn.sendall(f"{pid}|{peer[0]}|{port}".encode())
                except OSError:
                    pass
                conn.close()
            else:
                data, peer = sock.recvfrom(200)
                if data == PROBE:
                    sock.sendto(f"{pid}|{peer[0]}|{port}".encode(), peer)
        except OSError:  # nothing more waits (EAGAIN), or a peer gone: select says when more does
            return
