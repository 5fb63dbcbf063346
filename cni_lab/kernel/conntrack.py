"""A lab namespace's connection tracking table, emptied as `conntrack -F` does it: one ctnetlink
request (IPCTNL_MSG_CT_DELETE with no tuple: the kernel's flush, ctnetlink_del_conntrack in
net/netfilter/nf_conntrack_netlink.c), over a NETLINK_NETFILTER socket opened once inside the
namespace. No process: a generated conformance run empties the nodes' tables
before every case (probe/cases.py), so that no earlier case's entry lets a probe through as
"established".
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Sequence

from cni_lab.kernel import netns

NETLINK_NETFILTER = 12  # include/uapi/linux/netlink.h
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, sequence, port id
# The request's nfgenmsg: version 0 (NFNETLINK_V0) with no tuple flushes every family whatever
# the family byte says (`u3 = version ? family : AF_UNSPEC`), as `conntrack -F` sends it.


def flush_request(sequence: int) -> bytes:
    """The whole request, encoded by pyroute2 (its nfct_msg: a netlink header and an nfgenmsg,
    no attributes); one per case, so the cost of pyroute2's import (~0.1 s) is paid once a run."""
    from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK as SUBSYS
    from pyroute2.netlink.nfnetlink.nfctsocket import IPCTNL_MSG_CT_DELETE as DELETE, nfct_msg

    msg = nfct_msg()
    msg["header"]["type"] = SUBSYS << 8 | DELETE
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = sequence
    msg["nfgen_family"] = socket.AF_INET  # with version 0 and no tuple: every family (see above)
    msg["version"] = 0
    msg["res_id"] = 0
    msg.encode()
    return bytes(msg.data)


def answer_error(data: bytes, sequence: int) -> int | None:
    """The errno of the kernel's answer to request `sequence` in `data` (0: done), or None when
    `data` holds no answer to it."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _, seq, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            break
        if kind == NLMSG_ERROR and seq == sequence and offset + HEADER.size + 4 <= len(data):
            return -struct.unpack_from("=i", data, offset + HEADER.size)[0]
        offset += (length + 3) & ~3
    return None


class Flusher:
    """One NETLINK_NETFILTER socket per namespace, opened inside it once; `flush()` empties the
    tables of every one of them."""

    def __init__(self, namespaces: Sequence[str]) -> None:
        self.sockets: dict[str, socket.socket] = {}
        self.sequence = 0

        def open_here(name: str) -> None:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self.sockets[name] = s
            s.bind((0, 0))
            s.settimeout(2.0)

        try:
            netns.visit(list(namespaces), open_here)
        except BaseException:
            self.close()
            raise

    def flush(self) -> None:
        """Every namespace's table emptied (OSError naming the namespace where the kernel refused)."""
        for name, s in self.sockets.items():
            self.sequence += 1
            s.sendto(flush_request(self.sequence), (0, 0))  # port id 0: the kernel
            while True:
                try:
                    error = answer_error(s.recv(8192), self.sequence)
                except socket.timeout:
                    raise OSError(errno.ETIMEDOUT, f"conntrack flush in {name}: no answer from the kernel") from None
                if error is None:
                    continue
                if error:
                    raise OSError(error, f"conntrack flush in {name}: {os.strerror(error)}")
                break

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()

    def __enter__(self) -> Flusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
