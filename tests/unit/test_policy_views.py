"""An ebpf lab's NetworkPolicy as its nodes hold it, in Cilium's words: each endpoint's identity
and labels and its policy map as `cilium bpf policy get` prints it (report/cilium_view.py, `explain`
and `explain --json`), and `trace`'s words for the lookups the programs make on a packet's way
(lesson/policy_lookup.py). From hand-made map rows, and from a lab built without root whose maps
are the plan's own, read back through the kernel layer's readers over in-memory maps. No kernel."""

from __future__ import annotations

import io
from ipaddress import IPv4Address, IPv4Interface, ip_address
from typing import Any, Iterator

import pytest
from rich.console import Console, RenderableType

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.dataplanes import ebpf, ebpf_policy
from cni_lab.kernel import bpf, readback
from cni_lab.kernel.bpf import PolicyRow
from cni_lab.kernel.readback import Decision, Link, NetnsView, Route
from cni_lab.lesson import explain, policy_lookup, trace
from cni_lab.lesson.policy_lookup import Judged
from cni_lab.report import cilium_view, explain_view, trace_view

from labs import make_lab, network_policy as np, pod

# x/a takes only x/b, and only on TCP 80
A_FROM_B_ON_80 = np("a-from-b", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                              "ports": [{"protocol": "TCP", "port": 80}]}]})
A, B, C = 256, 257, 258  # the pods' identities: label sets in sorted order, from 256
LABELS_B = ("k8s:io.kubernetes.pod.namespace=x", "k8s:pod=b")


def policy_lab(**keys: Any) -> Lab:
    """node1 holds x/a and x/b, node2 x/c; x/a takes only x/b on TCP 80, unless `policies` says otherwise."""
    return make_lab([{"name": "node1", "pods": [pod("a", "x", {"pod": "a"}), pod("b", "x", {"pod": "b"})]},
                     {"name": "node2", "pods": [pod("c", "x", {"pod": "c"})]}],
                    name="pv", dataplane="ebpf", namespaces={"x": {}}, **{"policies": [A_FROM_B_ON_80], **keys})


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def row(egress: bool, identity: int, protocol: int = 0, port: int = 0, prefix: int = 0, deny: bool = False) -> PolicyRow:
    return PolicyRow(egress, identity, protocol, port, prefix, deny)


# -- the formats -------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol,port,prefix,said", [
    (0, 0, 0, "ANY"), (6, 0, 8, "TCP"), (17, 0, 8, "UDP"), (132, 0, 8, "SCTP"), (1, 0, 8, "ICMP"), (58, 0, 8, "ICMPv6"),
    (6, 80, 24, "80/TCP"), (6, 8080, 20, "8080-8095/TCP"), (17, 32768, 9, "32768-65535/UDP"),
    (99, 0, 8, "99"), (6, 0, 4, "<INVALID PREFIX LENGTH: 4>"),
])
def test_port_proto_is_worded_as_policy_key_port_proto_string(protocol: int, port: int, prefix: int, said: str) -> None:
    assert ebpf_policy.port_proto(protocol, port, prefix) == said


LABELS = {0: ("reserved:unknown",), 1: ("reserved:host",), B: LABELS_B[::-1]}
A_MAP = [row(False, 1), row(False, B, 6, 80, 24), row(True, 0)]  # x/a's map


def test_policy_get_prints_the_map_as_cilium_bpf_policy_get() -> None:
    rows = [row(True, 0), row(False, B, 6, 80, 24), row(False, 1), row(False, 9999, 6, 8080, 20),
            row(True, 1, deny=True)]
    assert cilium_view.policy_get(rows, LABELS) == [
        "POLICY   DIRECTION   LABELS (source:key[=value])         PORT/PROTO      PROXY PORT   AUTH TYPE   BYTES   PACKETS   PREFIX",
        "Deny     Egress      reserved:host                       ANY             NONE         disabled    -       -         0",
        "Allow    Ingress     reserved:host                       ANY             NONE         disabled    -       -         0",
        "Allow    Ingress     k8s:io.kubernetes.pod.namespace=x   80/TCP          NONE         disabled    -       -         24",
        "                     k8s:pod=b",  # an identity's other labels on lines of their own, sorted
        "Allow    Ingress     9999                                8080-8095/TCP   NONE         disabled    -       -         20",
        "Allow    Egress      ANY                                 ANY             NONE         disabled    -       -         0",
    ]


def test_an_empty_map_says_so_as_cilium_does_and_any_needs_no_labels() -> None:
    assert cilium_view.policy_get([], {}) == [
        "POLICY   DIRECTION   LABELS (source:key[=value])   PORT/PROTO   PROXY PORT   AUTH TYPE   BYTES   PACKETS   PREFIX",
        "Policy stats empty. Perhaps the policy enforcement is disabled?"]
    assert cilium_view.policy_get([row(False, 0)], {})[1].split()[:3] == ["Allow", "Ingress", "ANY"]


def test_policy_json_and_the_identity_list() -> None:
    assert cilium_view.policy_json([row(True, 0), row(False, B, 6, 80, 24)], LABELS) == [
        {"policy": "Allow", "direction": "Ingress", "identity": B, "labels": list(LABELS_B), "portProto": "80/TCP",
         "prefix": 24},
        {"policy": "Allow", "direction": "Egress", "identity": 0, "labels": ["ANY"], "portProto": "ANY", "prefix": 0}]
    assert cilium_view.identity_list(LABELS) == [
        "ID    LABELS", "1     reserved:host", "257   k8s:io.kubernetes.pod.namespace=x", "      k8s:pod=b"]
    assert cilium_view.identity_json(LABELS) == [{"id": 1, "labels": ["reserved:host"]},
                                                 {"id": B, "labels": list(LABELS_B)}]


def test_each_identity_has_the_labels_it_is_derived_from() -> None:
    lab = policy_lab(policies=[A_FROM_B_ON_80, np("to-world", {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})])
    labels = ebpf_policy.labels_by_identity(lab)
    assert ebpf_policy.identities(lab) == {"node1/x/a": A, "node1/x/b": B, "node2/x/c": C}
    assert labels[B] == LABELS_B and labels[C] == ("k8s:io.kubernetes.pod.namespace=x", "k8s:pod=c")
    assert (labels[0], labels[1], labels[2], labels[6]) == (
        ("reserved:unknown",), ("reserved:host",), ("reserved:world",), ("reserved:remote-node",))
    nodes = ebpf_policy.node_identities(lab)
    assert labels[nodes[IPv4Address("192.168.1.3")]] == ("cidr:192.168.1.3/32", "reserved:remote-node")
    assert labels[nodes[IPv4Address("10.244.1.1")]] == ("cidr:10.244.1.1/32", "reserved:remote-node")
    assert labels[ebpf_policy.LOCAL_SCOPE | 1] == ("cidr:10.0.0.0/8", "reserved:world")


# -- a lab whose maps are the plan's, read back through the kernel layer's readers --------------------

def policy_maps(lab: Lab, node: str) -> dict[str, list[tuple[bytes, bytes]]]:
    """Each endpoint's policy map as sync_policy writes it from the plan."""
    n = lab.node(node)
    return {bpf.policy_map_name(ebpf.endpoint_id(n, p)): [
        (bpf._policy_key(*e), bpf.POLICY_ENTRY.pack(b"\0\0", e[4] << 3, 0, 0, 0)) for e in ebpf.policy_rows(lab, n, p)]
        for p in n.pods}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """policy_lab() as the kernel would have it: each node's devices, programs and maps (the
    plan's ipcache, endpoints and policy maps, the latter read with bpf.policy), each pod routed
    through its node's router IP; `ip route get` answered as the kernel would."""
    lab = policy_lab()
    views: dict[str, NetnsView] = {}
    node_facts: dict[str, explain.BpfFacts] = {}
    pods: dict[str, tuple[Any, Any]] = {}
    maps: dict[str, list[tuple[bytes, bytes]]] = {}
    for n in lab.nodes:
        node_ns = names.node_netns(lab.name, n.name)
        links = [Link(2, names.NODE_UPLINK, "veth", True, 1500, "aa:00:00:00:00:01", addresses=[IPv4Interface(f"{n.ip}/24")]),
                 Link(3, names.CILIUM_HOST, "veth", True, 1500, "aa:00:00:00:00:02",
                      addresses=[IPv4Interface(f"{n.gateway}/32")]),
                 Link(4, names.CILIUM_VXLAN, "vxlan", True, 1500, "aa:00:00:00:00:03")]
        attached = [bpf.Attachment(names.NODE_UPLINK, "ingress", ebpf.FROM_NETDEV),
                    bpf.Attachment(names.CILIUM_VXLAN, "ingress", ebpf.FROM_OVERLAY)]
        endpoints = []
        for index, p in enumerate(n.pods, 10):
            pod_ns, lxc = names.pod_netns(lab.name, n.name, p.name), names.lxc_veth(lab.name, n.name, p.name)
            links.append(Link(index, lxc, "veth", True, 1500, "aa:00:00:00:01:00", peer_netns=pod_ns, peer_index=2))
            attached.append(bpf.Attachment(lxc, "ingress", ebpf.FROM_CONTAINER))
            endpoints.append(bpf.Endpoint(str(p.ip), index, "aa:00:00:00:02:00", "aa:00:00:00:01:00",
                                          ebpf.endpoint_id(n, p), ebpf.identities(lab)[p.id]))
            eth0 = Link(2, names.POD_IFNAME, "veth", True, 1500, "aa:00:00:00:02:00", peer_netns=node_ns,
                        peer_index=index, addresses=[IPv4Interface(f"{p.ip}/32")])
            views[pod_ns] = NetnsView(pod_ns, [eth0], [Route("default", "eth0", str(n.gateway), "global", "boot",
                                                             "unicast", None, False)], False)
            pods[pod_ns] = (p, n)
        views[node_ns] = NetnsView(node_ns, links, [], True)
        ipcache = [bpf.IpcacheEntry(str(e.prefix), e.identity, str(e.tunnel_endpoint or "0.0.0.0"))
                   for e in ebpf_policy.ipcache(lab, n)]
        node_facts[node_ns] = explain.BpfFacts(names.bpf_node_dir(lab.name, n.name), attached, endpoints, ipcache, {})
        maps |= {f"{node_facts[node_ns].pin}/{name}": entries for name, entries in policy_maps(lab, n.name).items()}

    def entries(path: str, key_size: int, value_size: int) -> Iterator[tuple[bytes, bytes]]:
        assert (key_size, value_size) == (bpf.POLICY_KEY.size, bpf.POLICY_ENTRY.size)
        yield from maps[path]

    monkeypatch.setattr(bpf, "entries", entries)
    for ns, f in node_facts.items():
        f.policy = {e.lxc_id: bpf.policy(f.pin, e.lxc_id) for e in f.endpoints}

    def route_get(ns: str, dst: Any, src: Any = None, iif: Any = None) -> Decision:
        if ns in pods:
            p, n = pods[ns]
            return Decision("local") if dst == p.ip else Decision("unicast", "eth0", str(n.gateway))
        return Decision("unicast", names.NODE_UPLINK)  # a node's own packet: the outer one of the tunnel

    monkeypatch.setattr(readback, "read", lambda ns, neighbours: views.get(ns, NetnsView(ns, [], [], False)))
    monkeypatch.setattr(readback, "route_get", route_get)
    monkeypatch.setattr(trace, "read_bpf", lambda ns, pin: node_facts[ns])
    yield lab


def test_the_plans_maps_read_back_print_as_cilium_bpf_policy_get(world: Lab) -> None:
    rows = bpf.policy(names.bpf_node_dir(world.name, "node1"), 1)
    assert cilium_view.policy_get(rows, ebpf_policy.labels_by_identity(world)) == [
        "POLICY   DIRECTION   LABELS (source:key[=value])         PORT/PROTO   PROXY PORT   AUTH TYPE   BYTES   PACKETS   PREFIX",
        "Allow    Ingress     reserved:host                       ANY          NONE         disabled    -       -         0",
        "Allow    Ingress     k8s:io.kubernetes.pod.namespace=x   80/TCP       NONE         disabled    -       -         24",
        "                     k8s:pod=b",
        "Allow    Egress      ANY                                 ANY          NONE         disabled    -       -         0",
    ]


def node_facts_of(lab: Lab, node: str) -> explain.NodeFacts:
    w = trace.Wiring(lab)  # the world's views and facts
    ns = names.node_netns(lab.name, node)
    pods = [explain.PodFacts(p.name, names.pod_netns(lab.name, node, p.name), w.views[names.pod_netns(lab.name, node, p.name)],
                             names.lxc_veth(lab.name, node, p.name)) for p in lab.node(node).pods]
    return explain.NodeFacts(node, ns, w.views[ns], pods, "u-" + node, bpf=w.bpf[ns])


def test_explain_shows_each_endpoints_identity_labels_and_policy_map(world: Lab) -> None:
    nf = node_facts_of(world, "node1")
    assert nf.bpf is not None
    del nf.bpf.policy[2]  # b's map could not be read
    shown = text(explain_view.view(world, [nf]))
    assert "endpoint 1 (pod node1/x/a): identity 256 (k8s:io.kubernetes.pod.namespace=x, k8s:pod=a)" in shown
    assert "cilium bpf policy get 1  (cilium_policy_v2_00001" in shown
    for line in cilium_view.policy_get(nf.bpf.policy[1], ebpf_policy.labels_by_identity(world)):
        assert line in shown, line
    assert "no cilium_policy_v2_00002 could be read: the programs let everything through" in shown
    assert "cilium identity list" in shown and "33554435   cidr:192.168.1.3/32" in shown
    assert "10.244.0.2 → " in shown and ", endpoint 1, identity 256" in shown


def test_explain_json_gives_each_endpoint_its_id_pod_identity_labels_and_policy(world: Lab) -> None:
    nf = node_facts_of(world, "node1")
    assert nf.bpf is not None
    del nf.bpf.policy[2]
    doc = explain_view.to_json(world, [nf])["nodes"][0]["bpf"]
    a, b = doc["endpoints"]
    assert {k: a[k] for k in ("ip", "id", "pod", "identity", "labels")} == {
        "ip": "10.244.0.2", "id": 1, "pod": "node1/x/a", "identity": A,
        "labels": ["k8s:io.kubernetes.pod.namespace=x", "k8s:pod=a"]}
    assert a["policy"] == [
        {"policy": "Allow", "direction": "Ingress", "identity": 1, "labels": ["reserved:host"], "portProto": "ANY",
         "prefix": 0},
        {"policy": "Allow", "direction": "Ingress", "identity": B, "labels": list(LABELS_B), "portProto": "80/TCP",
         "prefix": 24},
        {"policy": "Allow", "direction": "Egress", "identity": 0, "labels": ["ANY"], "portProto": "ANY", "prefix": 0}]
    assert {k: b[k] for k in ("id", "pod", "identity", "policy")} == {"id": 2, "pod": "node1/x/b", "identity": B,
                                                                       "policy": None}
    assert set(a) >= {"ifindex", "lxc", "mac", "nodeMac"}  # cilium_lxc's fields stay
    assert {"id": B, "labels": list(LABELS_B)} in doc["identities"]


def test_read_bpf_reads_each_endpoints_map_and_leaves_out_one_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = [bpf.Endpoint("10.244.0.2", 10, "m", "m", 1, A), bpf.Endpoint("fd00::2", 10, "m", "m", 1, A),
                 bpf.Endpoint("10.244.0.3", 11, "m", "m", 2, B), bpf.Endpoint("10.244.0.4", 12, "m", "m", 0, 0)]
    read: list[int] = []

    def policy(pin: str, lxc_id: int) -> list[PolicyRow]:
        read.append(lxc_id)
        if lxc_id == 2:
            raise FileNotFoundError(2, "No such file or directory")
        return A_MAP

    for name, value in (("attached", []), ("endpoints", endpoints), ("ipcache", []), ("metrics", {}),
                        ("lb_services", []), ("conntrack", []), ("nat", []), ("reverse_nat", {})):
        monkeypatch.setattr(bpf, name, lambda *_, v=value: v)
    monkeypatch.setattr(bpf, "policy", policy)
    found = explain.read_bpf("ns", "/pin")
    assert found.error == "" and found.policy == {1: A_MAP} and read == [1, 2]  # once per endpoint, none for ID 0


# -- the verdict's words -----------------------------------------------------------------------------

def test_the_entry_that_allows_is_the_one_allows_decides_by() -> None:
    lab = policy_lab()
    entries = ebpf_policy.policy_entries(lab, lab.node("node1"), lab.node("node1").pods[0])
    assert ebpf_policy.deciding(entries, False, B, 6, 80) == ebpf_policy.PolicyEntry(False, B, 6, 80, 24)
    assert ebpf_policy.deciding(entries, False, B, 1, 0) is None and not ebpf_policy.allows(entries, False, B, 1, 0)
    assert ebpf_policy.deciding(entries, True, C, 1, 0) == ebpf_policy.PolicyEntry(True, 0)


def test_the_verdict_names_the_entry_that_allows_or_the_one_missing() -> None:
    name = "cilium_policy_v2_00001"
    assert policy_lookup.verdict(name, A_MAP, False, B, 6, 80) == (
        True, "allowed by cilium_policy_v2_00001: Allow Ingress 257 80/TCP")
    assert policy_lookup.verdict(name, A_MAP, True, C, 1, 0) == (
        True, "allowed by cilium_policy_v2_00001: Allow Egress ANY ANY")
    assert policy_lookup.verdict(name, A_MAP, False, B, 6, 81) == (
        False, "no entry in cilium_policy_v2_00001 allows identity 257 on 81/TCP (Ingress): dropped (DROP_POLICY, "
               "counted in cilium_metrics)")
    assert policy_lookup.verdict(name, A_MAP, False, C, 1, 0)[1].startswith(
        "no entry in cilium_policy_v2_00001 allows identity 258 on ICMP (Ingress)")
    # a port range's entry, and a deny entry the lab never writes is not taken for an allow
    assert policy_lookup.verdict(name, [row(False, C, 6, 8080, 20)], False, C, 6, 8090)[1].endswith("8080-8095/TCP")
    assert not policy_lookup.verdict(name, [row(False, C, deny=True)], False, C, 1, 0)[0]


def facts(rows: dict[int, list[PolicyRow]], ipcache: list[bpf.IpcacheEntry], *endpoints: bpf.Endpoint) -> explain.BpfFacts:
    return explain.BpfFacts("/pin", [], list(endpoints), ipcache, {}, policy=rows)


def test_the_lookups_name_the_identity_from_the_ipcache_or_the_vni() -> None:
    a = bpf.Endpoint("10.244.0.2", 10, "m", "m", 1, A)
    here = facts({1: A_MAP}, [bpf.IpcacheEntry("10.244.0.3/32", B, "0.0.0.0"), bpf.IpcacheEntry("192.168.1.3/32", 7, "0.0.0.0"),
                              bpf.IpcacheEntry("10.244.1.0/24", 2, "192.168.1.3")], a)
    judged = Judged(ip_address("10.244.0.3"), LABELS)
    said = "ipcache: 10.244.0.3 → identity 257 (k8s:io.kubernetes.pod.namespace=x, k8s:pod=b)"
    assert policy_lookup.ingress(here, a, "node1/x/a", ebpf.FROM_CONTAINER, judged, None) == policy_lookup.Check(
        False, f"ingress policy of endpoint 1 (node1/x/a) for ICMP (trace has no port option): {said}",
        "no entry in cilium_policy_v2_00001 allows identity 257 on ICMP (Ingress): dropped (DROP_POLICY, counted in "
        "cilium_metrics)")
    on_80 = Judged(ip_address("10.244.0.3"), LABELS, protocol=6, port=80)
    assert policy_lookup.ingress(here, a, "node1/x/a", ebpf.FROM_NETDEV, on_80, None) == policy_lookup.Check(
        True, f"ingress policy of endpoint 1 (node1/x/a) for 80/TCP: {said}, allowed by cilium_policy_v2_00001: "
              "Allow Ingress 257 80/TCP")
    # out of the tunnel: the sender's identity is the VNI its node set from its own ipcache
    there = facts({}, [bpf.IpcacheEntry("10.244.1.9/32", 4242, "0.0.0.0")])
    denied = policy_lookup.ingress(here, a, "node1/x/a", ebpf.FROM_OVERLAY, Judged(ip_address("10.244.1.9")),
                                   ("node2", there))
    assert not denied.allowed and "VNI 4242, from node2's ipcache: 10.244.1.9 → identity 4242" in denied.words
    assert denied.reason.startswith("no entry in cilium_policy_v2_00001 allows identity 4242 on ICMP (Ingress)")
    # a node's own address goes as remote-node (6), which the receiving node's ipcache refines
    node = facts({}, [bpf.IpcacheEntry("192.168.1.3/32", 1, "0.0.0.0")])
    refined = policy_lookup.ingress(here, a, "node1/x/a", ebpf.FROM_OVERLAY, Judged(ip_address("192.168.1.3")),
                                    ("node2", node))
    assert "ipcache: 192.168.1.3 → identity 7" in refined.words and "VNI" not in refined.words
    # a reply looks nothing up; an endpoint without a map passes everything
    assert policy_lookup.ingress(here, a, "node1/x/a", ebpf.FROM_CONTAINER, Judged(ip_address("10.9.9.9"), reply=True),
                                 None).words == "ingress: a reply of a tracked connection (CT_REPLY), no policy lookup"
    mapless = policy_lookup.ingress(facts({}, []), a, "node1/x/a", ebpf.FROM_CONTAINER, judged, None)
    assert mapless.allowed and "no cilium_policy_v2_00001 could be read" in mapless.words
    # egress: only for what an endpoint of this node sends, the destination's identity from the ipcache
    assert policy_lookup.egress(here, ip_address("10.244.0.3"), judged, "node1/x/b") is None
    out = policy_lookup.egress(here, ip_address("10.244.1.5"), Judged(ip_address("10.244.0.2")), "node1/x/a")
    assert out is not None and out.words.endswith("ipcache: 10.244.1.5 → identity 2, allowed by "
                                                  "cilium_policy_v2_00001: Allow Egress ANY ANY")


def test_nothing_is_judged_without_policies_or_where_the_data_plane_does_not_look_them_up() -> None:
    assert policy_lookup.judged(policy_lab(), ip_address("10.244.0.3")) is not None
    assert policy_lookup.judged(policy_lab(policies=None), ip_address("10.244.0.3")) is None
    host_gw = make_lab([{"name": "n1", "pods": [pod("a", "x")]}], dataplane="host-gw", namespaces={"x": {}},
                       policies=[A_FROM_B_ON_80])
    assert policy_lookup.judged(host_gw, ip_address("10.244.0.2")) is None


# -- trace -------------------------------------------------------------------------------------------

def test_trace_says_which_entry_is_missing_where_the_ingress_lookup_drops(world: Lab) -> None:
    t = trace.trace(world, "node2/x/c", "node1/x/a")
    assert t.outcome == "dropped" and t.back is None
    out, over = t.there.hops[1], t.there.hops[2]
    assert out.where == "node2" and out.bpf is not None and out.bpf.startswith(
        "cil_from_container on lxc") and (
        ": egress policy of endpoint 1 (node2/x/c) for ICMP (trace has no port option): ipcache: 10.244.0.2 → "
        "identity 256 (k8s:io.kubernetes.pod.namespace=x, k8s:pod=a), allowed by cilium_policy_v2_00001: Allow Egress "
        "ANY ANY; 10.244.0.2/32 is behind tunnel endpoint 192.168.1.2") in out.bpf
    assert over.where == "node1" and over.action == "drop"
    assert over.bpf == ("cil_from_overlay on cilium_vxlan: 10.244.0.2 is in cilium_lxc → local_delivery: ingress "
                        "policy of endpoint 1 (node1/x/a) for ICMP (trace has no port option): VNI 258, from node2's "
                        "ipcache: 10.244.1.2 → identity 258 (k8s:io.kubernetes.pod.namespace=x, k8s:pod=c)")
    assert trace_view.summary(t) == ("dropped at node1: no entry in cilium_policy_v2_00001 allows identity 258 on ICMP "
                                     "(Ingress): dropped (DROP_POLICY, counted in cilium_metrics)")
    # x/b has an entry, for 80/TCP only: the echo is dropped too
    same = trace.trace(world, "node1/x/b", "node1/x/a")
    assert [h.where for h in same.there.hops] == ["node1/x/b", "node1"] and same.outcome == "dropped"
    assert "ipcache: 10.244.0.3 → identity 257 (k8s:io.kubernetes.pod.namespace=x, k8s:pod=b)" in (same.there.hops[1].bpf or "")
    assert same.there.hops[1].reason.startswith("no entry in cilium_policy_v2_00001 allows identity 257 on ICMP (Ingress)")


def test_trace_names_the_entries_that_allow_and_the_reply_passes_without_a_lookup(world: Lab) -> None:
    t = trace.trace(world, "node1/x/a", "node1/x/b")
    assert t.outcome == "ok"
    hop = t.there.hops[1].bpf or ""
    assert hop.startswith("cil_from_container on lxc") and "allowed by cilium_policy_v2_00001: Allow Egress ANY ANY; " in hop
    assert ("10.244.0.3 is in cilium_lxc → local_delivery: ingress policy of endpoint 2 (node1/x/b) for ICMP (trace has "
            "no port option): ipcache: 10.244.0.2 → identity 256 (k8s:io.kubernetes.pod.namespace=x, k8s:pod=a), "
            "allowed by cilium_policy_v2_00002: Allow Ingress ANY ANY → bpf_redirect_peer → node1/x/b eth0") in hop
    assert t.back is not None
    reply = t.back.hops[1].bpf or ""
    assert reply.count("a reply of a tracked connection (CT_REPLY), no policy lookup") == 2
    assert "cilium_policy_v2" not in reply
    # across the tunnel to an endpoint that is not isolated
    far = trace.trace(world, "node1/x/a", "node2/x/c")
    assert far.outcome == "ok" and "allowed by cilium_policy_v2_00001: Allow Ingress ANY ANY" in (far.there.hops[2].bpf or "")
    assert "VNI 256, from node1's ipcache" in (far.there.hops[2].bpf or "")


def test_without_policies_the_hops_are_as_they_were(world: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_lookup, "judged", lambda lab, src_ip: None)
    t = trace.trace(world, "node2/x/c", "node1/x/a")
    assert t.outcome == "ok" and not any("policy" in (h.bpf or "") for leg in (t.there, t.back) if leg for h in leg.hops)
