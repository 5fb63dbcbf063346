"""Fault injection: each fault breaks exactly the pairs it should, on every data plane; heal fixes them."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from cni_lab import faults, lifecycle
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.probe import matrix
from cni_lab.probe.pairs import Endpoint

MakeLab = Callable[..., Lab]


def lab_doc(dataplane: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"dataplane": dataplane, "nodes": [
        {"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}, {"name": "node3", "pods": ["cache"]}]}
    if dataplane == "cni":
        doc["cni"] = {"routing": "host-gw"}
    return doc


def group(ep: Endpoint) -> str:
    return ep.node


def expected_broken(dataplane: str, kind: str, args: tuple[str, ...], a: Endpoint, b: Endpoint) -> bool:
    if kind == "link-down":
        if dataplane == "bgp":
            # Calico's pods reach even their own node through proxy ARP for 169.254.1.1, which
            # answers only while the node has a route to it: its default route, gone with eth0
            # (projectcalico/calico#3270). So a node without uplink loses its own pods too.
            return args[0] in (group(a), group(b))
        return (group(a) == args[0]) != (group(b) == args[0])
    if kind == "pod-down":
        return args[0] in (a.id, b.id)
    holder, other = args  # route-del: the holder's side and the other node's pods lose each other
    if dataplane == "vxlan" and a.kind == "node" and a.node == other and b.kind == "pod" and b.node == holder:
        # the other node sends to the holder's pods from its flannel.1 address, 10.244.Y.0, in its
        # own pod CIDR: the answer needs the very route the fault deleted (so do real flannel nodes)
        return True
    def is_target_pod(e: Endpoint) -> bool:
        return e.kind == "pod" and e.node == other
    for x, y in ((a, b), (b, a)):
        if is_target_pod(x) and (group(y) == holder if holder != "router" else group(y) != other):
            return True
    return False


FAULTS = [("link-down", ("node2",)), ("pod-down", ("node1/web",)), ("route-del", ("node1", "node2"))]
CASES = [(dp, kind, args) for dp in ("host-gw", "vxlan", "fabric", "bgp", "cni") for kind, args in FAULTS]


@pytest.mark.parametrize(("dataplane", "kind", "args"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_fault_breaks_exactly_its_pairs_and_heal_restores(make_lab: MakeLab, dataplane: str, kind: str,
                                                          args: tuple[str, ...]) -> None:
    lab = make_lab(lab_doc(dataplane))
    if dataplane == "fabric" and kind == "route-del":
        with pytest.raises(LabError, match="router holds it: route-del router node2"):
            faults.inject(lab, kind, args)
        args = ("router", "node2")
    faults.inject(lab, kind, args)
    status = lifecycle.status(lab.name)
    assert not status.healthy and len(status.faults) == 1
    result = matrix.run(lab)
    broken = {(r.pair.src.id, r.pair.dst.id) for r in result.results if r.verdict != "ok"}
    want = {(r.pair.src.id, r.pair.dst.id) for r in result.results if expected_broken(dataplane, kind, args, r.pair.src, r.pair.dst)}
    assert broken == want
    assert {r.verdict for r in result.results if r.verdict != "ok"} <= {"timeout", "unreachable"}
    faults.heal(lab)
    assert lifecycle.status(lab.name).healthy
    assert {r.verdict for r in matrix.run(lab).results} == {"ok"}


def test_unknown_targets_are_clear_errors(make_lab: MakeLab) -> None:
    lab = make_lab(lab_doc("bridge"))
    with pytest.raises(LabError, match="no node 'node9'"):
        faults.inject(lab, "link-down", ("node9",))
    with pytest.raises(LabError, match="node1 has no route to node2's pods"):
        faults.inject(lab, "route-del", ("node1", "node2"))
    with pytest.raises(LabError, match="usage: cni-lab fault"):
        faults.inject(lab, "pod-down", ("node1",))
    assert faults.recorded(lab.name) == []
