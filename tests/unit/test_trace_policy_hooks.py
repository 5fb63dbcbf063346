"""`trace` through the nodes' policy chains on an nftables data plane (lesson/policy_hooks.py): the
hop that drops a packet names the pod's chain, the policies isolating the pod and that no rule lets
the other end in (or out) on ICMP; an allowed packet names the policy and rule; a reply passes the
conntrack rule; a node's own packet to its pod is the local-node rule; a table someone removed is
nothing filtering. From a host-gw lab built without root: its wiring as the kernel would read it
back, its route lookups answered as the kernel would, and each node's table listed by nft as the
plan loads it (netpol.ruleset in nft's JSON). No kernel."""

from __future__ import annotations

import errno
import io
import re
from ipaddress import IPv4Address, IPv4Interface, ip_address
from typing import Any, Iterator

import pytest
from rich.console import Console, RenderableType

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.kernel import edit, readback
from cni_lab.kernel.readback import Decision, Link, NetnsView
from cni_lab.lesson import policy_hooks, trace
from cni_lab.lesson.policy_hooks import Jump, Table
from cni_lab.report import trace_view
from cni_lab.rulesets import netpol

from labs import make_lab, network_policy as np, pod

DENY_INGRESS = np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_B = np("allow-b", {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
C_SENDS_NOTHING = np("c-sends-nothing", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"]})
ICMP_SAID = "for ICMP (trace has no port option)"


def policy_lab(*policies: dict[str, Any], dataplane: str = "host-gw") -> Lab:
    """node1 holds x/a and x/b on its cni0, node2 x/c and y/d."""
    return make_lab([{"name": "node1", "pods": [pod("a", "x", {"pod": "a"}), pod("b", "x", {"pod": "b"})]},
                     {"name": "node2", "pods": [pod("c", "x", {"pod": "c"}), pod("d", "y", {"pod": "d"})]}],
                    name="tp", dataplane=dataplane, namespaces={"x": {}, "y": {}},
                    policies=list(policies) or None)


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=400, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


# -- nft's JSON of the table the plan loads ----------------------------------------------------------

def nft_json_of(ruleset: str) -> dict[str, Any]:
    """`nft -j list table inet cni-lab-policy` for a loaded `netpol.ruleset`: its chains, the base
    chains' hooks, their conntrack and jump rules as libnftables writes them (an `ip saddr` in an
    inet table carries a `meta nfproto` dependency, which nft leaves out of listings)."""
    items: list[dict[str, Any]] = [{"metainfo": {"json_schema_version": 1}},
                                   {"table": {"family": "inet", "name": netpol.TABLE, "handle": 1}}]
    chain = None
    for line in ruleset.splitlines():
        line = line.strip()
        if m := re.match(r"chain (\S+) \{", line):
            chain = m.group(1)
            items.append({"chain": {"family": "inet", "table": netpol.TABLE, "name": chain, "handle": len(items)}})
        elif m := re.match(r"type filter hook (\w+)", line):
            items[-1]["chain"] |= {"type": "filter", "hook": m.group(1), "prio": 0, "policy": "accept"}
        elif line == "ct state established,related accept":
            expr = [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
                    {"accept": None}]
            items.append({"rule": {"family": "inet", "table": netpol.TABLE, "chain": chain, "expr": expr}})
        elif m := re.match(r"(ip6?) (saddr|daddr) (\S+) jump (\S+)$", line):
            expr = [{"match": {"op": "==", "left": {"payload": {"protocol": m.group(1), "field": m.group(2)}},
                               "right": m.group(3)}}, {"jump": {"target": m.group(4)}}]
            items.append({"rule": {"family": "inet", "table": netpol.TABLE, "chain": chain, "expr": expr}})
    return {"nftables": items}


def test_the_tables_jumps_and_conntrack_rule_are_read_from_nfts_json() -> None:
    lab = policy_lab(DENY_INGRESS, ALLOW_B, C_SENDS_NOTHING)
    table = policy_hooks.parse(nft_json_of(netpol.ruleset(lab, lab.node("node1"))))
    a, b = (IPv4Address(str(p.ip)) for p in lab.node("node1").pods)
    assert table.jumps == (Jump("forward", "daddr", a, "to-wl-x/a"), Jump("forward", "daddr", b, "to-wl-x/b"))
    assert table.tracked == frozenset({"forward", "input"})
    assert {"to-wl-x/a", "pi-x/deny-ingress", "pi-x/allow-b", "forward", "input"} <= table.chains
    node2 = policy_hooks.parse(nft_json_of(netpol.ruleset(lab, lab.node("node2"))))
    c = lab.node("node2").pods[0].ip
    assert Jump("forward", "saddr", c, "from-wl-x/c") in node2.jumps and Jump("input", "saddr", c, "from-wl-x/c") in node2.jumps
    # a dependency match beside the address, a goto: the jump is still found; anything else is not a jump
    rule = {"rule": {"chain": "forward", "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "fd00::2"}},
        {"goto": {"target": "to-wl-x/a"}}]}}
    other = {"rule": {"chain": "forward", "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]}}
    hook = {"chain": {"name": "forward", "hook": "forward"}}
    assert policy_hooks.parse({"nftables": [hook, rule, other]}) == Table(
        (Jump("forward", "daddr", ip_address("fd00::2"), "to-wl-x/a"),), frozenset(), frozenset({"forward"}))


# -- a host-gw lab as the kernel would have it --------------------------------------------------------

def wire_up(lab: Lab, monkeypatch: pytest.MonkeyPatch, tables: dict[str, str | None]) -> None:
    """Each node on the underlay bridge by its eth0, its pods on its cni0; `ip route get` as the
    kernel answers it; `nft -j list table` each node's table as `tables` has it (None: missing)."""
    underlay = names.underlay_netns(lab.name)
    views: dict[str, NetnsView] = {}
    u_links = [Link(1, names.UNDERLAY_BRIDGE, "bridge", True, 1500, "02:00:00:00:00:01")]
    pods: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for i, n in enumerate(lab.nodes, 1):
        node_ns = names.node_netns(lab.name, n.name)
        nodes[node_ns] = n
        u_links.append(Link(10 + i, names.underlay_port(n.name), "veth", True, 1500, f"02:00:00:00:01:0{i}",
                            master=names.UNDERLAY_BRIDGE, peer_netns=node_ns, peer_index=2))
        links = [Link(2, names.NODE_UPLINK, "veth", True, 1500, f"02:00:00:00:02:0{i}", peer_netns=underlay,
                      peer_index=10 + i, addresses=[IPv4Interface(f"{n.ip}/24")]),
                 Link(3, names.CNI_BRIDGE, "bridge", True, 1500, f"02:00:00:00:03:0{i}",
                      addresses=[IPv4Interface(f"{n.gateway}/{n.pod_cidr.prefixlen}")])]
        for j, p in enumerate(n.pods, 10):
            pod_ns = names.pod_netns(lab.name, n.name, p.name)
            pods[pod_ns] = (p, n)
            links.append(Link(j, names.pod_host_veth(lab.name, n.name, p.name), "veth", True, 1500, "02:00:00:00:04:00",
                              master=names.CNI_BRIDGE, peer_netns=pod_ns, peer_index=2))
            views[pod_ns] = NetnsView(pod_ns, [Link(2, names.POD_IFNAME, "veth", True, 1500, f"02:00:00:00:05:{j}",
                                                    peer_netns=node_ns, peer_index=j,
                                                    addresses=[IPv4Interface(f"{p.ip}/{n.pod_cidr.prefixlen}")])],
                                      [], False)
        views[node_ns] = NetnsView(node_ns, links, [], True)
    views[underlay] = NetnsView(underlay, u_links, [], False)

    def route_get(ns: str, dst: Any, src: Any = None, iif: Any = None) -> Decision:
        if ns in pods:
            p, n = pods[ns]
            if dst == p.ip:
                return Decision("local")
            return Decision("unicast", "eth0") if dst in n.pod_cidr else Decision("unicast", "eth0", str(n.gateway))
        n = nodes[ns]
        if dst in (n.ip, n.gateway):
            return Decision("local")
        if dst in n.pod_cidr:
            return Decision("unicast", names.CNI_BRIDGE)
        other = next(o for o in lab.nodes if dst in o.pod_cidr or dst == o.ip)
        return Decision("unicast", names.NODE_UPLINK, None if dst == other.ip else str(other.ip))

    def nft_json(ns: str, *command: str) -> Any:
        assert command == ("list", "table", "inet", netpol.TABLE)
        listing = tables[ns.rsplit(".", 1)[-1]]
        if listing is None:
            raise OSError(errno.EINVAL, f"nft in {ns}: Error: No such file or directory\nlist table inet {netpol.TABLE}")
        return nft_json_of(listing)

    monkeypatch.setattr(readback, "read", lambda ns, neighbours: views[ns])
    monkeypatch.setattr(readback, "route_get", route_get)
    monkeypatch.setattr(edit, "nft_json", nft_json)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """x denies all ingress but x/a's from x/b; x/c may send nothing."""
    lab = policy_lab(DENY_INGRESS, ALLOW_B, C_SENDS_NOTHING)
    wire_up(lab, monkeypatch, {n.name: netpol.ruleset(lab, n) for n in lab.nodes})
    yield lab


def test_a_pod_from_another_node_is_dropped_at_the_chain_of_the_pod_it_goes_to(world: Lab) -> None:
    t = trace.trace(world, "node2/y/d", "node1/x/a")
    assert [(h.where, h.action) for h in t.there.hops] == [("node2/y/d", "forward"), ("node2", "forward"), ("node1", "drop")]
    sent = t.there.hops[1].policy
    assert sent is not None and sent.words == "forward hook: y/d is not isolated for egress: no chain"
    last = t.there.hops[-1]
    assert last.reason == (f"forward hook, {ICMP_SAID}: to-wl-x/a (x/deny-ingress, x/allow-b isolate x/a for "
                           "ingress; no rule allows y/d on ICMP): dropped")
    assert t.outcome == "dropped" and t.back is None
    assert trace_view.summary(t) == f"dropped at node1: {last.reason}"
    assert trace.agrees(t, "timeout") and not trace.agrees(t, "ok")
    doc = trace_view.to_json(t)["there"][-1]["policy"]
    assert {k: doc[k] for k in ("hook", "verdict", "chain", "policy", "rule", "words")} == {
        "hook": "forward", "verdict": "dropped", "chain": "to-wl-x/a", "policy": None, "rule": None, "words": last.reason}
    assert doc["chains"] == [{"chain": "to-wl-x/a", "direction": "Ingress", "verdict": "dropped", "policy": None,
                              "rule": None, "isolating": ["x/deny-ingress", "x/allow-b"],
                              "words": last.reason.split(": ", 1)[1]}]


def test_between_two_pods_on_one_bridge_the_node_hook_is_a_hop_of_its_own(world: Lab) -> None:
    """br_netfilter hands the bridged packet to node1's forward hook: x/a takes x/b by allow-b's rule."""
    t = trace.trace(world, "node1/x/b", "node1/x/a")
    veth_a, veth_b = (names.pod_host_veth(world.name, "node1", p.name) for p in world.node("node1").pods)
    assert [(h.where, h.action, h.came_in) for h in t.there.hops] == [
        ("node1/x/b", "forward", None), ("node1", "forward", veth_b), ("node1/x/a", "deliver", "eth0")]
    sent, across = t.there.hops[0], t.there.hops[1]
    assert sent.wire == [f"{veth_b} (node1)"] and sent.policy is None
    assert (across.bridge, across.route, across.out) == ("cni0", None, veth_a)
    assert across.wire == ["cni0 (node1)", f"{veth_a} (node1)", "eth0 (node1/x/a)"]
    assert across.policy is not None and across.policy.words == (
        f"forward hook (bridged on cni0, through br_netfilter), {ICMP_SAID}: x/b is not isolated for egress: no chain; "
        "to-wl-x/a: allowed by x/allow-b ingress rule 0 (from podSelector pod=b)")
    assert t.outcome == "ok" and t.back is not None
    back = t.back.hops[1].policy
    assert back is not None and back.words == ("forward hook (bridged on cni0, through br_netfilter): ct state "
                                               "established,related accept: the reply of a tracked connection "
                                               "passes before any pod's chain")
    doc = trace_view.to_json(t)["there"][1]
    assert doc["bridge"] == "cni0" and (doc["policy"]["verdict"], doc["policy"]["chain"], doc["policy"]["policy"],
                                        doc["policy"]["rule"]) == ("allowed", "to-wl-x/a", "x/allow-b", 0)
    shown = text(trace_view.view(t, "ok", True))
    assert f"2. node1 (in on {veth_b}): bridged on cni0 → out {veth_a}" in shown
    assert "policy forward hook (bridged on cni0, through br_netfilter), for ICMP" in shown
    # the other way: x/b takes nothing
    denied = trace.trace(world, "node1/x/a", "node1/x/b")
    assert [(h.where, h.action) for h in denied.there.hops] == [("node1/x/a", "forward"), ("node1", "drop")]
    assert denied.there.hops[-1].reason.endswith(
        "to-wl-x/b (x/deny-ingress isolates x/b for ingress; no rule allows x/a on ICMP): dropped")


def test_egress_is_judged_where_the_sender_lives_and_at_its_nodes_input_hook(world: Lab) -> None:
    out = trace.trace(world, "node2/x/c", "node2/y/d")
    assert [(h.where, h.action) for h in out.there.hops] == [("node2/x/c", "forward"), ("node2", "drop")]
    assert out.there.hops[-1].reason == (f"forward hook (bridged on cni0, through br_netfilter), {ICMP_SAID}: "
                                         "from-wl-x/c (x/c-sends-nothing isolates x/c for egress; no rule allows y/d "
                                         "on ICMP): dropped")
    home = trace.trace(world, "node2/x/c", "node2")
    assert [(h.where, h.action) for h in home.there.hops] == [("node2/x/c", "forward"), ("node2", "drop")]
    assert home.there.hops[-1].reason.startswith(f"input hook, {ICMP_SAID}: from-wl-x/c (x/c-sends-nothing isolates "
                                                 "x/c for egress; no rule allows node2 (192.168.1.3) on ICMP)")
    # another node's packets meet x/a's chain; its own go out of its output hook, never policed
    far = trace.trace(world, "node2", "node1/x/a")
    assert far.outcome == "dropped" and "no rule allows node2 (192.168.1.3) on ICMP" in far.there.hops[-1].reason
    own = trace.trace(world, "node1", "node1/x/a")
    assert own.outcome == "ok" and own.there.hops[0].policy is not None
    assert own.there.hops[0].policy.words == ("output hook: no policy chain, a node's own packets are never policed: "
                                              "the pod's own node (always allowed)")


def test_a_removed_table_filters_nothing_and_trace_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = policy_lab(DENY_INGRESS, ALLOW_B)
    wire_up(lab, monkeypatch, {"node1": None, "node2": netpol.ruleset(lab, lab.node("node2"))})
    t = trace.trace(lab, "node2/y/d", "node1/x/a")
    assert t.outcome == "ok"
    at = t.there.hops[2].policy
    assert at is not None and at.allowed and at.words == (
        "forward hook: the node has no cni-lab-policy table: nothing filters (netpol makes one, for x/a, x/b: it "
        "was removed, and no pod of this node is policed)")
    # where no policy selects a pod of the node, there is none to remove
    plain = policy_lab(np("y-only", {"podSelector": {}, "policyTypes": ["Ingress"]}, "y"))
    wire_up(plain, monkeypatch, {n.name: netpol.Rules(plain).node_table(n) or None for n in plain.nodes})
    shown = trace.trace(plain, "node1/x/a", "node2/x/c").there.hops[1].policy
    assert shown is not None and shown.words == ("forward hook: the node has no cni-lab-policy table: nothing filters "
                                                 "(no policy selects a pod of node1: netpol makes none)")


def test_a_table_whose_jump_is_gone_lets_the_packet_through_and_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = policy_lab(DENY_INGRESS)
    edited = netpol.ruleset(lab, lab.node("node1")).replace(f"ip daddr {lab.node('node1').pods[0].ip} jump to-wl-x/a", "")
    wire_up(lab, monkeypatch, {"node1": edited, "node2": netpol.ruleset(lab, lab.node("node2"))})
    t = trace.trace(lab, "node2/y/d", "node1/x/a")
    assert t.outcome == "ok"
    words = t.there.hops[2].policy.words if t.there.hops[2].policy else ""
    assert words == ("forward hook: no rule of its forward chain jumps to to-wl-x/a, though x/deny-ingress isolates "
                     "x/a for ingress: nothing filters it")


def test_nothing_changes_without_policies_or_where_bpf_enforces_them(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = policy_lab()
    wire_up(lab, monkeypatch, {n.name: None for n in lab.nodes})
    t = trace.trace(lab, "node1/x/b", "node1/x/a")
    assert [h.where for h in t.there.hops] == ["node1/x/b", "node1/x/a"] and t.outcome == "ok"
    assert not any(h.policy for leg in (t.there, t.back) if leg for h in leg.hops)
    ebpf = policy_lab(DENY_INGRESS, dataplane="ebpf")
    src, dst = (next(e for e in trace.endpoints(ebpf) if e.id == i) for i in ("node1/x/b", "node1/x/a"))
    assert policy_hooks.hooks(ebpf, src, dst) is None
    hostgw = policy_lab(DENY_INGRESS)
    assert policy_hooks.hooks(hostgw, src, dst) is not None
