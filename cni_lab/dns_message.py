"""A stub resolver's half of DNS, pure: messages encoded and decoded with struct (RFC 1035
section 4: a 12-byte header, the question, resource records with compressed names), and the
names glibc's resolver asks for, in order, given resolv.conf's `search` and `options ndots`.

The search (glibc resolv/res_query.c, __res_context_search): a name ending in a dot is asked as
it is, alone. Otherwise, with at least `ndots` dots it is asked as it is first, then with each
search domain appended; with fewer, each search domain first, then as it is. The first answer
that has records ends the search; NXDOMAIN and an empty answer (NODATA) go on to the next name.

No sockets here: probe/dns_probes.py sends what this encodes, from inside a pod's namespace.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
CLASS_IN = 1
FLAG_RD = 0x0100  # recursion desired, as every stub resolver sets it


class MessageError(ValueError):
    """Bytes that are no DNS answer to our question."""


@dataclass(frozen=True)
class Answer:
    name: str  # without the final dot
    type: str  # A, AAAA, SRV, PTR, TXT, CNAME (else TYPEn)
    ttl: int
    value: str  # an address, `priority weight port target.`, a name with its final dot, text


@dataclass(frozen=True)
class Response:
    id: int
    rcode: str  # NOERROR, NXDOMAIN, REFUSED ...
    authoritative: bool
    truncated: bool
    question: str
    answers: tuple[Answer, ...]

    def addresses(self) -> tuple[str, ...]:
        return tuple(a.value for a in self.answers if a.type in ("A", "AAAA"))


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise MessageError(f"{name}: the label {label!r} is longer than 63 bytes")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def query(name: str, qtype: str = "A", ident: int = 0) -> bytes:
    """A question for `name` (no final dot needed), one per message, recursion desired."""
    return struct.pack("!HHHHHH", ident, FLAG_RD, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", TYPES[qtype], CLASS_IN)


def tcp_frame(message: bytes) -> bytes:
    """Over TCP every message is preceded by its length in two bytes (RFC 1035 4.2.2)."""
    return struct.pack("!H", len(message)) + message


def _name(data: bytes, at: int) -> tuple[str, int]:
    """The name at `at` (following compression pointers) and where the bytes after it start."""
    labels: list[str] = []
    end = None
    for _ in range(128):  # a loop of pointers is no name
        if at >= len(data):
            raise MessageError("a name runs past the message")
        length = data[at]
        if length & 0xC0 == 0xC0:
            if at + 1 >= len(data):
                raise MessageError("a compression pointer runs past the message")
            end = at + 2 if end is None else end
            at = ((length & 0x3F) << 8) | data[at + 1]
            continue
        if length == 0:
            return ".".join(labels), (at + 1 if end is None else end)
        labels.append(data[at + 1:at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    raise MessageError("a name's compression pointers loop")


def _rdata(data: bytes, kind: int, at: int, length: int) -> str:
    raw = data[at:at + length]
    if kind == TYPES["A"] and length == 4:
        return str(IPv4Address(raw))
    if kind == TYPES["AAAA"] and length == 16:
        return str(IPv6Address(raw))
    if kind in (TYPES["PTR"], TYPES["CNAME"], TYPES["NS"]):
        return _name(data, at)[0] + "."
    if kind == TYPES["SRV"] and length >= 7:
        priority, weight, port = struct.unpack("!HHH", raw[:6])
        return f"{priority} {weight} {port} {_name(data, at + 6)[0]}."
    if kind == TYPES["TXT"]:
        texts, i = [], 0
        while i < len(raw):
            texts.append('"' + raw[i + 1:i + 1 + raw[i]].decode("utf-8", "replace") + '"')
            i += 1 + raw[i]
        return " ".join(texts)
    return raw.hex()


def decode(data: bytes) -> Response:
    """A DNS message (without TCP's length prefix) → its header, question and answer section."""
    if len(data) < 12:
        raise MessageError(f"{len(data)} bytes: shorter than a DNS header")
    ident, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if not flags & 0x8000:
        raise MessageError("a query, not a response")
    at, question = 12, ""
    for _ in range(qdcount):
        question, at = _name(data, at)
        at += 4
    answers = []
    for _ in range(ancount):
        name, at = _name(data, at)
        if at + 10 > len(data):
            raise MessageError("a record runs past the message")
        kind, _, ttl, length = struct.unpack("!HHIH", data[at:at + 10])
        at += 10
        if at + length > len(data):
            raise MessageError("a record's data runs past the message")
        answers.append(Answer(name, TYPE_NAMES.get(kind, f"TYPE{kind}"), ttl, _rdata(data, kind, at, length)))
        at += length
    return Response(ident, RCODES.get(flags & 0xF, f"RCODE{flags & 0xF}"), bool(flags & 0x0400), bool(flags & 0x0200),
                    question, tuple(answers))


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    ndots: int = 1  # glibc's default

    @staticmethod
    def parse(text: str) -> ResolvConf:
        """resolv.conf as glibc reads it: `nameserver`, `search` (the last one wins; `domain` too),
        `options ndots:N` (at most 15)."""
        servers: list[str] = []
        search: tuple[str, ...] = ()
        ndots = 1
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                servers.append(words[1])
            elif words[0] in ("search", "domain"):
                search = tuple(words[1:])
            elif words[0] == "options":
                for option in words[1:]:
                    if option.startswith("ndots:") and option[6:].isdigit():
                        ndots = min(int(option[6:]), 15)
        return ResolvConf(tuple(servers), search, ndots)


def candidates(name: str, conf: ResolvConf) -> tuple[str, ...]:
    """The names glibc asks for, in order, looking `name` up with this resolv.conf."""
    if name.endswith("."):
        return (name.rstrip("."),)
    searched = tuple(f"{name}.{domain.rstrip('.')}" for domain in conf.search)
    if name.count(".") >= conf.ndots:
        return (name, *searched)
    return (*searched, name)
