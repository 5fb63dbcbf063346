"""rulesets/masquerade.py: egress masquerade in the shapes flannel and Calico leave on a node,
plus the lab's one addition (the underlay returns), and each rule in the lesson's words."""

from __future__ import annotations

import pytest

from cni_lab.errors import LabError
from cni_lab.rulesets import masquerade, nft

from labs import make_lab

TWO = [{"name": "node1", "pods": 1}, {"name": "node2", "pods": 1}]
UNDERLAY_RETURN = 'ip daddr 192.168.1.0/24 return comment "cni-lab: nodes keep seeing pod addresses"'


def flannel_e2e_postrtg(pod_cidr: str, cluster_cidr: str) -> list[str]:
    """The postrtg chain flannel's e2e suite expects on a node (its expectedNftPostrouting)."""
    return ["meta mark 0x00004000 return",
            f"ip saddr {pod_cidr} ip daddr {cluster_cidr} return",
            f"ip saddr {cluster_cidr} ip daddr {pod_cidr} return",
            f"ip saddr != {pod_cidr} ip daddr {cluster_cidr} return",
            f"ip saddr {cluster_cidr} ip daddr != 224.0.0.0/4 masquerade fully-random",
            f"ip saddr != {cluster_cidr} ip daddr {cluster_cidr} masquerade fully-random"]


@pytest.mark.parametrize("dataplane", ["host-gw", "vxlan", "bridge", "fabric"])
def test_flannel_data_planes_get_flannels_table_and_chains(dataplane: str) -> None:
    lab = make_lab(TWO, dataplane=dataplane, outside={})
    table, text = masquerade.rules(lab, lab.nodes[1])
    assert table == "flannel-ipv4"
    assert text.startswith("table ip flannel-ipv4 {}\ndelete table ip flannel-ipv4\ntable ip flannel-ipv4 {\n")
    assert "  chain postrtg {\n" in text and "    type nat hook postrouting priority srcnat; policy accept;\n" in text
    assert "  chain forward {\n" in text and "    type filter hook forward priority filter; policy accept;\n" in text
    chains = nft.parse_chains(text)
    assert list(chains) == ["postrtg", "forward"]
    # flannel's own rules, in flannel's order, with the lab's underlay return right after kube-proxy's mark
    assert chains["postrtg"] == [*flannel_e2e_postrtg("10.244.1.0/24", "10.244.0.0/16")[:1], UNDERLAY_RETURN,
                                 *flannel_e2e_postrtg("10.244.1.0/24", "10.244.0.0/16")[1:]]
    assert chains["forward"] == ["ip saddr 10.244.0.0/16 accept", "ip daddr 10.244.0.0/16 accept"]


def test_each_node_masquerades_around_its_own_pod_cidr() -> None:
    lab = make_lab(TWO, dataplane="host-gw", networking={"clusterCIDR": "10.42.0.0/16"}, outside={})
    for node, cidr in zip(lab.nodes, ("10.42.0.0/24", "10.42.1.0/24")):
        rules = [r for r in nft.parse_chains(masquerade.flannel(lab, node))["postrtg"] if r != UNDERLAY_RETURN]
        assert rules == flannel_e2e_postrtg(cidr, "10.42.0.0/16")


def test_calico_gets_its_pool_sets_and_one_nat_outgoing_rule() -> None:
    lab = make_lab(TWO, dataplane="bgp", outside={})
    table, text = masquerade.rules(lab, lab.nodes[0])
    assert table == "calico"
    assert text.startswith("table ip calico {}\ndelete table ip calico\ntable ip calico {\n")
    for name in ("cali40masq-ipam-pools", "cali40all-ipam-pools"):  # Felix's IP sets of the pools
        assert f"  set {name} {{\n    type ipv4_addr; flags interval;\n    elements = {{ 10.244.0.0/16 }}\n  }}\n" in text
    assert nft.parse_chains(text) == {
        "nat-postrouting": ["jump cali-nat-outgoing"],
        "cali-nat-outgoing": [UNDERLAY_RETURN,
                              "ip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools masquerade fully-random"],
    }
    assert "flannel" not in text


def test_every_underlay_segment_returns_before_any_masquerade() -> None:
    racks = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}
    lab = make_lab([{"name": "a", "segment": "rack1", "pods": 1}, {"name": "b", "segment": "rack2", "pods": 1}],
                   dataplane="vxlan", networking=racks, outside={})
    assert masquerade.underlay_returns(lab) == [
        '    ip daddr 192.168.1.0/24 return comment "cni-lab: nodes keep seeing pod addresses"',
        '    ip daddr 192.168.2.0/24 return comment "cni-lab: nodes keep seeing pod addresses"']
    for text in (masquerade.flannel(lab, lab.nodes[0]), masquerade.calico(lab, lab.nodes[0])):
        rules = [r for chain in nft.parse_chains(text).values() for r in chain]
        first_masquerade = next(i for i, r in enumerate(rules) if "masquerade" in r)
        returns = [i for i, r in enumerate(rules) if r.startswith("ip daddr 192.168.") and " return" in r]
        assert len(returns) == 2 and max(returns) < first_masquerade


def test_labs_that_cannot_masquerade_in_nftables_are_refused_with_the_reason() -> None:
    ebpf = make_lab(TWO, dataplane="ebpf")
    with pytest.raises(LabError, match="dataplane ebpf masquerades in its BPF programs, not in nftables"):
        masquerade.rules(ebpf, ebpf.nodes[0])
    dual = make_lab(TWO, networking={"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"],
                                     "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]})
    with pytest.raises(LabError, match="s.yaml: outside: IPv4-only labs for now"):
        masquerade.rules(dual, dual.nodes[0])


def test_each_flannel_rule_means_what_it_does() -> None:
    lab = make_lab(TWO, dataplane="host-gw", outside={})
    node = lab.nodes[1]
    chains = nft.parse_chains(masquerade.flannel(lab, node))
    said = {rule: masquerade.meaning(lab, node, rule) for rules in chains.values() for rule in rules}
    assert said == {
        "meta mark 0x00004000 return": "marked by kube-proxy: its own masquerade handles it",
        UNDERLAY_RETURN: "from anywhere to the nodes' network (192.168.1.0/24): unchanged",
        "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return":
            "from this node's pods (10.244.1.0/24) to a pod (10.244.0.0/16): unchanged",
        "ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return":
            "from a pod (10.244.0.0/16) to this node's pods (10.244.1.0/24): unchanged",
        "ip saddr != 10.244.1.0/24 ip daddr 10.244.0.0/16 return":
            "from anything but this node's pods (10.244.1.0/24) to a pod (10.244.0.0/16): unchanged",
        "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random":
            "from a pod (10.244.0.0/16) to anything but multicast: leaves with the node's address (masqueraded)",
        "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random":
            "from anything but a pod (10.244.0.0/16) to a pod (10.244.0.0/16): leaves with the node's address (masqueraded)",
        "ip saddr 10.244.0.0/16 accept": "from a pod (10.244.0.0/16) to anywhere: forwarded",
        "ip daddr 10.244.0.0/16 accept": "from anywhere to a pod (10.244.0.0/16): forwarded",
    }
    # nft may list kube-proxy's mark without its leading zeros
    assert masquerade.meaning(lab, node, "meta mark 0x4000 return") == "marked by kube-proxy: its own masquerade handles it"


def test_each_calico_rule_means_what_it_does() -> None:
    lab = make_lab(TWO, dataplane="bgp", outside={})
    node = lab.nodes[0]
    assert masquerade.meaning(lab, node, "jump cali-nat-outgoing") == \
        "every packet leaving the node goes through cali-nat-outgoing"
    assert masquerade.meaning(lab, node, "ip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools "
                                         "masquerade fully-random") == \
        "from a natOutgoing pool to anything but any IP pool: leaves with the node's address (masqueraded)"
