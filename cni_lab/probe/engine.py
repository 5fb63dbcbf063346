"""The probe engine: one process, one event loop, every pair probed concurrently.

For every endpoint namespace it opens two sockets (inside that namespace, then used from here):
- a UDP socket bound to the endpoint's own IP and PROBE_PORT that both answers probes (a
  responder) and sends them: the reply carries the source address the responder *observed*
  and the responder's identity, so NAT and wrong peers are seen from the receiver's side;
- a raw ICMP socket bound to the endpoint's IP that sends echo requests and receives echo
  replies and ICMP errors (destination unreachable), which say which hop refused the packet.
Nothing runs after `check` returns: the responders are sockets of this process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from cni_lab.kernel import netns
from cni_lab.probe.pairs import Endpoint, Pair

PROBE_PORT = 31999
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3  # DF always set, the path MTU cache ignored: a size test
HEADERS = 28  # IPv4 + UDP
MAGIC = b"CNIL"
ICMP_ECHO, ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_TIME_EXCEEDED = 8, 0, 3, 11
UNREACH_CODES = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
                 9: "network prohibited", 10: "host prohibited", 13: "administratively prohibited"}


@dataclass
class PairResult:
    pair: Pair
    verdict: str = "timeout"
    rtt_ms: float | None = None
    observed: str | None = None  # the source address the responder saw
    answered_by: str | None = None  # identity of whoever answered the UDP probe
    detail: str = ""
    icmp_ok: bool = False
    udp_ok: bool = False
    attempts: int = 0

    @property
    def met(self) -> bool:
        return self.verdict in self.pair.expected


@dataclass
class _Flight:
    result: PairResult
    sent_at: float = 0.0
    done: bool = False
    first_sent: float = 0.0


@dataclass
class Settings:
    attempts: int = 3
    interval: float = 0.3  # seconds between attempts
    settle: float = 0.7  # wait after the last attempt before calling it a timeout
    window: int = 512  # pairs in flight at once: keeps neighbour resolution under the kernel's cap
    deadline: float = 120.0  # bound on the whole run


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(index: int, token: bytes, now: float) -> bytes:
    """An ICMP echo request; id and sequence carry the pair index so that ICMP errors, which quote
    only the first 8 bytes of the echo, still name the pair."""
    ident, seq = index >> 16 & 0xFFFF, index & 0xFFFF
    payload = MAGIC + token + struct.pack("!Id", index, now)
    header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(header + payload), ident, seq) + payload


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed + 64:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed + 64, soft)), hard))


class Prober:
    def __init__(self, endpoints: list[Endpoint], lab_name: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.sizes: dict[int, int] | None = None
        self.lab_name = lab_name
        self.token = os.urandom(4)
        self.endpoints = endpoints
        self.udp: dict[str, socket.socket] = {}
        self.icmp: dict[str, socket.socket] = {}
        self.selector = selectors.DefaultSelector()
        self.missing: list[str] = []  # endpoints whose namespace lacks their own address

    def open(self) -> None:
        _raise_fd_limit(2 * len(self.endpoints))
        for ep in self.endpoints:
            udp = netns.open_socket(ep.netns, socket.AF_INET, socket.SOCK_DGRAM)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            raw = netns.open_socket(ep.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            try:
                udp.bind((str(ep.ip), PROBE_PORT))
                raw.bind((str(ep.ip), 0))
            except OSError as e:
                if e.errno != errno.EADDRNOTAVAIL:
                    raise
                # A damaged endpoint (its address was removed): probe it anyway, from whatever
                # address it has left, and let the verdicts show what that breaks.
                self.missing.append(f"{ep.id} does not have its address {ep.ip} any more")
                udp.bind(("0.0.0.0", PROBE_PORT))
            udp.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
            udp.setblocking(False)
            raw.setblocking(False)
            self.udp[ep.id], self.icmp[ep.id] = udp, raw
            self.selector.register(udp, selectors.EVENT_READ, ("udp", ep))
            self.selector.register(raw, selectors.EVENT_READ, ("icmp", ep))

    def close(self) -> None:
        self.selector.close()
        for s in (*self.udp.values(), *self.icmp.values()):
            s.close()
        self.udp.clear()
        self.icmp.clear()

    def __enter__(self) -> Prober:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the run -------------------------------------------------------------------------------

    def run(self, pairs: list[Pair], progress: Callable[[int, int], None] | None = None,
            sizes: dict[int, int] | None = None) -> list[PairResult]:
        """Probe every pair. With `sizes` (pair index → IP packet size) only UDP probes of exactly
        that size are sent, with DF set: an MTU test."""
        s = self.settings
        self.sizes = sizes
        flights = {p.index: _Flight(PairResult(p)) for p in pairs}
        queue = list(pairs)
        queue.reverse()  # pop() from the end keeps the given order
        active: dict[int, _Flight] = {}
        finished = 0
        started = time.monotonic()
        while queue or active:
            now = time.monotonic()
            if now - started > s.deadline:
                for f in active.values():
                    f.result.detail = f.result.detail or "check ran out of time"
                break
            while queue and len(active) < s.window:
                pair = queue.pop()
                flight = flights[pair.index]
                active[pair.index] = flight
                self._send(flight, now)
            for index, flight in list(active.items()):
                if flight.done:
                    del active[index]
                    finished += 1
                    continue
                if now - flight.sent_at >= s.interval and flight.result.attempts < s.attempts:
                    self._send(flight, now)
                elif flight.result.attempts >= s.attempts and now - flight.sent_at >= s.settle:
                    self._finish(flight)
                    del active[index]
                    finished += 1
            if progress is not None:
                progress(finished, len(pairs))
            for key, _ in self.selector.select(timeout=0.02):
                kind, ep = key.data
                self._drain(key.fileobj, kind, ep, flights)  # type: ignore[arg-type]
        return [flights[p.index].result for p in pairs]

    def _send(self, flight: _Flight, now: float) -> None:
        r, p = flight.result, flight.result.pair
        r.attempts += 1
        flight.sent_at = now
        if not flight.first_sent:
            flight.first_sent = now
        dst = str(p.dst.ip)
        try:
            if not r.udp_ok:
                query = b"Q" + MAGIC + self.token + struct.pack("!Id", p.index, now)
                if self.sizes is not None:
                    query = query.ljust(self.sizes[p.index] - HEADERS, b"\0")
                self.udp[p.src.id].sendto(query, (dst, PROBE_PORT))
            if not r.icmp_ok and self.sizes is None:
                self.icmp[p.src.id].sendto(_echo(p.index, self.token, now), (dst, 0))
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                r.detail = f"{self.sizes and self.sizes.get(p.index)} bytes is more than {p.src.id}'s own MTU"
                flight.done = True
            elif e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL):
                r.verdict, r.detail = "unreachable", f"{p.src.id} has no route to {dst} ({os.strerror(e.errno)})"
                flight.done = True
            elif e.errno not in (errno.EAGAIN, errno.ENOBUFS):
                raise

    def _finish(self, flight: _Flight) -> None:
        r = flight.result
        flight.done = True
        if r.verdict == "unreachable":
            return
        if r.udp_ok:
            p = r.pair
            if r.answered_by != _identity(self.lab_name, p.dst):
                r.verdict = "wrong-peer"
                r.detail = f"{p.dst.ip} was answered by {r.answered_by}, not {p.dst.id}"
            elif r.observed != str(p.src.ip):
                r.verdict = "nat"
                r.detail = f"{p.dst.id} saw the packet come from {r.observed}, not {p.src.ip}"
            elif r.icmp_ok or self.sizes is not None:
                r.verdict = "ok"
            else:
                r.verdict, r.detail = "timeout", "UDP answered but the ICMP echo was not"
        else:
            r.verdict = "timeout"
            r.detail = r.detail or f"no answer from {r.pair.dst.ip} after {r.attempts} attempts"

    def _maybe_done(self, flight: _Flight) -> None:
        r = flight.result
        if r.udp_ok and (r.icmp_ok or self.sizes is not None):
            self._finish(flight)
        elif r.udp_ok and r.answered_by != _identity(self.lab_name, r.pair.dst):
            self._finish(flight)  # a wrong peer needs no more evidence

    def _drain(self, sock: socket.socket, kind: str, ep: Endpoint, flights: dict[int, _Flight]) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the UDP socket: the raw socket reports it
            now = time.monotonic()
            if kind == "udp":
                self._on_udp(sock, ep, data, addr, flights, now)
            else:
                self._on_icmp(ep, data, flights, now)

    def _on_udp(self, sock: socket.socket, ep: Endpoint, data: bytes, addr: tuple[str, int],
                flights: dict[int, _Flight], now: float) -> None:
        if data[:1] == b"Q" and data[1:5] == MAGIC:
            # answer as a responder: echo the nonce (not the padding: only the way there is
            # size-tested), say what source we saw and who we are
            reply = b"R" + data[1:21] + f"|{addr[0]}|{_identity(self.lab_name, ep)}".encode()
            with contextlib.suppress(OSError):
                sock.sendto(reply, addr)
            return
        if data[:1] != b"R" or data[1:5] != MAGIC or data[5:9] != self.token or len(data) < 21:
            return
        index, sent = struct.unpack("!Id", data[9:21])
        flight = flights.get(index)
        if flight is None or flight.done or flight.result.pair.src.id != ep.id:
            return
        _, observed, identity = data[21:].decode(errors="replace").split("|", 2)
        r = flight.result
        r.udp_ok, r.observed, r.answered_by = True, observed, identity
        if r.rtt_ms is None:
            r.rtt_ms = (now - sent) * 1000
        self._maybe_done(flight)

    def _on_icmp(self, ep: Endpoint, data: bytes, flights: dict[int, _Flight], now: float) -> None:
        ihl = (data[0] & 0x0F) * 4
        icmp = data[ihl:]
        if len(icmp) < 8:
            return
        kind, code = icmp[0], icmp[1]
        src_ip = socket.inet_ntoa(data[12:16])
        if kind == ICMP_ECHO_REPLY:
            if icmp[8:12] != MAGIC or icmp[12:16] != self.token or len(icmp) < 28:
                return
            (index,) = struct.unpack("!I", icmp[16:20])
            (sent,) = struct.unpack("!d", icmp[20:28])
            flight = flights.get(index)
            if flight is None or flight.done or flight.result.pair.src.id != ep.id:
                return
            flight.result.icmp_ok = True
            flight.result.rtt_ms = (now - sent) * 1000  # the echo's RTT is the one a learner knows from ping
            self._maybe_done(flight)
        elif kind in (ICMP_UNREACH, ICMP_TIME_EXCEEDED):
            inner = icmp[8:]
            inner_ihl = (inner[0] & 0x0F) * 4 if inner else 0
            if len(inner) < inner_ihl + 8 or inner[9] != socket.IPPROTO_ICMP or inner[inner_ihl] != ICMP_ECHO:
                return
            ident, seq = struct.unpack("!HH", inner[inner_ihl + 4 : inner_ihl + 8])
            flight = flights.get(ident << 16 | seq)
            if flight is None or flight.done or flight.result.pair.src.id != ep.id:
                return
            r = flight.result
            what = UNREACH_CODES.get(code, f"code {code}") if kind == ICMP_UNREACH else "TTL exceeded"
            r.verdict, r.detail = "unreachable", f"{src_ip} answered: {what}"
            flight.done = True


def _identity(lab: str, ep: Endpoint) -> str:
    return f"{lab}/{ep.id}"
