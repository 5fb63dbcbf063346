"""The `ebpf` data plane's security identities and ipcache (cni_lab/dataplanes/ebpf_policy.py):
every node address its own identity, as Cilium with policy-cidr-match-mode: nodes gives them, and
the plan writing the ipcache the module computes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any, Sequence

from cni_lab.cluster import Lab
from cni_lab.dataplanes import ebpf, ebpf_policy as ep
from cni_lab.policy import cases as policy_cases

from labs import make_lab, network_policy as np, pod


def model_lab(mode: str, policies: Sequence[dict[str, Any]] = ()) -> Lab:
    """The e2e model (scenarios/netpol.yaml) on dataplane ebpf."""
    return make_lab([{"name": f"node{i + 1}", "pods": [{**pod(p, n, policy_cases.POD_LABELS[p]),
                                                        "ports": list(policy_cases.CONTAINER_PORTS)}
                                                       for n in policy_cases.NAMESPACES]}
                     for i, p in enumerate(policy_cases.PODS)],
                    name="np", dataplane="ebpf", ebpf={"routing": mode}, policies=list(policies),
                    namespaces={n: {"labels": policy_cases.NAMESPACE_LABELS[n]} for n in policy_cases.NAMESPACES})


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


def test_the_plan_writes_the_ipcache_the_simulator_reads() -> None:
    from cni_lab.steps import BpfIpcache

    lab = model_lab("tunnel")
    steps = [s for s in ebpf.Ebpf().cluster_steps(lab) if isinstance(s, BpfIpcache)]
    for node in lab.nodes:
        mine = [(s.prefix, s.identity, s.tunnel_endpoint) for s in steps if s.netns.endswith(f".{node.name}")]
        assert mine == [tuple(e) for e in ep.ipcache(lab, node)]
    assert ebpf.identities is ep.identities  # kept importable where it was
