"""Which flows to show, from options in the spirit of `hubble observe`'s: every option given must
match (as Hubble's FlowFilter fields add up); values of one repeated option are alternatives.

    --pod NS/POD | NODE/POD | POD   either end is that pod
    --node NODE                     observed at that node (or `router`)
    --from / --to WHO               the source / destination: a pod or node name, an address, a CIDR
    --port N                        either end's port, or the port a Service translated to
    --protocol tcp|udp|icmp|sctp    icmp is both ICMPv4 and ICMPv6
    --verdict V                     FORWARDED, DROPPED, TRANSLATED, ERROR
    --since T                       30 (seconds), 30s, 2m, 1h, or an RFC 3339 time

A bad value is a one-line LabError naming the option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Callable, Iterable, Union

from cni_lab.errors import LabError
from cni_lab.observe.flows import VERDICTS, Flow, Peer

Network = Union[IPv4Network, IPv6Network]
PROTOCOLS = {"tcp": ("TCP",), "udp": ("UDP",), "sctp": ("SCTP",), "icmp": ("ICMPv4", "ICMPv6"),
             "icmpv4": ("ICMPv4",), "icmpv6": ("ICMPv6",)}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Filter:
    pods: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    sources: tuple[str | Network, ...] = ()
    destinations: tuple[str | Network, ...] = ()
    ports: tuple[int, ...] = ()
    protocols: tuple[str, ...] = ()  # Flow.protocol values
    verdicts: tuple[str, ...] = ()
    since: float | None = None  # seconds since the epoch

    def matches(self, flow: Flow) -> bool:
        ends = (flow.source, flow.destination)
        return ((not self.pods or any(_is_pod(e, p) for e in ends for p in self.pods))
                and (not self.nodes or flow.node in self.nodes)
                and (not self.sources or any(_is(flow.source, w) for w in self.sources))
                and (not self.destinations or any(_is(flow.destination, w) for w in self.destinations))
                and (not self.ports or bool(set(self.ports) & _ports(flow)))
                and (not self.protocols or flow.protocol in self.protocols)
                and (not self.verdicts or flow.verdict in self.verdicts)
                and (self.since is None or flow.time >= self.since))


def build(pod: Iterable[str] = (), node: Iterable[str] = (), from_: Iterable[str] = (), to: Iterable[str] = (),
          port: Iterable[str | int] = (), protocol: Iterable[str] = (), verdict: Iterable[str] = (),
          since: str | None = None, now: float = 0.0) -> Filter:
    """The filter of these options (the CLI's values as given); `now`: what `--since 30s` counts back from."""
    return Filter(pods=tuple(_name(p, "--pod") for p in pod), nodes=tuple(_name(n, "--node") for n in node),
                  sources=tuple(_who(w, "--from") for w in from_), destinations=tuple(_who(w, "--to") for w in to),
                  ports=tuple(_port(p) for p in port),
                  protocols=tuple(dict.fromkeys(name for p in protocol for name in _protocol(p))),
                  verdicts=tuple(_verdict(v) for v in verdict),
                  since=None if since is None else _since(since, now))


def between(src: str, dst: str, option: str = "--flow") -> Callable[[Flow], bool]:
    """Is a flow one from `src` to `dst` (each a pod or node name, an address or a CIDR)? `dst`
    also matches the endpoint a Service's DNAT chose, so a pod's flows to a Service's pod include
    the translation on the way."""
    a, b = _who(src, option), _who(dst, option)

    def matches(f: Flow) -> bool:
        return _is(f.source, a) and (_is(f.destination, b) or (f.translated is not None and _is(f.translated, b)))

    return matches


def _name(value: str, option: str) -> str:
    value = value.strip()
    if not value or value.startswith("/") or value.endswith("/"):
        raise LabError(f"{option} {value!r}: give a name (POD, NS/POD or NODE/POD)")
    return value


def _who(value: str, option: str) -> str | Network:
    """A CIDR, an address (a /32 or /128), or a name."""
    value = _name(value, option)
    head = value.split("/", 1)[0]
    try:
        ip_address(head)
    except ValueError:
        return value  # a name: node1, node1/web, x/a
    try:
        return ip_network(value, strict=False)
    except ValueError:
        raise LabError(f"{option} {value!r}: not an address or a CIDR (e.g. 10.244.0.0/16)") from None


def _port(value: str | int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise LabError(f"--port {value!r}: a port is a number from 1 to 65535")
    return number


def _protocol(value: str) -> tuple[str, ...]:
    found = PROTOCOLS.get(value.strip().lower())
    if found is None:
        raise LabError(f"--protocol {value!r}: use tcp, udp, icmp or sctp")
    return found


def _verdict(value: str) -> str:
    upper = value.strip().upper()
    if upper not in VERDICTS:
        raise LabError(f"--verdict {value!r}: use one of {', '.join(VERDICTS)}")
    return upper


def _since(value: str, now: float) -> float:
    m = _DURATION.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise LabError(f"--since {value!r}: give seconds (30, 30s, 2m, 1h) or an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise LabError(f"--since {value!r}: an RFC 3339 time carries its offset (Z or +02:00)")
    return moment.timestamp()


def _names(p: Peer) -> set[str]:
    """What a peer may be called: its name, a pod's NS/POD, NODE/POD and POD, a node's name."""
    out = {p.name}
    if p.kind == "pod":
        out |= {p.qualified, p.pod_name, f"{p.node}/{p.pod_name}"}
    elif p.kind == "service":
        out |= {p.qualified, p.pod_name}
    return out


def _is_pod(p: Peer, name: str) -> bool:
    return p.kind == "pod" and name in _names(p)


def _is(p: Peer, who: str | Network) -> bool:
    if isinstance(who, str):
        return who in _names(p)
    try:
        return ip_address(p.address) in who
    except ValueError:
        return False


def _ports(flow: Flow) -> set[int]:
    ends = (flow.source, flow.destination, *((flow.translated,) if flow.translated is not None else ()))
    return {e.port for e in ends if e.port is not None}
