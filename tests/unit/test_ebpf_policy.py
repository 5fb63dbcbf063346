"""The ebpf data plane's NetworkPolicy maps (cni_lab/dataplanes/ebpf_policy.py), held against the
evaluator. On the e2e suite's model, for its cases and for generated ones, in tunnel and native
routing, every cell check and conformance probe (pod → pod, node → pod, pod → node, on ICMP, the
pair probe's UDP 31999 and the cases' ports) gets Cilium's verdict — the source pod's egress map
looked up with the identity its node's ipcache gives the destination, then the destination pod's
ingress map with the identity its node's ipcache gives the source — and that verdict must be
`Evaluator.allowed`'s. A node sends from the address its routes pick: cilium_host's router IP to
its own pods and, in tunnel mode, to every pod (`10.244.Y.0/24 via <router> src <router>`); its
underlay IP to other nodes' pods in native mode (`via <node Y> dev eth0`); its other address is
compared as well, so the maps are right whichever one the kernel picks.

Cases `problems` names (a policy the maps cannot hold by identity) are compared too: every cell
must still agree, except a pod's to its own node where a problem names that node's reserved:host,
whose two addresses (eth0's and the router IP's) an ipBlock split.

The e2e cases run on a dual-stack and an IPv6-only model lab as well, every cell of every family
(IPv6 cells on the IPv6 addresses, the echo as ICMPv6): as written (IPv4 ipBlocks) and with their
ipBlocks' IPv6 twins beside them (dual stack) or in their place (IPv6 only). There a case whose
policies `problems` names is left out and counted: on the dual-stack lab only "egress ipBlock
except", whose IPv4 block holds pods' IPv4 addresses and none of their IPv6 ones."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Any, Mapping, Sequence

import pytest

from cni_lab import conformance, policy
from cni_lab.cluster import Lab, Node, Pod
from cni_lab.dataplanes import ebpf, ebpf_policy as ep
from cni_lab.dataplanes.ebpf_policy import PolicyEntry
from cni_lab.policy import cases as policy_cases

from labs import make_lab, network_policy as np, pod
from netpol_e2e import E2E, E2E_NAMED_PORTS

MODES = ("tunnel", "native")
SEED = 2026
COUNT = 300  # generated cases per routing mode, named ports among them
MIN_NAMED = 100  # generated cases with a named port, also compared on pods that number the names apart
CELLS = (9 * 8 + 2 * 9 * 3 + 9 * 3) * 8  # pod → pod, pod → node, node → pod from both addresses; 8 probes
# every probe of a policy lab: check's pair probe (an echo and UDP 31999), the e2e ports, and two
# that ranges and protocol-only rules reach
PROBES: tuple[tuple[str, int | None], ...] = (
    ("ICMP", None), ("UDP", 31999), ("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81), ("SCTP", 80), ("TCP", 82))

Ports = Mapping[str, Sequence[dict[str, Any]]]
ICMPV6 = 58


def named(number: Any, protocol: Any, name: Any) -> dict[str, Any]:
    return {"name": name, "containerPort": number, "protocol": protocol}


# the same names, other numbers (test_policy_conformance.py's VARIED_PORTS): b serves serve-80-* on
# 81 and serve-81-* on 80; c declares its ports without names
VARIED_PORTS: Ports = {
    "a": policy_cases.CONTAINER_PORTS,
    "b": tuple(named(81 if p["containerPort"] == 80 else 80, p["protocol"], p["name"]) for p in policy_cases.CONTAINER_PORTS),
    "c": tuple({"containerPort": p["containerPort"], "protocol": p["protocol"]} for p in policy_cases.CONTAINER_PORTS)}


DUAL = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
IPV6_ONLY = {"clusterCIDR": "fd00:10:244::/56", "underlay": "fd00:192:168:1::/64"}


def model_lab(mode: str, ports: Ports | None = None, policies: Sequence[dict[str, Any]] = (),
              networking: dict[str, Any] | None = None) -> Lab:
    """The e2e model (scenarios/netpol.yaml) on dataplane ebpf (IPv4, unless `networking` says
    dual-stack or IPv6 only)."""
    served = ports or {p: policy_cases.CONTAINER_PORTS for p in policy_cases.PODS}
    return make_lab([{"name": f"node{i + 1}", "pods": [{**pod(p, n, policy_cases.POD_LABELS[p]), "ports": list(served[p])}
                                                       for n in policy_cases.NAMESPACES]}
                     for i, p in enumerate(policy_cases.PODS)],
                    name="np", dataplane="ebpf", ebpf={"routing": mode}, policies=list(policies), networking=networking,
                    namespaces={n: {"labels": policy_cases.NAMESPACE_LABELS[n]} for n in policy_cases.NAMESPACES})


@dataclass(frozen=True)
class End:
    id: str
    node: str
    address: IPv4Address | IPv6Address
    pod: bool


def of_family(lab: Lab, first: Any, second: Any, family: int) -> IPv4Address | IPv6Address:
    """An address of `family`: the lab's first family's field (ip, gateway: IPv6 in an IPv6-only
    lab), else the dual-stack one (ip6, gateway6)."""
    found = ip_address(first if family == lab.families[0] else second)
    assert found.version == family, (first, second, family)
    return found


def underlay(lab: Lab, node: Node, family: int) -> IPv4Address | IPv6Address:
    return of_family(lab, node.ip, node.ip6, family)


def router(lab: Lab, node: Node, family: int) -> IPv4Address | IPv6Address:
    return of_family(lab, node.gateway, node.gateway6, family)


def pod_address(lab: Lab, p: Pod, family: int) -> IPv4Address | IPv6Address:
    return of_family(lab, p.ip, p.ip6, family)


@dataclass(frozen=True)
class Cell:
    src: str
    dst: str
    protocol: str
    port: int | None
    kubernetes: bool
    cilium: bool


def node_source(lab: Lab, node: str, pod_node: str, family: int = 4) -> IPv4Address | IPv6Address:
    """The address a node's kernel sends from towards a pod of `pod_node` (probe/matrix.py's
    node_sources): its router IP of that family to its own pods and in tunnel mode to every pod
    (`<pod CIDR> dev cilium_host src <router>`), its underlay address of that family to other
    nodes' pods in native mode (`<pod CIDR> via <node Y> dev eth0`)."""
    sender = lab.node(node)
    return router(lab, sender, family) if node == pod_node or lab.tunnelled else underlay(lab, sender, family)


def cells(lab: Lab, family: int = 4) -> list[Cell]:
    """Every probed cell of the lab in one family (its addresses, ICMPv6's protocol number for an
    echo in IPv6), with both verdicts."""
    ends = [End(n.name, n.name, underlay(lab, n, family), False) for n in lab.nodes]
    ends += [End(p.id, p.node, pod_address(lab, p, family), True) for p in lab.pods]
    maps = {p.id: ep.policy_entries(lab, lab.node(p.node), p) for p in lab.pods}
    caches = {n.name: ep.ipcache(lab, n) for n in lab.nodes}
    workloads = {w.id: w for w in lab.workloads} | {n.name: policy.Workload(n.name, "", (), n.ips) for n in lab.nodes}
    seen: dict[tuple[str, IPv4Address | IPv6Address], int] = {}

    def identity(node: str, address: IPv4Address | IPv6Address) -> int:  # identity_of, its ipcache read once per node
        if (node, address) not in seen:
            seen[(node, address)] = ep.lookup(caches[node], address)
        return seen[(node, address)]

    out = []
    for src in ends:
        for dst in ends:
            if src is dst or not (src.pod or dst.pod):
                continue
            routed = src.address if src.pod else node_source(lab, src.node, dst.node, family)
            # a node's other address too: the maps agree with the evaluator whichever one it sends from
            other = [] if src.pod else [a for a in (underlay(lab, lab.node(src.node), family),
                                                    router(lab, lab.node(src.node), family)) if a != routed]
            for source in (routed, *other):
                sender = workloads[src.id] if src.pod else policy.Workload(src.id, "", (), (source,))
                for protocol, port in PROBES:
                    number, dport = ep.PROTOCOL_NUMBERS[protocol], port or 0
                    if family == 6 and protocol == "ICMP":
                        number = ICMPV6  # the echo is ICMPv6's; the key's protocol is the next header
                    cilium = ((not src.pod or ep.allows(maps[src.id], True, identity(src.node, dst.address), number, dport))
                              and (not dst.pod or ep.allows(maps[dst.id], False, identity(dst.node, source), number, dport)))
                    out.append(Cell(f"{src.id}" + ("" if source == routed else f" (from {source})"), dst.id, protocol,
                                    port, lab.evaluator.allowed(sender, workloads[dst.id], protocol, port, family), cilium))
    return out


def own_node(cell: Cell) -> bool:
    """A pod's cell to its own node (pod ids start with their node's name)."""
    return "/" not in cell.dst and cell.src.startswith(cell.dst + "/")


def test_cells_are_every_probed_pair_and_probe() -> None:
    found = cells(model_lab("tunnel"))
    assert len(found) == CELLS == 1224
    assert sum(c.src == "node1" for c in found) == 9 * 8 and sum(c.src == "node1 (from 192.168.1.2)" for c in found) == 9 * 8
    assert all(c.kubernetes and c.cilium for c in found)  # no policy: everything open


@dataclass
class Tally:
    cases: int = 0
    cells: int = 0
    with_problems: int = 0
    own_node_differences: int = 0

    def check(self, lab: Lab, name: str, families: Sequence[int] = (4,)) -> list[str]:
        """The case's differing cells (of each family) in words; those a named problem explains are
        counted, not returned."""
        problems = ep.problems(lab)
        self.cases += 1
        self.with_problems += bool(problems)
        out = []
        for family in families:
            found = cells(lab, family)
            self.cells += len(found)
            wrong = [c for c in found if c.kubernetes != c.cilium]
            explained = [c for c in wrong if own_node(c) and any(f"reserved:host (node {c.dst}'s" in p for p in problems)]
            self.own_node_differences += len(explained)
            out += [f"{name} (IPv{family}): {c.src} → {c.dst} {c.protocol}/{c.port}: Kubernetes {c.kubernetes}, "
                    f"Cilium {c.cilium}" + (f" (problems: {problems})" if problems else "")
                    for c in wrong if c not in explained]
        return out

    def __str__(self) -> str:
        return (f"{self.cases} cases, {self.cells} cells; {self.with_problems} cases with problems, "
                f"{self.own_node_differences} cells differing there (pod → own node only)")


def with_policies(lab: Lab, policies: Sequence[dict[str, Any]], name: str) -> Lab:
    return conformance.with_case(lab, policy_cases.Case(name, tuple(policies), policy_cases.PROBES))


# -- the proof ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_the_maps_give_the_evaluators_answer_on_the_e2e_cases(mode: str) -> None:
    base, tally, wrong = model_lab(mode), Tally(), []
    for name, policies in {**E2E, **E2E_NAMED_PORTS, "no policy": []}.items():
        wrong += tally.check(with_policies(base, policies, name), name)
    assert not wrong, f"{len(wrong)} cells differ ({tally}):\n" + "\n".join(wrong[:20])
    assert tally.cases == len(E2E) + len(E2E_NAMED_PORTS) + 1 and tally.cells == tally.cases * CELLS, tally
    # every e2e case can be held by identity: reserved:host is a pod's peer at its eth0 address only
    # (the e2e "egress ipBlock except" holds node1's router IP in 10.244.0.0/16, not its eth0 address)
    assert tally.with_problems == 0, tally
    print(f"{mode}: {tally}")


def translated(lab: Lab, v4: Lab) -> dict[str, str]:
    """The e2e cases' IPv4 prefixes → the same things' IPv6 ones in `lab`: a pod's or a node's /32
    its IPv6 address's /128, the cluster CIDR the IPv6 cluster CIDR."""
    out = {str(v4.scenario.cluster_cidr): str(lab.scenario.cluster_cidr6 or lab.scenario.cluster_cidr)}
    pods = {p.id: p for p in lab.pods}
    out |= {f"{p.ip}/32": f"{pod_address(lab, pods[p.id], 6)}/128" for p in v4.pods}
    for n in v4.nodes:
        out |= {f"{n.ip}/32": f"{underlay(lab, lab.node(n.name), 6)}/128",
                f"{n.gateway}/32": f"{router(lab, lab.node(n.name), 6)}/128"}
    return out


def with_ipv6_blocks(policies: Sequence[dict[str, Any]], names: dict[str, str], keep: bool) -> list[dict[str, Any]]:
    """The policies with each ipBlock peer's IPv6 twin (`names`' prefixes) in its place, or after
    it (`keep`: a rule naming both families' blocks, as a dual-stack policy names them)."""
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if not isinstance(value, list):
            return value
        out: list[Any] = []
        for item in value:
            if isinstance(item, dict) and "ipBlock" in item:
                block = item["ipBlock"]
                twin = {"cidr": names[block["cidr"]], **({"except": [names[e] for e in block["except"]]}
                                                         if "except" in block else {})}
                out += [item, {"ipBlock": twin}] if keep else [{"ipBlock": twin}]
            else:
                out.append(walk(item))
        return out
    return [walk(p) for p in policies]


def has_ip_block(policies: Sequence[dict[str, Any]]) -> bool:
    return "ipBlock" in repr(policies)


# the e2e cases' ipBlocks are IPv4's: on a dual-stack lab the one that holds pods' IPv4 addresses
# holds none of their IPv6 ones, and the pods' identities stand for both (a problem); its variant
# with the IPv6 twins beside them is exact
DUAL_STACK_PROBLEMS = {"egress ipBlock except"}


def e2e_cases(lab: Lab) -> dict[str, list[dict[str, Any]]]:
    """The e2e cases (named ports, no policy) for a lab with IPv6: as written (IPv4 ipBlocks),
    and with ipBlocks in IPv6 (in a dual-stack lab both families' blocks side by side, in an
    IPv6-only lab the IPv6 ones in their place)."""
    cases = {**E2E, **E2E_NAMED_PORTS, "no policy": []}
    names = translated(lab, model_lab("native"))
    twin = "with IPv6 blocks beside" if lab.dual_stack else "with IPv6 blocks"
    return cases | {f"{name} ({twin})": with_ipv6_blocks(policies, names, keep=lab.dual_stack)
                    for name, policies in cases.items() if has_ip_block(policies)}


@pytest.mark.parametrize("networking", [DUAL, IPV6_ONLY], ids=["dual-stack", "ipv6-only"])
@pytest.mark.parametrize("mode", MODES)
def test_the_maps_give_the_evaluators_answer_on_the_e2e_cases_in_both_families(mode: str, networking: dict[str, Any]) -> None:
    """Every cell of every family of the lab (family 6 on the IPv6 addresses: pods', nodes'
    underlay and router IPv6s). Cases whose policies `problems` names are counted and left out."""
    base = model_lab(mode, networking=networking)
    families = base.families
    tally, wrong, skipped = Tally(), [], {}
    for name, policies in e2e_cases(base).items():
        lab = with_policies(base, policies, name)
        problems = ep.problems(lab)
        if problems:
            skipped[name] = problems
            continue
        wrong += tally.check(lab, name, families)
    assert not wrong, f"{len(wrong)} cells differ ({tally}, {len(skipped)} cases with problems left out):\n" + "\n".join(wrong[:20])
    expected = DUAL_STACK_PROBLEMS if base.dual_stack else set()
    assert set(skipped) == expected, f"cases with problems: {skipped} ({tally})"
    assert tally.cases == len(e2e_cases(base)) - len(expected) and tally.cells == tally.cases * CELLS * len(families), tally
    assert tally.with_problems == tally.own_node_differences == 0, tally
    print(f"{mode} {'dual-stack' if base.dual_stack else 'IPv6 only'}: {tally}; {len(skipped)} left out with problems: "
          f"{skipped}")


GENERATED = policy_cases.cases(SEED, COUNT, named_ports=True)


@pytest.mark.parametrize("mode", MODES)
def test_the_maps_give_the_evaluators_answer_on_generated_cases(mode: str) -> None:
    base = model_lab(mode)
    ips = {p.qualified: str(p.ip) for p in base.pods}
    assert ips == policy_cases.DEFAULT_IPS  # the cases' ipBlocks are drawn around these addresses
    tally, wrong = Tally(), []
    for case in GENERATED:
        wrong += tally.check(conformance.with_case(base, case), case.name)
    assert not wrong, f"{len(wrong)} cells differ ({tally}):\n" + "\n".join(wrong[:20])
    assert tally.cases == COUNT >= 200 and tally.cells == COUNT * CELLS, tally
    assert tally.with_problems <= COUNT // 20, f"problems are not rare: {tally}"  # 5 % at most
    print(f"{mode}: {tally}")


WITH_NAMED_PORTS = [c for c in policy_cases.cases(SEED + 1, 3 * COUNT, named_ports=True)
                    if any(isinstance(p.get("port"), str) for d in c.policies for direction in ("ingress", "egress")
                           for r in (d["spec"].get(direction) or []) for p in (r or {}).get("ports") or [])]


@pytest.mark.parametrize("mode", MODES)
def test_named_ports_resolve_per_identity_as_the_evaluator_resolves_them_per_pod(mode: str) -> None:
    """On pods that give the names other numbers (b swaps 80 and 81, c has no names): ingress takes
    the endpoint's own number, egress each destination identity's."""
    base = model_lab(mode, VARIED_PORTS)
    tally, wrong = Tally(), []
    for case in WITH_NAMED_PORTS:
        wrong += tally.check(conformance.with_case(base, case), case.name)
    assert len(WITH_NAMED_PORTS) >= MIN_NAMED
    assert not wrong, f"{len(wrong)} cells differ ({tally}):\n" + "\n".join(wrong[:20])
    print(f"{mode}: {tally}")


# -- the pieces -----------------------------------------------------------------------------------

def test_port_ranges_become_the_fewest_lpm_prefixes_that_cover_them_exactly() -> None:
    assert ep.port_prefixes(80, 80) == [(80, 16)]  # one port: lpm_prefix_length 24
    assert ep.port_prefixes(80, 81) == [(80, 15)]
    assert ep.port_prefixes(79, 90) == [(79, 16), (80, 13), (88, 15), (90, 16)]
    assert ep.port_prefixes(0, 65535) == [(0, 0)]  # the protocol alone: lpm_prefix_length 8
    assert ep.port_prefixes(1, 65535) == [(1 << b, 16 - b) for b in range(16)]
    assert ep.port_prefixes(32768, 65535) == [(32768, 1)]
    for first, last in [(1, 1), (3, 17), (1000, 1023), (1024, 2047), (1023, 1025), (65534, 65535), (8080, 8443)]:
        covered = [p for n, bits in ep.port_prefixes(first, last) for p in range(n, n + (1 << (16 - bits)))]
        assert covered == list(range(first, last + 1))
        # each is the largest aligned block that starts there and fits: the fewest there can be
        for n, bits in ep.port_prefixes(first, last):
            size = 1 << (16 - bits)
            assert n % size == 0 and not (n % (2 * size) == 0 and n + 2 * size - 1 <= last)


def test_a_port_range_rule_is_held_by_its_lpm_entries() -> None:
    lab = model_lab("native", policies=[np("range", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"ports": [{"protocol": "TCP", "port": 79, "endPort": 90}]}]})])
    xa = next(p for p in lab.pods if p.qualified == "x/a")
    entries = ep.policy_entries(lab, lab.node("node1"), xa)
    ingress = [e for e in entries if not e.egress and e.identity == ep.ANY_ID]
    assert ingress == [PolicyEntry(False, 0, 6, 79, 24), PolicyEntry(False, 0, 6, 80, 21), PolicyEntry(False, 0, 6, 88, 23),
                       PolicyEntry(False, 0, 6, 90, 24)]
    assert [p for p in range(70, 100) if ep.allows(entries, False, 256, 6, p)] == list(range(79, 91))
    assert not ep.allows(entries, False, 256, 17, 80)  # TCP's, not UDP's
    assert not ep.allows(entries, False, 256, 1, 0)  # nor ICMP's


def test_no_policy_gives_cilium_s_three_entries() -> None:
    """The example in Cilium's pkg/endpoint/bpf.go: Allow Ingress ANY, Allow Ingress reserved:host
    (allow-localhost=always), Allow Egress ANY."""
    lab = model_lab("tunnel")
    for node in lab.nodes:
        for p in node.pods:
            assert ep.policy_entries(lab, node, p) == [PolicyEntry(False, 0), PolicyEntry(False, 1), PolicyEntry(True, 0)]
    assert [e.key_prefixlen for e in ep.policy_entries(lab, lab.nodes[0], lab.nodes[0].pods[0])] == [40, 40, 40]


def test_isolation_drops_allow_all_and_keeps_the_localhost_entry() -> None:
    lab = model_lab("tunnel", policies=E2E["default-deny-all"])
    node1 = lab.node("node1")
    xa, ya = (next(p for p in node1.pods if p.qualified == q) for q in ("x/a", "y/a"))
    assert ep.policy_entries(lab, node1, xa) == [PolicyEntry(False, ep.HOST_ID)]  # nothing else in, nothing out
    assert ep.policy_entries(lab, node1, ya) == [PolicyEntry(False, 0), PolicyEntry(False, 1), PolicyEntry(True, 0)]
    entries = ep.policy_entries(lab, node1, xa)
    # node1 → x/a arrives from cilium_host's address, reserved:host on node1: the pod's own node gets in
    assert ep.identity_of(lab, node1, IPv4Address(node1.gateway)) == ep.HOST_ID and ep.allows(entries, False, ep.HOST_ID, 6, 80)
    node2 = lab.node("node2")
    assert not ep.allows(entries, False, ep.identity_of(lab, node1, IPv4Address(node2.gateway)), 6, 80)
    assert not ep.allows(entries, True, ep.HOST_ID, 1, 0)  # egress has no such rule


def test_named_ports_resolve_on_the_endpoint_for_ingress_and_per_destination_identity_for_egress() -> None:
    ingress = model_lab("native", VARIED_PORTS, E2E_NAMED_PORTS["ingress on one named port"])
    by_name = {p.qualified: p for p in ingress.pods}
    served = {q: sorted({(e.protocol, e.port) for e in ep.policy_entries(ingress, ingress.node(p.node), p)
                         if not e.egress and e.identity == 0 and e.prefix == 24}) for q, p in by_name.items() if q[0] == "x"}
    assert served == {"x/a": [(6, 81)], "x/b": [(6, 80)], "x/c": []}  # serve-81-tcp is 81 on a, 80 on b, nothing on c
    egress = model_lab("native", VARIED_PORTS, E2E_NAMED_PORTS["egress on one named port"])
    xa = next(p for p in egress.pods if p.qualified == "x/a")
    ids = ep.identities(egress)
    out = {(e.identity, e.port) for e in ep.policy_entries(egress, egress.node("node1"), xa) if e.egress}
    assert out == {(ids[p.id], 80 if p.pod_name == "a" else 81) for p in egress.pods if p.pod_name != "c"}
    assert not ep.problems(egress)


def test_a_named_port_numbered_apart_within_one_identity_is_a_problem() -> None:
    lab = make_lab([{"name": "node1", "pods": [{**pod("w1", "x", {"app": "web"}), "ports": [named(8080, "TCP", "http")]}]},
                    {"name": "node2", "pods": [{**pod("w2", "x", {"app": "web"}), "ports": [named(9090, "TCP", "http")]},
                                               pod("client", "x", {"app": "client"})]}],
                   name="np", dataplane="ebpf", namespaces={"x": {}},
                   policies=[np("out", {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                                        "egress": [{"ports": [{"port": "http"}]}]})])
    assert ep.identities(lab)["node1/x/w1"] == ep.identities(lab)["node2/x/w2"]
    assert ep.problems(lab) == [
        "policy x/out: egress port http/TCP: pods x/w1, x/w2 share identity 257 but number it differently (8080, 9090), "
        "and a policy map entry gives one port per identity"]


def test_an_ip_block_splitting_an_identity_is_a_problem_and_reserved_host_only_for_egress() -> None:
    two = [{"name": "node1", "pods": [pod("w1", "x", {"app": "web"}), pod("c", "x", {"app": "c"})]},
           {"name": "node2", "pods": [pod("w2", "x", {"app": "web"})]}]
    split = make_lab(two, name="np", dataplane="ebpf", namespaces={"x": {}}, policies=[
        np("to-w1", {"podSelector": {"matchLabels": {"app": "c"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.2/32"}}]}]})])
    assert [line.split(": it holds ")[1] for line in ep.problems(split)] == [
        "10.244.0.2 but not 10.244.1.2, which pods x/w1, x/w2 share as identity 257: a policy map selects identities, "
        "not addresses"]
    # reserved:host on node1 is 192.168.1.2 and 10.244.0.1, but a pod only ever sends to its node's eth0
    # address: a block holding the router IP alone does not split it, and the pods' egress to their
    # own node follows the eth0 address (here outside the block: no entry for identity 1)
    host = make_lab(two, name="np", dataplane="ebpf", namespaces={"x": {}}, policies=[
        np("cluster", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.244.0.0/16"}}]}], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}]})])
    assert ep.problems(host) == []
    c = next(p for p in host.pods if p.id == "node1/x/c")
    assert not [e for e in ep.policy_entries(host, host.node("node1"), c) if e.egress and e.identity == 1]


def test_a_pod_cidrs_unused_addresses_never_make_a_problem() -> None:
    """In tunnel mode another node's pod CIDR is world (behind its tunnel endpoint), so world holds
    10.244.1.200 as well as the internet: `0.0.0.0/0 except 10.244.0.0/16` would split it, but no
    pod or router is there, nothing is sent from there and nothing answers there."""
    everything = np("out", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                                                                  "except": ["10.244.0.0/16"]}}]}]})
    lab = model_lab("tunnel", policies=[everything])
    assert ep.identity_of(lab, lab.node("node1"), IPv4Address("10.244.1.200")) == ep.WORLD_ID
    assert ep.problems(lab) == []
    xa = next(p for p in lab.pods if p.qualified == "x/a")
    assert PolicyEntry(False, ep.WORLD_ID) in ep.policy_entries(lab, lab.node("node1"), xa)


def test_the_ipcache_gives_every_node_address_its_own_identity() -> None:
    lab = model_lab("tunnel", policies=[np("blocks", {"podSelector": {}, "egress": [{"to": [
        {"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.1.3/32"]}},
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}]}]})])
    node1, node2 = lab.node("node1"), lab.node("node2")
    cache = {str(e.prefix): (e.identity, str(e.tunnel_endpoint or "")) for e in ep.ipcache(lab, node1)}
    remote = ep.REMOTE_NODE_SCOPE
    assert {k: v for k, v in cache.items() if not k.startswith("10.244.") or k.endswith(".1/32")} == {
        "192.168.1.2/32": (1, ""), "192.168.1.3/32": (remote | 3, ""), "192.168.1.4/32": (remote | 5, ""),
        "10.244.0.1/32": (1, ""),  # cilium_host's router IP: this node's too
        "10.244.1.1/32": (remote | 4, "192.168.1.3"), "10.244.2.1/32": (remote | 6, "192.168.1.4"),
        "0.0.0.0/0": (2, ""), "192.0.2.0/24": (ep.LOCAL_SCOPE | 3, "")}
    # the policies' prefixes: a pod CIDR keeps its tunnel endpoint, a pod's /32 its pod's identity
    assert cache["10.244.0.0/16"] == (ep.LOCAL_SCOPE | 1, "")
    assert cache["10.244.1.0/24"] == (ep.LOCAL_SCOPE | 2, "192.168.1.3")
    assert cache["10.244.1.3/32"] == (ep.identities(lab)["node2/y/b"], "192.168.1.3")
    assert ep.identity_of(lab, node1, IPv4Address("10.244.1.200")) == ep.LOCAL_SCOPE | 2
    assert ep.identity_of(lab, node1, IPv4Address("203.0.113.9")) == ep.WORLD_ID
    assert ep.identity_of(lab, node2, IPv4Address(node2.ip)) == ep.HOST_ID
    assert ep.identity_of(lab, node2, IPv4Address(node1.gateway)) == remote | 2
    assert all(str(IPv4Network(k)) == k for k in cache)


@pytest.mark.parametrize("networking", [None, DUAL, IPV6_ONLY], ids=["ipv4", "dual-stack", "ipv6-only"])
def test_the_plan_writes_the_ipcache_the_simulator_reads(networking: dict[str, Any] | None) -> None:
    from cni_lab.steps import BpfIpcache

    lab = model_lab("tunnel", networking=networking)
    steps = [s for s in ebpf.Ebpf().cluster_steps(lab) if isinstance(s, BpfIpcache)]
    for node in lab.nodes:
        mine = [(s.prefix, s.identity, s.tunnel_endpoint) for s in steps if s.netns.endswith(f".{node.name}")]
        assert mine == [tuple(e) for e in ep.ipcache(lab, node)]
        assert {e.prefix.version for e in ep.ipcache(lab, node)} == set(lab.families)
    assert ebpf.identities is ep.identities  # kept importable where it was


def test_the_lookup_takes_the_exact_identity_and_then_any_as_policy_h_does() -> None:
    entries = [PolicyEntry(True, 300, 6, 80, 24), PolicyEntry(True, 0, 17, 0, 8), PolicyEntry(False, 1)]
    assert ep.allows(entries, True, 300, 6, 80)
    assert not ep.allows(entries, True, 300, 6, 81) and not ep.allows(entries, True, 301, 6, 80)
    assert ep.allows(entries, True, 301, 17, 53) and ep.allows(entries, True, 300, 17, 1)  # ANY's, for every identity
    assert not ep.allows(entries, False, 300, 17, 53)  # the direction is part of the key
    assert ep.allows(entries, False, 1, 132, 9) and not ep.allows(entries, False, 2, 132, 9)


def test_a_dual_stack_ipcache_gives_each_node_address_its_own_identity_and_world_a_half_per_family() -> None:
    lab = model_lab("tunnel", networking=DUAL, policies=[np("v6", {"podSelector": {}, "egress": [{"to": [
        {"ipBlock": {"cidr": "fd00:10:244:1::/64", "except": ["fd00:10:244:1::3/128"]}}]}]})])
    node1, node2 = lab.node("node1"), lab.node("node2")
    cache = {str(e.prefix): (e.identity, str(e.tunnel_endpoint or "")) for e in ep.ipcache(lab, node1)}
    remote = ep.REMOTE_NODE_SCOPE
    # node1's own four addresses are host; node2's each its own, behind its IPv4 address in the tunnel
    assert [cache[f"{a}/{a.max_prefixlen}"] for a in ep.node_addresses(node1)] == [(1, "")] * 4
    assert [cache[f"{a}/{a.max_prefixlen}"] for a in ep.node_addresses(node2)] == [
        (remote | 5, ""), (remote | 6, "192.168.1.3"), (remote | 7, ""), (remote | 8, "192.168.1.3")]
    assert cache["fd00:10:244:1::/64"] == (ep.LOCAL_SCOPE | 1, "192.168.1.3")  # the policy's prefix, the tunnel kept
    assert cache["fd00:10:244:1::3/128"][0] == cache["10.244.1.3/32"][0] == ep.identities(lab)["node2/y/b"]
    assert cache["fd00:10:244:2::/64"] == (ep.WORLD_IPV6_ID, "192.168.1.4") and cache["10.244.2.0/24"][0] == ep.WORLD_IPV4_ID
    assert (cache["0.0.0.0/0"], cache["::/0"]) == ((ep.WORLD_IPV4_ID, ""), (ep.WORLD_IPV6_ID, ""))
    assert ep.identity_of(lab, node1, IPv6Address("2001:db8::1")) == ep.WORLD_IPV6_ID
    assert ep.identity_of(lab, node1, IPv4Address("203.0.113.9")) == ep.WORLD_IPV4_ID
    labels = ep.labels_by_identity(lab)
    assert labels[remote | 7] == ("cidr:fd00:192:168:1::3/128", "reserved:remote-node")
    assert labels[ep.LOCAL_SCOPE | 1] == ("cidr:fd00:10:244:1::/64", "reserved:world-ipv6")
    # the block holds x/b's and z/b's IPv6 addresses (y/b's it excepts) and neither's IPv4 one
    assert [line.split(": it holds ")[1].split(",")[0] for line in ep.problems(lab)] == [
        "fd00:10:244:1::2 but not 10.244.1.2", "fd00:10:244:1::4 but not 10.244.1.4"]


def test_reserved_host_is_a_pods_peer_at_its_nodes_eth0_addresses_of_both_families() -> None:
    """A pod reaches its own node at eth0's IPv4 and IPv6 addresses, both reserved:host: one entry
    for identity 1 lets it reach either, so an IPv4 block holding eth0's IPv4 address alone splits
    it (egress); with the IPv6 address's block beside it, it is exact. Ingress from reserved:host is
    allowed anyway (allow-localhost, as Kubernetes lets a pod's node in)."""
    def lab_with(*cidrs: str, direction: str = "egress") -> Lab:
        peers = [{"ipBlock": {"cidr": c}} for c in cidrs]
        rule = {"to": peers} if direction == "egress" else {"from": peers}
        return model_lab("native", networking=DUAL, policies=[np("own", {
            "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": [direction.capitalize()], direction: [rule]})])

    split = lab_with("192.168.1.2/32")
    assert [line.split(": it holds ")[1] for line in ep.problems(split)] == [
        "192.168.1.2 but not fd00:192:168:1::2, which reserved:host (node node1's addresses) share as identity 1: "
        "a policy map selects identities, not addresses"]
    both = lab_with("192.168.1.2/32", "fd00:192:168:1::2/128")
    assert ep.problems(both) == []
    xa = next(p for p in both.pods if p.qualified == "x/a")
    assert PolicyEntry(True, ep.HOST_ID) in ep.policy_entries(both, both.node("node1"), xa)
    assert ep.problems(lab_with("192.168.1.2/32", direction="ingress")) == []
