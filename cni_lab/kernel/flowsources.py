"""What the lab's namespaces report about their packets, read for `observe` and `check`: nflog
messages from the lab's log rules (nfnetlink_log, NFNL_SUBSYS_ULOG), conntrack NEW events
(ctnetlink's NFNLGRP_CONNTRACK_NEW group) and the ebpf programs' ring buffer. One netlink socket
per namespace and source, opened inside the namespace; nothing is read outside the lab.

The values here are the kernel's words, decoded but not interpreted: `observe/` names the ends,
the verdict and the cause (pure, testable without root).
"""

from __future__ import annotations

from dataclasses import dataclass

from cni_lab.kernel.bpf import Event

# NF_INET_* hook numbers (include/uapi/linux/netfilter.h), as NFULA_PACKET_HDR carries them
HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}


@dataclass(frozen=True)
class Logged:
    """One packet an nft `log group` rule sent to nflog."""

    time: float  # seconds since the epoch, when read
    netns: str  # the lab namespace whose rule logged it
    prefix: str  # the rule's `prefix` (NFULA_PREFIX), e.g. "cni-lab forward", "cni-lab policy-drop ingress"
    hook: str  # prerouting | input | forward | output | postrouting (HOOKS), "" if unknown
    indev: str  # interface names in that namespace, "" where none or unknown
    outdev: str
    packet: bytes  # from the IP header on (NFULA_PAYLOAD, the first COPY_RANGE bytes)


@dataclass(frozen=True)
class Tracked:
    """A conntrack entry the namespace confirmed (IPCTNL_MSG_CT_NEW event): its two tuples. Where
    the reply tuple is not the original turned around, NAT rewrote the flow."""

    time: float
    netns: str
    protocol: int  # IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP)
    orig_src: str
    orig_dst: str
    orig_sport: int  # ICMP: the echo id, both ports
    orig_dport: int
    reply_src: str
    reply_dst: str
    reply_sport: int
    reply_dport: int


@dataclass(frozen=True)
class Reported:
    """An event from a node's cilium_events ring buffer (kernel/bpf.py Event)."""

    time: float
    netns: str  # the node's namespace
    event: Event


Raw = Logged | Tracked | Reported
