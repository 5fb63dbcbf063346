"""What a trace is made of: the hops of one packet's way (a leg), each the decision of one
namespace, and on the nftables data planes the verdict of the node's policy hook on the way.
Values only; lesson/trace.py and lesson/policy_hooks.py make them from the kernel's answers,
report/trace_view.py renders them."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from cni_lab.policy.cause import Side
from cni_lab.probe.pairs import Endpoint

PROTOCOL = "ICMP"  # what a trace judges policies for: its probe's echo (trace has no port option)


@dataclass(frozen=True)
class ChainVerdict:
    """One pod's chain judged: its direction's side of the evaluator's cause."""

    chain: str
    side: Side

    @property
    def allowed(self) -> bool:
        return self.side.allowed

    @property
    def words(self) -> str:
        if not self.allowed:
            return f"{self.chain} ({self.side.describe(PROTOCOL)}): dropped"
        if self.side.rule is not None:
            return f"{self.chain}: allowed by {self.side.describe(PROTOCOL)}"
        return f"{self.chain}: {self.side.describe(PROTOCOL)}"


@dataclass(frozen=True)
class HookVerdict:
    """What a node's hook did with the packet: the chains it jumped to, in the order of the base
    chain's rules, up to the one that dropped it, or the words for why no chain was consulted."""

    hook: str  # forward | input | output
    allowed: bool
    words: str
    chains: tuple[ChainVerdict, ...] = ()

    @property
    def deciding(self) -> ChainVerdict | None:
        """The chain that dropped it, or else the last that let it through."""
        return self.chains[-1] if self.chains else None

    def to_json(self) -> dict[str, Any]:
        d = self.deciding
        return {"hook": self.hook, "verdict": "allowed" if self.allowed else "dropped",
                "chain": d.chain if d else None, "policy": d.side.policy if d else None,
                "rule": d.side.rule if d else None, "words": self.words,
                "chains": [{"chain": c.chain, "direction": c.side.direction, "verdict": "allowed" if c.allowed else "dropped",
                            "policy": c.side.policy, "rule": c.side.rule, "isolating": list(c.side.isolating),
                            "words": c.words} for c in self.chains]}


@dataclass
class Hop:
    where: str  # a lesson name: node1, node1/web, underlay
    netns: str
    came_in: str | None  # interface the packet arrived on (None where it was sent)
    action: str  # forward | deliver | drop
    route: str | None = None  # the route that matched, as `ip route` prints it
    out: str | None = None  # interface it leaves by
    next_hop: str | None = None
    wire: list[str] = field(default_factory=list)  # the L2 path to the next namespace
    reason: str = ""
    bpf: str | None = None  # a BPF program decided this hop instead of the kernel's routing
    policy: HookVerdict | None = None  # the node's policy hook on the way (the nftables data planes)
    bridge: str | None = None  # bridged between two ports of this bridge (no route: `route` is None)


@dataclass
class Leg:
    src: Endpoint
    dst_ip: IPv4Address | IPv6Address
    hops: list[Hop]

    @property
    def delivered_to(self) -> str | None:
        last = self.hops[-1] if self.hops else None
        return last.where if last and last.action == "deliver" else None
