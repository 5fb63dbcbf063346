"""The NetworkPolicy evaluator (cni_lab/policy.py) held against an implementation nobody here
wrote, on generated cases (cni_lab/policy_cases.py): network-config-analyzer (NCA, PyPI, driven
in-process as `nca --connectivity` runs, tests/unit/nca_oracle.py).

For every case, the evaluator's whole truth table (every ordered pair of the e2e model's nine
pods, every probe: ICMP, TCP/UDP 80 and 81, and SCTP/80 and TCP/82 besides, which endPort and
protocol-only rules reach) must equal NCA's. NCA is not Kubernetes either: where it and the
Kubernetes sources disagree, Kubernetes wins, and the shapes on which NCA is wrong are listed in
NCA_IS_WRONG, one named predicate each, with the upstream source that decides it. Cases with
those shapes are left out of the comparison, and each disagreement is itself a test: a
hand-written case, the answer the Kubernetes source gives, the evaluator giving it, NCA not.

Where the evaluator was wrong until #28 (FIXED_CORNERS: policyTypes defaulting, ipBlock CIDRs
with host bits), the cases with those shapes are compared on their own, so a regression there is
named. The e2e suite's own truth tables (test_policy_evaluator.py) stay the top reference.

Named ports are drawn too (the generator's `named_ports`), and NCA resolves them as Kubernetes'
implementations do: per destination pod, by name and protocol, a pod without the name left out
(nca/CoreDS/ConnectivityProperties.py, make_conn_props → _resolve_named_ports over the dst_peers).
On the e2e model every pod serves the same ports, so a second model (VARIED_PORTS) gives pods
other numbers for the same names, or none, and the cases with named ports are compared on it.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, ip_network
from typing import Any, Callable, Iterator, Mapping

import pytest
import yaml

from cni_lab import catalog, policy

from cni_lab.policy import cases as policy_cases
from cni_lab.errors import LabError

import nca_oracle
from labs import make_lab, network_policy as np, pod

SEED = 28
COUNT = 2200  # generated; at least MIN_COMPARED of them are compared (the rest hold a listed shape)
MIN_COMPARED = 1000
# the probes of every case, and two more that ranges and protocol-only rules reach
PROBES = policy_cases.PROBES + (("SCTP", 80), ("TCP", 82))
Cell = tuple[str, str, str, "int | None"]


Ports = Mapping[str, "tuple[dict[str, Any], ...]"]  # pod name (a, b, c) → its container ports, in every namespace


def model_lab(ports: Ports | None = None) -> Any:
    spaces = policy_cases.NAMESPACES
    served = ports or {p: policy_cases.CONTAINER_PORTS for p in policy_cases.PODS}
    return make_lab([{"name": f"node{i + 1}", "pods": [{**pod(p, n, policy_cases.POD_LABELS[p]), "ports": list(served[p])}
                                                       for n in spaces]}
                     for i, p in enumerate(policy_cases.PODS)],
                    name="np", namespaces={n: {"labels": policy_cases.NAMESPACE_LABELS[n]} for n in spaces})


def named(number: int, protocol: str, name: str) -> dict[str, Any]:
    return {"name": name, "containerPort": number, "protocol": protocol}


# the same names, other numbers: b serves serve-80-* on 81 and serve-81-* on 80; c declares its
# ports without names, so a named port matches nothing on it; a is the e2e model's
VARIED_PORTS: Ports = {
    "a": policy_cases.CONTAINER_PORTS,
    "b": tuple(named(81 if p["containerPort"] == 80 else 80, p["protocol"], p["name"]) for p in policy_cases.CONTAINER_PORTS),
    "c": tuple({"containerPort": p["containerPort"], "protocol": p["protocol"]} for p in policy_cases.CONTAINER_PORTS)}

LAB = model_lab()
WORKLOADS = {w.qualified: w for w in LAB.workloads}
SPACES = {ns.name: ns.labels for ns in LAB.scenario.namespaces}
VARIED = model_lab(VARIED_PORTS)


def oracle_of(lab: Any) -> Any:
    return nca_oracle.Oracle({ns.name: dict(ns.labels) for ns in lab.scenario.namespaces},
                             [(p.namespace, p.pod_name, dict(p.labels),
                               [named(c.container_port, c.protocol, c.name) if c.name else
                                {"containerPort": c.container_port, "protocol": c.protocol} for c in p.ports])
                              for p in sorted(lab.pods, key=lambda p: p.qualified)], PROBES)


@pytest.fixture(scope="module")
def oracle() -> Any:
    return oracle_of(LAB)


def ours(policies: tuple[dict[str, Any], ...] | list[dict[str, Any]], lab: Any = LAB) -> dict[Cell, bool]:
    """The evaluator's answer per cell, from the documents read as `validate` reads them."""
    evaluator = policy.Evaluator(SPACES, [policy.parse(d, f"policies[{i}]", policy_cases.NAMESPACES)
                                          for i, d in enumerate(policies)])
    workloads = {w.qualified: w for w in lab.workloads}
    return {(s, d, proto, port): evaluator.allowed(workloads[s], workloads[d], proto, port)
            for s in workloads for d in workloads if s != d for proto, port in PROBES}


# -- the shapes, read from the documents --------------------------------------------------------

def specs(policies: Any) -> Iterator[dict[str, Any]]:
    for document in policies:
        yield document.get("spec") or {}


def peers(policies: Any) -> Iterator[dict[str, Any]]:
    for spec in specs(policies):
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction) or []:
                yield from (rule or {}).get(key) or []


def ip_blocks(policies: Any) -> Iterator[dict[str, Any]]:
    yield from (p["ipBlock"] for p in peers(policies) if "ipBlock" in p)


def block_matches(block: Mapping[str, Any], ip: str) -> bool:
    """Kubernetes' reading of an ipBlock (netutils.ParseCIDRSloppy: host bits masked off)."""
    address = IPv4Address(ip)
    return (address in ip_network(block["cidr"], strict=False)
            and not any(address in ip_network(e, strict=False) for e in block.get("except") or []))


# -- where NCA and Kubernetes disagree: Kubernetes wins --------------------------------------------

def ip_block_matching_a_pod(policies: Any) -> bool:
    """NCA gives pods no addresses (nca/CoreDS/Peer.py: a Pod is a name, an IpBlock an address
    range, disjoint peers), so an ipBlock never selects a pod. Kubernetes does select pods by
    address: the e2e suite's "should allow egress access to server in CIDR block" and "should
    enforce except clause while egress access to server in CIDR block"
    (test/e2e/network/netpol/network_policy.go) allow x/a → y/b through `<y/b's IP>/32`. (np-guard's
    Go analyzer makes the same assumption and tracks it: np-guard/netpol-analyzer#456.)"""
    return any(block_matches(b, ip) for b in ip_blocks(policies) for ip in policy_cases.DEFAULT_IPS.values())


def policy_types_not_in_ncas_order(policies: Any) -> bool:
    """NCA takes policyTypes only as [Ingress], [Egress] or [Ingress, Egress]
    (K8sPolicyYamlParser.parse_policy's allowed values) and refuses [Egress, Ingress]. The API
    server checks only that there are at most two and each is Ingress or Egress
    (pkg/apis/networking/validation/validation.go, ValidateNetworkPolicySpec)."""
    return any(s.get("policyTypes") and s["policyTypes"] not in (["Ingress"], ["Egress"], ["Ingress", "Egress"])
               for s in specs(policies))


def rules_of_an_untyped_direction(policies: Any) -> bool:
    """NCA refuses a policy with `ingress` (`egress`) whose explicit policyTypes lack Ingress
    (Egress) ("A NetworkPolicy with ingress field but no "Ingress" in its policyTypes"). The API
    server has no such check (ValidateNetworkPolicySpec) and the rules do nothing: policyTypes
    says which directions the policy applies to (NetworkPolicySpec.policyTypes, API reference)."""
    return any(s.get("policyTypes") and any(key in s and kind not in s["policyTypes"]
                                            for key, kind in (("ingress", "Ingress"), ("egress", "Egress")))
               for s in specs(policies))


def empty_egress_with_defaulted_types(policies: Any) -> bool:
    """`egress: []` with policyTypes absent or empty: NCA isolates egress (it tests whether the
    key is there). Kubernetes defaults policyTypes to [Ingress], adding Egress only when
    `len(spec.Egress) != 0` (pkg/apis/networking/v1/defaults.go, SetDefaults_NetworkPolicy), so
    egress stays open. (The evaluator is wrong here today too: a corner being fixed.)"""
    return any(not s.get("policyTypes") and "egress" in s and not s["egress"] for s in specs(policies))


def empty_value_in_a_namespace_selector(policies: Any) -> bool:
    """NCA reads a namespace's missing label as the empty value (PeerContainer
    .get_namespace_pods_with_label: `labels.get(key, '')`), so `In [""]` or `{key: ""}` selects
    namespaces without the key and `NotIn [""]` leaves them out. Kubernetes: In and Equals need
    the key, NotIn holds without it (k8s.io/apimachinery/pkg/labels/selector.go,
    Requirement.Matches: `if !ls.Has(r.key) { return false }` / `{ return true }`)."""
    for peer in peers(policies):
        selector = peer.get("namespaceSelector") or {}
        if "" in (selector.get("matchLabels") or {}).values():
            return True
        if any("" in (r.get("values") or []) for r in selector.get("matchExpressions") or []):
            return True
    return False


def key_test_beside_a_namespace_selector(policies: Any) -> bool:
    """In a peer with both selectors, NCA evaluates a podSelector's Exists/DoesNotExist over the
    policy's own namespace only (K8sPolicyYamlParser.parse_label_selector_requirement →
    get_peers_with_key(self.namespace, ...)), so pods of the selected namespaces never match.
    Kubernetes: "If namespaceSelector is also set, then the NetworkPolicyPeer as a whole selects
    the Pods matching podSelector in the Namespaces selected by namespaceSelector"
    (NetworkPolicyPeer.podSelector, k8s.io/api/networking/v1/types.go)."""
    return any("namespaceSelector" in p and any(r.get("operator") in ("Exists", "DoesNotExist")
                                                for r in (p.get("podSelector") or {}).get("matchExpressions") or [])
               for p in peers(policies))


NCA_IS_WRONG: dict[str, Callable[[Any], bool]] = {f.__name__: f for f in (
    ip_block_matching_a_pod, policy_types_not_in_ncas_order, rules_of_an_untyped_direction,
    empty_egress_with_defaulted_types, empty_value_in_a_namespace_selector, key_test_beside_a_namespace_selector)}


# -- where the evaluator is wrong today, being fixed (NCA agrees with Kubernetes there) ----------

def empty_policy_types(policies: Any) -> bool:
    """`policyTypes: []` means Ingress (plus Egress when egress has rules), defaults.go; the
    evaluator reads it as no direction at all."""
    return any("policyTypes" in s and not s["policyTypes"] for s in specs(policies))


def cidr_with_host_bits(policies: Any) -> bool:
    """`10.244.1.3/24`: the API server parses it leniently (ValidateIPBlock → ParseCIDRSloppy, the
    host bits masked; the e2e suite itself writes `<pod IP>/4`); the evaluator refuses it."""
    def exact(cidr: str) -> bool:
        return ip_network(cidr, strict=False).with_prefixlen == cidr
    return any(not exact(b["cidr"]) or not all(exact(e) for e in b.get("except") or []) for b in ip_blocks(policies))


FIXED_CORNERS: dict[str, Callable[[Any], bool]] = {f.__name__: f for f in (empty_policy_types, cidr_with_host_bits)}


def shapes(case: policy_cases.Case, listed: Mapping[str, Callable[[Any], bool]]) -> list[str]:
    return [name for name, holds in listed.items() if holds(case.policies)]


def named_ports(policies: Any) -> set[str]:
    return {p["port"] for s in specs(policies) for d in ("ingress", "egress") for r in s.get(d) or []
            for p in (r or {}).get("ports") or [] if isinstance(p.get("port"), str)}


GENERATED = policy_cases.cases(SEED, COUNT, named_ports=True)
COMPARED = [c for c in GENERATED if not shapes(c, NCA_IS_WRONG) and not shapes(c, FIXED_CORNERS)]
AT_THE_CORNERS = [c for c in GENERATED if not shapes(c, NCA_IS_WRONG) and shapes(c, FIXED_CORNERS)]


# -- the comparison ---------------------------------------------------------------------------------

def nca_table(answers: Mapping[Cell, bool], protocol: str, port: int | None) -> str:
    """NCA's answers as policy.truth_table prints the evaluator's (a pod reaches itself)."""
    names = sorted(WORKLOADS)
    lines = ["-\t" + "\t".join(names)]
    for s in names:
        lines.append(s + "\t" + "\t".join("." if s == d or answers[(s, d, protocol, port)] else "X" for d in names))
    return "\n".join(lines)


def disagreement(case: policy_cases.Case, oracle: Any, lab: Any = LAB) -> str | None:
    """None when the truth tables agree on every probe; else the case and both tables."""
    theirs = oracle.allowed(case.policies)
    head = f"{case.name}\n{yaml.safe_dump(list(case.policies), sort_keys=False)}"
    try:
        evaluator = policy.Evaluator(SPACES, [policy.parse(d, f"{case.name}[{i}]", policy_cases.NAMESPACES)
                                              for i, d in enumerate(case.policies)])
    except LabError as e:
        return f"{head}the evaluator refuses it: {e}"
    out = []
    for protocol, port in PROBES:
        mine = policy.truth_table(evaluator, lab.workloads, protocol, port)
        other = nca_table(theirs, protocol, port)
        if mine != other:
            out.append(f"{protocol}/{port}: cni-lab\n{mine}\nNCA\n{other}")
    return head + "\n".join(out) if out else None


def compare(cases: list[policy_cases.Case], oracle: Any, lab: Any = LAB) -> list[str]:
    return [d for d in (disagreement(c, oracle, lab) for c in cases) if d is not None]


def test_the_evaluator_agrees_with_nca_on_generated_cases(oracle: Any) -> None:
    assert len(COMPARED) >= MIN_COMPARED
    started = time.perf_counter()
    found = compare(COMPARED, oracle)
    took = time.perf_counter() - started
    assert not found, f"{len(found)} of {len(COMPARED)} cases disagree; the first:\n" + "\n\n".join(found[:3])
    assert took < 60, f"{len(COMPARED)} cases took {took:.1f} s"


# the cases with a named port, drawn apart (named ports are a tenth of the ports drawn)
WITH_NAMED_PORTS = [c for c in policy_cases.cases(SEED + 1, 2 * COUNT, named_ports=True)
                    if named_ports(c.policies) and not shapes(c, NCA_IS_WRONG)]


def test_named_ports_resolve_per_pod_as_nca_resolves_them() -> None:
    """On VARIED_PORTS a name stands for 80 on one pod, 81 on another and nothing on a third: an
    evaluator that resolved on the wrong pod, ignored the protocol or fell back to a number would
    disagree here."""
    assert len(WITH_NAMED_PORTS) >= 300
    found = compare(WITH_NAMED_PORTS, oracle_of(VARIED), VARIED)
    assert not found, f"{len(found)} of {len(WITH_NAMED_PORTS)} cases disagree; the first:\n" + "\n\n".join(found[:3])
    varied = {w.qualified: w for w in VARIED.workloads}
    assert (varied["x/a"].find_port("serve-80-tcp", "TCP"), varied["x/b"].find_port("serve-80-tcp", "TCP"),
            varied["x/c"].find_port("serve-80-tcp", "TCP")) == (80, 81, None)


def test_the_evaluator_agrees_with_nca_at_the_corners_fixed_in_28(oracle: Any) -> None:
    assert {name for c in AT_THE_CORNERS for name in shapes(c, FIXED_CORNERS)} == set(FIXED_CORNERS)
    found = compare(AT_THE_CORNERS, oracle)
    assert not found, f"{len(found)} of {len(AT_THE_CORNERS)} cases disagree; the first:\n" + "\n\n".join(found[:3])


# -- each disagreement, shown on one case: Kubernetes' answer, ours, NCA's -------------------------

YB = policy_cases.DEFAULT_IPS["y/b"]
# name → (policies, {(from, to): Kubernetes' answer on TCP/80})
SHOWN: dict[str, tuple[list[dict[str, Any]], dict[tuple[str, str], bool]]] = {
    "ip_block_matching_a_pod": (
        [np("cidr", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": f"{YB}/32"}}]}]})],
        {("x/a", "y/b"): True, ("x/a", "y/c"): False}),
    "policy_types_not_in_ncas_order": (
        [np("both", {"podSelector": {}, "policyTypes": ["Egress", "Ingress"]})],
        {("x/a", "y/a"): False, ("y/a", "x/a"): False, ("y/a", "z/a"): True}),
    "rules_of_an_untyped_direction": (
        [np("egress-only", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})],
        {("x/a", "y/a"): False, ("y/a", "x/a"): True}),
    "empty_egress_with_defaulted_types": (
        [np("ingress-only", {"podSelector": {}, "ingress": [{}], "egress": []})],
        {("x/a", "y/a"): True, ("y/a", "x/a"): True}),
    "empty_value_in_a_namespace_selector": (
        [np("in-empty", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": [""]}]}}]}]}),
         np("notin-empty", {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
             {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": [""]}]}}]}]})],
        {("y/a", "x/a"): False, ("y/a", "x/b"): True}),
    "key_test_beside_a_namespace_selector": (
        [np("exists", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
             "namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})],
        {("y/b", "x/a"): True, ("z/b", "x/a"): False}),
    "empty_policy_types": (
        [np("empty-types", {"podSelector": {}, "policyTypes": []})],
        {("y/a", "x/a"): False, ("x/a", "y/a"): True}),
    "cidr_with_host_bits": (
        [np("sloppy", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.7/24"}}]}]})],
        {("y/a", "x/a"): False}),
}


def answer(cells: Mapping[Cell, bool], pair: tuple[str, str]) -> bool:
    return cells[(pair[0], pair[1], "TCP", 80)]


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_each_listed_shape_is_named_by_its_predicate(name: str) -> None:
    listed = {**NCA_IS_WRONG, **FIXED_CORNERS}
    policies, _ = SHOWN[name]
    assert [n for n, holds in listed.items() if holds(policies)] == [name]


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_the_evaluator_gives_kubernetes_answer_on_each_listed_shape(name: str) -> None:
    policies, expected = SHOWN[name]
    cells = ours(policies)
    assert {pair: answer(cells, pair) for pair in expected} == expected


@pytest.mark.parametrize("name", sorted(NCA_IS_WRONG))
def test_nca_differs_from_kubernetes_on_each_shape_left_out(name: str, oracle: Any) -> None:
    """Each exclusion is earned: NCA refuses the case or gives another answer than Kubernetes."""
    policies, expected = SHOWN[name]
    try:
        cells = oracle.allowed(policies)
    except nca_oracle.Refused:
        return
    assert {pair: answer(cells, pair) for pair in expected} != expected


@pytest.mark.parametrize("name", sorted(FIXED_CORNERS))
def test_nca_gives_kubernetes_answer_at_the_corners_being_fixed(name: str, oracle: Any) -> None:
    policies, expected = SHOWN[name]
    cells = oracle.allowed(policies)
    assert {pair: answer(cells, pair) for pair in expected} == expected


def test_near_misses_are_not_left_out() -> None:
    """Each predicate names its shape and no more: the neighbouring shapes stay compared."""
    near = [
        np("outside", {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}),
        np("cluster-but", {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]}]}),
        np("ordered", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": []}),
        np("defaulted", {"podSelector": {}, "ingress": [], "egress": [{}]}),
        np("value", {"podSelector": {"matchLabels": {"pod": ""}}, "ingress": [{"from": [
            {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": [""]}]}},
            {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "Exists"}]}}]}]}),
        np("alone", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "pod", "operator": "DoesNotExist"}]}}]}]}),
        np("explicit", {"podSelector": {}, "policyTypes": ["Ingress"]}),
    ]
    for document in near:
        named = [n for n, holds in {**NCA_IS_WRONG, **FIXED_CORNERS}.items() if holds([document])]
        assert not named, (document["metadata"]["name"], named)


def test_duplicate_policy_types_are_accepted_as_the_api_server_does() -> None:
    """ValidateNetworkPolicySpec refuses more than two policyTypes and values other than Ingress
    and Egress, nothing else: [Ingress, Ingress] is valid and means [Ingress]. (NCA refuses it too,
    so the generator does not draw it.)"""
    cells = ours([np("twice", {"podSelector": {}, "policyTypes": ["Ingress", "Ingress"]})])
    assert (answer(cells, ("y/a", "x/a")), answer(cells, ("x/a", "y/a"))) == (False, True)


# -- the driver is NCA's own command line ---------------------------------------------------------

def parse_txt_no_fw_rules(text: str) -> dict[tuple[str, str], list[str]]:
    """`x/b[Pod] => x/a[Pod] : {protocols:TCP,dst_ports:80}` lines → (from, to) → connection texts."""
    out: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        if "[Pod] => " not in line or not line.endswith(("connections", "}")):
            continue
        pair, _, conn = line.partition(" : ")
        src, _, dst = pair.partition(" => ")
        if src.endswith("[Pod]") and dst.endswith("[Pod]"):
            out.setdefault((src[:-5], dst[:-5]), []).append(conn)
    return out


def conn_allows(conns: list[str], protocol: str, port: int | None) -> bool:
    for conn in conns:
        if conn == "All connections":
            return True
        fields = dict(part.split(":", 1) for part in conn.strip("{}").replace(",dst_ports:", ";dst_ports:").split(";"))
        protocols = [p.strip() for p in fields["protocols"].split(",")]  # "TCP, UDP"
        if protocol not in protocols:
            continue
        if "dst_ports" not in fields:
            return True
        for span in fields["dst_ports"].split(","):
            low, _, high = span.strip().partition("-")
            if port is not None and int(low) <= port <= int(high or low):
                return True
    return False


def test_the_driver_answers_as_the_command_line_does(oracle: Any, tmp_path: Any) -> None:
    """`nca --connectivity POLICIES --ns_list NS --pod_list PODS -o txt_no_fw_rules` (its console
    script's entry point, nca_cli.nca_main) on 40 generated cases, against the in-process driver."""
    from nca.nca_cli import nca_main

    (tmp_path / "ns.yaml").write_text(yaml.safe_dump(nca_oracle.namespace_list({n: dict(v) for n, v in SPACES.items()})))
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump(nca_oracle.pod_list(
        [(p.namespace, p.pod_name, dict(p.labels), list(policy_cases.CONTAINER_PORTS)) for p in LAB.pods])))
    outputs = []
    for i, case in enumerate(COMPARED[:40]):
        (tmp_path / f"np{i}.yaml").write_text(yaml.safe_dump_all(case.policies))
        nca_main(["--connectivity", str(tmp_path / f"np{i}.yaml"), "--ns_list", str(tmp_path / "ns.yaml"),
                  "--pod_list", str(tmp_path / "pods.yaml"), "--output_format", "txt_no_fw_rules",
                  "--file_out", str(tmp_path / f"out{i}.txt")])
        outputs.append(parse_txt_no_fw_rules((tmp_path / f"out{i}.txt").read_text()))
    assert any(outputs) and any(len(o) < 72 for o in outputs)  # answers read, and some pairs denied
    for case, listed in zip(COMPARED[:40], outputs):
        driver = oracle.allowed(case.policies)
        command = {(s, d, proto, port): conn_allows(listed.get((s, d), []), proto, port)
                   for s, d, proto, port in driver}
        assert command == driver, case.name


# -- the generator --------------------------------------------------------------------------------

def test_cases_are_reproducible_from_the_seed() -> None:
    assert policy_cases.cases(SEED, 30, named_ports=True) == GENERATED[:30]  # case i depends on (seed, i) alone
    assert policy_cases.cases(SEED + 1, 30, named_ports=True) != GENERATED[:30]
    assert len({c.name for c in GENERATED}) == COUNT


EVERY_SHAPE = {
    "policies:1", "policies:2", "policies:3",
    "policyTypes:absent", "policyTypes:empty", "policyTypes:Ingress", "policyTypes:Egress",
    "policyTypes:Ingress,Egress", "policyTypes:Egress,Ingress",
    "ingress:rules", "ingress:empty", "egress:rules", "egress:empty", "ingress:untyped", "egress:untyped",
    "rule:empty", "peers:empty-list", "peers:or", "ports:empty-list",
    "peer:pods", "peer:namespaces", "peer:and", "peer:ipBlock", "ipBlock:plain", "ipBlock:except", "cidr:host-bits",
    "selector:empty", "selector:matchLabels", "selector:matchExpressions", "selector:both",
    "target:empty", "target:matchLabels", "target:matchExpressions", "target:both",
    "op:In", "op:NotIn", "op:Exists", "op:DoesNotExist", "value:empty",
    "port:empty", "port:protocol", "port:number", "port:both", "port:range", "port:named",
    "protocol:TCP", "protocol:UDP", "protocol:SCTP",
}


def test_the_generated_cases_cover_every_shape() -> None:
    seen = {t for c in GENERATED for t in c.tags}
    assert EVERY_SHAPE <= seen, sorted(EVERY_SHAPE - seen)
    compared = {t for c in COMPARED for t in c.tags}
    # what the comparison itself reaches, once the listed shapes are left out
    assert EVERY_SHAPE - compared <= {"policyTypes:empty", "policyTypes:Egress,Ingress", "ingress:untyped",
                                      "egress:untyped", "cidr:host-bits"}, sorted(EVERY_SHAPE - compared)
    assert sum("peer:ipBlock" in c.tags for c in COMPARED) >= 50  # ipBlocks that match no pod still compare


def test_every_generated_policy_is_one_the_api_server_takes() -> None:
    """Read as `validate` reads them (the corners being fixed aside, whose CIDRs it refuses today)."""
    for case in GENERATED:
        if not cidr_with_host_bits(case.policies):
            ours(case.policies)


def test_named_ports_are_drawn_from_the_models_names_and_compared() -> None:
    drawn = {n for c in GENERATED for n in named_ports(c.policies)}
    assert drawn == set(policy_cases.PORT_NAMES)  # serve-8x-sctp too: a name no pod of the model has
    assert sum(bool(named_ports(c.policies)) for c in COMPARED) >= 100
    assert not {n for c in policy_cases.cases(SEED, 200) for n in named_ports(c.policies)}  # the hook off: numbers only


def test_the_model_is_the_shipped_netpol_lab() -> None:
    """What `conformance` will apply the cases to: scenarios/netpol.yaml's namespaces, labels,
    pods, addresses and probes are the generator's."""
    shipped = catalog.load("netpol")
    assert {w.qualified: str(w.ips[0]) for w in shipped.workloads} == policy_cases.DEFAULT_IPS
    assert {q: str(w.ips[0]) for q, w in WORKLOADS.items()} == policy_cases.DEFAULT_IPS  # this file's lab
    assert {w.qualified: dict(w.labels) for w in shipped.workloads} == {
        q: policy_cases.POD_LABELS[q.split("/")[1]] for q in policy_cases.DEFAULT_IPS}
    labels = {ns.name: dict(ns.labels) for ns in shipped.scenario.namespaces if ns.name in policy_cases.NAMESPACES}
    assert labels == {n: {**policy_cases.NAMESPACE_LABELS[n], "kubernetes.io/metadata.name": n}
                      for n in policy_cases.NAMESPACES}
    assert tuple(policy.probes(shipped.scenario.probe_ports)) == policy_cases.PROBES
    # the e2e model's containers: serve-<port>-<protocol> (model.go, Container.PortName), the ports probed
    assert {p.qualified: p.ports for p in shipped.pods} == {p.qualified: p.ports for p in LAB.pods}
    assert {(c.protocol, c.container_port) for c in shipped.pods[0].ports} == set(policy_cases.PROBES[1:])
    assert shipped.scenario.declared_ports == shipped.scenario.probe_ports
