"""Data planes declare what they do (dataplanes/capabilities.py); the rest of the code asks that
value and never decides by a data plane's name.

The name check reads the syntax of every module outside cni_lab/dataplanes/ and flags the ways a
name decides behaviour: compared (`lab.dataplane == "bgp"`, `x in ("fabric", "bgp")`), a table
keyed by names and looked up, a list of names kept outside the registry, a name bound as a
default, a `match` case, and anything compared with `.dataplane`/`.routing`/`.ebpf_routing`.
A name may still appear where it is not a data plane's: "bridge" and "vxlan" are Linux link kinds
(kernel/, doctor.py), topology draws links of kind "bgp"/"fabric", explain's JSON has keys
"vxlan"/"bgp"/"bridge"; comparisons with a `kind` are link kinds, and output keys are not looked up.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from cni_lab import catalog, cluster, dataplanes, model, names, plan
from cni_lab.dataplanes import cni, registry
from cni_lab.dataplanes.capabilities import Capabilities, Refused, Tunnel
from cni_lab.errors import LabError
from cni_lab.steps import BpfIpcache, LoadNftables

PACKAGE = Path(__file__).resolve().parents[2] / "cni_lab"
NAMES = frozenset(registry.NAMES)
SUBJECTS = {"dataplane", "routing", "ebpf_routing"}  # what holds a data plane's name or its options
# file (relative to cni_lab/) → why it may still name data planes
EXCEPTIONS: dict[str, str] = {}  # file → why it may name data planes (none: the model takes them from the registry)
# (file, literal) → why: a use the rules below flag that is not a data plane's (none so far)
ALLOWED: dict[tuple[str, str], str] = {}


def _plane_names(node: ast.AST | None) -> list[str]:
    """The data-plane names a string constant, or a tuple/list/set of constants, holds."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in NAMES else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in NAMES]
    return []


def _constant(node: ast.AST) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(isinstance(e, ast.Constant) for e in node.elts)
    return isinstance(node, ast.Constant)


def _called(node: ast.AST, names: set[str]) -> bool:
    """`x.<name>` or a variable `<name>`."""
    return (isinstance(node, ast.Attribute) and node.attr in names) or (isinstance(node, ast.Name) and node.id in names)


def findings(source: str, where: str = "<code>") -> list[str]:
    """Every place in `source` where a data plane's name decides behaviour, as `where:line: why`."""
    tree = ast.parse(source)
    parent: dict[ast.AST, ast.AST] = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    found: dict[tuple[int, str], None] = {}

    def flag(node: ast.AST, why: str, names: list[str]) -> None:
        if names and all((where, n) in ALLOWED for n in names):
            return
        found[(getattr(node, "lineno", 0), f"{why} {', '.join(repr(n) for n in names)}".rstrip())] = None

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            link_kind = any(_called(o, {"kind"}) for o in operands)  # "bridge", "vxlan"; topology's "bgp", "fabric"
            names = [n for o in operands for n in _plane_names(o)]
            if any(_called(o, SUBJECTS) for o in operands) and any(_constant(o) for o in operands):
                flag(node, "compares a data plane's name or option with a constant", names)
            elif names and not link_kind:
                flag(node, "compares with the data-plane name(s)", names)
        elif isinstance(node, ast.Dict) and node.keys:
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
            up = parent.get(node)
            looked_up = (isinstance(up, ast.Subscript) and up.value is node) or (
                isinstance(up, ast.Attribute) and up.value is node and up.attr == "get") or isinstance(
                up, (ast.Assign, ast.AnnAssign))
            if all(k in NAMES for k in keys) and looked_up:
                flag(node, "looks up a table keyed by data-plane names", [str(k) for k in keys])
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = _plane_names(node)
            up = parent.get(node)
            in_compare = isinstance(up, ast.Compare)  # flagged above, or a link kind's
            if len(names) >= 2 and not in_compare:
                flag(node, "lists data planes outside the registry:", names)
        elif isinstance(node, ast.MatchValue) and _plane_names(node.value):
            flag(node, "matches the data-plane name", _plane_names(node.value))
        elif isinstance(node, ast.Constant) and _plane_names(node):
            up = parent.get(node)
            default = (isinstance(up, (ast.Assign, ast.AnnAssign)) and up.value is node) or (
                isinstance(up, ast.arguments) and node in [*up.defaults, *up.kw_defaults]) or (
                isinstance(up, ast.keyword) and up.arg == "default") or (
                isinstance(up, ast.Call) and isinstance(up.func, ast.Attribute) and up.func.attr == "get"
                and len(up.args) == 2 and up.args[1] is node)
            if default:
                flag(node, "binds a data plane's name as a value or default:", _plane_names(node))
    return [f"{where}:{line}: {why}" for line, why in sorted(found)]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "dataplanes" not in p.relative_to(PACKAGE).parts)


def test_no_data_plane_name_decides_anything_outside_dataplanes() -> None:
    found = [f for path in modules() if (rel := str(path.relative_to(PACKAGE))) not in EXCEPTIONS
             for f in findings(path.read_text(), rel)]
    assert not found, "ask lab.capabilities (dataplanes/capabilities.py) instead:\n" + "\n".join(found)


def test_the_exceptions_are_still_needed() -> None:
    """An exception that no longer names a data plane goes."""
    for rel in EXCEPTIONS:
        assert findings((PACKAGE / rel).read_text(), rel), f"{rel} names no data plane any more: drop its exception"


@pytest.mark.parametrize("code", [
    'if lab.dataplane == "bgp": pass',
    'x = lab.dataplane != "ebpf"',
    'x = scenario.dataplane in ("fabric", "bgp")',
    'x = "cni" == plane',
    'x = lab.routing == "none"',
    'x = lab.scenario.ebpf_routing == "tunnel"',
    'x = {"bgp": 1, "ebpf": 2}.get(lab.dataplane, 0)',
    'x = {"bgp": 1}[name]',
    'TABLE = {"vxlan": 1, "host-gw": 2}',
    'DUAL = ("bridge", "host-gw")',
    'def f(plane="host-gw"): pass',
    'x = document.get("dataplane", "host-gw")',
    'DEFAULT = "host-gw"',
    'match lab.dataplane:\n    case "bgp": pass',
])
def test_the_check_finds_a_name_that_decides(code: str) -> None:
    assert findings(code)


@pytest.mark.parametrize("code", [
    'if link.kind == "vxlan": pass',  # a Linux link kind
    'x = kind != "vxlan"',
    'x = link.kind in ("tunnel", "bgp", "fabric")',  # topology's link kinds
    'Link(a, b, "label", "fabric")',
    'x = {"vxlan": v, "bgp": b, "routes": r}',  # explain's JSON: output keys, not a lookup
    'show({"bgp": b})',
    'rtnl.add_link("drbr", "bridge")',
    'title = f"data plane {lab.dataplane}"',
    'if lab.capabilities.masquerade == "calico": pass',
])
def test_the_check_leaves_other_uses_alone(code: str) -> None:
    assert not findings(code)


# ---- the values themselves -------------------------------------------------------------------

NODES = [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}]
DUAL = {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"], "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}
# every data plane, and cni and ebpf in each of their ways
VARIANTS = [{"dataplane": n} for n in registry.NAMES if n not in ("cni", "ebpf")] + [
    {"dataplane": "cni", "cni": {"routing": r}} for r in registry.CNI_ROUTING] + [
    {"dataplane": "ebpf", "ebpf": {"routing": r}} for r in registry.EBPF_ROUTING]


def lab(**doc: Any) -> cluster.Lab:
    return catalog.resolve(model.load_document({"name": "lab", "nodes": NODES, **doc}, "s.yaml"))


def label(doc: dict[str, Any]) -> str:
    option = doc.get("cni", doc.get("ebpf", {})).get("routing")
    return doc["dataplane"] + (f"+{option}" if option else "")


CAPS = {label(v): lab(**v).capabilities for v in VARIANTS}


@pytest.mark.parametrize("name", registry.NAMES)
def test_every_registered_data_plane_loads_and_declares_what_it_does(name: str) -> None:
    plane = dataplanes.get(name)
    assert isinstance(plane, dataplanes.DataPlane) and plane.name == name
    built = lab(dataplane=name)
    assert isinstance(built.capabilities, Capabilities)
    assert plane.capabilities(built.scenario) == built.capabilities
    assert built.capabilities is built.capabilities  # asked once per lab


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(LabError, match=re.escape("unknown data plane 'calico' (known: bridge, host-gw, vxlan, fabric, "
                                                 "bgp, cni, ebpf)")):
        dataplanes.get("calico")


def test_the_registry_says_what_the_model_accepts() -> None:
    """The model checks scenarios against the registry's vocabulary, and its defaults are the registry's."""
    assert registry.NAMES == model.DATAPLANES
    assert registry.CNI_ROUTING == model.CNI_ROUTING and registry.EBPF_ROUTING == model.EBPF_ROUTING
    assert set(registry.SECTIONS) <= set(model.TOP_KEYS) and set(registry.SECTION_PLANE.values()) <= set(registry.NAMES)
    assert set(registry.SECTION_PLANE) == set(registry.SECTIONS)
    default = model.load_document({"name": "lab", "nodes": NODES}, "s.yaml")
    assert default.dataplane == registry.DEFAULT
    assert default.cni.routing == registry.CNI_DEFAULT_ROUTING and default.ebpf_routing == registry.EBPF_DEFAULT_ROUTING
    assert set(cni.ROUTING) == set(registry.CNI_ROUTING)  # cni joins nodes in every way the model accepts


def test_what_each_data_plane_answers() -> None:
    """The answers the names used to give, one question at a time."""
    def which(question: Any) -> set[str]:
        return {k for k, c in CAPS.items() if question(c)}

    assert which(lambda c: c.needs_router) == {"fabric", "bgp"}
    assert which(lambda c: c.fabric_routes_pods) == {"fabric"}
    assert which(lambda c: c.ipam == "calico-ipam") == {"bgp"}
    assert which(lambda c: c.pods_meet == "routed") == which(lambda c: c.pod_gateway == "proxy-arp") == {"bgp"}
    assert which(lambda c: c.daemons == ("bird",)) == which(lambda c: c.masquerade == "calico") == {"bgp"}
    assert which(lambda c: c.sets_hairpin) == {"bridge", "host-gw", "vxlan", "fabric"}
    assert which(lambda c: c.runs_cni_plugins) == {"cni+host-gw", "cni+vxlan", "cni+none"}
    ebpf = {"ebpf+tunnel", "ebpf+native"}
    assert which(lambda c: c.loads_bpf) == which(lambda c: c.bypasses_forward_hook) == ebpf
    assert which(lambda c: c.pods_meet == "bpf-redirect") == which(lambda c: c.pod_gateway == "cilium_host") == ebpf
    assert which(lambda c: c.families == (4,)) == set()  # every data plane carries IPv6 too
    assert which(lambda c: c.policy == "cilium-bpf") == which(lambda c: c.services == "cilium-bpf") == ebpf
    tunnels = {k: c.tunnel.device for k, c in CAPS.items() if c.tunnel is not None}
    assert tunnels == {"vxlan": names.FLANNEL_DEVICE, "cni+vxlan": names.FLANNEL_DEVICE, "ebpf+tunnel": names.CILIUM_VXLAN}


def _literals(hint: Any) -> set[str]:
    """The strings a field's type allows (its Literal values, inside unions and tuples too)."""
    if typing.get_origin(hint) is typing.Literal:
        return {a for a in typing.get_args(hint) if isinstance(a, str)}
    return {v for a in typing.get_args(hint) for v in _literals(a)}


def test_what_the_code_compares_a_capability_with_is_one_of_its_values() -> None:
    """mypy lets `lab.capabilities.masquerade == "calcio"` pass: this does not."""
    hints = typing.get_type_hints(Capabilities)
    wrong = []

    def field(node: ast.AST) -> str | None:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "capabilities":
            return node.attr
        return None

    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            pairs: list[tuple[str, object]] = []
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                pairs = [(f, o.value) for f in filter(None, map(field, operands)) for o in operands
                         if isinstance(o, ast.Constant)]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and isinstance(node.func.value, ast.Dict) and node.args and (f := field(node.args[0]))):
                pairs = [(f, k.value) for k in node.func.value.keys if isinstance(k, ast.Constant)]
            wrong += [f"{path.relative_to(PACKAGE)}:{node.lineno}: {f} is never {v!r}" for f, v in pairs
                      if isinstance(v, str) and v not in _literals(hints[f])]
    assert not wrong, "\n".join(wrong)
    assert _literals(hints["masquerade"]) == {"flannel", "calico", "cilium-bpf"}  # the check sees through `| Refused`


def test_a_tunnel_costs_its_headers_of_the_larger_family() -> None:
    assert (Tunnel("t").mtu(1500, ipv6=False), Tunnel("t").mtu(1500, ipv6=True)) == (1450, 1430)
    assert lab(dataplane="vxlan", networking=DUAL).overlay_mtu == 1430
    assert lab(dataplane="cni", cni={"routing": "vxlan"}).pod_mtu == 1450
    assert lab(dataplane="ebpf", ebpf={"routing": "native"}).overlay_mtu == 1500


def refusal(reason: str) -> str:
    return "^" + re.escape(f"s.yaml: {reason}") + "$"


def test_ebpf_refuses_sctp_services_and_ip_blocks_its_maps_cannot_hold_in_its_words() -> None:
    ebpf = CAPS["ebpf+tunnel"]
    assert ebpf.ipv6 is None and (ebpf.policy, ebpf.services, ebpf.masquerade) == ("cilium-bpf",) * 3
    assert not [k for k, c in CAPS.items() if any(isinstance(r, Refused) for r in (c.ipv6, c.policy, c.services, c.masquerade))]
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "default"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    steps = plan.build(lab(dataplane="ebpf", networking=DUAL, policies=[deny])).steps  # policed in both families
    assert [s for s in steps if isinstance(s, BpfIpcache) and s.prefix.version == 6]
    # web's IPv4 address alone: its identity (one for both its addresses) would let its IPv6 in too
    labelled = [{"name": "node1", "pods": [{"name": "web", "labels": {"app": "web"}}, {"name": "db", "labels": {"app": "db"}}]}]
    from_web = {**deny, "metadata": {"name": "from-web", "namespace": "default"},
                "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.2/32"}}]}]}}
    with pytest.raises(LabError, match=refusal(
            "policy default/from-web: ingress ipBlock 10.244.0.2/32: it holds 10.244.0.2 but not fd00:10:244::2, which pods "
            "default/web share as identity 257: a policy map selects identities, not addresses")):
        plan.build(lab(dataplane="ebpf", networking=DUAL, nodes=labelled, policies=[from_web]))
    both = {**from_web, "spec": {**from_web["spec"], "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.244.0.2/32"}}, {"ipBlock": {"cidr": "fd00:10:244::2/128"}}]}]}}
    plan.build(lab(dataplane="ebpf", networking=DUAL, nodes=labelled, policies=[both]))  # a block of each family: exact
    with pytest.raises(LabError, match=refusal(
            "services[0].ports[0]: SCTP on dataplane ebpf: its BPF load balancer rewrites ports without recomputing "
            "SCTP's CRC32c checksum; use TCP or UDP, or another data plane")):
        plan.build(lab(dataplane="ebpf", services=[{"name": "web", "pods": ["node1/web"],
                                                     "ports": [{"port": 80, "protocol": "SCTP"}]}]))
    built = plan.build(lab(dataplane="ebpf", outside={}, policies=[deny],
                           services=[{"name": "web", "pods": ["node1/web"], "ports": [{"port": 80}]}]))
    assert not [s for s in built.steps if isinstance(s, LoadNftables)]  # no kube-proxy, masquerade or policy table


def test_the_values_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CAPS["bgp"].needs_router = False  # type: ignore[misc]
