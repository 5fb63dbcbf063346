"""NetworkPolicy in words: a policy's rules, a peer, a selector, a party of a connection (what
explain and the causes of check's verdicts say). Pure."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from cni_lab.policy.objects import Peer, Policy, Selector, Workload

def party_name(w: Workload, ip: IPv4Address | IPv6Address | None = None) -> str:
    """A pod as ns/name; a node by name, with the address the rules see where it matters (ipBlock)."""
    if w.namespace:
        return w.qualified
    return w.id if ip is None else f"{w.id} ({ip})"


def selector_words(s: Selector) -> str:
    parts = [f"{k}={v}" for k, v in s.match_labels]
    parts += [f"{r.key} {r.operator} ({', '.join(r.values)})" if r.values else f"{r.key} {r.operator}"
              for r in s.match_expressions]
    return ", ".join(parts) or "any"


def peer_words(peer: Peer) -> str:
    """A peer as the policy writes it: "namespaceSelector ns=y and podSelector pod=b"."""
    if peer.ip_block is not None:
        excepted = ", ".join(map(str, peer.ip_block.excepted))
        return f"ipBlock {peer.ip_block.cidr}" + (f" except {excepted}" if excepted else "")
    parts = [f"{kind} {selector_words(s) if s.match_labels or s.match_expressions else '{}'}"
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
                pods = "all pods" if peer.pod_selector is None else f"pods with {selector_words(peer.pod_selector)}"
                where = (f"in namespaces with {selector_words(peer.namespace_selector)}" if peer.namespace_selector is not None
                         else f"in {policy.namespace}")
                names.append(f"{pods} {where}")
            who = " or ".join(names)
        ports = "any port and protocol" if not rule.ports else ", ".join(
            f"{p.protocol}" + ("" if p.port is None else f"/{p.port}" + (f"-{p.end_port}" if p.end_port else ""))
            for p in rule.ports)
        out.append(f"{policy.qualified}: {way} {who}, on {ports}")
    return out


