"""Which pairs the matrix probes, which Kubernetes rule each belongs to, and what is expected
of it. Pure: no sockets here."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Mapping, Union

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.model import Expectation

if TYPE_CHECKING:  # the evaluator is loaded only for a lab with policies
    from cni_lab.policy import Workload
    from cni_lab.policy.cause import Cause

# The rules the Kubernetes network model states, plus the underlay for completeness.
RULE_TITLES = {
    "pod-pod-same-node": "pod → pod, same node",
    "pod-pod-cross-node": "pod → pod, across nodes",
    "node-pod": "node → pod",
    "pod-node": "pod → node",
    "node-node": "node → node (underlay)",
    "pod-outside": "pod → outside (leaves the cluster: masqueraded)",
    "node-outside": "node → outside",
    "outside-node": "outside → node",
    "outside-pod": "outside → pod",
}


@dataclass(frozen=True)
class Endpoint:
    id: str  # "node1" or "node1/web"
    kind: str  # "pod" | "node"
    node: str
    ip: IPv4Address | IPv6Address
    netns: str

    @property
    def family(self) -> int:
        return self.ip.version

    @cached_property
    def address(self) -> str:
        """The IP as text, made once: a matrix's JSON writes it twice per pair."""
        return str(self.ip)


@dataclass(frozen=True)
class Pair:
    index: int
    src: Endpoint
    dst: Endpoint
    rule: str
    expected: frozenset[str]


class AllPairs:
    """Every ordered pair of n endpoints, source ≠ destination, without storing them: pair i is
    (i // (n-1), the i % (n-1)-th other endpoint). The one numbering of pairs: verdicts, batches
    and reports all index by it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n * (self.n - 1)

    def __getitem__(self, i: int) -> tuple[int, int]:
        s, r = divmod(i, self.n - 1)
        return s, r if r < s else r + 1

    def index(self, s: int, d: int) -> int:
        return s * (self.n - 1) + (d if d < s else d - 1)


def endpoints(lab: Lab, family: int = 4) -> list[Endpoint]:
    """Every node and pod, by its address of the lab's first family (`family` 4, IPv6 in an
    IPv6-only lab), or with 6, a dual-stack lab's IPv6 addresses."""
    out = []
    for node in lab.nodes:
        ip = node.ip if family == 4 else node.ip6
        if ip is not None:
            out.append(Endpoint(node.name, "node", node.name, ip, names.node_netns(lab.name, node.name)))
        for pod in node.pods:
            pip = pod.ip if family == 4 else pod.ip6
            if pip is not None:
                out.append(Endpoint(pod.id, "pod", node.name, pip, names.pod_netns(lab.name, node.name, pod.name)))
    if lab.scenario.outside_ip is not None and family == 4:  # the internet host, last
        out.append(Endpoint("outside", "outside", "outside", lab.scenario.outside_ip, names.outside_netns(lab.name)))
    return out


def rule_of(src: Endpoint, dst: Endpoint) -> str:
    if src.kind == "outside" or dst.kind == "outside":
        return f"{src.kind}-{dst.kind}"
    if src.kind == "pod" and dst.kind == "pod":
        return "pod-pod-same-node" if src.node == dst.node else "pod-pod-cross-node"
    if src.kind == "node" and dst.kind == "node":
        return "node-node"
    return "node-pod" if src.kind == "node" else "pod-node"


def expected(expectations: tuple[Expectation, ...], src: Endpoint, dst: Endpoint, rule: str) -> frozenset[str]:
    """The first expectation matching the pair decides; pairs nobody mentions must be ok."""
    for e in expectations:
        if (e.rule is None or e.rule == rule) and fnmatch.fnmatchcase(src.id, e.src) and fnmatch.fnmatchcase(dst.id, e.dst):
            return e.verdicts
    return frozenset({"ok"})


PROBE_PORT = 31999  # the UDP responder of every endpoint (engine.py): policies see this port too
BLOCKED = frozenset({"timeout", "unreachable"})


@dataclass(frozen=True)
class Decided:
    """A pair of a policy lab whose verdict no policy decides, and what does."""

    reason: str

    def describe(self) -> str:
        return self.reason


PairCause = Union["Cause", Decided]  # a Cause: the policies' (policy/cause.py)


class Expected:
    """What each pair must show: the scenario's `expect` where one matches, else, in a lab with
    NetworkPolicies, what they allow for check's probes (an ICMP echo and a UDP datagram to port
    31999: both, or the pair is blocked), else ok."""

    def __init__(self, lab: Lab, node_sources: Mapping[tuple[str, str], str] | None = None) -> None:
        self.expectations = lab.scenario.expect
        self.lab = lab
        self.node_sources = node_sources or {}  # (node, destination) → the source its kernel picks
        self.evaluator = lab.evaluator if lab.policies else None
        self._workloads: dict[str, Workload] | None = None

    def _workload(self, ep: Endpoint) -> Workload:
        from cni_lab.policy import Workload

        if self._workloads is None:
            self._workloads = {w.id: w for w in self.lab.workloads}
            self._workloads |= {n.name: Workload(n.name, "", (), n.ips) for n in self.lab.nodes}
        return self._workloads[ep.id]

    @property
    def trivial(self) -> bool:
        """Every pair must simply be ok."""
        return not self.expectations and self.evaluator is None and self.lab.scenario.outside_ip is None

    def _outside(self, rule: str) -> frozenset[str]:
        """The edge of the cluster: a pod's packets leave masqueraded (the outside host sees the
        node's address: `nat`), or without masquerade are not answered (it has no route back);
        nothing outside reaches a pod unless the network routes pod CIDRs (a fabric)."""
        masq = self.lab.scenario.masquerade
        if rule == "pod-outside":
            return frozenset({"nat"}) if masq else BLOCKED
        if rule == "outside-pod":
            return frozenset({"ok"}) if self.lab.capabilities.fabric_routes_pods else BLOCKED  # the fabric routes pod CIDRs
        return frozenset({"ok"})

    def _expectation(self, src: Endpoint, dst: Endpoint, rule: str) -> int | None:
        """The index of the `expect` entry that decides the pair, if one does."""
        for i, e in enumerate(self.expectations):
            if (e.rule is None or e.rule == rule) and fnmatch.fnmatchcase(src.id, e.src) and fnmatch.fnmatchcase(dst.id, e.dst):
                return i
        return None

    def _policy_ends(self, src: Endpoint, dst: Endpoint) -> tuple[Workload, Workload]:
        """The pair as the policies see it; a node sends unbound, from the source its kernel picks."""
        s, d = self._workload(src), self._workload(dst)
        if (picked := self.node_sources.get((src.id, dst.id))) is not None:
            from cni_lab.policy import Workload

            s = Workload(src.id, "", (), (ip_address(picked),))
        return s, d

    def __call__(self, src: Endpoint, dst: Endpoint, rule: str) -> frozenset[str]:
        if (i := self._expectation(src, dst, rule)) is not None:
            return self.expectations[i].verdicts
        if "outside" in (src.kind, dst.kind):
            return self._outside(rule)
        if self.evaluator is not None:
            s, d = self._policy_ends(src, dst)
            ok = (self.evaluator.allowed(s, d, "ICMP", None, src.family)
                  and self.evaluator.allowed(s, d, "UDP", PROBE_PORT, src.family))
            return frozenset({"ok"}) if ok else BLOCKED
        return frozenset({"ok"})

    def cause(self, src: Endpoint, dst: Endpoint, rule: str) -> PairCause | None:
        """Why the pair is expected as it is, in a lab with policies (None without: nothing to
        compute, however big the lab): the `expect` entry that decides it, the edge of the cluster,
        or the policies' cause for check's echo (or, should the echo pass and the UDP probe not,
        for the UDP probe: both must pass)."""
        if self.evaluator is None:
            return None
        if (i := self._expectation(src, dst, rule)) is not None:
            return Decided(f"the scenario's expect[{i}] decides")
        if "outside" in (src.kind, dst.kind):
            return Decided("the edge of the cluster decides: no policy is held against the outside host")
        s, d = self._policy_ends(src, dst)
        echo = self.evaluator.explain(s, d, "ICMP", None, src.family)
        if not echo.allowed:
            return echo
        udp = self.evaluator.explain(s, d, "UDP", PROBE_PORT, src.family)
        return echo if udp.allowed else udp


def all_pairs(lab: Lab) -> list[Pair]:
    eps = endpoints(lab)
    want = Expected(lab)
    pairs: list[Pair] = []
    for src in eps:
        for dst in eps:
            if src is not dst:
                rule = rule_of(src, dst)
                pairs.append(Pair(len(pairs), src, dst, rule, want(src, dst, rule)))
    return pairs


def neighbours_needed(lab: Lab) -> int:
    """ARP entries a full matrix creates in the kernel's shared neighbour table: each pod needs
    its same-node peers and its gateway; each node its pods and the other nodes (both directions)."""
    total = 0
    for node in lab.nodes:
        pods = len(node.pods)
        total += pods * pods  # each pod: the other pods + its gateway
        total += pods + len(lab.nodes) - 1  # the node: its pods, the other nodes
    return total
