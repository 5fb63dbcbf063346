"""rulesets/netpol.py: NetworkPolicy as Felix enforces it, one nftables table per node. Its text is
checked for Felix's shape (a chain per workload and direction, a chain per policy, the accept mark
0x10000), and run by a small interpreter of the nft it writes, which must agree with the policy
evaluator (itself held against the Kubernetes e2e suite) on every pair, port and hook."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import pytest

from cni_lab.cluster import Lab, Node, Pod
from cni_lab.policy import Workload
from cni_lab.rulesets import netpol, nft

from labs import make_lab, network_policy, pod

EMPTIED = "table inet cni-lab-policy {}\ndelete table inet cni-lab-policy\n"  # what a node without policy loads


def serving(entry: dict[str, Any], *ports: tuple[str, int, str]) -> dict[str, Any]:
    return {**entry, "ports": [{"name": name, "containerPort": number, "protocol": proto} for name, number, proto in ports]}


def policy_lab(*policies: dict[str, Any], networking: dict[str, Any] | None = None) -> Lab:
    """Namespaces x and y; node1 holds x/a, x/b and y/a, node2 x/c and y/b, node3 no pod. Their
    ports named http differ: x/a's is TCP 80, x/b's TCP 81 (and dns UDP 80), y/a's UDP 80, y/b's
    TCP 81; x/c declares none."""
    return make_lab([{"name": "node1", "pods": [serving(pod("a", "x", {"pod": "a"}), ("http", 80, "TCP")),
                                                serving(pod("b", "x", {"pod": "b"}), ("http", 81, "TCP"), ("dns", 80, "UDP")),
                                                serving(pod("a", "y", {"pod": "a"}), ("http", 80, "UDP"))]},
                     {"name": "node2", "pods": [pod("c", "x", {"pod": "c"}),
                                                serving(pod("b", "y", {"pod": "b"}), ("http", 81, "TCP"))]},
                     {"name": "node3"}],
                    name="np", namespaces={"x": {"labels": {"ns": "x"}}, "y": {"labels": {"ns": "y"}}},
                    networking=networking, policies=list(policies))


ALLOW_B = network_policy("allow-b", {"podSelector": {"matchLabels": {"pod": "a"}},
                                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                                  "ports": [{"protocol": "TCP", "port": 80}]}]})
EGRESS_C = network_policy("egress-c", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"],
                                       "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]},
                                                  {"to": [{"ipBlock": {"cidr": "192.168.1.0/24", "except": ["192.168.1.2/32"]}}],
                                                   "ports": [{"protocol": "UDP"}]}]})
DENY_Y = network_policy("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}, namespace="y")
NAMED_X = network_policy("http-in", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
NAMED_Y = network_policy("http-out", {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
                                      "egress": [{"to": [{"namespaceSelector": {}}],
                                                  "ports": [{"port": "http"}, {"protocol": "UDP", "port": "dns"}]},
                                                 {"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}],
                                                  "ports": [{"protocol": "UDP", "port": "http"}]}]}, namespace="y")
RANGE_Y = network_policy("web-range", {"podSelector": {"matchLabels": {"pod": "b"}},
                                       "ingress": [{"from": [{"namespaceSelector": {}}],
                                                    "ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}, namespace="y")


def by_qualified(lab: Lab) -> dict[str, Pod]:
    return {p.qualified: p for p in lab.pods}


# -- a small interpreter of the nft the module writes: new connections, IPv4 and IPv6 --------------

TOKEN = re.compile(r'\{[^}]*\}|"[^"]*"|\S+')


@dataclass
class Packet:
    src: IPv4Address | IPv6Address
    dst: IPv4Address | IPv6Address
    protocol: str  # tcp, udp, icmp
    port: int | None
    mark: int = field(default=0)


def _in(address: IPv4Address | IPv6Address, value: str) -> bool:
    items = [v.strip() for v in value.strip("{}").split(",")] if value.startswith("{") else [value]
    return any(address in ip_network(v) for v in items if v and ip_network(v).version == address.version)


def run_rule(chains: dict[str, list[str]], rule: str, packet: Packet) -> str | None:
    """Run one rule: its verdict (accept, drop, return) or None when it falls through."""
    tokens: list[str] = TOKEN.findall(rule)
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word in ("ip", "ip6") and tokens[i + 2] == ".":  # ip daddr . tcp dport { 10.0.0.1 . 80, ... }
            proto, value = tokens[i + 3], tokens[i + 5]
            assert tokens[i + 1] == "daddr" and tokens[i + 4] == "dport", rule
            i += 6
            pairs = {(ip_address(a.strip()), int(n)) for a, _, n in
                     (item.partition(" . ") for item in value.strip("{}").split(",")) if a.strip()}
            if ((word == "ip6") != (packet.dst.version == 6) or packet.protocol != proto
                    or (packet.dst, packet.port) not in pairs):
                return None
        elif word in ("ip", "ip6"):
            field_, negated = tokens[i + 1], tokens[i + 2] == "!="
            value = tokens[i + 3 if negated else i + 2]
            i += 4 if negated else 3
            address = packet.src if field_ == "saddr" else packet.dst
            if (word == "ip6") != (address.version == 6) or _in(address, value) == negated:
                return None
        elif word in ("tcp", "udp", "sctp") and tokens[i + 1] == "dport":
            low, _, high = tokens[i + 2].partition("-")
            i += 3
            if packet.protocol != word or packet.port is None or not int(low) <= packet.port <= int(high or low):
                return None
        elif tokens[i:i + 2] == ["meta", "l4proto"]:
            i += 3
            if packet.protocol != tokens[i - 1]:
                return None
        elif tokens[i:i + 5] == ["meta", "mark", "set", "meta", "mark"]:
            op, value_ = tokens[i + 5], int(tokens[i + 6], 16)
            packet.mark = packet.mark & value_ if op == "&" else packet.mark | value_
            i += 7
        elif tokens[i:i + 3] == ["meta", "mark", "&"] and tokens[i + 4] == "==":
            if packet.mark & int(tokens[i + 3], 16) != int(tokens[i + 5], 16):
                return None
            i += 6
        elif word in ("ct", "icmpv6"):  # ct state established,related; IPv6 neighbour discovery: neither is ours
            return None
        elif word == "counter":
            i += 1
        elif word == "log":  # log prefix "cni-lab policy-drop ..." group 1: observe's, no verdict
            assert tokens[i + 1] == "prefix" and tokens[i + 3] == "group", rule
            i += 5
        elif word == "comment":
            i += 2
        elif word == "jump":
            verdict = run_chain(chains, tokens[i + 1], packet)
            if verdict is not None:
                return verdict
            i += 2
        elif word in ("accept", "drop", "return"):
            return word
        else:
            raise AssertionError(f"the interpreter does not know {word!r} in {rule!r}")
    return None


def run_chain(chains: dict[str, list[str]], name: str, packet: Packet) -> str | None:
    """accept or drop, or None when the chain returns or ends (the caller goes on)."""
    for rule in chains[name]:
        verdict = run_rule(chains, rule, packet)
        if verdict == "return":
            return None
        if verdict is not None:
            return verdict
    return None


def passes(lab: Lab, src: Pod | Node, dst: Pod | Node, protocol: str, port: int | None, family: int = 4,
           src_ip: IPv4Address | IPv6Address | None = None) -> bool:
    """Whether a new connection gets through every hook it crosses: the forward hook of a node
    that routes or bridges it, input where a pod reaches its own node, output where a node
    reaches its own pod. `src_ip`: the address a node sends from, where not its underlay's (the
    kernel picks cni0's for its own pods, flannel.1's towards other nodes' pods)."""
    hooks = []
    if isinstance(src, Pod):
        hooks.append((src.node, "input" if isinstance(dst, Node) and dst.name == src.node else "forward"))
    if isinstance(dst, Pod):
        hooks.append((dst.node, "output" if isinstance(src, Node) and src.name == dst.node else "forward"))
    packet_src = src_ip or next(a for a in src.ips if a.version == family)
    packet_dst = next(a for a in dst.ips if a.version == family)
    for node, hook in dict.fromkeys(hooks):  # a pod to a pod of its node crosses one forward hook
        chains = nft.parse_chains(netpol.ruleset(lab, lab.node(node)))
        if hook in chains and run_chain(chains, hook, Packet(packet_src, packet_dst, protocol, port)) == "drop":
            return False
    return True


def workload(thing: Pod | Node) -> Workload:
    if isinstance(thing, Pod):
        return Workload(thing.id, thing.namespace, thing.labels, thing.ips, thing.ports)
    return Workload(thing.name, "", (), thing.ips)  # a node: policies name it by ipBlock only


PROBES = [("tcp", 80), ("tcp", 81), ("udp", 80), ("udp", 81), ("icmp", None)]


def test_the_interpreter_matches_an_address_and_port_set() -> None:
    chains = {"forward": ["ip daddr . tcp dport { 10.0.0.1 . 80, 10.0.0.2 . 81 } accept", "drop"]}
    assert run_chain(chains, "forward", Packet(ip_address("10.0.0.9"), ip_address("10.0.0.1"), "tcp", 80)) == "accept"
    for dst, protocol, port in (("10.0.0.1", "tcp", 81), ("10.0.0.2", "tcp", 80), ("10.0.0.1", "udp", 80),
                                ("10.0.0.1", "icmp", None)):
        assert run_chain(chains, "forward", Packet(ip_address("10.0.0.9"), ip_address(dst), protocol, port)) == "drop"


def test_the_interpreter_can_tell_a_drop() -> None:
    chains = {"forward": ["ip daddr 10.0.0.1 jump to-wl", "accept"],
              "to-wl": ["meta mark set meta mark & 0xfffeffff", "jump pi", "meta mark & 0x10000 == 0x10000 return",
                        "counter drop"],
              "pi": ["ip saddr { 10.0.0.2 } tcp dport 80-81 meta mark set meta mark | 0x10000 return"]}
    assert run_chain(chains, "forward", Packet(ip_address("10.0.0.2"), ip_address("10.0.0.1"), "tcp", 81)) == "accept"
    assert run_chain(chains, "forward", Packet(ip_address("10.0.0.3"), ip_address("10.0.0.1"), "tcp", 80)) == "drop"
    assert run_chain(chains, "forward", Packet(ip_address("10.0.0.2"), ip_address("10.0.0.1"), "udp", 80)) == "drop"


@pytest.mark.parametrize("policies", [(), (ALLOW_B,), (EGRESS_C,), (DENY_Y,), (RANGE_Y,), (NAMED_X,), (NAMED_Y,),
                                      (ALLOW_B, EGRESS_C, DENY_Y, RANGE_Y, NAMED_X, NAMED_Y)],
                         ids=["none", "allow-b", "egress-c", "deny-y", "range-y", "named-x", "named-y", "all"])
def test_the_tables_let_through_exactly_what_the_evaluator_allows(policies: tuple[dict[str, Any], ...]) -> None:
    lab = policy_lab(*policies)
    ends: list[Pod | Node] = [*lab.pods, *lab.nodes]
    for src in ends:
        for dst in ends:
            if src is dst or (isinstance(src, Node) and isinstance(dst, Node)):
                continue
            for protocol, port in PROBES:
                want = lab.evaluator.allowed(workload(src), workload(dst), protocol.upper(), port)
                assert passes(lab, src, dst, protocol, port) == want, f"{src.id} → {dst.id} {protocol}/{port}: want {want}"


def test_a_denied_pair_has_no_accept_path_and_the_allowed_one_only_its_port() -> None:
    lab = policy_lab(ALLOW_B)
    pods = by_qualified(lab)
    a, b, c = pods["x/a"], pods["x/b"], pods["x/c"]
    assert passes(lab, b, a, "tcp", 80)
    assert not passes(lab, b, a, "tcp", 81) and not passes(lab, b, a, "icmp", None)
    assert not passes(lab, c, a, "tcp", 80)  # across nodes: dropped at node1's forward hook
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("node1")))
    marking = [r for r in chains["pi-x/allow-b"] if "meta mark set meta mark | 0x10000" in r]
    assert marking and all(str(b.ip) in r and str(c.ip) not in r for r in marking)


def test_felix_shape_chains_per_workload_and_policy_with_the_accept_mark() -> None:
    lab = policy_lab(ALLOW_B, EGRESS_C)
    pods = by_qualified(lab)
    a, b, c, y_a = pods["x/a"], pods["x/b"], pods["x/c"], pods["y/a"]
    node1 = netpol.ruleset(lab, lab.node("node1"))
    assert node1.startswith(EMPTIED + "table inet cni-lab-policy {\n")  # replaced whole, in one transaction
    chains = nft.parse_chains(node1)
    assert list(chains) == ["forward", "input", "to-wl-x/a", "pi-x/allow-b"]  # x/b, y/a: selected by none
    for base in ("forward", "input"):
        assert chains[base][0] == "ct state established,related accept"  # replies always pass
        assert chains[base][1].startswith("icmpv6 type { nd-router-solicit")  # and neighbour discovery
    assert "  chain forward {\n    type filter hook forward priority filter; policy accept;\n" in node1
    assert chains["forward"][2:] == [f"ip daddr {a.ip} jump to-wl-x/a"]  # no output chain: the node's own traffic is not policed
    assert chains["input"][2:] == []  # no pod here is isolated for egress
    assert chains["to-wl-x/a"] == ["meta mark set meta mark & 0xfffeffff", "jump pi-x/allow-b",
                                   "meta mark & 0x10000 == 0x10000 return",
                                   'log prefix "cni-lab policy-drop ingress" group 1 counter drop '
                                   'comment "x/a: no ingress policy allows this"']
    assert chains["pi-x/allow-b"] == [f"ip saddr {{ {b.ip} }} tcp dport 80 meta mark set meta mark | 0x10000 return"]
    assert str(y_a.ip) not in node1
    node2 = nft.parse_chains(netpol.ruleset(lab, lab.node("node2")))
    assert list(node2) == ["forward", "input", "from-wl-x/c", "po-x/egress-c"]
    assert node2["forward"][2:] == node2["input"][2:] == [f"ip saddr {c.ip} jump from-wl-x/c"]
    assert node2["from-wl-x/c"][-1] == ('log prefix "cni-lab policy-drop egress" group 1 counter drop '
                                        'comment "x/c: no egress policy allows this"')
    y_pods = sorted((p for p in lab.pods if p.namespace == "y"), key=lambda p: p.id)
    assert node2["po-x/egress-c"] == [
        f"ip daddr {{ {', '.join(str(p.ip) for p in y_pods)} }} meta mark set meta mark | 0x10000 return",
        "ip daddr 192.168.1.0/24 ip daddr != { 192.168.1.2/32 } meta l4proto udp meta mark set meta mark | 0x10000 return"]


def test_a_node_with_no_pod_or_no_selected_pod_gets_its_table_emptied() -> None:
    lab = policy_lab(ALLOW_B)
    assert netpol.ruleset(lab, lab.node("node3")) == EMPTIED  # no pods at all
    assert netpol.ruleset(lab, lab.node("node2")) == EMPTIED  # pods, but no policy selects them
    assert netpol.ruleset(policy_lab(), lab.node("node1")) == EMPTIED  # no policy in the lab
    assert netpol.TABLE == "cni-lab-policy"


def test_a_selector_that_selects_no_pod_allows_nothing_through_its_rule() -> None:
    nobody = network_policy("from-nobody", {"podSelector": {"matchLabels": {"pod": "a"}},
                                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "zz"}}}]}]})
    lab = policy_lab(nobody)
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("node1")))
    assert chains["pi-x/from-nobody"] == []
    assert not passes(lab, by_qualified(lab)["x/b"], by_qualified(lab)["x/a"], "tcp", 80)


def test_dual_stack_pods_are_matched_in_each_family() -> None:
    dual = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
    lab = policy_lab(ALLOW_B, networking=dual)
    pods = by_qualified(lab)
    a, b, c = pods["x/a"], pods["x/b"], pods["x/c"]
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("node1")))
    assert chains["forward"][2:] == [f"ip daddr {a.ip} jump to-wl-x/a", f"ip6 daddr {a.ip6} jump to-wl-x/a"]
    assert chains["pi-x/allow-b"] == [f"ip saddr {{ {b.ip} }} tcp dport 80 meta mark set meta mark | 0x10000 return",
                                      f"ip6 saddr {{ {b.ip6} }} tcp dport 80 meta mark set meta mark | 0x10000 return"]
    assert passes(lab, b, a, "tcp", 80, family=6) and not passes(lab, c, a, "tcp", 80, family=6)


def test_policies_whose_names_join_alike_keep_chains_of_their_own() -> None:
    lab = make_lab([{"name": "n1", "pods": [pod("p", "a-b", {"k": "v"}), pod("s", "a-b", {"k": "w"}),
                                            pod("q", "a", {"k": "v"}), pod("r", "a", {"k": "w"})]}],
                   namespaces={"a": {}, "a-b": {}},
                   policies=[network_policy(name, {"podSelector": {"matchLabels": {"k": "v"}},
                                                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"k": "w"}}}],
                                                                "ports": [{"port": port}]}]}, namespace=namespace)
                             for name, namespace, port in (("c", "a-b", 80), ("b-c", "a", 443))])
    pods = by_qualified(lab)
    for src, dst, port in (("a-b/s", "a-b/p", 80), ("a/r", "a/q", 443)):
        assert lab.evaluator.allowed(workload(pods[src]), workload(pods[dst]), "TCP", port)
        assert passes(lab, pods[src], pods[dst], "tcp", port), f"{src} → {dst} tcp/{port}"
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("n1")))
    assert {"pi-a-b/c", "pi-a/b-c", "to-wl-a-b/p", "to-wl-a/q"} <= set(chains)  # "/" is in no namespace or name


def test_pods_whose_names_join_alike_keep_workload_chains_of_their_own() -> None:
    """Pod b of namespace x-a and pod a-b of namespace x: to-wl-x-a-b both, once."""
    lab = make_lab([{"name": "n1", "pods": [pod("b", "x-a", {"k": "v"}), pod("a-b", "x", {"k": "v"}),
                                            pod("c", "x", {"k": "w"})]}],
                   namespaces={"x": {}, "x-a": {}},
                   policies=[network_policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}, namespace="x-a"),
                             network_policy("from-c", {"podSelector": {"matchLabels": {"k": "v"}},
                                                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"k": "w"}}}]}]})])
    pods = by_qualified(lab)
    assert passes(lab, pods["x/c"], pods["x/a-b"], "tcp", 80)  # x/a-b takes x/c ...
    assert not passes(lab, pods["x/c"], pods["x-a/b"], "tcp", 80)  # ... x-a/b takes nobody
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("n1")))
    assert {"to-wl-x-a/b", "to-wl-x/a-b"} <= set(chains)


def test_names_too_long_for_nft_are_hashed_as_felix_does_and_stay_apart() -> None:
    """A policy name may be 253 characters, a chain's at most 255 (NFT_CHAIN_MAXNAMELEN counts the
    NUL): Felix's GetLengthLimitedID keeps the prefix and puts "_" and a hash of the rest."""
    long_a, long_b, fits = "p" * 250 + "-a", "p" * 250 + "-b", "q" * 250  # pi-x/ + 250 = 255: still readable
    lab = make_lab([{"name": "n1", "pods": [pod("a", "x", {"k": "v"}), pod("b", "x", {"k": "w"})]}],
                   namespaces={"x": {}},
                   policies=[network_policy(long_a, {"podSelector": {"matchLabels": {"k": "v"}},
                                                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"k": "w"}}}],
                                                                  "ports": [{"port": 80}]}]}),
                             network_policy(long_b, {"podSelector": {"matchLabels": {"k": "v"}},
                                                     "ingress": [{"ports": [{"port": 443}]}]}),
                             network_policy(fits, {"podSelector": {"matchLabels": {"k": "v"}}, "policyTypes": ["Ingress"]})])
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("n1")))
    hashed = [c for c in chains if c.startswith("pi-_")]
    assert len(set(hashed)) == 2 and all(len(c) == len("pi-_") + 43 for c in hashed)  # SHA-256 in unpadded base64url
    assert all(re.fullmatch(r"pi-_[A-Za-z0-9_-]+", c) for c in hashed)  # nft's unquoted string characters
    assert f"pi-x/{fits}" in chains and len(f"pi-x/{fits}") == netpol.MAX_CHAIN_NAME
    pods = by_qualified(lab)
    assert passes(lab, pods["x/b"], pods["x/a"], "tcp", 80) and passes(lab, pods["x/b"], pods["x/a"], "tcp", 443)
    assert not passes(lab, pods["x/b"], pods["x/a"], "tcp", 81)


def node_addresses(node: Node) -> list[IPv4Address | IPv6Address]:
    """Every address a node may send from: its underlay address, cni0's (the gateway), the VTEP
    address flannel.1 holds (its pod CIDR's network address)."""
    return [*node.ips, node.gateway, node.pod_cidr.network_address]


def test_a_node_reaches_its_own_pods_from_any_of_its_addresses_other_nodes_only_by_ip_block() -> None:
    """NetworkPolicySpec.ingress: allowed "if the traffic source is the pod's local node"; Felix
    (felix/rules/static.go, filterOutputChain) does not police host → local workload."""
    deny = policy_lab(DENY_Y)
    pods = by_qualified(deny)
    y_a, y_b = pods["y/a"], pods["y/b"]  # y/a on node1, y/b on node2
    node1, node2 = deny.node("node1"), deny.node("node2")
    for protocol, port in PROBES:
        for address in node_addresses(node1):
            assert passes(deny, node1, y_a, protocol, port, src_ip=address), f"node1 from {address} → y/a"
        for address in node_addresses(node2):
            assert passes(deny, node2, y_b, protocol, port, src_ip=address), f"node2 from {address} → y/b"
            assert not passes(deny, node2, y_a, protocol, port, src_ip=address), f"node2 from {address} → y/a"
    assert "output" not in nft.parse_chains(netpol.ruleset(deny, node1))  # nothing the node sends is policed
    from_node2 = network_policy("from-node2", {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": f"{node2.ip}/32"}}]}]}, namespace="y")
    by_block = policy_lab(from_node2)
    y_a = by_qualified(by_block)["y/a"]
    assert passes(by_block, by_block.node("node2"), y_a, "tcp", 80)
    assert not passes(by_block, by_block.node("node2"), y_a, "tcp", 80, src_ip=node2.gateway)  # not the address the block names
    assert not passes(by_block, by_block.node("node3"), y_a, "tcp", 80)


def test_ip_blocks_written_with_host_bits_are_matched_as_their_network() -> None:
    block = network_policy("host-bits", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.244.0.5/16", "except": ["10.244.1.7/24"]}}]}]})
    lab = policy_lab(block)
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("node1")))
    assert chains["pi-x/host-bits"] == [
        "ip saddr 10.244.0.0/16 ip saddr != { 10.244.1.0/24 } meta mark set meta mark | 0x10000 return"]


def test_a_named_port_is_each_destination_pods_own_number_as_felix_matches_it() -> None:
    """Felix resolves a named port per endpoint into an IP set of (address, protocol, port)
    (projectcalico/calico: felix's named-port IP sets, hash:ip,port); here an anonymous set of
    `address . port`, one per family. Ingress: the pods the policy selects; egress: every pod,
    the peers narrowing it. A pod without the name is in no set; no pod with it: no rule."""
    lab = policy_lab(NAMED_X, NAMED_Y)
    pods = by_qualified(lab)
    node1 = nft.parse_chains(netpol.ruleset(lab, lab.node("node1")))
    x_a, x_b, y_a, y_b = pods["x/a"], pods["x/b"], pods["y/a"], pods["y/b"]
    assert node1["pi-x/http-in"] == [
        f"ip daddr . tcp dport {{ {x_a.ip} . 80, {x_b.ip} . 81 }} meta mark set meta mark | 0x10000 return"]
    node2 = nft.parse_chains(netpol.ruleset(lab, lab.node("node2")))
    everyone = sorted(lab.pods, key=lambda p: p.id)
    assert node2["po-y/http-out"] == [
        f"ip daddr {{ {', '.join(str(p.ip) for p in everyone)} }} ip daddr . tcp dport "
        f"{{ {x_a.ip} . 80, {x_b.ip} . 81, {y_b.ip} . 81 }} meta mark set meta mark | 0x10000 return",
        f"ip daddr {{ {', '.join(str(p.ip) for p in everyone)} }} ip daddr . udp dport "
        f"{{ {x_b.ip} . 80 }} meta mark set meta mark | 0x10000 return",
        f"ip daddr 10.244.0.0/16 ip daddr . udp dport {{ {y_a.ip} . 80 }} meta mark set meta mark | 0x10000 return"]
    assert passes(lab, y_b, x_b, "tcp", 81) and not passes(lab, y_b, x_b, "tcp", 80)
    assert passes(lab, y_b, x_a, "tcp", 80) and not passes(lab, y_b, pods["x/c"], "tcp", 80)
    assert passes(lab, x_b, x_a, "tcp", 80) and not passes(lab, x_a, pods["x/c"], "tcp", 80)


def test_a_name_no_selected_pod_has_writes_no_rule() -> None:
    nobody = network_policy("metrics", {"podSelector": {}, "ingress": [{"ports": [{"port": "metrics"}]}]})
    lab = policy_lab(nobody)
    assert nft.parse_chains(netpol.ruleset(lab, lab.node("node1")))["pi-x/metrics"] == []
    assert not passes(lab, by_qualified(lab)["y/a"], by_qualified(lab)["x/a"], "tcp", 80)


def test_named_ports_are_matched_in_each_family() -> None:
    dual = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
    lab = policy_lab(NAMED_X, networking=dual)
    pods = by_qualified(lab)
    x_a, x_b = pods["x/a"], pods["x/b"]
    chains = nft.parse_chains(netpol.ruleset(lab, lab.node("node1")))
    assert chains["pi-x/http-in"] == [
        f"ip daddr . tcp dport {{ {x_a.ip} . 80, {x_b.ip} . 81 }} meta mark set meta mark | 0x10000 return",
        f"ip6 daddr . tcp dport {{ {x_a.ip6} . 80, {x_b.ip6} . 81 }} meta mark set meta mark | 0x10000 return"]
    assert passes(lab, pods["y/b"], x_b, "tcp", 81, family=6) and not passes(lab, pods["y/b"], x_b, "tcp", 80, family=6)
