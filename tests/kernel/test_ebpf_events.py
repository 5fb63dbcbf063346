"""The ebpf programs report drops and policy verdicts in the cilium_events ring buffer (Cilium's
drop_notify and policy_verdict_notify layouts, the packet's first bytes after them): a reader in
the lab drains it, and every policy drop the metrics count arrives as an event, with its reason,
identities and the packet's addresses."""

from __future__ import annotations

from typing import Callable

from helpers import ns_of, pings

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.dataplanes import ebpf_policy
from cni_lab.kernel import bpf
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]
DENY_TO_A = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "deny-to-a", "namespace": "default"},
             "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]}}


def test_every_policy_drop_arrives_as_an_event_with_its_reason_and_identities(make_lab: MakeLab) -> None:
    lab = make_lab({"dataplane": "ebpf", "policies": [DENY_TO_A],
                    "nodes": [{"name": "node1", "pods": [{"name": "a", "labels": {"app": "a"}}]},
                              {"name": "node2", "pods": [{"name": "b", "labels": {"app": "b"}}]}]})
    pins = {n.name: names.bpf_node_dir(lab.name, n.name) for n in lab.nodes}
    for pin in pins.values():
        bpf.events(pin)  # what up's own traffic left
    before = {n: bpf.metrics(pin)["drops: policy denied"] for n, pin in pins.items()}
    result = matrix.run(lab)
    assert result.passed  # b → a denied, as expected
    events = {n: bpf.events(pin) for n, pin in pins.items()}
    for node, pin in pins.items():
        drops = [e for e in events[node] if e.type == "drop" and e.reason == 133]
        assert len(drops) == bpf.metrics(pin)["drops: policy denied"] - before[node], node
    a, b = (next(p for p in lab.pods if p.id == i) for i in ("node1/a", "node2/b"))
    ids = ebpf_policy.identities(lab)
    denied = [e for e in events["node1"] if e.type == "drop" and e.reason == 133]
    assert denied and all(e.dst_identity == ids["node1/a"] for e in denied)
    assert any(e.src_identity == ids["node2/b"] and e.src.split(":")[0] == str(b.ip) and
               e.dst.split(":")[0] == str(a.ip) for e in denied)
    verdicts = [e for e in events["node1"] if e.type == "policy-verdict" and e.direction == "ingress"]
    assert {e.reason for e in verdicts} >= {133} and any(e.src_identity == ids["node2/b"] for e in verdicts)
    assert not [e for e in events["node2"] if e.type == "drop"]  # b's egress is open: nothing dropped there
    # drained: a second read sees only what came after, one drop for one more denied ping

    assert not pings(ns_of(lab, "node2/b"), a.ip)
    again = [e for e in bpf.events(pins["node1"]) if e.type == "drop"]
    assert len(again) == 1 and again[0].protocol == 1 and again[0].src == str(b.ip)
