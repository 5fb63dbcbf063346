"""NetworkPolicy (networking.k8s.io/v1): read as the API server validates it, and evaluated as
Kubernetes defines it. Pure: the reference the kernel's enforcement is held against.

- Reading: `parse(document, where)` takes one object as `kubectl apply` would, and refuses what
  the API server refuses (unknown fields, bad selector operators, `endPort` without a numeric
  `port`, an `except` outside its `cidr`, a peer with `ipBlock` and a selector, ...) with one line
  naming the place, defaults policyTypes as it does, and reads ipBlock CIDRs as Kubernetes 1.36
  does (host bits accepted with its warning: model/cidrs.py). A port may be a name (IANA_SVC_NAME).
- Evaluating: `Evaluator(lab, policies).allowed(src, dst, protocol, port)` answers whether a new
  connection from pod `src` to pod `dst` is allowed. A pod selected by no policy of a direction
  (policyTypes) allows everything in that direction; policies add up; a connection needs the
  source's egress and the destination's ingress, except that a pod's own node always gets in;
  replies of an allowed connection always pass. ICMP is no TCP, UDP or SCTP: only a rule
  without `ports` lets it through. A named port is resolved on the destination pod (for ingress
  the pod the policy selects, for egress the peer): its container port of that name and the
  rule's protocol; a pod without one matches nothing through it.
- Explaining: `Evaluator.explain(...)` gives the same answer with its cause (policy_cause.py): the
  policy and rule that let a connection through, or the policies that isolate the pod and have
  no rule for it, per direction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Iterable

from cni_lab.errors import LabError
from cni_lab.model import (DEFAULT_NAMESPACE, ContainerPort, Labels, ProbePort, cidr_warnings, find_port,
                           is_dns_subdomain, is_label_key, is_label_value, parse_cidr_sloppy, port_name_refusal)
from cni_lab.policy_cause import Cause, Side

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values  # a missing key is "not in", as in Kubernetes
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class Selector:
    """A LabelSelector: every matchLabels pair and every expression must hold. Empty: everything."""

    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Labels | dict[str, str]) -> bool:
        have = dict(labels)
        return all(have.get(k) == v for k, v in self.match_labels) and all(
            r.matches(have) for r in self.match_expressions)


@dataclass(frozen=True)
class IPBlock:
    cidr: IPv4Network | IPv6Network
    excepted: tuple[IPv4Network | IPv6Network, ...] = ()

    def matches(self, ip: IPv4Address | IPv6Address) -> bool:
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in e for e in self.excepted)


@dataclass(frozen=True)
class Peer:
    """One entry of `from`/`to`: pods (by podSelector, in the policy's namespace unless a
    namespaceSelector widens it), whole namespaces, or an ipBlock."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PortRange:
    protocol: str  # TCP | UDP | SCTP
    port: int | str | None = None  # None: every port of the protocol; a name: a port the destination declares
    end_port: int | None = None

    def matches(self, protocol: str, port: int | None, destination: Workload | None = None) -> bool:
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if port is None:
            return False
        if isinstance(self.port, str):
            return self.named_port_on(destination) == port
        return self.port <= port <= (self.end_port or self.port)

    def named_port_on(self, destination: Workload | None) -> int | None:
        """A named port on the pod traffic goes to: its container port of this name and
        protocol, None where it has none (a node has none). NetworkPolicyPort.port: "a numerical
        or named port on a pod"; implementations resolve it per pod, as FindPort does a Service's."""
        if not isinstance(self.port, str) or destination is None:
            return None
        return destination.find_port(self.port, self.protocol)


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...] = ()  # empty: every peer (`from`/`to` missing or empty)
    ports: tuple[PortRange, ...] = ()  # empty: every port and protocol

    def allows_port(self, protocol: str, port: int | None, destination: Workload | None = None) -> bool:
        """`destination`: the pod the traffic goes to, whose ports named ports stand for."""
        return not self.ports or any(p.matches(protocol, port, destination) for p in self.ports)


@dataclass(frozen=True)
class Policy:
    name: str
    namespace: str
    pod_selector: Selector
    policy_types: tuple[str, ...]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    warnings: tuple[str, ...] = ()  # what the API server would warn of, accepting the policy

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.name}"


# -- reading, as the API server validates ---------------------------------------------------------

class _Reader:
    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self.where}: {path}: {message}")

    def cidr(self, value: Any, path: str) -> IPv4Network | IPv6Network | None:
        parsed = parse_cidr_sloppy(value)
        if parsed is None:
            self.problem(path, f"{value!r} is not a valid CIDR")
            return None
        self.warnings += [f"{self.where}: {path}: {w}" for w in cidr_warnings(value, *parsed)]
        return parsed[1]

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, "must be a mapping")
            return {}
        for key in value:
            if key not in allowed:
                self.problem(f"{path}.{key}", f"unknown field (known: {', '.join(allowed)})")
        return value

    def listing(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, "must be a list")
            return []
        return value

    def labels(self, value: Any, path: str) -> Labels:
        out = []
        for k, v in self.mapping(value, path, tuple(value) if isinstance(value, dict) else ()).items():
            if not is_label_key(k):
                self.problem(f"{path}.{k}", f"{k!r} is not a valid label key")
            elif not is_label_value(v):
                self.problem(f"{path}.{k}", f"{v!r} is not a valid label value")
            else:
                out.append((k, v))
        return tuple(sorted(out))

    def selector(self, value: Any, path: str) -> Selector:
        raw = self.mapping(value, path, ("matchLabels", "matchExpressions"))
        expressions = []
        for i, e in enumerate(self.listing(raw.get("matchExpressions"), f"{path}.matchExpressions")):
            at = f"{path}.matchExpressions[{i}]"
            expr = self.mapping(e, at, ("key", "operator", "values"))
            key, op, values = expr.get("key"), expr.get("operator"), expr.get("values")
            if not is_label_key(key):
                self.problem(f"{at}.key", f"{key!r} is not a valid label key")
                continue
            if op not in OPERATORS:
                self.problem(f"{at}.operator", f"{op!r} is not a valid selector operator (one of {', '.join(OPERATORS)})")
                continue
            vals = self.listing(values, f"{at}.values")
            if op in ("In", "NotIn") and not vals:
                self.problem(f"{at}.values", f"must be non-empty when operator is {op}")
                continue
            if op in ("Exists", "DoesNotExist") and vals:
                self.problem(f"{at}.values", f"may not be specified when operator is {op}")
                continue
            if not all(is_label_value(v) for v in vals):
                self.problem(f"{at}.values", f"{vals!r}: not all valid label values")
                continue
            expressions.append(Requirement(key, op, tuple(vals)))
        return Selector(self.labels(raw.get("matchLabels"), f"{path}.matchLabels"), tuple(expressions))

    def ip_block(self, value: Any, path: str) -> IPBlock | None:
        raw = self.mapping(value, path, ("cidr", "except"))
        cidr = self.cidr(raw.get("cidr"), f"{path}.cidr")
        if cidr is None:
            return None
        excepted = []
        for i, e in enumerate(self.listing(raw.get("except"), f"{path}.except")):
            net = self.cidr(e, f"{path}.except[{i}]")
            if net is None:
                continue
            # the masked networks, as ValidateIPBlock compares them: a strict subset of cidr
            if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:  # type: ignore[arg-type]
                self.problem(f"{path}.except[{i}]", f"{net} must be a strict subset of {cidr}")
                continue
            excepted.append(net)
        return IPBlock(cidr, tuple(excepted))

    def peer(self, value: Any, path: str) -> Peer | None:
        raw = self.mapping(value, path, ("podSelector", "namespaceSelector", "ipBlock"))
        if not raw:
            self.problem(path, "must specify a podSelector, a namespaceSelector or an ipBlock")
            return None
        if "ipBlock" in raw and ("podSelector" in raw or "namespaceSelector" in raw):
            self.problem(path, "may not specify more than 1 peer type: ipBlock with a selector")
            return None
        if "ipBlock" in raw:
            block = self.ip_block(raw["ipBlock"], f"{path}.ipBlock")
            return None if block is None else Peer(ip_block=block)
        pods = self.selector(raw["podSelector"], f"{path}.podSelector") if "podSelector" in raw else None
        spaces = self.selector(raw["namespaceSelector"], f"{path}.namespaceSelector") if "namespaceSelector" in raw else None
        return Peer(pods, spaces)

    def ports(self, value: Any, path: str) -> tuple[PortRange, ...]:
        out = []
        for i, p in enumerate(self.listing(value, path)):
            at = f"{path}[{i}]"
            raw = self.mapping(p, at, ("protocol", "port", "endPort"))
            protocol = raw.get("protocol", "TCP")
            if protocol not in PROTOCOLS:
                self.problem(f"{at}.protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
                continue
            port, end = raw.get("port"), raw.get("endPort")
            if isinstance(port, str):  # a named port (ValidateNetworkPolicyPort: IsValidPortName, no endPort)
                refusal = port_name_refusal(port)
                if refusal is not None:
                    self.problem(f"{at}.port", refusal)
                    continue
                if end is not None:
                    self.problem(f"{at}.endPort", "may not be specified when `port` is non-numeric")
                    continue
                out.append(PortRange(protocol, port))
                continue
            if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535):
                self.problem(f"{at}.port", f"{port!r} is not a port between 1 and 65535")
                continue
            if end is not None:
                if port is None:
                    self.problem(f"{at}.endPort", "may not be specified when port is not specified")
                    continue
                if not isinstance(end, int) or isinstance(end, bool) or not port <= end <= 65535:
                    self.problem(f"{at}.endPort", f"{end!r} must be a port no lower than port ({port})")
                    continue
            out.append(PortRange(protocol, port, end))
        return tuple(out)

    def rules(self, value: Any, path: str, peers_key: str) -> tuple[Rule, ...]:
        out = []
        for i, r in enumerate(self.listing(value, path)):
            at = f"{path}[{i}]"
            raw = self.mapping(r, at, (peers_key, "ports"))
            peers = [self.peer(p, f"{at}.{peers_key}[{j}]") for j, p in enumerate(self.listing(raw.get(peers_key), f"{at}.{peers_key}"))]
            out.append(Rule(tuple(p for p in peers if p is not None), self.ports(raw.get("ports"), f"{at}.ports")))
        return tuple(out)


def parse(document: Any, where: str, namespaces: Iterable[str] = (DEFAULT_NAMESPACE,)) -> Policy:
    """One NetworkPolicy object, or LabError with every problem the API server would report."""
    r = _Reader(where)
    raw = r.mapping(document, "policy", ("apiVersion", "kind", "metadata", "spec"))
    if raw.get("apiVersion") != API_VERSION:
        r.problem("apiVersion", f"{raw.get('apiVersion')!r}: only {API_VERSION} NetworkPolicy objects are understood")
    if raw.get("kind") != KIND:
        r.problem("kind", f"{raw.get('kind')!r}: only {KIND} objects are understood")
    meta = r.mapping(raw.get("metadata"), "metadata", ("name", "namespace", "labels", "annotations"))
    name, namespace = meta.get("name"), meta.get("namespace", DEFAULT_NAMESPACE)
    if not is_dns_subdomain(name):
        r.problem("metadata.name", f"{name!r} is not a valid name (a DNS subdomain)")
        name = "?"
    if namespace not in set(namespaces):
        r.problem("metadata.namespace", f"{namespace!r} is not a namespace of the lab")
    if "spec" not in raw:
        r.problem("spec", "required")
    spec = r.mapping(raw.get("spec"), "spec", ("podSelector", "policyTypes", "ingress", "egress"))
    if "podSelector" not in spec and "spec" in raw:
        r.problem("spec.podSelector", "required (use {} to select every pod of the namespace)")
    selector = r.selector(spec.get("podSelector"), "spec.podSelector")
    ingress = r.rules(spec.get("ingress"), "spec.ingress", "from")
    egress = r.rules(spec.get("egress"), "spec.egress", "to")
    types = r.listing(spec.get("policyTypes"), "spec.policyTypes")
    if len(types) > len(POLICY_TYPES):  # ValidateNetworkPolicySpec: a length, not duplicates (an atomic list)
        r.problem("spec.policyTypes", "may not specify more than two policyTypes")
    else:
        for i, t in enumerate(types):
            if t not in POLICY_TYPES:
                r.problem(f"spec.policyTypes[{i}]", f"{t!r} is not one of Ingress, Egress")
    # SetDefaults_NetworkPolicy (pkg/apis/networking/v1/defaults.go L38-L46): an empty or absent
    # list becomes [Ingress], plus Egress only when len(spec.egress) != 0 (so `egress: []` is not)
    policy_types = tuple(t for t in POLICY_TYPES if t in types) or (("Ingress", "Egress") if egress else ("Ingress",))
    if r.problems:
        raise LabError(*r.problems)
    return Policy(str(name), str(namespace), selector, policy_types, ingress, egress, tuple(r.warnings))


# -- evaluating -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """A pod as policies see it (or a node: no namespace, no labels, matched by ipBlock only)."""

    id: str  # node1/x/a, or node1
    namespace: str  # "" for a node
    labels: Labels
    ips: tuple[IPv4Address | IPv6Address, ...]
    ports: tuple[ContainerPort, ...] = ()  # its declared container ports (a node: none)

    def find_port(self, name: str, protocol: str) -> int | None:
        return find_port(self.ports, name, protocol)

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.id.rsplit('/', 1)[1]}"

    @property
    def node(self) -> str:
        """The node it runs on (a node: itself); ids start with the node's name."""
        return self.id.split("/", 1)[0]

    def is_local_node_of(self, pod: Workload) -> bool:
        """This is a node, and `pod` runs on it."""
        return not self.namespace and pod.namespace != "" and self.node == pod.node


class Evaluator:
    def __init__(self, namespaces: dict[str, Labels], policies: Iterable[Policy]) -> None:
        self.namespaces = namespaces
        self.policies = tuple(policies)

    def selecting(self, pod: Workload, direction: str) -> list[Policy]:
        """The policies that select `pod` for a direction (Ingress or Egress)."""
        return [p for p in self.policies if p.namespace == pod.namespace and direction in p.policy_types
                and p.pod_selector.matches(pod.labels)]

    def _peer_matches(self, peer: Peer, policy: Policy, other: Workload, ip: IPv4Address | IPv6Address) -> bool:
        if peer.ip_block is not None:
            return peer.ip_block.matches(ip)
        if not other.namespace:
            return False  # a node, not a pod: only an ipBlock can name it
        if peer.namespace_selector is not None:
            if not peer.namespace_selector.matches(self.namespaces.get(other.namespace, ())):
                return False
        elif other.namespace != policy.namespace:
            return False
        return peer.pod_selector is None or peer.pod_selector.matches(other.labels)

    def _side(self, pod: Workload, direction: str, other: Workload, ip: IPv4Address | IPv6Address,
              protocol: str, port: int | None) -> bool:
        selecting = self.selecting(pod, direction)
        if not selecting:
            return True  # not isolated in this direction
        for policy in selecting:
            for rule in policy.ingress if direction == "Ingress" else policy.egress:
                if not rule.allows_port(protocol, port, pod if direction == "Ingress" else other):
                    continue
                if not rule.peers or any(self._peer_matches(p, policy, other, ip) for p in rule.peers):
                    return True
        return False

    def allowed(self, src: Workload, dst: Workload, protocol: str, port: int | None,
                family: int = 4) -> bool:
        """May `src` open a connection to `dst` on protocol (TCP, UDP, SCTP, ICMP) and port?"""
        src_ip = next((ip for ip in src.ips if ip.version == family), src.ips[0])
        dst_ip = next((ip for ip in dst.ips if ip.version == family), dst.ips[0])
        # NetworkPolicySpec.ingress (staging/src/k8s.io/api/networking/v1/types.go, 1.36 L71-L77):
        # allowed "if the traffic source is the pod's local node", whichever its address. Not egress.
        return (self._side(src, "Egress", dst, dst_ip, protocol, port)
                and (src.is_local_node_of(dst) or self._side(dst, "Ingress", src, src_ip, protocol, port)))

    def explain(self, src: Workload, dst: Workload, protocol: str, port: int | None, family: int = 4) -> Cause:
        """`allowed`, and why (policy_cause.py): per direction, the policies isolating the pod and
        the first rule, in their order, that lets the other end through. A unit test holds
        `explain(...).allowed == allowed(...)` on the e2e suite's cases and generated ones."""
        src_ip = next((ip for ip in src.ips if ip.version == family), src.ips[0])
        dst_ip = next((ip for ip in dst.ips if ip.version == family), dst.ips[0])
        egress = self._explain_side(src, "Egress", dst, dst_ip, protocol, port)
        if src.is_local_node_of(dst):
            return Cause(protocol, port, egress, Side("Ingress", _name(dst), _name(src, src_ip), own_node=True))
        return Cause(protocol, port, egress, self._explain_side(dst, "Ingress", src, src_ip, protocol, port))

    def _explain_side(self, pod: Workload, direction: str, other: Workload, ip: IPv4Address | IPv6Address,
                      protocol: str, port: int | None) -> Side:
        """`_side`'s walk, keeping what it found: the same matching functions, in the same order."""
        selecting = self.selecting(pod, direction)
        side = Side(direction, _name(pod), _name(other, ip), tuple(p.qualified for p in selecting))
        way = "from" if direction == "Ingress" else "to"
        for policy in selecting:
            for i, rule in enumerate(policy.ingress if direction == "Ingress" else policy.egress):
                if not rule.allows_port(protocol, port, pod if direction == "Ingress" else other):
                    continue
                if not rule.peers:
                    return replace(side, policy=policy.qualified, rule=i, match=f"{way} anywhere")
                peer = next((p for p in rule.peers if self._peer_matches(p, policy, other, ip)), None)
                if peer is not None:
                    return replace(side, policy=policy.qualified, rule=i, match=f"{way} {_peer_words(peer)}")
        return side


def _name(w: Workload, ip: IPv4Address | IPv6Address | None = None) -> str:
    """A pod as ns/name; a node by name, with the address the rules see where it matters (ipBlock)."""
    if w.namespace:
        return w.qualified
    return w.id if ip is None else f"{w.id} ({ip})"


def _selector_words(s: Selector) -> str:
    parts = [f"{k}={v}" for k, v in s.match_labels]
    parts += [f"{r.key} {r.operator} ({', '.join(r.values)})" if r.values else f"{r.key} {r.operator}"
              for r in s.match_expressions]
    return ", ".join(parts) or "any"


def _peer_words(peer: Peer) -> str:
    """A peer as the policy writes it: "namespaceSelector ns=y and podSelector pod=b"."""
    if peer.ip_block is not None:
        excepted = ", ".join(map(str, peer.ip_block.excepted))
        return f"ipBlock {peer.ip_block.cidr}" + (f" except {excepted}" if excepted else "")
    parts = [f"{kind} {_selector_words(s) if s.match_labels or s.match_expressions else '{}'}"
             for kind, s in (("namespaceSelector", peer.namespace_selector), ("podSelector", peer.pod_selector))
             if s is not None]
    return " and ".join(parts)


def describe(policy: Policy, direction: str) -> list[str]:
    """A policy's rules of one direction in words: what they let in (or out)."""
    rules = policy.ingress if direction == "Ingress" else policy.egress
    way = "from" if direction == "Ingress" else "to"
    if not rules:
        return [f"{policy.qualified}: nothing ({direction.lower()} denied unless another policy allows it)"]
    out = []
    for rule in rules:
        if not rule.peers:
            who = "everyone"
        else:
            names = []
            for peer in rule.peers:
                if peer.ip_block is not None:
                    text = f"addresses in {peer.ip_block.cidr}"
                    if peer.ip_block.excepted:
                        text += " except " + ", ".join(map(str, peer.ip_block.excepted))
                    names.append(text)
                    continue
                pods = "all pods" if peer.pod_selector is None else f"pods with {_selector_words(peer.pod_selector)}"
                where = (f"in namespaces with {_selector_words(peer.namespace_selector)}" if peer.namespace_selector is not None
                         else f"in {policy.namespace}")
                names.append(f"{pods} {where}")
            who = " or ".join(names)
        ports = "any port and protocol" if not rule.ports else ", ".join(
            f"{p.protocol}" + ("" if p.port is None else f"/{p.port}" + (f"-{p.end_port}" if p.end_port else ""))
            for p in rule.ports)
        out.append(f"{policy.qualified}: {way} {who}, on {ports}")
    return out


def probes(ports: Iterable[ProbePort]) -> list[tuple[str, int | None]]:
    """What a policy lab is probed on: ICMP, then each `probe.ports` entry (tcp/80 → TCP, 80)."""
    return [("ICMP", None), *((p.protocol, p.port) for p in ports)]


def truth_table(evaluator: Evaluator, pods: list[Workload], protocol: str, port: int | None,
                observed: dict[tuple[str, str], bool] | None = None) -> str:
    """The grid the Kubernetes e2e suite logs: rows are sources, columns destinations, `.`
    allowed and `X` denied; with `observed`, a cell where the network disagrees is marked `!`."""
    pods = sorted(pods, key=lambda p: p.qualified)  # x/a x/b x/c y/a ..., as the suite lists them
    names = [p.qualified for p in pods]
    lines = ["-\t" + "\t".join(names)]
    for src in pods:
        cells = []
        for dst in pods:
            # a pod reaching itself never leaves it: always allowed (the e2e suite's loopback)
            want = src is dst or evaluator.allowed(src, dst, protocol, port)
            cell = "." if want else "X"
            if observed is not None and (src.id, dst.id) in observed and observed[(src.id, dst.id)] != want:
                cell = "!"
            cells.append(cell)
        lines.append(src.qualified + "\t" + "\t".join(cells))
    return "\n".join(lines)
