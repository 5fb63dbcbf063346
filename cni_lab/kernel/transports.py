"""The transport protocols a lab asks of the kernel (Service ports, probe ports), the socket each
is probed with, and which of them this kernel cannot open a socket for.

SCTP is a module of its own (CONFIG_IP_SCTP, `sctp`): a kernel without it refuses
`socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)` with EPROTONOSUPPORT. The API server accepts SCTP
Services and policies regardless; the lab refuses them where the kernel is asked (up, check), in
one line, rather than build a rule nothing can probe.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Mapping, Sequence

from cni_lab.errors import LabError

# One-to-one SCTP sockets (SOCK_STREAM) connect, accept and carry bytes as TCP's do (RFC 6458 §4)
SOCKET_KINDS = {"TCP": (socket.SOCK_STREAM, socket.IPPROTO_TCP), "UDP": (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
                "SCTP": (socket.SOCK_STREAM, socket.IPPROTO_SCTP)}
FEATURES = {"SCTP": ("the kernel's SCTP sockets (CONFIG_IP_SCTP, the sctp module)", "sudo modprobe sctp")}


def socket_kind(protocol: str) -> tuple[int, int]:
    """(type, proto) for socket.socket: a stream for TCP and SCTP, datagrams for UDP."""
    return SOCKET_KINDS[protocol]


@lru_cache(maxsize=None)
def missing(protocol: str) -> str:
    """Why this kernel opens no socket of `protocol` ("" when it does). Sockets of every protocol
    exist in every namespace alike once the kernel has them: asked once, here."""
    kind, proto = socket_kind(protocol)
    try:
        socket.socket(socket.AF_INET, kind, proto).close()
    except OSError as e:
        return e.strerror or str(e)
    return ""


def require(uses: Mapping[str, Sequence[str]], source: str) -> None:
    """`uses`: protocol → where the lab asks for it (`services[0].ports[1].protocol`). One line
    per protocol the kernel lacks, naming what uses it and the kernel feature it needs."""
    problems = []
    for protocol, where in uses.items():
        why = missing(protocol) if where else ""
        if why:
            feature, fix = FEATURES.get(protocol, (f"the kernel's {protocol} sockets", "a kernel that has them"))
            kind = "SOCK_STREAM" if socket_kind(protocol)[0] == socket.SOCK_STREAM else "SOCK_DGRAM"
            problems.append(f"{source}: {', '.join(where)}: {protocol} needs {feature}, which this kernel lacks "
                            f"(socket(AF_INET, {kind}, IPPROTO_{protocol}): {why}): load it ({fix}) or use TCP or UDP")
    if problems:
        raise LabError(*problems)
