"""NetworkPolicy enforced on the nodes, as Calico's Felix does it: per workload, on the node's side
of the pod, stateful. Pure: the lab and its policies in, one nftables table per node out (a
plan step applies it in the node's namespace; `nft list ruleset` there reads like the policy).

    table inet cni-lab-policy {
      chain forward  { type filter hook forward priority filter; policy accept;
                       ct state established,related accept          # replies always pass
                       ip saddr 10.244.0.3 jump from-wl-x/a         # what the node's pods send
                       ip daddr 10.244.0.3 jump to-wl-x/a }         # what goes to them
      chain input    { ... the pods' egress to the node itself }
      chain to-wl-x/a   { meta mark set meta mark & ~ALLOW; jump pi-x/deny-ingress; jump pi-x/allow-b
                          meta mark & ALLOW == ALLOW return
                          log prefix "cni-lab policy-drop ingress" group 1 counter drop }
      chain pi-x/allow-b { ip saddr { 10.244.1.2 } tcp dport 80 meta mark set meta mark | ALLOW return }
    }

No output chain: what the node itself sends to its pods is never policed, from whichever of its
addresses (underlay, cni0's, flannel.1's, a tunnel's), as NetworkPolicySpec.ingress says ("if the
traffic source is the pod's local node") and Felix does (felix/rules/static.go, v3.32.1,
filterOutputChain L705: "We don't currently police host -> endpoint according to the endpoint's
ingress policy", a RETURN for every packet out of a workload interface). Other nodes' traffic
arrives through the forward hook and meets the pods' ingress rules like any other source.

Chains are named as Felix names them (PolicyChainName, felix/rules/policy.go L1025): a prefix and
namespace/name, "/" being in no namespace (a DNS label) and no name (a DNS subdomain), so no two
policies or pods share a chain; a name longer than nft allows becomes the prefix, "_" and a hash
(GetLengthLimitedID, libcalico-go/lib/hash/unique_id.go L49).

A named port stands for each destination pod's own number, as Felix matches it: an IP set of
(address, protocol, port) per named port (felix's named-port IP sets, hash:ip,port), here an
anonymous set per family, `ip daddr . tcp dport { 10.244.0.2 . 80, 10.244.0.3 . 81 }`: for an
ingress rule the pods the policy selects, for an egress rule every pod (the rule's peers narrow
it). A pod that does not declare the name is in no set, so the rule lets nothing through to it.

Differences from Felix, on purpose: pods are matched by their address (there is no NAT in the
lab, and every data plane's interface names differ; the CNI plugins' are only known after ADD),
selectors are expanded to the addresses of the pods they select when the rules are made (Felix
keeps IP sets in step with the pods), and a workload's chain is named after the pod, not its
interface.

Bridged traffic (pods on one node's cni0) reaches the inet forward hook through br_netfilter,
which `up` switches on in the node's namespace: conntrack in the `bridge` family would need
nf_conntrack_bridge, which many kernels (this project's CI kernel among them) do not have, and
with br_netfilter one set of chains serves routed and bridged data planes alike.
"""

from __future__ import annotations

import base64
import hashlib
from ipaddress import IPv4Address, IPv6Address

from cni_lab.rulesets import nft, observe
from cni_lab.cluster import Lab, Node, Pod
from cni_lab.policy import IPBlock, Peer, Policy, PortRange, Rule, Workload

TABLE = "cni-lab-policy"
ALLOW = 0x10000  # the mark bit a policy sets when one of its rules matched (Felix: 0x10000 "accept")
MAX_CHAIN_NAME = 255  # NFT_CHAIN_MAXNAMELEN (include/uapi/linux/netfilter/nf_tables.h) is 256 with the NUL


def chain_name(prefix: str, qualified: str) -> str:
    """`prefix-namespace/name`, or where nft would refuse its length, `prefix-_<hash>` (Felix's
    GetLengthLimitedID: SHA-256 of the rest, base64url, cut to fit). "_" starts no namespace, so
    a hashed name is never a readable one. nft takes "/" in an unquoted name (its scanner's
    `string`; Felix's nft mode lists `raw-cali-pi-gnp/xdpf`, felix/fv/xdp_test.go L381)."""
    if len(prefix) + 1 + len(qualified) <= MAX_CHAIN_NAME:
        return f"{prefix}-{qualified}"
    digest = base64.urlsafe_b64encode(hashlib.sha256(qualified.encode()).digest()).decode().rstrip("=")
    return f"{prefix}-_{digest}"[:MAX_CHAIN_NAME]


def policy_chain_name(policy: Policy, direction: str) -> str:
    return chain_name("pi" if direction == "Ingress" else "po", policy.qualified)


def workload_chain_name(pod: Workload, direction: str) -> str:
    return chain_name("to-wl" if direction == "Ingress" else "from-wl", pod.qualified)


def _set(addresses: list[IPv4Address | IPv6Address]) -> str:
    return "{ " + ", ".join(str(a) for a in addresses) + " }"


def _ip(version: int) -> str:
    return "ip6" if version == 6 else "ip"


def _family(match: str) -> int | None:
    """The address family a match expression is about, None where it names no address."""
    return 6 if match.startswith("ip6 ") else 4 if match.startswith("ip ") else None


class Rules:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.evaluator = lab.evaluator
        self.workloads = {w.id: w for w in lab.workloads}

    def _peer_addresses(self, peer: Peer, policy: Policy) -> list[IPv4Address | IPv6Address]:
        """The pods a selector peer stands for, now (their addresses)."""
        out: list[IPv4Address | IPv6Address] = []
        for w in self.workloads.values():
            if peer.namespace_selector is not None:
                if not peer.namespace_selector.matches(self.evaluator.namespaces.get(w.namespace, ())):
                    continue
            elif w.namespace != policy.namespace:
                continue
            if peer.pod_selector is None or peer.pod_selector.matches(w.labels):
                out += list(w.ips)
        return out

    def _matches(self, peer: Peer, policy: Policy, field: str) -> list[str]:
        """nft match expressions for one peer (`field` saddr or daddr), one per family."""
        if peer.ip_block is not None:
            return [self._block(peer.ip_block, field)]
        addresses = self._peer_addresses(peer, policy)
        out = []
        for version in (4, 6):
            mine = [a for a in addresses if a.version == version]
            if mine:
                out.append(f"{_ip(version)} {field} {_set(mine)}")
        return out  # empty: the peer selects no pod now, and the rule allows nothing through it

    @staticmethod
    def _block(block: IPBlock, field: str) -> str:
        ip = _ip(block.cidr.version)
        text = f"{ip} {field} {block.cidr}"
        if block.excepted:
            text += f" {ip} {field} != " + "{ " + ", ".join(str(e) for e in block.excepted) + " }"
        return text

    @staticmethod
    def _ports(ports: tuple[PortRange, ...]) -> list[str]:
        if not ports:
            return [""]
        out = []
        for p in ports:
            proto = p.protocol.lower()
            if p.port is None:
                out.append(f"meta l4proto {proto}")
            elif p.end_port and p.end_port != p.port:
                out.append(f"{proto} dport {p.port}-{p.end_port}")
            else:
                out.append(f"{proto} dport {p.port}")
        return out

    def _port_matches(self, policy: Policy, direction: str, ports: tuple[PortRange, ...]) -> list[str]:
        """A rule's ports: numbers as they are, names per destination pod (_named_port)."""
        if not ports:
            return [""]
        return [m for p in ports for m in (self._named_port(policy, direction, p) if isinstance(p.port, str)
                                           else self._ports((p,)))]

    def _named_port(self, policy: Policy, direction: str, port: PortRange) -> list[str]:
        """`ip daddr . tcp dport { <pod> . <its number>, ... }` per family, over the pods that
        declare the name for the rule's protocol: for ingress those the policy selects (the
        traffic's destination), for egress every pod. Empty: no pod has it, the port matches
        nothing."""
        pods = [w for w in self.workloads.values() if direction == "Egress"
                or (w.namespace == policy.namespace and policy.pod_selector.matches(w.labels))]
        numbered = [(w, n) for w in pods if (n := port.named_port_on(w)) is not None]
        out = []
        for version in (4, 6):
            elements = [f"{ip} . {n}" for w, n in numbered for ip in w.ips if ip.version == version]
            if elements:
                out.append(f"{_ip(version)} daddr . {port.protocol.lower()} dport {{ {', '.join(elements)} }}")
        return out

    def policy_chain(self, policy: Policy, direction: str) -> tuple[str, list[str]]:
        """One chain per policy and direction: every rule, every peer and port, marks ALLOW."""
        name = policy_chain_name(policy, direction)
        field = "saddr" if direction == "Ingress" else "daddr"
        lines = []
        rules: tuple[Rule, ...] = policy.ingress if direction == "Ingress" else policy.egress
        for rule in rules:
            peers = [m for peer in rule.peers for m in self._matches(peer, policy, field)] if rule.peers else [""]
            for match in peers:
                for port in self._port_matches(policy, direction, rule.ports):
                    if None not in (_family(match), _family(port)) and _family(match) != _family(port):
                        continue  # an IPv4 peer and an IPv6 named-port set: no packet is both
                    cond = " ".join(x for x in (match, port) if x)
                    lines.append(f"{cond} meta mark set meta mark | {ALLOW:#x} return".strip())
        return name, lines

    def workload_chain(self, pod: Workload, direction: str, policies: list[Policy]) -> tuple[str, list[str]]:
        name = workload_chain_name(pod, direction)
        lines = [f"meta mark set meta mark & {~ALLOW & 0xFFFFFFFF:#x}"]
        lines += [f"jump {policy_chain_name(p, direction)}" for p in policies]
        lines += [f"meta mark & {ALLOW:#x} == {ALLOW:#x} return",
                  f'{observe.log("policy-drop " + direction.lower())} counter drop '
                  f'comment "{pod.qualified}: no {direction.lower()} policy allows this"']
        return name, lines

    def node_table(self, node: Node) -> str:
        """The node's whole table, or "" when no policy selects any of its pods."""
        chains: dict[str, list[str]] = {}
        forward, inbound = [], []
        local: list[Pod] = list(node.pods)
        for pod in local:
            w = self.workloads[pod.id]
            for direction in ("Ingress", "Egress"):
                selecting = self.evaluator.selecting(w, direction)
                if not selecting:
                    continue
                name, lines = self.workload_chain(w, direction, selecting)
                chains[name] = lines
                for p in selecting:
                    pname, plines = self.policy_chain(p, direction)
                    chains[pname] = plines
                for ip in w.ips:
                    if direction == "Egress":
                        forward.append(f"{_ip(ip.version)} saddr {ip} jump {name}")
                        inbound.append(f"{_ip(ip.version)} saddr {ip} jump {name}")
                    else:  # from other nodes and pods only: the output hook (this node's own) is not policed
                        forward.append(f"{_ip(ip.version)} daddr {ip} jump {name}")
        if not chains:
            return ""
        out = [f"table inet {TABLE} {{"]

        def base(name: str, hook: str, body: list[str]) -> None:
            out.append(f"  chain {name} {{")
            out.append(f"    type filter hook {hook} priority filter; policy accept;")
            out.append("    ct state established,related accept")
            # IPv6's neighbour discovery is how pods find their next hop at all: never a policy's
            out.append("    icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept")
            out.extend(f"    {line}" for line in body)
            out.append("  }")

        base("forward", "forward", forward)
        base("input", "input", inbound)
        out += nft.chains(chains)
        out.append("}")
        return "\n".join(out) + "\n"


def ruleset(lab: Lab, node: Node) -> str:
    """What `nft -f` loads in the node's namespace: the table replaced as a whole, atomically."""
    head = "\n".join(nft.replace("inet", TABLE)) + "\n"
    return head + Rules(lab).node_table(node)
