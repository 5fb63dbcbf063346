"""The node's policy chains on a packet's way, for the data planes that enforce NetworkPolicy in
nftables (rulesets/netpol.py: `table inet cni-lab-policy` in every node, Felix's way):

    forward  what a node routes, or bridges between two pods on its cni0 (br_netfilter hands
             bridged IPv4/IPv6 to the same inet forward hook): `ip saddr <pod> jump from-wl-…`
             for what its pods send (their egress), `ip daddr <pod> jump to-wl-…` for what they get
    input    what a node's own pods send to the node itself: their egress again
    output   a node's own packets: no chain, never policed; to its own pods that is Kubernetes'
             local-node rule (always allowed)

Which chain the packet jumps to is read from the kernel's table (`nft -j list table`), so a table
someone removed is reported as what it is: nothing filters. Whether the chain lets it through is
the evaluator's `explain` (policy/evaluator.py), the same functions the chains are made from, in
the same words as check's causes (policy/cause.py). `ct state established,related accept` comes
first in both base chains: a reply passes before any pod's chain.

`trace` has no port option, so the packet judged is ICMP: the echo its real probe sends (a rule
that lets ICMP through has no ports, so it lets the probe's UDP through too). Pure but for
`read_table`; lesson/trace.py puts the verdicts on its hops."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Callable

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.lesson.hops import PROTOCOL, ChainVerdict, Hop, HookVerdict
from cni_lab.policy import Workload
from cni_lab.policy.cause import Side
from cni_lab.probe.pairs import Endpoint
from cni_lab.rulesets import netpol

BASE_CHAINS = ("forward", "input")


@dataclass(frozen=True)
class Jump:
    """`ip saddr 10.244.0.2 jump from-wl-x/a` in a base chain, as the kernel lists it."""

    hook: str  # forward | input
    field: str  # saddr | daddr
    address: IPv4Address | IPv6Address
    chain: str


@dataclass(frozen=True)
class Table:
    """A node's cni-lab-policy table as read: the jumps of its base chains, in their order, and
    the hooks whose base chain lets tracked connections (replies) through first."""

    jumps: tuple[Jump, ...] = ()
    tracked: frozenset[str] = frozenset()
    chains: frozenset[str] = frozenset()


def parse(listing: Any) -> Table:
    """`nft -j list table inet cni-lab-policy` (libnftables' JSON) to a Table. Other matches of a
    rule (nft hides the `meta nfproto` an `ip saddr` in an inet table implies) are left aside."""
    items = listing.get("nftables", []) if isinstance(listing, dict) else []
    hooks = {c["chain"]["name"]: c["chain"]["hook"] for c in items if "chain" in c and "hook" in c["chain"]}
    chains = frozenset(c["chain"]["name"] for c in items if "chain" in c)
    jumps: list[Jump] = []
    tracked: set[str] = set()
    for item in items:
        rule = item.get("rule")
        if rule is None or rule.get("chain") not in hooks:
            continue
        hook, exprs = hooks[rule["chain"]], rule.get("expr", [])
        target = next((e.get("jump", e.get("goto"))["target"] for e in exprs if "jump" in e or "goto" in e), None)
        for e in exprs:
            m = e.get("match", {})
            left, right = m.get("left", {}), m.get("right")
            if "ct" in left and left["ct"].get("key") == "state" and any("accept" in x for x in exprs):
                states = right if isinstance(right, list) else [right]
                if "established" in states:
                    tracked.add(hook)
            payload = left.get("payload", {})
            if (target is not None and m.get("op") == "==" and payload.get("protocol") in ("ip", "ip6")
                    and payload.get("field") in ("saddr", "daddr") and isinstance(right, str)):
                jumps.append(Jump(hook, payload["field"], ip_address(right), target))
    return Table(tuple(jumps), frozenset(tracked), chains)


def read_table(ns: str) -> Table | str | None:
    """The node's table as the kernel holds it; None where it has none; the error's words where
    it could not be listed."""
    from cni_lab.kernel import edit

    try:
        return parse(edit.nft_json(ns, "list", "table", "inet", netpol.TABLE))
    except OSError as e:
        said = e.strerror or str(e)
        if e.errno == errno.EINVAL and "No such file or directory" in said and "exec of" not in said:
            return None  # nft's answer for a table that is not there
        return said


@dataclass(frozen=True)
class Bridged:
    """Where a packet crosses a bridge between two pods: the node's namespace and name, the ports
    it comes in and goes out by, the bridge."""

    netns: str
    where: str
    port_in: str
    port_out: str | None
    bridge: str


@dataclass
class Hooks:
    """The policy hooks one packet meets, judged: `src` → `dst` (a reply: the other way, on a
    connection conntrack knows). Tables are read once per trace (shared by its legs)."""

    lab: Lab
    src: Endpoint
    dst: Endpoint
    reply: bool = False
    read: Callable[[str], Table | str | None] = read_table
    tables: dict[str, Table | str | None] = field(default_factory=dict)

    def back(self) -> Hooks:
        """The same hooks for the reply: dst → src, tracked."""
        return Hooks(self.lab, self.dst, self.src, True, self.read, self.tables)

    def node_of(self, ns: str) -> str | None:
        return next((n.name for n in self.lab.nodes if names.node_netns(self.lab.name, n.name) == ns), None)

    def _table(self, node: str) -> Table | str | None:
        ns = names.node_netns(self.lab.name, node)
        if ns not in self.tables:
            self.tables[ns] = self.read(ns)
        return self.tables[ns]

    def _workload(self, ep: Endpoint) -> Workload:
        """A pod as the policies see it; a node (or the outside host) by the address it sends from."""
        if ep.kind == "pod":
            return next(w for w in self.lab.workloads if w.id == ep.id)
        return Workload(ep.id, "", (), (ep.ip,))

    def _local(self, ep: Endpoint, node: str) -> Workload | None:
        return self._workload(ep) if ep.kind == "pod" and ep.node == node else None

    def police(self, hop: Hop, hook: str) -> Hop:
        """The hop with its node's hook judged: `hook` (forward, or input where the node
        delivers to itself) for what came in from elsewhere, output for what the node sends; a
        drop, its words the reason, where a chain drops it. Not a node's hop: as it is."""
        node = self.node_of(hop.netns)
        if node is None:
            return hop
        verdict = self.passing(node, hook) if hop.came_in is not None else self.sent(node)
        if verdict is None:
            return hop
        if not verdict.allowed:
            return replace(hop, action="drop", wire=[], reason=verdict.words, policy=verdict)
        return replace(hop, policy=verdict)

    def forwarded(self, hop: Hop, bridged: Bridged | None) -> list[Hop]:
        """A forwarding hop judged; where it crosses its node's cni0 to another pod (`bridged`),
        br_netfilter hands it to that node's forward hook between the ports, so the node gets a
        hop of its own, the wire split where the packet enters it."""
        if bridged is None or self.lab.capabilities.pods_meet != "cni0" or self.node_of(bridged.netns) is None:
            return [self.police(hop, "forward")]
        entered = f"{bridged.port_in} ({bridged.where})"
        cut = hop.wire.index(entered) + 1 if entered in hop.wire else len(hop.wire)
        verdict = self.passing(bridged.where, "forward", bridged.bridge)
        across = replace(hop, where=bridged.where, netns=bridged.netns, came_in=bridged.port_in, route=None,
                         out=bridged.port_out, wire=hop.wire[cut:], policy=verdict, bridge=bridged.bridge)
        if not verdict.allowed:
            across = replace(across, action="drop", wire=[], reason=verdict.words)
        return [replace(hop, wire=hop.wire[:cut]), across]

    def sent(self, node: str) -> HookVerdict | None:
        """A node's own packet, to a pod of its own: the output hook has no chain (netpol's
        Felix way: host → local workload is not policed), which is Kubernetes' local-node rule."""
        if self.reply or self.src.kind != "node" or self.src.id != node or self._local(self.dst, node) is None:
            return None
        cause = self.lab.evaluator.explain(self._workload(self.src), self._workload(self.dst), PROTOCOL, None,
                                           self.src.family)
        return HookVerdict("output", True, f"output hook: no policy chain, a node's own packets are never policed: "
                           f"{cause.ingress.describe(PROTOCOL)}")

    def passing(self, node: str, hook: str, bridged: str | None = None) -> HookVerdict:
        """The node's `hook` (forward or input) on the packet; `bridged`: the bridge it crosses
        between two pods (br_netfilter's way into the forward hook)."""
        at = f"{hook} hook" + (f" (bridged on {bridged}, through br_netfilter)" if bridged else "")
        table = self._table(node)
        if isinstance(table, str):
            return HookVerdict(hook, True, f"{at}: {node}'s {netpol.TABLE} table could not be listed ({table}): "
                               "its chains are not judged")
        if table is None:
            return HookVerdict(hook, True, f"{at}: the node has no {netpol.TABLE} table: nothing filters"
                               + self._missing(node))
        if self.reply and hook in table.tracked:
            return HookVerdict(hook, True, f"{at}: ct state established,related accept: the reply of a tracked "
                               "connection passes before any pod's chain")
        src, dst = self._workload(self.src), self._workload(self.dst)
        cause = self.lab.evaluator.explain(src, dst, PROTOCOL, None, self.src.family)
        judged: list[ChainVerdict] = []
        for jump in table.jumps:
            if jump.hook != hook or jump.address != (self.src.ip if jump.field == "saddr" else self.dst.ip):
                continue
            side = cause.egress if jump.field == "saddr" else cause.ingress
            judged.append(ChainVerdict(jump.chain, side))
            if not side.allowed:
                break
        allowed = all(c.allowed for c in judged)
        jumped = {c.chain for c in judged}
        # in the packet's order: the sender's side, the chains as the base chain jumps to them, the receiver's
        words = [*self._unjumped(node, hook, "Egress", jumped, cause.egress), *(c.words for c in judged),
                 *(self._unjumped(node, hook, "Ingress", jumped, cause.ingress) if hook == "forward" and allowed else [])]
        if not words:
            words = ["no chain for this packet (neither end is a pod of this node)"]
        head = f"{at}, for {PROTOCOL} (trace has no port option)" if judged else at
        return HookVerdict(hook, allowed, f"{head}: {'; '.join(words)}", tuple(judged))

    def _unjumped(self, node: str, hook: str, direction: str, jumped: set[str], side: Side) -> list[str]:
        """The local end of `direction` (the sender for Egress) where its chain was not jumped to:
        not isolated, or isolated in the evaluator's view with no rule of the kernel's table to jump there."""
        w = self._local(self.src if direction == "Egress" else self.dst, node)
        if w is None or netpol.workload_chain_name(w, direction) in jumped:
            return []
        if not side.isolating:
            return [f"{side.describe(PROTOCOL)}: no chain"]
        chain = netpol.workload_chain_name(w, direction)
        verb = "isolates" if len(side.isolating) == 1 else "isolate"
        return [f"no rule of its {hook} chain jumps to {chain}, though {', '.join(side.isolating)} {verb} "
                f"{w.qualified} for {direction.lower()}: nothing filters it"]

    def _missing(self, node: str) -> str:
        """Why there is no table: none is made (no policy selects a pod of the node), or it was
        removed behind the lab's back."""
        evaluator = self.lab.evaluator
        policed = [w for w in self.lab.workloads if w.node == node
                   and any(evaluator.selecting(w, d) for d in ("Ingress", "Egress"))]
        if not policed:
            return f" (no policy selects a pod of {node}: netpol makes none)"
        return (f" (netpol makes one, for {', '.join(w.qualified for w in policed)}: it was removed, and "
                "no pod of this node is policed)")


def hooks(lab: Lab, src: Endpoint, dst: Endpoint) -> Hooks | None:
    """The hooks a trace from `src` to `dst` judges: in a lab with policies whose data plane
    enforces them in the nodes' nftables."""
    if not lab.policies or lab.capabilities.policy != "node-nftables":
        return None
    return Hooks(lab, src, dst)
