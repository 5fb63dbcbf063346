"""Probes on the ports a NetworkPolicy lab names (`probe.ports`): a TCP (or SCTP) connect and a UDP
datagram from every pod to every other, answered by listeners in each pod.

A TCP probe passes when the connection is established (the listener accepts it); a UDP probe
when the responder's answer comes back, carrying the source address it saw (no NAT). Anything
else within the time allowed is a timeout: a policy's drop. All probes run at once from one
event loop; the sockets are opened inside their namespaces and used from here.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from dataclasses import dataclass

from cni_lab.errors import LabError
from cni_lab.kernel import netns, transports
from cni_lab.probe.pairs import Endpoint

TIMEOUT = 1.5  # seconds for a probe's answer; a policy drops silently
MAGIC = b"CNIP"


@dataclass(frozen=True)
class PortResult:
    src: Endpoint
    dst: Endpoint
    protocol: str  # TCP | UDP | SCTP (where the kernel has it: check refuses it otherwise)
    port: int
    verdict: str  # ok | nat | timeout
    observed: str | None = None  # UDP: the source the responder saw


def _listen(pods: list[Endpoint], ports: list[tuple[str, int]]) -> list[socket.socket]:
    """A TCP listener or UDP responder per pod and port, bound to the pod's address. Every pod
    answers on every probed port, the ports the pods declare among them (what a lab with policies
    probes by default), whether or not it declares that one: a container port is informational
    ("Not specifying a port here DOES NOT prevent that port from being exposed", Container.ports
    in the core/v1 API), and a pod that refused a port a numbered rule allows would look denied."""
    opened: list[socket.socket] = []
    busy: list[str] = []

    def open_here(name: str) -> None:
        ep = next(p for p in pods if p.netns == name)
        family = socket.AF_INET6 if ep.family == 6 else socket.AF_INET
        for proto, port in ports:
            s = socket.socket(family, *transports.socket_kind(proto))  # SCTP: a stream, as TCP
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((str(ep.ip), port))
            except OSError as e:
                s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                if proto != "UDP":
                    # a server of the pod's own (a learner's web server) holds the port: a TCP probe
                    # is a connect, and that server accepting it is the pod reached, as ours would be
                    continue
                busy.append(f"{ep.id} has a server of its own on {proto}/{port}, which check cannot probe through "
                            "(a UDP answer must be check's own): stop it, or probe other ports with check --port")
                continue
            if proto != "UDP":
                s.listen(256)
            s.setblocking(False)
            opened.append(s)

    try:
        netns.visit([p.netns for p in pods], open_here)
        if busy:
            raise LabError(*busy)
    except BaseException:
        for s in opened:
            s.close()
        raise
    return opened


def run(pods: list[Endpoint], ports: list[tuple[str, int]], timeout: float = TIMEOUT) -> list[PortResult]:
    """Every ordered pair of `pods` on every port; what has no answer after `timeout` seconds is a
    timeout (`conformance` waits less, then probes those again with this default)."""
    if not ports or len(pods) < 2:
        return []
    listeners = _listen(pods, ports)
    senders: dict[int, tuple[int, int, str, int]] = {}  # fileno -> (src, dst, proto, port)
    socks: dict[int, socket.socket] = {}
    results: dict[tuple[int, int, str, int], PortResult] = {}
    sel = selectors.DefaultSelector()
    try:
        for s in listeners:
            sel.register(s, selectors.EVENT_READ, "listen")

        def open_senders(name: str) -> None:
            i = next(k for k, p in enumerate(pods) if p.netns == name)
            src = pods[i]
            family = socket.AF_INET6 if src.family == 6 else socket.AF_INET
            for j, dst in enumerate(pods):
                if j == i:
                    continue
                for proto, port in ports:
                    s = socket.socket(family, *transports.socket_kind(proto))
                    s.bind((str(src.ip), 0))
                    s.setblocking(False)
                    socks[s.fileno()] = s
                    senders[s.fileno()] = (i, j, proto, port)

        netns.visit(sorted({p.netns for p in pods}), open_senders)
        for fd, (i, j, proto, port) in senders.items():
            s = socks[fd]
            if proto != "UDP":  # TCP, SCTP: connected is reached
                err = s.connect_ex((str(pods[j].ip), port))
                if err not in (0, errno.EINPROGRESS):
                    results[(i, j, proto, port)] = PortResult(pods[i], pods[j], proto, port, "timeout")
                    continue
                sel.register(s, selectors.EVENT_WRITE, "connect")
            else:
                try:
                    s.sendto(MAGIC + fd.to_bytes(4, "big"), (str(pods[j].ip), port))
                except OSError:
                    results[(i, j, proto, port)] = PortResult(pods[i], pods[j], proto, port, "timeout")
                    continue
                sel.register(s, selectors.EVENT_READ, "answer")
        deadline = time.monotonic() + timeout
        while len(results) < len(senders) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                s = key.fileobj  # type: ignore[assignment]
                if key.data == "listen":
                    _serve(s)  # type: ignore[arg-type]
                    continue
                i, j, proto, port = senders[s.fileno()]  # type: ignore[union-attr]
                sel.unregister(s)
                if key.data == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
                    verdict = "ok" if err == 0 else "timeout"
                    results[(i, j, proto, port)] = PortResult(pods[i], pods[j], proto, port, verdict)
                else:
                    try:
                        data = s.recv(512)  # type: ignore[union-attr]
                    except OSError:
                        data = b""
                    observed = data[len(MAGIC) + 4:].decode(errors="replace") if data.startswith(MAGIC) else None
                    verdict = "timeout" if observed is None else "ok" if observed == str(pods[i].ip) else "nat"
                    results[(i, j, proto, port)] = PortResult(pods[i], pods[j], proto, port, verdict, observed)
        for job in senders.values():
            if job not in results:
                a, b, kind, number = job
                results[job] = PortResult(pods[a], pods[b], kind, number, "timeout")
    finally:
        sel.close()
        for s in [*listeners, *socks.values()]:
            s.close()
    return [results[k] for k in sorted(results)]


def _serve(sock: socket.socket) -> None:
    """A listener's turn: accept what connected, or answer a UDP probe with the source it saw."""
    try:
        if sock.type == socket.SOCK_STREAM:
            while True:
                conn, _ = sock.accept()
                conn.close()
        else:
            while True:
                data, addr = sock.recvfrom(512)
                if data.startswith(MAGIC):
                    sock.sendto(data[: len(MAGIC) + 4] + addr[0].encode(), addr)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        return
