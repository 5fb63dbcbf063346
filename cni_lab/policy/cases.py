"""Generated NetworkPolicy cases on the model of the Kubernetes e2e suite, in the spirit of
cyclonus (mattfenwick/cyclonus, pkg/generator) and its successor policy-assistant
(kubernetes-sigs/network-policy-api, cmd/policy-assistant/pkg/generator). Pure: values only.

The model (test/e2e/network/netpol/model.go): namespaces x, y, z labelled ns=<name> (and, as the
API server adds it, kubernetes.io/metadata.name=<name>); pods a, b, c in each labelled
pod=<name>, serving TCP and UDP 80 and 81 on container ports named serve-<port>-<protocol>;
probed on ICMP and those ports (scenarios/netpol.yaml is that lab).

    cases(seed, n) → [Case(name, policies, probes, tags)]

is reproducible: case i depends only on (seed, i), so `cases(s, 10)` is the start of
`cases(s, 1000)`. `policies` are NetworkPolicy documents as a scenario's `policies:` takes them;
`tags` name the shapes a case holds (what the coverage test counts). A case draws one to three
policies over the shapes cyclonus enumerates: targets by every kind of selector, policyTypes
absent, empty or explicit (either order), rules absent, empty (`ingress: []`) or present, empty
rules (`{}`), peer lists absent or empty, peers by podSelector, namespaceSelector, both in one
peer (AND) or several (OR), ipBlock with and without except (CIDRs around the pods' own
addresses, host bits set as the e2e suite writes them), ports by number, range (endPort),
protocol alone, implicit TCP and the empty port, on TCP, UDP and SCTP, and (`named_ports`) by
name: the model's port names, SCTP's among them, which no pod of the model serves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Mapping

API_VERSION = "networking.k8s.io/v1"
NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NAMESPACE_LABELS = {ns: {"ns": ns} for ns in NAMESPACES}  # plus kubernetes.io/metadata.name, added by the lab
POD_LABELS = {p: {"pod": p} for p in PODS}
PROBES: tuple[tuple[str, int | None], ...] = (("ICMP", None), ("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81))
# scenarios/netpol.yaml puts pod a of every namespace on node1 (10.244.0.0/24), b on node2, c on
# node3, each node's pods in namespace order from .2 (host-local): the addresses ipBlocks are
# drawn around unless the caller passes a running lab's (a unit test holds the two equal)
DEFAULT_IPS = {f"{ns}/{p}": f"10.244.{i}.{j + 2}" for i, p in enumerate(PODS) for j, ns in enumerate(NAMESPACES)}
# the e2e model names each served port serve-<port>-<protocol> (model.go, Container.PortName):
# a container per port and protocol, `for port { for protocol }`; every pod serves TCP and UDP
CONTAINER_PORTS = tuple({"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
                        for port in (80, 81) for proto in ("TCP", "UDP"))
PORT_NAMES = tuple(f"serve-{port}-{proto}" for port in (80, 81) for proto in ("tcp", "udp", "sctp"))


@dataclass(frozen=True)
class Case:
    name: str
    policies: tuple[dict[str, Any], ...]
    probes: tuple[tuple[str, int | None], ...]
    tags: frozenset[str] = frozenset()


def cases(seed: int, n: int, ips: Mapping[str, str] | None = None, *, named_ports: bool = False) -> list[Case]:
    """n cases from `seed`. `ips` maps x/a ... z/c to the lab's pod addresses (default: the shipped
    netpol lab's). `named_ports` lets ports name the model's container ports (serve-80-tcp):
    the hook for when the evaluator resolves them; off, every port is a number."""
    addresses = dict(ips or DEFAULT_IPS)
    return [case(seed, i, addresses, named_ports=named_ports) for i in range(n)]


def case(seed: int, index: int, ips: Mapping[str, str] | None = None, *, named_ports: bool = False) -> Case:
    """Case `index` of `cases(seed, …)` alone, named case-<seed>-<index> (four digits at least):
    how a run's case is drawn again from its name (`cni-lab conformance --case`)."""
    rng = random.Random(f"cni-lab-netpol:{seed}:{index}")
    return _Draw(rng, ips or DEFAULT_IPS, named_ports).case(f"case-{seed}-{index:04d}")


class _Draw:
    """One case's draws. Weights lean on the shapes where implementations differ (cyclonus's
    tags): selectors beside each other, empty lists, defaulted policyTypes, port ranges."""

    def __init__(self, rng: random.Random, ips: Mapping[str, str], named_ports: bool) -> None:
        self.rng = rng
        self.ips = ips
        self.named_ports = named_ports
        self.tags: set[str] = set()

    def pick(self, weighted: Mapping[str, float]) -> str:
        return self.rng.choices(list(weighted), weights=list(weighted.values()))[0]

    def case(self, name: str) -> Case:
        count = int(self.pick({"1": 40, "2": 35, "3": 25}))
        self.tags.add(f"policies:{count}")
        policies = tuple(self.policy(f"p{i + 1}") for i in range(count))
        return Case(name, policies, PROBES, frozenset(self.tags))

    # -- a policy ------------------------------------------------------------------------------

    def policy(self, name: str) -> dict[str, Any]:
        namespace = self.pick({"x": 50, "y": 25, "z": 25})
        spec: dict[str, Any] = {"podSelector": self.selector("pod", target=True)}
        types = self.pick({"absent": 35, "empty": 5, "Ingress": 20, "Egress": 15, "Ingress,Egress": 20,
                           "Egress,Ingress": 5})
        self.tags.add(f"policyTypes:{types}")
        if types == "absent" or types == "empty":
            if types == "empty":
                spec["policyTypes"] = []
            # defaulted: the rules decide (Egress only when egress has rules, defaults.go)
            self.rules(spec, "ingress", {"absent": 25, "empty": 15, "rules": 60})
            self.rules(spec, "egress", {"absent": 45, "empty": 10, "rules": 45})
        else:
            listed = types.split(",")
            spec["policyTypes"] = listed
            for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
                if kind in listed:
                    self.rules(spec, direction, {"absent": 15, "empty": 15, "rules": 70})
                else:  # rules of a direction the policy does not type: the API server keeps and ignores them
                    self.rules(spec, direction, {"absent": 95, "empty": 0, "rules": 5}, untyped=True)
        return {"apiVersion": API_VERSION, "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace},
                "spec": spec}

    def rules(self, spec: dict[str, Any], direction: str, weights: Mapping[str, float], untyped: bool = False) -> None:
        shape = self.pick(weights)
        if shape == "absent":
            return
        self.tags.add(f"{direction}:{'untyped' if untyped else shape}")
        count = 0 if shape == "empty" else int(self.pick({"1": 55, "2": 30, "3": 15}))
        spec[direction] = [self.rule(direction) for _ in range(count)]

    def rule(self, direction: str) -> dict[str, Any]:
        key = "from" if direction == "ingress" else "to"
        rule: dict[str, Any] = {}
        peers = self.pick({"absent": 15, "empty": 10, "1": 45, "2": 20, "3": 10})
        if peers == "empty":
            rule[key] = []
            self.tags.add("peers:empty-list")
        elif peers != "absent":
            rule[key] = [self.peer() for _ in range(int(peers))]
            if int(peers) > 1:
                self.tags.add("peers:or")
        ports = self.pick({"absent": 50, "empty": 5, "1": 30, "2": 15})
        if ports == "empty":
            rule["ports"] = []
            self.tags.add("ports:empty-list")
        elif ports != "absent":
            rule["ports"] = [self.port() for _ in range(int(ports))]
        if not rule:
            self.tags.add("rule:empty")
        return rule

    # -- peers and selectors -------------------------------------------------------------------

    def peer(self) -> dict[str, Any]:
        kind = self.pick({"pods": 32, "namespaces": 28, "and": 32, "ipBlock": 8})
        self.tags.add(f"peer:{kind}")
        if kind == "pods":
            return {"podSelector": self.selector("pod")}
        if kind == "namespaces":
            return {"namespaceSelector": self.selector("namespace")}
        if kind == "and":
            return {"podSelector": self.selector("pod"), "namespaceSelector": self.selector("namespace")}
        return {"ipBlock": self.ip_block()}

    # label keys and values a selector draws from: the model's own, one no object carries (so
    # NotIn and DoesNotExist meet a missing key) and values no object has
    KEYS = {"pod": {"pod": 85, "app": 15}, "namespace": {"ns": 60, "kubernetes.io/metadata.name": 25, "team": 15}}
    VALUES = {"pod": ("a", "b", "c"), "app": ("a", "web"), "ns": ("x", "y", "z"),
              "kubernetes.io/metadata.name": ("x", "y", "z"), "team": ("x", "red")}

    def selector(self, of: str, target: bool = False) -> dict[str, Any]:
        shape = self.pick({"empty": 25, "matchLabels": 35, "matchExpressions": 30, "both": 10})
        self.tags.add(f"selector:{shape}")
        out: dict[str, Any] = {}
        if shape in ("matchLabels", "both"):
            key = self.pick(self.KEYS[of])
            out["matchLabels"] = {key: self.value(key)}
        if shape in ("matchExpressions", "both"):
            out["matchExpressions"] = [self.requirement(of) for _ in range(int(self.pick({"1": 80, "2": 20})))]
        if target:
            self.tags.add(f"target:{shape}")
        return out

    def value(self, key: str) -> str:
        if self.rng.random() < 0.04:  # an empty value is a valid label value (and matches no missing key)
            self.tags.add("value:empty")
            return ""
        return self.rng.choice(self.VALUES[key])

    def requirement(self, of: str) -> dict[str, Any]:
        key = self.pick(self.KEYS[of])
        op = self.pick({"In": 30, "NotIn": 30, "Exists": 20, "DoesNotExist": 20})
        self.tags.add(f"op:{op}")
        if op in ("Exists", "DoesNotExist"):
            return {"key": key, "operator": op}
        values = sorted({self.value(key) for _ in range(int(self.pick({"1": 60, "2": 40})))})
        return {"key": key, "operator": op, "values": values}

    def ip_block(self) -> dict[str, Any]:
        """CIDRs around the pods' addresses, as cyclonus draws them from a pod's IP: the pod alone,
        its /24 (the node's pod CIDR here), the cluster's /16, everything; with excepts inside."""
        pod = self.rng.choice(sorted(self.ips))
        ip = IPv4Address(self.ips[pod])
        other = IPv4Address(self.ips[self.rng.choice(sorted(self.ips))])
        shape = self.pick({"pod": 15, "node": 20, "cluster": 20, "everything": 15, "elsewhere": 15, "host-bits": 15})
        net = lambda a, bits: IPv4Network(f"{a}/{bits}", strict=False)  # noqa: E731
        if shape == "pod":
            block: dict[str, Any] = {"cidr": f"{ip}/32"}
        elif shape == "node":
            block = {"cidr": str(net(ip, 24)), "except": [f"{other}/32"] if other in net(ip, 24) else []}
        elif shape == "cluster":
            block = {"cidr": str(net(ip, 16)), "except": self.rng.choice([[], [str(net(other, 24))], [f"{other}/32"]])}
        elif shape == "everything":  # every address but the cluster's: matches no pod
            block = {"cidr": "0.0.0.0/0", "except": [str(net(ip, 16))]}
        elif shape == "elsewhere":  # TEST-NET-1 (RFC 5737): matches no pod
            block = {"cidr": "192.0.2.0/24"}
        else:  # the e2e suite writes a pod's address with a prefix ("%s/4"), cyclonus "%s/24" except "%s/28"
            self.tags.add("cidr:host-bits")
            block = self.rng.choice([{"cidr": f"{ip}/24", "except": [f"{ip}/28"]}, {"cidr": f"{ip}/8"},
                                     {"cidr": "0.0.0.0/0", "except": [f"{ip}/16"]}])
        if not block.get("except"):
            block.pop("except", None)
        self.tags.add("ipBlock:except" if "except" in block else "ipBlock:plain")
        return block

    # -- ports ---------------------------------------------------------------------------------

    def port(self) -> dict[str, Any]:
        shape = self.pick({"empty": 5, "protocol": 20, "number": 20, "both": 30, "range": 20,
                           "named": 10 if self.named_ports else 0})
        self.tags.add(f"port:{shape}")
        protocol = self.pick({"TCP": 45, "UDP": 40, "SCTP": 15})
        if shape == "empty":  # protocol defaults to TCP, no port: every TCP port
            return {}
        if shape == "protocol":
            self.tags.add(f"protocol:{protocol}")
            return {"protocol": protocol}
        number = int(self.pick({"79": 15, "80": 40, "81": 35, "82": 10}))
        if shape == "number":  # protocol defaults to TCP
            return {"port": number}
        self.tags.add(f"protocol:{protocol}")
        if shape == "named":
            return {"protocol": protocol, "port": self.rng.choice(PORT_NAMES)}
        if shape == "both":
            return {"protocol": protocol, "port": number}
        end = number + int(self.pick({"0": 20, "1": 45, "2": 20, "10": 15}))
        return {"protocol": protocol, "port": number, "endPort": end}
