"""An ICMP error in words: which failure it reports, for the pair of the packet it quotes, and
who sent it. The kernel sends them where it gives up on a packet (RFC 792, RFC 4443; net/ipv4/
route.c, icmp.c, net/ipv6/route.c):

    no route                      IPv4 3/0 net unreachable, IPv6 1/0 no route
    nobody answered ARP or NDP    IPv4 3/1 host unreachable, IPv6 1/3 address unreachable
    MTU                           IPv4 3/4 fragmentation needed, IPv6 2 packet too big
    nothing listens               IPv4 3/3, IPv6 1/4 port unreachable (from the destination itself)
    a rule rejected it            IPv4 3/9, 3/10, 3/13; IPv6 1/1, 1/5, 1/6 (nft `reject`: kube-proxy
                                  rejects a Service without endpoints)
    TTL exceeded                  IPv4 11, IPv6 3: a loop, or a path longer than the TTL

drop_reason_desc names for them are the lab's (Hubble's DropReason has none for the kernel's
errors), except TTL_EXCEEDED, which is Hubble's (196).
"""

from __future__ import annotations

from cni_lab.observe.flows import Peer
from cni_lab.observe.packets import ICMP, Packet

NO_ROUTE, NO_NEIGHBOUR, MTU_EXCEEDED = "NO_ROUTE", "NO_NEIGHBOUR", "MTU_EXCEEDED"
PORT_UNREACHABLE, PROTOCOL_UNREACHABLE, REJECTED = "PORT_UNREACHABLE", "PROTOCOL_UNREACHABLE", "REJECTED_BY_RULE"
TTL_EXCEEDED, PARAMETER_PROBLEM, UNREACHABLE = "TTL_EXCEEDED", "PARAMETER_PROBLEM", "DESTINATION_UNREACHABLE"
NUMBERS = {TTL_EXCEEDED: 196}  # Hubble's numbers; the lab's own names have none

# (IPv4?, type, code) → kind; code None: any
_KINDS: dict[tuple[bool, int, int | None], str] = {
    (True, 3, 0): NO_ROUTE, (True, 3, 1): NO_NEIGHBOUR, (True, 3, 2): PROTOCOL_UNREACHABLE,
    (True, 3, 3): PORT_UNREACHABLE, (True, 3, 4): MTU_EXCEEDED, (True, 3, 9): REJECTED, (True, 3, 10): REJECTED,
    (True, 3, 13): REJECTED, (True, 11, None): TTL_EXCEEDED, (True, 12, None): PARAMETER_PROBLEM,
    (False, 1, 0): NO_ROUTE, (False, 1, 1): REJECTED, (False, 1, 3): NO_NEIGHBOUR, (False, 1, 4): PORT_UNREACHABLE,
    (False, 1, 5): REJECTED, (False, 1, 6): REJECTED, (False, 2, None): MTU_EXCEEDED,
    (False, 3, None): TTL_EXCEEDED, (False, 4, None): PARAMETER_PROBLEM,
}


def kind(p: Packet) -> str:
    """The error's drop_reason_desc (see the module's docstring)."""
    v4 = p.protocol == ICMP
    t = p.icmp_type if p.icmp_type is not None else -1
    return _KINDS.get((v4, t, p.icmp_code), _KINDS.get((v4, t, None), UNREACHABLE))


def number(desc: str) -> int:
    return NUMBERS.get(desc, 0)


def words(p: Packet, dst: Peer, sender: Peer, frontend: str = "") -> tuple[str, str]:
    """(drop_reason_desc, cause) of an error `sender` sent about a packet to `dst`; `frontend`:
    the Service `dst` is, where it is one (`Service default/web 10.96.0.2:80/TCP`)."""
    desc = kind(p)
    at = sender.name if sender.kind not in ("world", "pod") else sender.describe()
    to = dst.describe()
    quoted = p.inner
    if desc == NO_ROUTE:
        return desc, f"no route to {dst.address} at {at}"
    if desc == NO_NEIGHBOUR:
        how = "ARP" if p.protocol == ICMP else "NDP"
        return desc, f"no neighbour answered for {dst.address} at {at} ({how})"
    if desc == MTU_EXCEEDED:
        return desc, f"MTU exceeded: next hop MTU {p.mtu if p.mtu is not None else '?'} at {at}"
    if desc == PORT_UNREACHABLE:
        proto = f"/{quoted.protocol_name}" if quoted is not None else ""
        return desc, f"nothing listens on {to}{proto}"
    if desc == PROTOCOL_UNREACHABLE:
        proto = quoted.protocol_name if quoted is not None else "its protocol"
        return desc, f"{dst.address} does not speak {proto} (protocol unreachable from {at})"
    if desc == REJECTED:
        why = f": {frontend} has no endpoints (kube-proxy rejects it)" if frontend else ""
        return desc, f"rejected by a rule at {at}{why}"
    if desc == TTL_EXCEEDED:
        return desc, f"TTL exceeded at {at} on the way to {dst.address} (a loop?)"
    if desc == PARAMETER_PROBLEM:
        return desc, f"{at} found a bad header field (parameter problem, code {p.icmp_code})"
    return desc, f"destination unreachable (type {p.icmp_type} code {p.icmp_code}) at {at} for {to}"
