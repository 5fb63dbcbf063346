"""check's rule "dns": every pod looks every Service up by name, as its own resolver would, and
must get the Service's ClusterIP, over UDP and over TCP; a connection to that address is the
pod → Service probe of the same pod and Service (service_probes.py), so the name reaches an
endpoint. The names: the short one in the pod's own namespace (`web`), `<svc>.<ns>` from
every other namespace (the search path does the rest: `web.default` → `web.default.svc.cluster.local`).

The resolver is dns_message.py's (glibc's search and ndots, messages by struct) reading the pod's
resolv.conf as the plan wrote it, over a socket opened in the pod's namespace; nothing of the
host's resolver is used.

Expected: an answer, exactly the ClusterIP; where the policies do not let the pod reach the DNS
pod on 53 of that protocol (the evaluator's word, and its cause: the policy), no answer at all,
while the Service's ClusterIP still works (DNS blocked is not the Service broken).
"""

from __future__ import annotations

import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cni_lab import dns_message, dns_records, names
from cni_lab.cluster import Lab, Pod, Service
from cni_lab.dns_message import ResolvConf
from cni_lab.kernel import netns

TIMEOUT = 1.0  # per question: kube-dns is one hop away (glibc waits 5 s, twice)
WORKERS = 16


@dataclass(frozen=True)
class Lookup:
    """What a stub resolver asked and heard: each name tried with its answer's code (or
    "timeout"), and the addresses of the answer that ended the search."""

    asked: tuple[tuple[str, str], ...]
    addresses: tuple[str, ...]

    @property
    def timed_out(self) -> bool:
        return any(code == "timeout" for _, code in self.asked)


@dataclass(frozen=True)
class DnsProbe:
    src: str  # pod id
    service: str  # namespace/name
    name: str  # what the pod looked up: `web`, or `web.default` from another namespace
    transport: str  # UDP | TCP
    expected: str  # the ClusterIP
    lookup: Lookup
    allowed: bool = True  # the policies let the pod reach kube-dns's pod on 53/transport
    policy: str = ""  # the evaluator's words for that, in a lab with policies
    reached: bool | None = None  # the pod → Service probe of the same pod and Service passed (None: not probed)
    problem: str = ""  # "" when as expected

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def title(self) -> str:
        return f"pod → name {self.name} ({self.service}) over {self.transport}"


def lookup(ns: str, conf: ResolvConf, name: str, transport: str, qtype: str = "A", timeout: float = TIMEOUT) -> Lookup:
    """Look `name` up as glibc would with `conf`, from inside namespace `ns`."""
    asked: list[tuple[str, str]] = []
    if not conf.nameservers:
        return Lookup((), ())
    server = conf.nameservers[0]
    for i, candidate in enumerate(dns_message.candidates(name, conf)):
        try:
            response = ask(ns, server, candidate, transport, qtype, ident=(i * 7919 + len(name)) & 0xFFFF, timeout=timeout)
        except (OSError, dns_message.MessageError) as e:
            asked.append((candidate, "timeout" if isinstance(e, (TimeoutError, socket.timeout)) else str(e)))
            break  # glibc: a try that gets no answer ends the search (TRY_AGAIN)
        asked.append((candidate, response.rcode))
        if response.rcode == "NOERROR" and response.answers:
            return Lookup(tuple(asked), response.addresses())
        if response.rcode not in ("NXDOMAIN", "NOERROR"):
            break
    return Lookup(tuple(asked), ())


def ask(ns: str, server: str, name: str, transport: str, qtype: str, ident: int, timeout: float) -> dns_message.Response:
    """One question to `server`:53 from a socket of namespace `ns`."""
    kind = socket.SOCK_DGRAM if transport == "UDP" else socket.SOCK_STREAM
    message = dns_message.query(name, qtype, ident)
    sock = netns.open_socket(ns, socket.AF_INET, kind)
    try:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        if kind == socket.SOCK_DGRAM:
            sock.send(message)
            deadline = time.monotonic() + timeout
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                response = dns_message.decode(sock.recv(4096))
                if response.id == ident:
                    return response
        sock.sendall(dns_message.tcp_frame(message))
        (length,) = struct.unpack("!H", _read(sock, 2))
        return dns_message.decode(_read(sock, length))
    finally:
        sock.close()


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise dns_message.MessageError("the server closed the connection mid-answer")
        data += chunk
    return data


def questions(lab: Lab) -> list[tuple[Pod, Service, str, str]]:
    """(pod, Service, name, transport): every pod, every ClusterIP Service, UDP and TCP."""
    out = []
    for pod in lab.pods:
        for svc in lab.services:
            name = svc.spec.name if svc.spec.namespace == pod.namespace else f"{svc.spec.name}.{svc.spec.namespace}"
            out += [(pod, svc, name, transport) for transport in ("UDP", "TCP")]
    return out


def run(lab: Lab, reached: dict[tuple[str, str], bool]) -> list[DnsProbe]:
    """Every question, side by side; `reached`: (pod id, Service) → its pod → Service probe passed."""
    if lab.dns_service is None:
        return []
    asked = questions(lab)

    def one(q: tuple[Pod, Service, str, str]) -> Lookup:
        pod, _, name, transport = q
        conf = ResolvConf.parse(dns_records.resolv_conf(lab, pod))
        return lookup(names.pod_netns(lab.name, pod.node, pod.name), conf, name, transport)

    with ThreadPoolExecutor(min(WORKERS, len(asked)), thread_name_prefix="cni-lab-dns") as pool:
        found = list(pool.map(one, asked))
    return [judge(lab, pod, svc, name, transport, got, reached.get((pod.id, svc.qualified)))
            for (pod, svc, name, transport), got in zip(asked, found)]


def judge(lab: Lab, pod: Pod, svc: Service, name: str, transport: str, got: Lookup, reached: bool | None) -> DnsProbe:
    server = dns_records.dns_pod(lab)
    allowed, words = True, ""
    if lab.policies and server is not None:
        by_id = {w.id: w for w in lab.workloads}
        cause = lab.evaluator.explain(by_id[pod.id], by_id[server.id], transport, 53)
        allowed, words = cause.allowed, cause.describe()
    probe = DnsProbe(pod.id, svc.qualified, name, transport, str(svc.cluster_ip), got, allowed, words, reached)
    return _with_problem(probe)


def _with_problem(p: DnsProbe) -> DnsProbe:
    from dataclasses import replace

    heard = ", ".join(f"{n} {code}" for n, code in p.lookup.asked) or "nothing asked"
    if not p.allowed:
        if p.lookup.addresses:
            return replace(p, problem=f"answered {', '.join(p.lookup.addresses)}, but the policies block DNS: {p.policy}")
        if p.reached is False:
            return replace(p, problem=f"blocked as the policies say, but the ClusterIP {p.expected} fails too")
        return p
    if p.lookup.addresses != (p.expected,):
        got = ", ".join(p.lookup.addresses) or "no address"
        return replace(p, problem=f"got {got}, not the ClusterIP {p.expected} ({heard})")
    if p.reached is False:
        return replace(p, problem=f"resolved to {p.expected}, but the connection to it failed (pod → Service)")
    return p


def summary(p: DnsProbe) -> str:
    """One line a learner reads: what was asked, what came back, what that means."""
    path = " → ".join(f"{n} {code}" for n, code in p.lookup.asked)
    if not p.allowed and not p.lookup.addresses:
        return (f"{p.src}: {p.name} over {p.transport}: no answer ({path}): DNS blocked as the policies say "
                f"({p.policy}); the ClusterIP {p.expected} itself " + ("works" if p.reached else "was not probed"
                                                                      if p.reached is None else "fails"))
    return f"{p.src}: {p.name} over {p.transport}: {', '.join(p.lookup.addresses) or 'no address'} ({path})"
