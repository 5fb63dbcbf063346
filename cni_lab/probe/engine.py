"""The probe engine: one process, one event loop, every pair probed concurrently.

For every endpoint namespace it opens two sockets (inside that namespace, then used from here):
- a UDP socket bound to the endpoint's own IP and PROBE_PORT that both answers probes (a
  responder) and sends them: the reply carries the source address the responder *observed*
  and the responder's identity, so NAT and wrong peers are seen from the receiver's side;
- a raw ICMP socket bound to the endpoint's IP that sends echo requests and receives echo
  replies and ICMP errors (destination unreachable), which say which hop refused the packet.
A prober speaks one family: its endpoints' (IPv4, or IPv6 with ICMPv6; the kernel fills in the
ICMPv6 checksum and hands raw ICMPv6 sockets the message without its IPv6 header).
Nothing runs after `check` returns: the responders are sockets of this process.

Results are kept compactly (a byte per pair, details only for pairs that are not ok) so that a
1000-pod lab's million pairs fit in memory.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import resource
import selectors
import socket
import struct
import time
from array import array
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from cni_lab.errors import LabError
from cni_lab.kernel import netns
from cni_lab.model import VERDICTS
from cni_lab.probe.pairs import AllPairs, Endpoint

PROBE_PORT = 31999
MAGIC = b"CNIL"
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3  # DF always set, the path MTU cache ignored: a size test
SOL_RAW, ICMP_FILTER = 255, 1
HEADERS = 28  # IPv4 + UDP
HEADERS6 = 48  # IPv6 + UDP
ICMP_ECHO, ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_TIME_EXCEEDED = 8, 0, 3, 11
UNREACH_CODES = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
                 4: "fragmentation needed", 9: "network prohibited", 10: "host prohibited",
                 13: "administratively prohibited"}
ICMP6_UNREACH, ICMP6_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_ECHO, ICMP6_ECHO_REPLY = 1, 2, 3, 128, 129
UNREACH6_CODES = {0: "no route to destination", 1: "administratively prohibited", 3: "address unreachable",
                  4: "port unreachable", 5: "source address failed policy", 6: "reject route"}
ICMP6_FILTER = 1  # at level IPPROTO_ICMPV6: a bitmap of the types to block
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE, IPV6_DONTFRAG = 23, 3, 62
OK, NAT, WRONG_PEER, TIMEOUT, UNREACHABLE = range(5)  # a pair's verdict as one byte: its index in VERDICTS
PENDING = 255
UDP_OK, ICMP_OK, DONE = 1, 2, 4
Q_HEADER = struct.Struct("!Id")  # pair index, send time


@dataclass
class Settings:
    attempts: int = 3
    interval: float = 0.3  # seconds between attempts
    settle: float = 0.7  # wait after the last attempt before calling it a timeout
    window: int = 512  # pairs in flight at once: keeps neighbour resolution under the kernel's cap
    deadline: float = 600.0  # bound on the whole run


class Jobs(Protocol):
    """Pairs to probe, as (source, destination) endpoint indexes."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[int, int]: ...


@dataclass
class Extra:
    """What is known about a pair beyond its verdict (kept only where it matters)."""

    observed: str | None = None  # the source address the responder saw
    answered_by: str | None = None  # identity of whoever answered the UDP probe
    detail: str = ""
    # a failure a full neighbour table also causes ("host unreachable": an ARP request that got
    # no answer or no entry), probed again once the check has freed its entries (probe/matrix.py)
    unresolved: bool = False


class Outcomes:
    """Verdicts of one run: a byte and an RTT per job, details for the rest."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        n = len(jobs)
        self.verdict = bytearray([PENDING]) * n
        self.rtt = array("f", bytes(4 * n))
        self.extra: dict[int, Extra] = {}
        self.duration = 0.0


ECHO = struct.Struct("!BBHHH4s4sId")  # an echo request: header, then MAGIC, token, job index, send time
ECHO_WORDS = struct.Struct(f"!{ECHO.size // 2}H")


def _echo(index: int, token: bytes, now: float, family: int = 4, salt: int = 0) -> bytes:
    """An ICMP echo request; id and sequence carry the job index so that ICMP errors, which quote
    only the first 8 bytes of the echo, still name the pair. The id is offset by the run's `salt`:
    conntrack keys an echo by its id, so a run that reused the last run's ids would find their
    entries (30 s) and be let through as "established" by a policy that now denies the pair.
    (ICMPv6: the kernel sums it.)"""
    ident, seq = (index >> 16) + salt & 0xFFFF, index & 0xFFFF
    if family == 6:
        return ECHO.pack(ICMP6_ECHO, 0, 0, ident, seq, MAGIC, token, index, now)
    packet = bytearray(ECHO.pack(ICMP_ECHO, 0, 0, ident, seq, MAGIC, token, index, now))
    total = sum(ECHO_WORDS.unpack(packet))  # the Internet checksum (RFC 1071), checksum field 0
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    struct.pack_into("!H", packet, 2, ~total & 0xFFFF)
    return bytes(packet)


def _raise_fd_limit(needed: int) -> None:
    """Sockets are files: raise the soft limit as far as needed, or say plainly why not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 64
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise LabError(f"probing this lab needs about {want} open files, but this shell allows {hard} "
                       f"(ulimit -n): run `ulimit -n {want}` as root first")
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class _Round:
    """One run over a list of jobs: per job what was sent and answered and whether it is done,
    when to look at it again, and its outcome."""

    def __init__(self, prober: Prober, jobs: Jobs, sizes: Sequence[int] | None) -> None:
        self.prober, self.jobs, self.sizes = prober, jobs, sizes
        self.udp_only = sizes is not None
        total = len(jobs)
        self.out = Outcomes(jobs)
        self.flags = bytearray(total)  # UDP_OK | ICMP_OK | DONE
        self.attempts = bytearray(total)
        self.sent_at = array("d", bytes(8 * total))
        self.timers: list[tuple[float, int]] = []  # (when to look at the job again, job), a heap
        self.active = 0  # jobs started and not finished
        self.finished = 0

    def start(self, j: int, now: float) -> None:
        self.active += 1
        self.send(j, now)

    def send(self, j: int, now: float) -> None:
        """One attempt: a UDP probe and an ICMP echo, each unless already answered."""
        prober = self.prober
        src, dst = self.jobs[j]
        self.attempts[j] += 1
        self.sent_at[j] = now
        try:
            if not self.flags[j] & UDP_OK:
                query = b"Q" + MAGIC + prober.token + Q_HEADER.pack(j, now)
                if self.sizes is not None:
                    query = query.ljust(self.sizes[j] - prober.headers, b"\0")
                prober.sender[src].sendto(query, (prober.ips[dst], PROBE_PORT))
            if not self.udp_only and not self.flags[j] & ICMP_OK:
                prober.pinger[src].sendto(_echo(j, prober.token, now, prober.family, prober.salt), (prober.ips[dst], 0))
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                self.finish(j, TIMEOUT, Extra(detail=f"{self.sizes and self.sizes[j]} bytes is more than "
                                              f"{prober.endpoints[src].id}'s own MTU"))
                return
            if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL):
                self.finish(j, UNREACHABLE, Extra(detail=f"{prober.endpoints[src].id} has no route to "
                                                  f"{prober.ips[dst]} ({os.strerror(e.errno)})",
                                                  unresolved=e.errno == errno.EHOSTUNREACH))
                return
            if e.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EPERM):
                raise
        heapq.heappush(self.timers, (now + prober.settings.interval, j))

    def finish(self, j: int, verdict: int, extra: Extra | None = None) -> None:
        if self.flags[j] & DONE:
            return
        self.flags[j] |= DONE
        self.out.verdict[j] = verdict
        if extra is not None:
            self.out.extra[j] = extra
        self.active -= 1
        self.finished += 1

    def look_again(self, now: float) -> None:
        """The jobs whose time has come: another attempt, or, after the last one has had time to
        be answered, a timeout."""
        s = self.prober.settings
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, j = heapq.heappop(timers)
            if self.flags[j] & DONE:
                continue
            if self.attempts[j] < s.attempts:
                self.send(j, now)
            elif now - self.sent_at[j] >= s.settle:
                self._expire(j)
            else:
                heapq.heappush(timers, (self.sent_at[j] + s.settle, j))

    def _expire(self, j: int) -> None:
        if self.flags[j] & UDP_OK:
            if self.udp_only or self.flags[j] & ICMP_OK:  # pragma: no cover - finished on arrival
                self.finish(j, OK)
            else:
                self.finish(j, TIMEOUT, Extra(detail="UDP answered but the ICMP echo was not"))
            return
        extra = self.out.extra.get(j)
        _, dst = self.jobs[j]
        self.finish(j, TIMEOUT, Extra(detail=(extra.detail if extra and extra.detail else
                                              f"no answer from {self.prober.ips[dst]} after {self.attempts[j]} attempts")))

    def give_up(self) -> None:
        for j in range(len(self.jobs)):
            if not self.flags[j] & DONE and self.attempts[j]:
                self.finish(j, TIMEOUT, Extra(detail="check ran out of time"))


def verdict_of(code: int) -> str:
    """The verdict a byte of `Outcomes.verdict` stands for (a pair never finished is a timeout)."""
    return VERDICTS[code] if code < len(VERDICTS) else "timeout"


def _job_of(ident: int, seq: int, salt: int) -> int:
    """The job index an echo's id and sequence carry (the inverse of _echo's)."""
    return (ident - salt & 0xFFFF) << 16 | seq


def _bindable(address: str, family: int) -> bool:
    with socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def identity(lab: str, ep: Endpoint) -> str:
    return f"{lab}/{ep.id}"


class Prober:
    def __init__(self, endpoints: list[Endpoint], lab_name: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.lab_name = lab_name
        self.token = os.urandom(4)
        self.salt = int.from_bytes(os.urandom(2), "big")  # this run's ICMP ids (see _echo)
        self.endpoints = endpoints
        self.ids = [identity(lab_name, ep).encode() for ep in endpoints]
        self.ips = [str(ep.ip) for ep in endpoints]
        self.family = endpoints[0].ip.version if endpoints else 4  # one family per prober
        self.headers = HEADERS6 if self.family == 6 else HEADERS
        self.udp: list[socket.socket] = []  # the responders
        self.senders: list[socket.socket] = []  # this process's UDP senders (see open)
        self.icmp: list[socket.socket] = []
        self.selector = selectors.DefaultSelector()
        self.missing: list[str] = []  # endpoints whose namespace lacks their own address
        self._owned: dict[tuple[int, str], bool] = {}  # (node endpoint, address) → the node has it
        # Who sends, by endpoint: the responder sockets themselves, unless a worker process has its own.
        self.sender: dict[int, socket.socket] = {}
        self.pinger: dict[int, socket.socket] = {}

    def _open_sockets(self, indexes: Sequence[int], port: int) -> list[tuple[int, socket.socket, socket.socket]]:
        """For each endpoint i: its UDP socket (bound to its IP and `port`; a sender on an
        ephemeral port with `port` 0) and its raw ICMP socket, both opened inside its namespace
        (one visit per namespace). Only echo replies and errors reach the raw socket, not every
        echo request."""
        opened = self._open(indexes, port, with_raw=True)
        return [(i, udp, raw) for i, udp, raw in opened if raw is not None]

    def _open_senders(self, indexes: Sequence[int]) -> list[tuple[int, socket.socket]]:
        """For each endpoint i: a UDP socket to send its probes from, on an ephemeral port."""
        return [(i, udp) for i, udp, _ in self._open(indexes, 0, with_raw=False)]

    def _open(self, indexes: Sequence[int], port: int,
              with_raw: bool) -> list[tuple[int, socket.socket, socket.socket | None]]:
        opened: list[tuple[int, socket.socket, socket.socket | None]] = []

        af = socket.AF_INET6 if self.family == 6 else socket.AF_INET
        proto = socket.IPPROTO_ICMPV6 if self.family == 6 else socket.IPPROTO_ICMP

        def open_here(_: str) -> None:
            udp = socket.socket(af, socket.SOCK_DGRAM)
            try:
                raw = socket.socket(af, socket.SOCK_RAW, proto) if with_raw else None
            except BaseException:
                udp.close()
                raise
            opened.append((indexes[len(opened)], udp, raw))

        try:
            netns.visit([self.endpoints[i].netns for i in indexes], open_here)
            for i, udp, raw in opened:
                self._configure(i, udp, raw, port)
        except BaseException:
            for _, udp, raw in opened:
                udp.close()
                if raw is not None:
                    raw.close()
            raise
        return opened

    def _configure(self, i: int, udp: socket.socket, raw: socket.socket | None, port: int) -> None:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if raw is None:
            pass
        elif self.family == 6:
            blocked = [0xFFFFFFFF] * 8  # every type blocked but the replies and errors we read
            for kind in (ICMP6_ECHO_REPLY, ICMP6_UNREACH, ICMP6_TOO_BIG, ICMP6_TIME_EXCEEDED):
                blocked[kind >> 5] &= ~(1 << (kind & 31)) & 0xFFFFFFFF
            raw.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
        else:
            wanted = (1 << ICMP_ECHO_REPLY) | (1 << ICMP_UNREACH) | (1 << ICMP_TIME_EXCEEDED)
            raw.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~wanted & 0xFFFFFFFF))
        # A node sends as its agents do (kubelet, health checks, ping): unbound, the kernel picks
        # the source for each destination (flannel.1's, cilium_host's, the underlay's address),
        # so a data plane that fails those sources fails check too. Its responder stays on its
        # address, and pods send from their only one.
        node = self.endpoints[i].kind == "node"
        try:
            if node and not port:
                udp.bind(("::" if self.family == 6 else "0.0.0.0", 0))
            else:
                udp.bind((self.ips[i], port))
            if raw is not None and not node:
                raw.bind((self.ips[i], 0))
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL:
                raise
            # A damaged endpoint (its address was removed): probe it anyway, from whatever
            # address it has left, and let the verdicts show what that breaks.
            if port:
                self.missing.append(f"{self.endpoints[i].id} does not have its address {self.endpoints[i].ip} any more")
            udp.bind(("::" if self.family == 6 else "0.0.0.0", port))
        if self.family == 6:  # never fragmented, the path MTU cache ignored: a size test
            udp.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
            udp.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        else:
            udp.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        udp.setblocking(False)
        if raw is not None:
            raw.setblocking(False)

    def open(self) -> None:
        # three sockets per endpoint here, and two more per source in a worker process (see run_parallel)
        _raise_fd_limit(5 * len(self.endpoints))
        for i, udp, raw in self._open_sockets(range(len(self.endpoints)), PROBE_PORT):
            self.udp.append(udp)
            self.icmp.append(raw)
            self.pinger[i] = raw
            self.selector.register(udp, selectors.EVENT_READ, (0, i))
            self.selector.register(raw, selectors.EVENT_READ, (1, i))
        # Probes leave from a port of their own, new each run, never from the responder's: one
        # run's conntrack entries (UDP keeps them 30 s to 2 min) must not decide the next run's
        # verdicts, and every check is a new flow as a real client's request is.
        for i, udp in self._open_senders(range(len(self.endpoints))):
            self.senders.append(udp)
            self.sender[i] = udp
            self.selector.register(udp, selectors.EVENT_READ, (0, i))

    def close(self) -> None:
        self.selector.close()
        for s in (*self.udp, *self.icmp, *self.senders):
            s.close()
        self.udp.clear()
        self.senders.clear()
        self.icmp.clear()
        self.sender.clear()
        self.pinger.clear()

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

    def run(self, jobs: Jobs, progress: Callable[[int, int], None] | None = None,
            sizes: Sequence[int] | None = None) -> Outcomes:
        """Probe every job, at most `settings.window` at a time. With `sizes` (an IP packet size
        per job) only UDP probes of exactly that size are sent, with DF set: an MTU test."""
        s = self.settings
        round_ = _Round(self, jobs, sizes)
        total = len(jobs)
        started = time.monotonic()
        last_progress = 0.0
        next_job = 0
        while next_job < total or round_.active:
            now = time.monotonic()
            if now - started > s.deadline:
                round_.give_up()
                break
            while next_job < total and round_.active < s.window:
                round_.start(next_job, now)
                next_job += 1
            round_.look_again(now)
            if progress is not None and now - last_progress > 0.1:
                progress(round_.finished, total)
                last_progress = now
            timers = round_.timers
            timeout = max(0.0, min(0.05, timers[0][0] - now)) if timers else 0.05
            for key, _ in self.selector.select(timeout=timeout):
                kind, i = key.data
                if kind == 0:
                    self._drain_udp(key.fileobj, i, round_)  # type: ignore[arg-type]
                elif self.family == 6:
                    self._drain_icmp6(key.fileobj, i, round_)  # type: ignore[arg-type]
                else:
                    self._drain_icmp(key.fileobj, i, round_)  # type: ignore[arg-type]
        if progress is not None:
            progress(round_.finished, total)
        round_.out.duration = time.monotonic() - started
        return round_.out

    # -- in a worker process (probe/workers.py) ------------------------------------------------------

    def drop_pingers(self) -> None:
        """Close this process's raw ICMP sockets before forking workers that ping from their own."""
        for raw in self.icmp:
            self.selector.unregister(raw)
            raw.close()
        self.icmp.clear()
        self.pinger.clear()

    def for_worker(self, owned: Sequence[int], settings: Settings) -> Prober:
        """In a worker process: a prober of its own (its own token, and senders for the endpoints
        it owns on ephemeral ports, so replies come back to it alone) that answers for their
        responders, which the parent opened before the fork."""
        mine = Prober(self.endpoints, self.lab_name, settings)
        mine.udp = self.udp
        for i, udp, raw in mine._open_sockets(owned, 0):
            mine.sender[i], mine.pinger[i] = udp, raw
            mine.senders.append(udp)
            mine.icmp.append(raw)
            mine.selector.register(udp, selectors.EVENT_READ, (0, i))
            mine.selector.register(raw, selectors.EVENT_READ, (1, i))
        for i in owned:
            mine.selector.register(self.udp[i], selectors.EVENT_READ, (0, i))
        return mine

    def owns(self, i: int, address: str) -> bool:
        """Whether endpoint i's node has `address` (the kernel's answer: binding to an address
        not on the node fails): a node's flannel.1, cilium_host or tunnel address is the node,
        not NAT. A pod owns only its address."""
        if self.endpoints[i].kind != "node":
            return False
        key = (i, address)
        if key not in self._owned:
            self._owned[key] = netns.in_netns(self.endpoints[i].netns, lambda: _bindable(address, self.family))
        return self._owned[key]

    def answer(self, i: int) -> None:
        """Answer the probes waiting at endpoint i's responder (between a worker's batches)."""
        self._drain_udp(self.udp[i], i, _Round(self, _NO_JOBS, None))

    def _drain_udp(self, sock: socket.socket, i: int, r: _Round) -> None:
        """Answer the probes waiting at a responder; take the answers to this round's probes."""
        flags, out = r.flags, r.out
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the UDP socket: the raw socket reports it
            head = data[:1]
            if head == b"Q" and data[1:5] == MAGIC:
                # answer as a responder: echo the nonce (not the padding: only the way there is
                # size-tested), say what source we saw and who we are
                with contextlib.suppress(OSError):
                    sock.sendto(b"R" + data[1:21] + b"|" + addr[0].encode() + b"|" + self.ids[i], addr)
                continue
            if head != b"R" or data[1:5] != MAGIC or data[5:9] != self.token or len(data) < 21:
                continue
            j, sent = Q_HEADER.unpack_from(data, 9)
            if j >= len(flags) or flags[j] & (DONE | UDP_OK):
                continue
            src, dst = r.jobs[j]
            if src != i:
                continue
            _, observed, who = data[21:].split(b"|", 2)
            flags[j] |= UDP_OK
            if not out.rtt[j]:
                out.rtt[j] = (time.monotonic() - sent) * 1000
            if who != self.ids[dst]:
                answered = who.decode(errors="replace")
                r.finish(j, WRONG_PEER, Extra(observed.decode(), answered,
                                            f"{self.ips[dst]} was answered by {answered}, not {self.endpoints[dst].id}"))
            elif (obs := observed.decode()) != self.ips[src] and not self.owns(src, obs):
                r.finish(j, NAT, Extra(obs, who.decode(),
                                     f"{self.endpoints[dst].id} saw the packet come from {obs}, not {self.ips[src]}"))
            elif r.udp_only or flags[j] & ICMP_OK:
                r.finish(j, OK, None if obs == self.ips[src] else Extra(obs, who.decode()))
            elif obs != self.ips[src]:  # the echo's answer finishes it: keep what the responder saw
                out.extra[j] = Extra(obs, who.decode())

    def _drain_icmp(self, sock: socket.socket, i: int, r: _Round) -> None:
        """Echo replies to this round's pings, and the ICMP errors that name who refused them."""
        flags, out, jobs = r.flags, r.out, r.jobs
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            ihl = (data[0] & 0x0F) * 4
            kind = data[ihl] if len(data) > ihl else -1
            if kind == ICMP_ECHO_REPLY:
                icmp = data[ihl:]
                if len(icmp) < 28 or icmp[8:12] != MAGIC or icmp[12:16] != self.token:
                    continue
                j, sent = struct.unpack_from("!Id", icmp, 16)
                if j >= len(flags) or flags[j] & (DONE | ICMP_OK) or jobs[j][0] != i:
                    continue
                flags[j] |= ICMP_OK
                out.rtt[j] = (time.monotonic() - sent) * 1000  # the echo's RTT: the one a learner knows from ping
                if flags[j] & UDP_OK:
                    r.finish(j, OK)
            elif kind in (ICMP_UNREACH, ICMP_TIME_EXCEEDED):
                icmp = data[ihl:]
                inner = icmp[8:]
                inner_ihl = (inner[0] & 0x0F) * 4 if inner else 0
                if len(inner) < inner_ihl + 8 or inner[9] != socket.IPPROTO_ICMP or inner[inner_ihl] != ICMP_ECHO:
                    continue
                ident, seq = struct.unpack_from("!HH", inner, inner_ihl + 4)
                j = _job_of(ident, seq, self.salt)
                if j >= len(flags) or flags[j] & DONE or jobs[j][0] != i:
                    continue
                what = UNREACH_CODES.get(icmp[1], f"code {icmp[1]}") if kind == ICMP_UNREACH else "TTL exceeded"
                r.finish(j, UNREACHABLE, Extra(detail=f"{socket.inet_ntoa(data[12:16])} answered: {what}",
                                             unresolved=kind == ICMP_UNREACH and icmp[1] == 1))


    def _drain_icmp6(self, sock: socket.socket, i: int, r: _Round) -> None:
        """As _drain_icmp, for ICMPv6: the message starts at its own header; an error quotes the
        IPv6 header (40 bytes) and then the echo's first bytes."""
        flags, out, jobs = r.flags, r.out, r.jobs
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            kind = data[0] if data else -1
            if kind == ICMP6_ECHO_REPLY:
                if len(data) < 28 or data[8:12] != MAGIC or data[12:16] != self.token:
                    continue
                j, sent = struct.unpack_from("!Id", data, 16)
                if j >= len(flags) or flags[j] & (DONE | ICMP_OK) or jobs[j][0] != i:
                    continue
                flags[j] |= ICMP_OK
                out.rtt[j] = (time.monotonic() - sent) * 1000
                if flags[j] & UDP_OK:
                    r.finish(j, OK)
            elif kind in (ICMP6_UNREACH, ICMP6_TOO_BIG, ICMP6_TIME_EXCEEDED):
                inner = data[8:]
                if len(inner) < 48 or inner[6] != socket.IPPROTO_ICMPV6 or inner[40] != ICMP6_ECHO:
                    continue
                ident, seq = struct.unpack_from("!HH", inner, 44)
                j = _job_of(ident, seq, self.salt)
                if j >= len(flags) or flags[j] & DONE or jobs[j][0] != i:
                    continue
                what = {ICMP6_UNREACH: UNREACH6_CODES.get(data[1], f"unreachable, code {data[1]}"),
                        ICMP6_TOO_BIG: "packet too big", ICMP6_TIME_EXCEEDED: "hop limit exceeded"}[kind]
                r.finish(j, UNREACHABLE, Extra(detail=f"{addr[0]} answered: {what}",
                                             unresolved=kind == ICMP6_UNREACH and data[1] == 3))


_NO_JOBS = AllPairs(1)

__all__ = ["Extra", "Outcomes", "Prober", "Settings", "verdict_of"]
