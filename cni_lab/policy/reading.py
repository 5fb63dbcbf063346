"""NetworkPolicy read as the API server validates it: `parse(document, where)` takes one object as
`kubectl apply` would and refuses what the API server refuses, one line naming the place. Pure."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Any, Iterable

from cni_lab.errors import LabError
from cni_lab.model import (DEFAULT_NAMESPACE, Labels, cidr_warnings, is_dns_subdomain, is_label_key, is_label_value,
                           parse_cidr_sloppy, port_name_refusal)
from cni_lab.policy.objects import (API_VERSION, KIND, OPERATORS, POLICY_TYPES, PROTOCOLS, IPBlock, Peer, Policy,
                                    PortRange, Requirement, Rule, Selector)

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


