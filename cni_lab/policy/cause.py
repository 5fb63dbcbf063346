"""Why a connection is allowed or denied: the value `policy.Evaluator.explain` returns. Pure:
names and numbers only, so every rendering (check's JSON, the terminal's grid, JUnit, the HTML
report) says the same words.

A connection needs both directions (NetworkPolicySpec, networking/v1/types.go): the source's
egress and the destination's ingress. Per direction, the pod is either not isolated (no policy
selects it for that direction), or let in by the first rule, in the policies' order, whose ports
and peers match (as `allowed` finds it), or denied: the policies isolating it have no such rule.
The destination's own node gets in whatever its ingress says.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Side:
    """One direction of a connection, judged at `pod`: the source for Egress, the destination for Ingress."""

    direction: str  # Ingress | Egress
    pod: str  # x/a, or a node's name
    peer: str  # the other end as the rules see it: y/b, or node2 (192.168.1.3) (a node: its address)
    isolating: tuple[str, ...] = ()  # the policies selecting `pod` for `direction` (ns/name), in order
    policy: str | None = None  # the policy whose rule let `peer` through
    rule: int | None = None  # that rule's index in the policy's ingress (or egress) list
    match: str = ""  # what of the rule matched: "from podSelector pod=b", "to anywhere"
    own_node: bool = False  # Ingress from the pod's own node: allowed whatever the policies say

    @property
    def allowed(self) -> bool:
        return self.own_node or not self.isolating or self.rule is not None

    def describe(self, probe: str) -> str:
        way = self.direction.lower()
        if self.own_node:
            return "the pod's own node (always allowed)"
        if self.rule is not None:
            return f"{self.policy} {way} rule {self.rule} ({self.match})"
        if not self.isolating:
            return f"{self.pod} is not isolated for {way}"
        verb = "isolates" if len(self.isolating) == 1 else "isolate"
        return f"{', '.join(self.isolating)} {verb} {self.pod} for {way}; no rule allows {self.peer} on {probe}"


@dataclass(frozen=True)
class Cause:
    """A connection's verdict and why: `allowed` is the evaluator's answer, always."""

    protocol: str  # TCP | UDP | SCTP | ICMP
    port: int | None
    egress: Side
    ingress: Side

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def probe(self) -> str:
        return self.protocol if self.port is None else f"{self.protocol}/{self.port}"

    def describe(self) -> str:
        """One line: for an allow, the rules that let it through (and the side not isolated), or
        the own-node rule; for a deny, each side that denied, egress first (the packet's order)."""
        sides = (self.egress, self.ingress)
        if not self.allowed:
            return " · ".join(s.describe(self.probe) for s in sides if not s.allowed)
        if self.ingress.own_node:
            return self.ingress.describe(self.probe)
        if not self.egress.isolating and not self.ingress.isolating:
            return f"not isolated: {self.egress.pod} for egress, {self.ingress.pod} for ingress"
        by_rule = [s for s in sides if s.rule is not None]
        return "; ".join(s.describe(self.probe) for s in by_rule + [s for s in sides if s not in by_rule])
