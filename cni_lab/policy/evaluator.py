"""NetworkPolicy evaluated as Kubernetes defines it: whether a new connection is allowed, why, and
the e2e suite's truth table. Pure: the reference the kernel's enforcement is held against."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from typing import Iterable

from cni_lab.model import Labels, ProbePort
from cni_lab.policy.cause import Cause, Side
from cni_lab.policy.objects import Peer, Policy, Workload
from cni_lab.policy.words import party_name, peer_words

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
        """`allowed`, and why (cause.py): per direction, the policies isolating the pod and
        the first rule, in their order, that lets the other end through. A unit test holds
        `explain(...).allowed == allowed(...)` on the e2e suite's cases and generated ones."""
        src_ip = next((ip for ip in src.ips if ip.version == family), src.ips[0])
        dst_ip = next((ip for ip in dst.ips if ip.version == family), dst.ips[0])
        egress = self._explain_side(src, "Egress", dst, dst_ip, protocol, port)
        if src.is_local_node_of(dst):
            return Cause(protocol, port, egress, Side("Ingress", party_name(dst), party_name(src, src_ip), own_node=True))
        return Cause(protocol, port, egress, self._explain_side(dst, "Ingress", src, src_ip, protocol, port))

    def _explain_side(self, pod: Workload, direction: str, other: Workload, ip: IPv4Address | IPv6Address,
                      protocol: str, port: int | None) -> Side:
        """`_side`'s walk, keeping what it found: the same matching functions, in the same order."""
        selecting = self.selecting(pod, direction)
        side = Side(direction, party_name(pod), party_name(other, ip), tuple(p.qualified for p in selecting))
        way = "from" if direction == "Ingress" else "to"
        for policy in selecting:
            for i, rule in enumerate(policy.ingress if direction == "Ingress" else policy.egress):
                if not rule.allows_port(protocol, port, pod if direction == "Ingress" else other):
                    continue
                if not rule.peers:
                    return replace(side, policy=policy.qualified, rule=i, match=f"{way} anywhere")
                peer = next((p for p in rule.peers if self._peer_matches(p, policy, other, ip)), None)
                if peer is not None:
                    return replace(side, policy=policy.qualified, rule=i, match=f"{way} {peer_words(peer)}")
        return side


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
