"""Calico's IP pool modes on `bgp` labs: the `calico:` section, what the data plane declares in
each mode, the steps Felix's part of the plan holds, BIRD's config, and explain's words."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cni_lab import catalog, cluster, dataplanes, model, names, plan
from cni_lab.dataplanes import bgp
from cni_lab.dataplanes.calico_bird import bird_conf, passive
from cni_lab.errors import LabError
from cni_lab.lesson.explain import calico_paths
from cni_lab.steps import AddBlackhole, AddFdb, AddIpip, AddNeighbour, AddRoute, AddVxlan, StartBird, WaitBgp

NODES = [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}, {"name": "node3", "pods": 1}]
RACKS = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}
RACK_NODES = [{"name": "node1", "segment": "rack1", "pods": ["web"]}, {"name": "node2", "segment": "rack1", "pods": 1},
              {"name": "node3", "segment": "rack2", "pods": ["api"]}]


def lab(calico: dict[str, Any] | None = None, racks: bool = False, **doc: Any) -> cluster.Lab:
    document: dict[str, Any] = {"name": "lab", "dataplane": "bgp", "nodes": RACK_NODES if racks else NODES, **doc}
    if racks:
        document["networking"] = RACKS
    if calico is not None:
        document["calico"] = calico
    return catalog.resolve(model.load_document(document, "s.yaml"))


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(LabError) as e:
        model.load_document({"name": "lab", "nodes": NODES, **document}, "s.yaml")
    return list(e.value.problems)


# ---- the section ------------------------------------------------------------------------------

def test_the_section_takes_calicos_names_and_defaults_to_never() -> None:
    assert lab().scenario.calico == model.CalicoSpec("Never", "Never", "bird")
    spec = lab({"vxlanMode": "CrossSubnet"}).scenario.calico
    assert (spec.encapsulation, spec.cross_subnet, spec.runs_bird) == ("vxlan", True, True)
    spec = lab({"vxlanMode": "Always", "backend": "vxlan"}).scenario.calico
    assert (spec.encapsulation, spec.cross_subnet, spec.runs_bird) == ("vxlan", False, False)
    assert lab({"ipipMode": "Always", "vxlanMode": "Never"}).scenario.calico.encapsulation == "ipip"


@pytest.mark.parametrize("calico, line", [
    ({"vxlanMode": "always"}, "s.yaml: calico.vxlanMode: 'always' is not one of Never, Always, CrossSubnet "
                              "(did you mean 'Always'?)"),
    ({"ipipMode": "Always", "vxlanMode": "CrossSubnet"},
     "s.yaml: calico.ipipMode: ipipMode and vxlanMode cannot both be enabled (Calico's IPPool validation): Always "
     "and CrossSubnet; set one to Never"),
    ({"backend": "vxlan"}, "s.yaml: calico.vxlanMode: Never with backend vxlan: without BGP the only way to another "
                           "node's pods is the VXLAN tunnel; use Always or CrossSubnet"),
    ({"backend": "vxlan", "ipipMode": "Always"}, "s.yaml: calico.ipipMode: Always with backend vxlan: IPIP needs BGP "
                                                 "(calico_backend bird); use vxlanMode instead"),
    ({"backend": "none"}, "s.yaml: calico.backend: 'none' is not one of bird, vxlan"),
    ({"natOutgoing": True}, "s.yaml: calico.natOutgoing: unknown key; known keys: vxlanMode, ipipMode, backend"),
    ("Always", "s.yaml: calico: must be a mapping with keys vxlanMode, ipipMode, backend"),
])
def test_each_bad_value_is_one_line_naming_the_file_and_the_field(calico: Any, line: str) -> None:
    assert problems({"dataplane": "bgp", "calico": calico}) == [line]


def test_other_data_planes_refuse_the_section() -> None:
    assert problems({"dataplane": "vxlan", "calico": {"vxlanMode": "Always"}}) == [
        "s.yaml: calico: only dataplane bgp reads it (Calico's IP pool and backend); this lab's dataplane is vxlan"]


def test_the_section_round_trips_with_the_recorded_lab() -> None:
    from cni_lab import codec

    built = lab({"vxlanMode": "CrossSubnet"}, racks=True)
    assert codec.load(cluster.Lab, codec.encode(built)).scenario.calico == built.scenario.calico


# ---- what the data plane declares --------------------------------------------------------------

@pytest.mark.parametrize("calico, device, mtu, daemons", [
    (None, None, 1500, ("bird",)),
    ({"vxlanMode": "Always"}, "vxlan.calico", 1450, ("bird",)),
    ({"vxlanMode": "CrossSubnet"}, "vxlan.calico", 1450, ("bird",)),
    ({"vxlanMode": "Always", "backend": "vxlan"}, "vxlan.calico", 1450, ()),
    ({"ipipMode": "Always"}, "tunl0", 1480, ("bird",)),
    ({"ipipMode": "CrossSubnet"}, "tunl0", 1480, ("bird",)),
])
def test_capabilities_and_pod_mtu_follow_the_pool(calico: Any, device: str | None, mtu: int,
                                                  daemons: tuple[str, ...]) -> None:
    built = lab(calico)
    caps = built.capabilities
    assert (caps.tunnel.device if caps.tunnel else None) == device
    assert built.pod_mtu == mtu and caps.daemons == daemons
    assert dataplanes.get("bgp").capabilities(built.scenario) == caps
    assert dataplanes.get("bgp").needs(built) == ((("bird", "bird2"), ("birdc", "bird2")) if daemons else ())
    assert all(s.mtu == mtu for s in plan.build(built).steps if type(s).__name__ == "AddVeth" and "cali" in s.ifname)


def test_encapsulation_is_ipv4_only_and_says_so() -> None:
    dual = {"networking": {"clusterCIDR": ["10.244.0.0/16", "fd00:10:244::/56"],
                           "underlay": ["192.168.1.0/24", "fd00:192:168:1::/64"]}}
    plan.build(lab(**dual))  # Never: dual-stack as before
    with pytest.raises(LabError, match=re.escape("s.yaml: calico.vxlanMode: the lab's Calico encapsulates IPv4 only")):
        plan.build(lab({"vxlanMode": "Always"}, **dual))


# ---- the plan ------------------------------------------------------------------------------------

def of(built: cluster.Lab, kind: type, node: str = "node1") -> list[Any]:
    ns = names.node_netns(built.name, node)
    return [s for s in plan.build(built).steps if isinstance(s, kind) and s.netns == ns]


def test_felix_derives_the_vtep_mac_from_the_node_name() -> None:
    assert names.calico_vtep_mac("node1") == "66:" + ":".join(f"{b:02x}" for b in hashlib.sha1(b"node1").digest()[:5])
    assert int(names.calico_vtep_mac("x").split(":")[0], 16) & 3 == 2  # locally administered, unicast


def test_vxlan_always_is_felixs_device_entries_and_routes() -> None:
    built = lab({"vxlanMode": "Always"})
    [vxlan] = of(built, AddVxlan)
    assert vxlan.describe() == (f"ip -n cnilab-lab.node1 link add vxlan.calico address {names.calico_vtep_mac('node1')} "
                                "mtu 1450 type vxlan id 4096 local 192.168.1.2 dev eth0 dstport 4789 nolearning")
    assert [s.describe() for s in of(built, AddBlackhole)] == ["ip -n cnilab-lab.node1 route add blackhole 10.244.0.0/26 proto 80"]
    routes = [s.describe() for s in of(built, AddRoute) if s.dev == "vxlan.calico"]
    assert routes == ["ip -n cnilab-lab.node1 route add 10.244.0.64/26 via 10.244.0.64 dev vxlan.calico onlink mtu 1450",
                      "ip -n cnilab-lab.node1 route add 10.244.0.128/26 via 10.244.0.128 dev vxlan.calico onlink mtu 1450"]
    assert [(n.ip, n.mac) for n in of(built, AddNeighbour)] == [
        (bgp.vtep_address(o), names.calico_vtep_mac(o.name)) for o in built.nodes[1:]]
    assert [(f.mac, str(f.dst)) for f in of(built, AddFdb)] == [
        (names.calico_vtep_mac("node2"), "192.168.1.3"), (names.calico_vtep_mac("node3"), "192.168.1.4")]
    # the VTEP address is the block's first, which no pod has
    assert all(bgp.vtep_address(n) not in [p.ip for p in n.pods] for n in built.nodes)
    # BIRD peers but programs no block: WaitBgp waits for the sessions alone
    [wait] = of(built, WaitBgp)
    assert wait.peers == ("Mesh_192_168_1_3", "Mesh_192_168_1_4") and wait.learned == ()
    assert "if (net ~ 10.244.0.0/16) then { reject; } # VXLAN routes are handled by Felix." in bird_conf(built, built.nodes[0])


def test_cross_subnet_goes_straight_to_same_rack_nodes_and_tunnels_to_the_others() -> None:
    built = lab({"vxlanMode": "CrossSubnet"}, racks=True)
    routes = [s.describe() for s in of(built, AddRoute) if s.dst.prefixlen == 26]
    assert routes == ["ip -n cnilab-lab.node1 route add 10.244.0.64/26 via 192.168.1.3 dev eth0 proto 80 onlink",
                      "ip -n cnilab-lab.node1 route add 10.244.0.128/26 via 10.244.0.128 dev vxlan.calico onlink mtu 1450"]
    # Felix keeps every VTEP's neighbour and fdb entry, whichever way its block goes
    assert len(of(built, AddNeighbour)) == len(of(built, AddFdb)) == 2
    assert calico_paths(built, "node1") == [
        "node2 10.244.0.64/26: direct via eth0 (same subnet 192.168.1.0/24): Felix's route via 192.168.1.3, not "
        "encapsulated (CrossSubnet)",
        "node3 10.244.0.128/26: VXLAN via vxlan.calico (other subnet): to its VTEP 10.244.0.128, UDP 4789 to 192.168.2.2"]


def test_vxlan_without_bgp_has_no_bird_at_all() -> None:
    built = lab({"vxlanMode": "CrossSubnet", "backend": "vxlan"}, racks=True)
    steps = plan.build(built).steps
    assert not any(isinstance(s, (StartBird, WaitBgp)) or "bird" in s.describe() for s in steps)
    assert len([s for s in of(built, AddRoute) if s.dst.prefixlen == 26]) == 2


def test_ipip_is_tunl0_and_felixs_onlink_routes_to_the_node() -> None:
    built = lab({"ipipMode": "Always"})
    assert [s.describe() for s in of(built, AddIpip)] == ["ip -n cnilab-lab.node1 link add tunl0 mtu 1480 type ipip"]
    routes = [s.describe() for s in of(built, AddRoute) if s.dst.prefixlen == 26]
    assert routes == ["ip -n cnilab-lab.node1 route add 10.244.0.64/26 via 192.168.1.3 dev tunl0 proto 80 onlink mtu 1480",
                      "ip -n cnilab-lab.node1 route add 10.244.0.128/26 via 192.168.1.4 dev tunl0 proto 80 onlink mtu 1480"]
    assert not of(built, AddNeighbour) and not of(built, AddFdb)
    assert "# Cluster routes are handled by Felix." in bird_conf(built, built.nodes[0])
    cross = lab({"ipipMode": "CrossSubnet"}, racks=True)
    assert [s.dev for s in of(cross, AddRoute) if s.dst.prefixlen == 26] == ["eth0", "tunl0"]
    assert calico_paths(cross, "node1")[1] == "node3 10.244.0.128/26: IPIP via tunl0 (other subnet): IP in IP to 192.168.2.2"


def test_never_across_racks_builds_and_says_where_it_breaks() -> None:
    built = lab(racks=True)
    steps = plan.build(built).steps  # no longer refused
    assert not [s for s in steps if isinstance(s, (AddVxlan, AddIpip, AddBlackhole))]
    assert not [s for s in of(built, AddRoute) if s.dst.prefixlen == 26]  # BIRD programs them
    [wait] = of(built, WaitBgp)
    assert wait.learned == (built.nodes[1].pod_cidr, built.nodes[2].pod_cidr)
    conf = bird_conf(built, built.nodes[0])
    assert conf.count("  multihop;") == 2 and "gateway recursive;" in conf
    assert "if (net ~ 10.244.0.0/16) then { accept; }" in conf
    paths = calico_paths(built, "node1")
    assert paths[0].startswith("node2 10.244.0.64/26: direct via eth0 (same subnet 192.168.1.0/24): BIRD's route")
    assert "the router has no route to pods: blackholed there" in paths[1]


def test_the_golden_scenarios_are_the_modes_they_say() -> None:
    racks, always = catalog.load("calico-vxlan-racks"), catalog.load("calico-vxlan")
    assert racks.scenario.calico.vxlan_mode == "CrossSubnet" and len(racks.segments) == 2
    assert always.scenario.calico.vxlan_mode == "Always" and len(always.segments) == 1


def test_mesh_sessions_are_passive_by_the_text_order_of_addresses() -> None:
    from ipaddress import IPv4Address as A

    assert passive(A("192.168.1.2"), A("192.168.1.3")) and not passive(A("192.168.1.3"), A("192.168.1.2"))
    assert passive(A("192.168.1.10"), A("192.168.1.9"))  # as Calico compares them: as strings
    built = lab()
    for node in built.nodes:  # exactly one end of each session waits
        for other in built.nodes:
            if other is not node:
                assert passive(node.ip, other.ip) != passive(other.ip, node.ip)


def test_other_labs_have_no_calico_paths() -> None:
    assert calico_paths(catalog.load("two-nodes"), "node1") == []


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 is not installed (setup.sh installs it)")
@pytest.mark.parametrize("calico, racks", [(None, False), (None, True), ({"vxlanMode": "Always"}, False),
                                           ({"vxlanMode": "CrossSubnet"}, True), ({"ipipMode": "CrossSubnet"}, True)])
def test_bird_parses_every_modes_config(calico: Any, racks: bool, tmp_path: Path) -> None:
    built = lab(calico, racks=racks)
    for node in built.nodes:
        conf = tmp_path / f"{node.name}.conf"
        conf.write_text(bird_conf(built, node))
        done = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
