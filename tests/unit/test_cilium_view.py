"""The ebpf data plane's maps as Cilium's CLI prints them (report/cilium_view.py), the lesson's
words for its Services and masquerade, and check's words for a lab whose Services Cilium's
kube-proxy replacement balances: from hand-made map entries, and from the plan's own entries
packed as the kernel holds them and read back by the kernel layer's readers. No kernel needed."""

from __future__ import annotations

import io
import random
import xml.etree.ElementTree as ET
from typing import Any, Iterator

import pytest
from rich.console import Console, RenderableType

from cni_lab import catalog, model, names, plan
from cni_lab.cluster import Lab
from cni_lab.executor import apply
from cni_lab.kernel import bpf
from cni_lab.kernel.readback import Link, NetnsView
from cni_lab.lesson import explain
from cni_lab.probe import pairs
from cni_lab.probe.engine import Outcomes
from cni_lab.probe.matrix import CheckResult, NeighbourUse
from cni_lab.probe.pairs import AllPairs
from cni_lab.probe.service_probes import Answer, ServiceProbe
from cni_lab.report import cilium_view, explain_view, html, json_junit, terminal, topology
from cni_lab.steps import BpfServices

from labs import make_lab


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def lb(address: str, port: int, slot: int, *, count: int = 0, rev: int = 1, flags: int = 0, backend_id: int = 0,
       backend: tuple[str, int] | None = None, protocol: str = "TCP") -> bpf.LbEntry:
    return bpf.LbEntry(address, port, protocol, slot, count, rev, flags, backend_id, backend)


def ct(direction: str, src: str, dst: str, *, protocol: str = "TCP", expires: int = 21700, packets: int = 6,
       size: int = 412, rev: int = 1, backend_id: int = 2, loopback: bool = False, node_port: bool = False) -> bpf.CtEntry:
    return bpf.CtEntry(bpf.Tuple(protocol, direction, src, dst), expires, packets, size, rev, backend_id, loopback, node_port)


# -- the formats -------------------------------------------------------------------------------------

CLUSTER_IP = [lb("10.96.0.2", 80, 0, count=2), lb("10.96.0.2", 80, 1, backend_id=1, backend=("10.244.0.2", 8080)),
              lb("10.96.0.2", 80, 2, backend_id=2)]


def test_lb_list_prints_a_row_per_slot_as_cilium_bpf_lb_list() -> None:
    assert cilium_view.lb_list(CLUSTER_IP) == [
        "SERVICE ADDRESS        BACKEND ADDRESS (REVNAT_ID) (SLOT)",
        "10.96.0.2:80/TCP (0)   0.0.0.0:0 (1) (0) [ClusterIP, non-routable]",
        "10.96.0.2:80/TCP (1)   10.244.0.2:8080/TCP (1) (1)",
        "10.96.0.2:80/TCP (2)   backend 2 not found",
    ]


def test_the_first_column_is_as_wide_as_its_widest_cell_plus_three_as_cilium_tabwriter_pads() -> None:
    rows = cilium_view.lb_list([*CLUSTER_IP, lb("192.168.1.2", 30080, 0, count=0, rev=3, flags=0x42)])
    assert rows[-1] == "192.168.1.2:30080/TCP (0)   0.0.0.0:0 (3) (0) [NodePort]"
    assert {len(r) - len(r.lstrip()) for r in rows} == {0} and {r.index("0.0.0.0:0") for r in rows if "0.0.0.0:0" in r} == {28}
    assert rows[0].startswith("SERVICE ADDRESS" + " " * 13 + "BACKEND")


@pytest.mark.parametrize("flags,words", [
    (0x00, ["ClusterIP", "non-routable"]),  # what the agent writes for a ClusterIP
    (0x42, ["NodePort"]),  # NODEPORT | ROUTABLE
    (0x46, ["NodePort", "Local"]),  # externalTrafficPolicy Local
    (0x02, ["NodePort", "non-routable"]),
])
def test_service_flags_are_worded_as_cilium_service_flags_string(flags: int, words: list[str]) -> None:
    assert cilium_view.service_flags(flags) == words


def test_ct_list_prints_the_fields_the_lab_keeps_in_ciliums_order() -> None:
    lines = cilium_view.ct_list([
        ct("OUT", "10.244.0.3:41234", "10.244.1.2:8080"),
        ct("SVC", "10.244.0.3:41234", "10.96.0.2:80"),
        ct("OUT", "10.244.0.2:40000", "10.244.0.2:8080", protocol="UDP", expires=160, loopback=True, backend_id=1),
        ct("OUT", "198.51.100.10:50000", "10.244.0.2:8080", node_port=True, rev=3, backend_id=1),
    ])
    assert lines == [
        "TCP SVC 10.244.0.3:41234 -> 10.96.0.2:80 expires=21700 Packets=6 Bytes=412 Flags=0x0000 [ ] RevNAT=1 BackendID=2",
        "TCP OUT 10.244.0.3:41234 -> 10.244.1.2:8080 expires=21700 Packets=6 Bytes=412 Flags=0x0000 [ ] RevNAT=1 BackendID=2",
        "TCP OUT 198.51.100.10:50000 -> 10.244.0.2:8080 expires=21700 Packets=6 Bytes=412 Flags=0x0020 [ NodePort ] "
        "RevNAT=3 BackendID=1",
        "UDP OUT 10.244.0.2:40000 -> 10.244.0.2:8080 expires=160 Packets=6 Bytes=412 Flags=0x0008 [ LBLoopback ] "
        "RevNAT=1 BackendID=1",
    ]
    both = cilium_view.ct_list([ct("OUT", "10.244.0.2:1", "10.244.0.2:2", loopback=True, node_port=True)])
    assert "Flags=0x0028 [ LBLoopback NodePort ]" in both[0]


def test_nat_list_says_how_long_ago_an_entry_was_made_or_the_raw_stamp_without_a_clock() -> None:
    out = bpf.NatEntry(bpf.Tuple("TCP", "OUT", "10.244.0.5:40000", "198.51.100.10:443"), "192.168.1.2:40000", 1000)
    back = bpf.NatEntry(bpf.Tuple("TCP", "IN", "198.51.100.10:443", "192.168.1.2:40000"), "10.244.0.5:40000", 1000)
    other = bpf.NatEntry(bpf.Tuple("TCP", "OUT", "10.244.0.4:40000", "198.51.100.10:443"), "192.168.1.2:40001", 1010)
    assert cilium_view.nat_list([back, other, out], 1012) == [  # a connection's two entries together
        "TCP OUT 10.244.0.4:40000 -> 198.51.100.10:443 XLATE_SRC 192.168.1.2:40001 Created=2sec ago NeedsCT=0",
        "TCP OUT 10.244.0.5:40000 -> 198.51.100.10:443 XLATE_SRC 192.168.1.2:40000 Created=12sec ago NeedsCT=0",
        "TCP IN 198.51.100.10:443 -> 192.168.1.2:40000 XLATE_DST 10.244.0.5:40000 Created=12sec ago NeedsCT=0",
    ]
    assert cilium_view.nat_list([out], None) == [
        "TCP OUT 10.244.0.5:40000 -> 198.51.100.10:443 XLATE_SRC 192.168.1.2:40000 Created=? (raw 1000) NeedsCT=0"]
    assert cilium_view.nat_json([out], 1012)[0] == {
        "protocol": "TCP", "direction": "OUT", "source": "10.244.0.5:40000", "destination": "198.51.100.10:443",
        "xlate": "SRC", "to": "192.168.1.2:40000", "created": 1000, "createdSecAgo": 12, "needsCt": 0}


def test_ipcache_list_flags_an_entry_behind_a_tunnel_hastunnel() -> None:
    entries = [bpf.IpcacheEntry("10.244.1.0/24", 2, "192.168.1.3"), bpf.IpcacheEntry("10.244.0.2/32", 257, "0.0.0.0"),
               bpf.IpcacheEntry("192.168.1.2/32", 1, "0.0.0.0")]
    assert cilium_view.ipcache_list(entries) == [
        "IP PREFIX/ADDRESS   IDENTITY",
        "10.244.0.2/32       identity=257 encryptkey=0 tunnelendpoint=0.0.0.0 flags=<none>",
        "10.244.1.0/24       identity=2 encryptkey=0 tunnelendpoint=192.168.1.3 flags=hastunnel",
        "192.168.1.2/32      identity=1 encryptkey=0 tunnelendpoint=0.0.0.0 flags=<none>",
    ]
    assert cilium_view.ipcache_json(entries[:1]) == [
        {"prefix": "10.244.1.0/24", "identity": 2, "encryptKey": 0, "tunnelEndpoint": "192.168.1.3", "flags": ["hastunnel"]}]


def test_the_order_is_the_same_whatever_order_the_map_gave() -> None:
    """Cilium's own order is a Go map's, random: the lab's is sorted."""
    entries = [*CLUSTER_IP, lb("10.96.0.10", 53, 0, count=1, protocol="UDP"), lb("192.168.1.2", 30080, 0, flags=0x42)]
    conns = [ct("OUT", f"10.244.0.{i}:{1000 + i}", "10.244.1.2:8080") for i in range(2, 12)]
    shuffled = random.Random(7)
    for _ in range(5):
        mixed, mixed_ct = entries[:], conns[:]
        shuffled.shuffle(mixed)
        shuffled.shuffle(mixed_ct)
        assert cilium_view.lb_list(mixed) == cilium_view.lb_list(entries)
        assert cilium_view.ct_list(mixed_ct) == cilium_view.ct_list(conns)
    assert [r.split()[0] for r in cilium_view.lb_list(entries)[1:]] == [
        "10.96.0.2:80/TCP", "10.96.0.2:80/TCP", "10.96.0.2:80/TCP", "10.96.0.10:53/UDP", "192.168.1.2:30080/TCP"]


def test_lb_json_names_the_fields_as_cilium_does() -> None:
    assert cilium_view.lb_json(CLUSTER_IP) == [
        {"frontend": "10.96.0.2:80/TCP", "slot": 0, "count": 2, "revNatId": 1, "flags": ["ClusterIP", "non-routable"]},
        {"frontend": "10.96.0.2:80/TCP", "slot": 1, "backendId": 1, "backend": "10.244.0.2:8080/TCP", "revNatId": 1,
         "flags": ["ClusterIP", "non-routable"]},
        {"frontend": "10.96.0.2:80/TCP", "slot": 2, "backendId": 2, "backend": None, "revNatId": 1,
         "flags": ["ClusterIP", "non-routable"]},
    ]


# -- the plan's maps, packed as the kernel holds them and read back ---------------------------------------

def kernel_maps(lab: Lab, node: str, gone: tuple[int, ...] = ()) -> dict[str, dict[bytes, bytes]]:
    """A node's Service maps as sync_services writes them from the plan's BpfServices step, less
    the backends `gone` (what `fault bpf-backend-del` deletes)."""
    (step,) = [s for s in plan.service_steps(lab, lab.services) if isinstance(s, BpfServices) and s.pin.endswith(f"/{node}")]
    maps = bpf._lb_entries(tuple(bpf.Frontend(f.address, f.port, f.protocol, f.rev_nat_index, f.flags, f.backend_ids)
                                 for f in step.frontends),
                           tuple(bpf.Backend(b.id, b.address, b.port, b.protocol) for b in step.backends))
    for backend_id in gone:
        del maps["cilium_lb4_backends_v3"][bpf.BACKEND_KEY.pack(backend_id)]
    return maps


@pytest.fixture
def read_maps(monkeypatch: pytest.MonkeyPatch) -> Any:
    """bpf's readers over in-memory maps: `read_maps(maps)` → (lb_services, reverse_nat) as read."""
    def read(maps: dict[str, dict[bytes, bytes]]) -> tuple[list[bpf.LbEntry], dict[int, tuple[str, int]]]:
        def entries(path: str, key_size: int, value_size: int) -> Iterator[tuple[bytes, bytes]]:
            for key, value in maps[path.rsplit("/", 1)[-1]].items():
                assert (len(key), len(value)) == (key_size, value_size), path
                yield key, value

        monkeypatch.setattr(bpf, "entries", entries)
        return bpf.lb_services("/pin"), bpf.reverse_nat("/pin")

    return read


def facts_of(lab: Lab, node: str, services: list[bpf.LbEntry], reverse: dict[int, tuple[str, int]],
             **more: Any) -> explain.NodeFacts:
    """A node of an ebpf lab as explain reads it: its pods' lxc devices with cil_from_container,
    eth0 with cil_from_netdev, the given Service maps."""
    n = lab.node(node)
    lxcs = {p.name: names.lxc_veth(lab.name, node, p.name) for p in n.pods}
    links = [Link(i, name, "veth", True, 1500, f"aa:00:00:00:00:{i:02x}") for i, name in enumerate(lxcs.values(), 10)]
    view = NetnsView(f"ns-{node}", [Link(2, names.NODE_UPLINK, "veth", True, 1500, "aa:00:00:00:00:01"), *links], [], True)
    attached = [bpf.Attachment(lxc, "ingress", "cil_from_container") for lxc in lxcs.values()]
    attached.append(bpf.Attachment(names.NODE_UPLINK, "ingress", "cil_from_netdev"))
    endpoints = [bpf.Endpoint(str(p.ip), 10 + i, "aa:bb:00:00:00:01", "aa:bb:00:00:00:02") for i, p in enumerate(n.pods)]
    facts = explain.BpfFacts(names.bpf_node_dir(lab.name, node), attached, endpoints, [], {}, "", services,
                             reverse_nat=reverse, **more)
    pods = [explain.PodFacts(p.name, f"ns-{p.name}", NetnsView(f"ns-{p.name}", [], [], False), lxcs[p.name]) for p in n.pods]
    return explain.NodeFacts(node, f"ns-{node}", view, pods, "u-" + node, bpf=facts)


def ebpf_svc() -> Lab:
    """The shipped ebpf-svc lab without its cluster DNS: these tests hold the numbering of its own two
    Services (kube-dns's UDP and TCP 53 frontends are test_dns_records.py's)."""
    shipped = catalog.load("ebpf-svc").scenario
    return catalog.resolve(model.load_document({**shipped.document, "dns": False}, shipped.source))


def test_the_plans_maps_read_back_print_as_cilium_bpf_lb_list(read_maps: Any) -> None:
    lab = ebpf_svc()
    services, reverse = read_maps(kernel_maps(lab, "node1"))
    assert cilium_view.lb_list(services) == [
        "SERVICE ADDRESS             BACKEND ADDRESS (REVNAT_ID) (SLOT)",
        "10.96.0.2:80/TCP (0)        0.0.0.0:0 (1) (0) [ClusterIP, non-routable]",
        "10.96.0.2:80/TCP (1)        10.244.0.2:8080/TCP (1) (1)",
        "10.96.0.2:80/TCP (2)        10.244.1.2:8080/TCP (1) (2)",
        "10.96.0.3:81/UDP (0)        0.0.0.0:0 (2) (0) [ClusterIP, non-routable]",
        "10.96.0.3:81/UDP (1)        10.244.1.3:8080/UDP (2) (1)",
        "192.168.1.2:30080/TCP (0)   0.0.0.0:0 (3) (0) [NodePort]",
        "192.168.1.2:30080/TCP (1)   10.244.0.2:8080/TCP (3) (1)",
        "192.168.1.2:30080/TCP (2)   10.244.1.2:8080/TCP (3) (2)",
        "192.168.1.2:30081/UDP (0)   0.0.0.0:0 (4) (0) [NodePort, Local]",  # node1 has no solo pod: count 0
    ]
    assert reverse == {1: ("10.96.0.2", 80), 2: ("10.96.0.3", 81), 3: ("192.168.1.2", 30080), 4: ("192.168.1.2", 30081)}


def test_the_lesson_says_how_each_frontend_is_balanced_and_where_masquerade_happens(read_maps: Any) -> None:
    lab = ebpf_svc()
    story = explain.datapath_story(lab, facts_of(lab, "node1", *read_maps(kernel_maps(lab, "node1"))))
    assert ("a pod's packet to ClusterIP 10.96.0.2:80/TCP (default/web) is DNATed by cil_from_container to one of 2 "
            "backends chosen at random (cilium_lb4_services_v2 slots 1-2), its connection remembered in cilium_ct4_global; "
            "replies get 10.96.0.2:80 back from cilium_lb4_reverse_nat on delivery") in story
    assert ("a pod's packet to ClusterIP 10.96.0.3:81/UDP (default/solo) is DNATed by cil_from_container to its one "
            "backend (cilium_lb4_services_v2 slot 1), its connection remembered in cilium_ct_any4_global; replies get "
            "10.96.0.3:81 back from cilium_lb4_reverse_nat on delivery") in story
    assert ("a packet from outside to NodePort 192.168.1.2:30080/TCP (default/web) on this node's address is DNATed by "
            "cil_from_netdev to one of 2 backends chosen at random (slots 1-2): one on this node gets it with the client's "
            "address kept, one on another node gets it SNATed to the router IP 10.244.0.1, its reply coming back through "
            "the tunnel (cilium_snat_v4_external)") in story
    assert any(line.startswith("a packet from outside to NodePort 192.168.1.2:30081/UDP (default/solo, "
                               "externalTrafficPolicy Local) on this node's address finds no backend on this node (count 0): "
                               "cil_from_netdev drops it") for line in story)
    assert any("lands on itself sees it come from 169.254.42.1" in line for line in story)
    assert ("a pod's packet to the world (an address cilium_ipcache_v2 does not know, outside the native-routing CIDR "
            "10.244.0.0/16) leaves with this node's IP 192.168.1.2 and a port of the node's (32768-65535): "
            "cil_from_container masquerades it, the mapping both ways in cilium_snat_v4_external, and cil_from_netdev "
            "turns the replies back") in story
    assert not any("lacks" in line for line in story)
    node2 = explain.datapath_story(lab, facts_of(lab, "node2", *read_maps(kernel_maps(lab, "node2"))))
    assert any("NodePort 192.168.1.3:30081/UDP (default/solo, externalTrafficPolicy Local) on this node's address is "
               "DNATed by cil_from_netdev to its one backend on this node (slot 1), the client's address kept" in line
               for line in node2)


def test_a_slot_whose_backend_is_gone_is_named(read_maps: Any) -> None:
    """`fault bpf-backend-del node1 node2/web2`: node1's backends map loses backend 2, its slots stay."""
    lab = ebpf_svc()
    services, reverse = read_maps(kernel_maps(lab, "node1", gone=(2,)))
    assert "10.96.0.2:80/TCP (2)        backend 2 not found" in cilium_view.lb_list(services)
    story = explain.datapath_story(lab, facts_of(lab, "node1", services, reverse))
    assert [line for line in story if "lacks" in line] == [
        "slot 2 of 10.96.0.2:80/TCP names backend 2, which cilium_lb4_backends_v3 lacks: connections that land there "
        "are dropped",
        "slot 2 of 192.168.1.2:30080/TCP names backend 2, which cilium_lb4_backends_v3 lacks: connections that land "
        "there are dropped"]


def test_native_routing_snats_a_nodeport_to_the_nodes_ip_and_no_outside_means_no_masquerade(read_maps: Any) -> None:
    doc_services = [{"name": "web", "type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}]
    nodes = [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}]},
             {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}]
    lab = make_lab(nodes, dataplane="ebpf", ebpf={"routing": "native"}, services=doc_services)
    story = explain.datapath_story(lab, facts_of(lab, "node1", *read_maps(kernel_maps(lab, "node1"))))
    assert any("SNATed to the node's IP 192.168.1.2, its reply coming back here" in line for line in story), story
    assert not any("masquerades" in line for line in story)


def test_explain_shows_the_maps_as_ciliums_commands_and_in_json(read_maps: Any) -> None:
    lab = ebpf_svc()
    services, reverse = read_maps(kernel_maps(lab, "node1", gone=(2,)))
    nat = [bpf.NatEntry(bpf.Tuple("TCP", "OUT", "10.244.0.3:40000", "198.51.100.10:80"), "192.168.1.2:40000", 90)]
    conns = [ct("SVC", "10.244.0.3:41234", "10.96.0.2:80", backend_id=1)]
    nf = facts_of(lab, "node1", services, reverse, conntrack=conns, nat=nat, now=100)
    assert nf.bpf is not None
    nf.bpf.ipcache = [bpf.IpcacheEntry("10.244.1.0/24", 2, "192.168.1.3")]
    shown = text(explain_view.view(lab, [nf]))
    for title in ("cilium bpf lb list", "cilium bpf ct list global", "cilium bpf nat list", "cilium bpf ipcache list"):
        assert title in shown
    for line in [*cilium_view.lb_list(services), *cilium_view.ct_list(conns), *cilium_view.nat_list(nat, 100),
                 *cilium_view.ipcache_list(nf.bpf.ipcache)]:
        assert line in shown, line
    assert "slot 2 of 10.96.0.2:80/TCP names backend 2" in shown
    doc = explain_view.to_json(lab, [nf])["nodes"][0]["bpf"]
    assert doc["services"] == cilium_view.lb_json(services) and doc["services"][2]["backend"] is None
    assert doc["conntrack"] == [{"protocol": "TCP", "direction": "SVC", "source": "10.244.0.3:41234",
                                 "destination": "10.96.0.2:80", "expires": 21700, "packets": 6, "bytes": 412,
                                 "flags": [], "revNat": 1, "backendId": 1}]
    assert doc["nat"][0]["createdSecAgo"] == 10
    assert doc["ipcache"] == [{"prefix": "10.244.1.0/24", "identity": 2, "encryptKey": 0, "tunnelEndpoint": "192.168.1.3",
                               "flags": ["hastunnel"]}]


def test_explain_says_so_when_no_connection_was_translated_yet(read_maps: Any) -> None:
    lab = ebpf_svc()
    shown = text(explain_view.view(lab, [facts_of(lab, "node1", *read_maps(kernel_maps(lab, "node1")))]))
    assert "cilium bpf ct list global" in shown and "no translated connection yet" in shown
    assert "cilium bpf nat list" not in shown


def test_a_bpf_services_step_is_a_command_per_map_entry() -> None:
    lab = ebpf_svc()
    step = next(s for s in plan.service_steps(lab, lab.services) if isinstance(s, BpfServices))
    lines = step.describe().splitlines()
    pin = names.bpf_node_dir(lab.name, "node1")
    assert f"bpftool map update pinned {pin}/cilium_lb4_backends_v3 key <backend 1> value <10.244.0.2:8080/TCP>  # node1/web1" in lines
    assert f"bpftool map update pinned {pin}/cilium_lb4_reverse_nat key <1> value <10.96.0.2:80>" in lines
    assert (f"bpftool map update pinned {pin}/cilium_lb4_services_v2 key <10.96.0.2:80/TCP slot 0> value <count 2, rev_nat 1, "
            "flags 0x0>  # default/web (ClusterIP)") in lines
    assert f"bpftool map update pinned {pin}/cilium_lb4_services_v2 key <10.96.0.2:80/TCP slot 2> value <backend 2, rev_nat 1, flags 0x0>" in lines
    slots = sum(1 + len(f.backend_ids) for f in step.frontends)
    assert len(lines) == len(step.backends) + len(step.frontends) + slots
    # `up` still says a failing step in one line
    error = apply._failed(step, OSError(1, "Operation not permitted"))
    assert "\n" not in str(error) and str(error).startswith(lines[0]) and f"and {len(lines) - 1} more" in str(error)


# -- check's words and the pictures ------------------------------------------------------------------------

def service_result(lab: Lab) -> CheckResult:
    """One ClusterIP probe and one Cluster NodePort probe of lab's web Service, both as expected."""
    endpoints = pairs.endpoints(lab)
    use = NeighbourUse("arp", 1024, True, 2, 511, 514, 12, 1, 14, 0, 0)
    probes = (ServiceProbe("node1/client", "default/web", 80, (Answer("node2/web2", "10.244.0.3", 8080),), 1, target_port=8080),
              ServiceProbe("outside", "default/web", 30080, (Answer("node1/web1", "198.51.100.10", 8080),), 1,
                           via="node1", policy="Cluster", target_port=8080))
    return CheckResult(lab, endpoints, Outcomes(AllPairs(len(endpoints))), 0.1, use, services=probes)


SERVICES_DOC = [{"name": "web", "type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}]
NODES = [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
         {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}]


def lab_on(dataplane: str) -> Lab:
    return make_lab(NODES, name="svc", dataplane=dataplane, services=SERVICES_DOC, outside={})


@pytest.mark.parametrize("dataplane,words,not_words", [
    ("host-gw", ["hairpin masqueraded", "nodes as kube-proxy does it", "masqueraded to the node dialled"], ["Cilium"]),
    ("ebpf", ["hairpin seen from 169.254.42.1", "nodes as Cilium's kube-proxy replacement does it",
              "SNATed to the node dialled unless the endpoint is on it"], ["hairpin masqueraded", "as kube-proxy does it"]),
])
def test_check_says_services_in_the_words_of_what_balances_them(dataplane: str, words: list[str], not_words: list[str]) -> None:
    result = service_result(lab_on(dataplane))
    shown = "".join(text(part) for part in terminal.services_view(result)).replace("\n", " ")
    shown = " ".join(shown.split())
    assert all(w in shown for w in words), shown
    assert not any(w in shown for w in not_words), shown
    junit = ET.fromstring(json_junit.check_junit(result))
    outputs = [c.findtext("system-out") or "" for c in junit.iter("testcase") if "default/web" in (c.get("name") or "")]
    assert outputs and all(o.endswith(terminal.service_words(result.lab).standard) for o in outputs), outputs


def test_every_way_of_balancing_services_has_its_words() -> None:
    from typing import get_args, get_type_hints

    from cni_lab.dataplanes.capabilities import Capabilities

    hint = get_type_hints(Capabilities)["services"]
    literal = next(a for a in get_args(hint) if get_args(a) and all(isinstance(v, str) for v in get_args(a)))
    assert set(terminal.SERVICE_WORDS) == set(get_args(literal))


def test_an_ebpf_labs_services_are_drawn_as_any_other_data_planes() -> None:
    ebpf, hostgw = lab_on("ebpf"), lab_on("host-gw")
    rows = [topology._services(lab) for lab in (ebpf, hostgw)]
    assert rows[0] == rows[1] == [("Service default/web · ClusterIP 10.96.0.2 · 80/TCP NodePort :30080 (Cluster) → "
                                   "node1/web1, node2/web2", ["node1/web1", "node2/web2"]),
                                  # the lab's cluster DNS, drawn as any Service: kube-dns over the DNS pod
                                  ("Service kube-system/kube-dns · ClusterIP 10.96.0.10 · 53/UDP, 53/TCP → "
                                   "node1/kube-system/coredns", ["node1/kube-system/coredns"])]
    svg = topology.svg(topology.of_plan(plan.build(ebpf)))
    assert rows[0][0][0] in svg and "Services: every node's BPF maps (Cilium's kube-proxy replacement) DNAT them" in svg
    assert "Services: kube-proxy's table on every node" in topology.svg(topology.of_plan(plan.build(hostgw)))
    for graph in (topology.dot, topology.mermaid):
        assert rows[0][0][0] in graph(topology.of_plan(plan.build(ebpf)))


def test_explain_reads_no_kube_proxy_table_where_bpf_balances_services(monkeypatch: pytest.MonkeyPatch) -> None:
    from cni_lab.kernel import edit

    asked: list[tuple[str, ...]] = []

    def nft_text(ns: str, *args: str) -> str:
        asked.append(args)
        raise OSError(2, "No such file or directory")

    monkeypatch.setattr(edit, "nft_text", nft_text)
    facts = explain.read_nat(lab_on("ebpf"), "node1")
    assert facts is not None and facts.services == [] and facts.masquerade_table is None
    assert not any("kube-proxy" in a for args in asked for a in args)
    hostgw = explain.read_nat(lab_on("host-gw"), "node1")
    assert hostgw is not None and hostgw.services == ["kube-proxy's table is missing on this node"]



def test_the_html_report_shows_an_ebpf_nodes_service_slots_where_kube_proxys_rules_would_be(read_maps: Any) -> None:
    lab = ebpf_svc()
    services, reverse = read_maps(kernel_maps(lab, "node1", gone=(2,)))
    facts = explain_view.to_json(lab, [facts_of(lab, "node1", services, reverse)])
    facts["nodes"][0]["nat"] = {"masqueradeTable": None, "masquerade": [], "services": []}  # nothing in netfilter
    page = html.page(lab.name, "<svg/>", None, facts)
    assert "<code>10.96.0.2:80/TCP (0)</code></td><td>BPF Service frontend [ClusterIP, non-routable]: 2 backends" in page
    assert "<code>10.96.0.2:80/TCP (1)</code></td><td>DNAT to 10.244.0.2:8080/TCP" in page
    assert "<code>10.96.0.2:80/TCP (2)</code></td><td>backend 2 not found: dropped" in page
    assert "kube-proxy" not in page
    facts["nodes"][0]["bpf"]["services"] = []
    assert '<table class="routes nat">' not in html.page(lab.name, "<svg/>", None, facts)  # no empty table
