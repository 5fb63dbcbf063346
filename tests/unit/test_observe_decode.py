"""observe/decode.py: nflog packets, conntrack NAT and BPF events turned into named, judged flows."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from cni_lab import catalog, names
from cni_lab.cluster import Lab
from cni_lab.faults import Fault
from cni_lab.kernel.bpf import Event
from cni_lab.kernel.flowsources import Logged, Reported, Tracked
from cni_lab.observe.decode import Decoder, split
from cni_lab.observe.flows import Flow, PolicyRef

from labs import make_lab, network_policy, pod
from wire import ACK, SYN, icmp, ipv4, ipv6, tcp, udp, unreachable4

T = 1_700_000_000.25


def policy_lab(**keys: Any) -> Lab:
    """web and client on node1, api on node2; ingress denied to all but client → web on TCP/80."""
    return make_lab([{"name": "node1", "pods": [pod("web", labels={"app": "web"}), pod("client", labels={"app": "client"})]},
                     {"name": "node2", "pods": [pod("api", labels={"app": "api"})]}], name="pl",
                    policies=[network_policy("deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]}, "default"),
                              network_policy("allow-web", {"podSelector": {"matchLabels": {"app": "web"}},
                                                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                                                        "ports": [{"port": 80}]}]}, "default"),
                              network_policy("api-out", {"podSelector": {"matchLabels": {"app": "api"}},
                                                         "policyTypes": ["Egress"], "egress": []}, "default")],
                    **keys)


def logged(lab: Lab, node: str, prefix: str, packet: bytes, hook: str = "forward", indev: str = "cni0",
           outdev: str = "eth0") -> Logged:
    netns = names.router_netns(lab.name) if node == "router" else names.node_netns(lab.name, node)
    return Logged(T, netns, prefix, hook, indev, outdev, packet)


def decoded(lab: Lab, raw: Any, faults: tuple[Fault, ...] = ()) -> Flow:
    flow = Decoder(lab, faults).flow(raw)
    assert flow is not None
    return flow


SERVICES = catalog.load("services")  # web1, client on node1; web2, solo on node2; ClusterIPs 10.96.0.2, .3; outside


# -- first packets ----------------------------------------------------------------------------------

def test_a_forwarded_syn_names_both_pods_and_where_it_was_seen() -> None:
    f = decoded(SERVICES, logged(SERVICES, "node1", "cni-lab forward", ipv4("10.244.0.3", "10.244.1.2", 6, tcp(40000, 80))))
    assert (f.verdict, f.protocol, f.node, f.cause, f.event_source) == ("FORWARDED", "TCP", "node1", "", "nflog")
    assert (f.source.name, f.source.port, f.destination.name, f.destination.port) == ("node1/client", 40000, "node2/web2", 80)
    assert (f.point, f.direction, f.is_reply, f.tcp_flags) == ("FROM_ENDPOINT", "EGRESS", False, ("SYN",))


@pytest.mark.parametrize(("hook", "indev", "outdev", "src", "dst", "point", "direction"), [
    ("forward", "eth0", "cni0", "10.244.0.3", "10.244.1.2", "TO_ENDPOINT", "INGRESS"),
    ("input", "eth0", "", "10.244.0.3", "192.168.1.3", "TO_HOST", "TRAFFIC_DIRECTION_UNKNOWN"),
    ("output", "", "eth0", "192.168.1.3", "10.244.0.3", "FROM_HOST", "TRAFFIC_DIRECTION_UNKNOWN"),
    ("forward", "eth0", "eth0", "198.51.100.10", "10.244.0.3", "TO_NETWORK", "TRAFFIC_DIRECTION_UNKNOWN"),
])
def test_observation_points_and_directions_on_node2(hook: str, indev: str, outdev: str, src: str, dst: str,
                                                     point: str, direction: str) -> None:
    f = decoded(SERVICES, logged(SERVICES, "node2", f"cni-lab {hook}", ipv4(src, dst, 17, udp(5000, 53)), hook, indev, outdev))
    assert (f.point, f.direction, f.is_reply) == (point, direction, None)


def test_overlay_devices_are_overlay_points() -> None:
    lab = make_lab(dataplane="vxlan")
    packet = ipv4("10.244.0.2", "10.244.1.2", 1, icmp(8, 0, struct.pack(">HH", 9, 1)))
    out = decoded(lab, logged(lab, "node1", "cni-lab forward", packet, indev="eth0", outdev=names.FLANNEL_DEVICE))
    came = decoded(lab, logged(lab, "node2", "cni-lab forward", packet, indev=names.FLANNEL_DEVICE, outdev="eth0"))
    assert (out.point, came.point) == ("TO_OVERLAY", "FROM_OVERLAY")
    assert (out.protocol, out.icmp_type, out.is_reply) == ("ICMPv4", 8, False)


def test_a_pods_host_veth_is_its_endpoint() -> None:
    lab = make_lab(dataplane="bgp")
    veth = names.cali_veth(lab.name, "node2", "pod-1")
    f = decoded(lab, logged(lab, "node2", "cni-lab forward", ipv4("10.244.0.1", "10.244.0.65", 6, tcp(1, 80)),
                            indev="eth0", outdev=veth))
    assert (f.source.name, f.destination.name, f.point) == ("node1/pod-1", "node2/pod-1", "TO_ENDPOINT")


@pytest.mark.parametrize(("address", "kind", "name"), [
    ("10.244.0.2", "pod", "node1/web1"), ("192.168.1.3", "node", "node2"), ("10.244.1.1", "node", "node2"),
    ("10.96.0.2", "service", "service default/web"), ("198.51.100.10", "outside", "outside"),
    ("192.168.1.1", "router", "router"), ("8.8.8.8", "world", "world"),
])
def test_every_address_is_named(address: str, kind: str, name: str) -> None:
    f = decoded(SERVICES, logged(SERVICES, "node1", "cni-lab output", ipv4("192.168.1.2", address, 17, udp(1, 2)), "output"))
    assert (f.destination.kind, f.destination.name, f.destination.address) == (kind, name, address)
    assert f.source.labels == ("reserved:host",)  # node1 is where it was seen


def test_reply_packets_and_what_is_not_the_labs_give_no_flow_or_say_so() -> None:
    d = Decoder(SERVICES)
    synack = ipv4("10.244.1.2", "10.244.0.3", 6, tcp(80, 40000, SYN | ACK))
    assert d.flow(logged(SERVICES, "node1", "cni-lab forward", synack)).is_reply is None  # type: ignore[union-attr]
    assert d.flow(logged(SERVICES, "node1", "someone else", synack)) is None
    assert d.flow(logged(SERVICES, "node1", "cni-lab forward", b"\x00" * 40)) is None
    assert d.flow(logged(SERVICES, "node1", "cni-lab something-new", synack)) is None


def test_an_ipv6_packet_is_named_by_its_pods_ipv6_addresses() -> None:
    lab = catalog.load("dual-stack")
    a, b = lab.pods[0], lab.pods[-1]
    f = decoded(lab, logged(lab, a.node, "cni-lab forward", ipv6(str(a.ip6), str(b.ip6), 17, udp(1, 53))))
    assert (f.ip_version, f.source.name, f.destination.name) == (6, a.id, b.id)


# -- NetworkPolicy drops ----------------------------------------------------------------------------

def test_an_ingress_policy_drop_names_the_isolating_policies_and_why_no_rule_matched() -> None:
    lab = policy_lab()
    f = decoded(lab, logged(lab, "node1", "cni-lab policy-drop ingress", ipv4("10.244.1.2", "10.244.0.2", 6, tcp(3000, 80)),
                            indev="eth0", outdev="cni0"))
    assert (f.verdict, f.drop_reason, f.drop_reason_desc, f.direction) == ("DROPPED", 133, "POLICY_DENIED", "INGRESS")
    assert f.ingress_denied_by == (PolicyRef("deny-all", "default"), PolicyRef("allow-web", "default"))
    assert f.egress_denied_by == ()
    assert f.cause.startswith("policy: default/deny-all, default/allow-web isolate default/web for ingress; "
                              "no rule allows default/api on TCP/80")
    assert "cni-lab-policy" in f.cause


def test_an_egress_policy_drop_names_the_egress_policy() -> None:
    lab = policy_lab()
    f = decoded(lab, logged(lab, "node2", "cni-lab policy-drop egress", ipv4("10.244.1.2", "10.244.0.3", 1, icmp(8))))
    assert (f.direction, f.egress_denied_by, f.ingress_denied_by) == ("EGRESS", (PolicyRef("api-out", "default"),), ())
    assert "default/api-out isolates default/api for egress; no rule allows default/client on ICMP" in f.cause


def test_a_policy_drop_the_reference_would_allow_says_both() -> None:
    lab = policy_lab()
    f = decoded(lab, logged(lab, "node1", "cni-lab policy-drop ingress", ipv4("10.244.0.3", "10.244.0.2", 6, tcp(1, 80))))
    assert f.cause.startswith("policy: dropped by node1/web's ingress chain") and "yet default/allow-web ingress rule 0" in f.cause


# -- faults -----------------------------------------------------------------------------------------

def test_the_forward_drop_faults_drop_quotes_the_fault() -> None:
    lab = SERVICES
    fault = Fault("forward-drop", "node1", names.node_netns(lab.name, "node1"))
    packet = ipv4("10.244.0.3", "10.244.1.2", 6, tcp(1, 80))
    for recorded in ((fault,), ()):  # healed since: the words are the same
        f = decoded(lab, logged(lab, "node1", "cni-lab fault forward-drop", packet), recorded)
        assert (f.verdict, f.drop_reason_desc) == ("DROPPED", "FAULT_FORWARD_DROP")
        assert f.cause == "fault forward-drop at node1: nft table inet cni-lab-fault drops the pod traffic it forwards"


def test_a_recorded_fault_on_the_way_comes_first_in_an_errors_cause() -> None:
    lab = SERVICES
    down = Fault("link-down", "node2", names.node_netns(lab.name, "node2"), "eth0")
    error = unreachable4("10.244.0.1", "10.244.0.3", ipv4("10.244.0.3", "10.244.1.2", 6, tcp(1, 80)), code=1)
    f = decoded(lab, logged(lab, "node1", "cni-lab error", error, "output", "", "cni0"), (down,))
    assert f.cause == ("fault link-down at node2: node2's eth0 is down; "
                       "seen as: no neighbour answered for 10.244.1.2 at node1 (ARP)")
    elsewhere = Fault("pod-down", "node2/solo", names.pod_netns(lab.name, "node2", "solo"), "eth0")
    assert decoded(lab, logged(lab, "node1", "cni-lab error", error), (elsewhere,)).cause.startswith("no neighbour")


def test_a_fault_does_not_change_what_was_forwarded() -> None:
    down = Fault("link-down", "node2", names.node_netns(SERVICES.name, "node2"), "eth0")
    f = decoded(SERVICES, logged(SERVICES, "node1", "cni-lab forward", ipv4("10.244.0.3", "10.244.1.2", 6, tcp(1, 80))), (down,))
    assert (f.verdict, f.cause) == ("FORWARDED", "")


# -- ICMP errors ------------------------------------------------------------------------------------

QUOTED = ipv4("10.244.0.3", "10.244.1.2", 17, udp(5000, 53))


@pytest.mark.parametrize(("sender", "code", "mtu", "desc", "cause"), [
    ("192.168.1.1", 0, 0, "NO_ROUTE", "no route to 10.244.1.2 at router"),
    ("192.168.1.3", 1, 0, "NO_NEIGHBOUR", "no neighbour answered for 10.244.1.2 at node2 (ARP)"),
    ("10.244.1.2", 3, 0, "PORT_UNREACHABLE", "nothing listens on node2/web2 10.244.1.2:53/UDP"),
    ("192.168.1.2", 4, 1450, "MTU_EXCEEDED", "MTU exceeded: next hop MTU 1450 at node1"),
    ("192.168.1.3", 13, 0, "REJECTED_BY_RULE", "rejected by a rule at node2"),
    ("192.168.1.3", 2, 0, "PROTOCOL_UNREACHABLE", "10.244.1.2 does not speak UDP (protocol unreachable from node2)"),
    ("192.168.1.3", 7, 0, "DESTINATION_UNREACHABLE", "destination unreachable (type 3 code 7) at node2 for"),
])
def test_an_ipv4_error_is_about_the_pair_it_quotes(sender: str, code: int, mtu: int, desc: str, cause: str) -> None:
    f = decoded(SERVICES, logged(SERVICES, "node1", "cni-lab error", unreachable4(sender, "10.244.0.3", QUOTED, code, mtu),
                                 indev="eth0", outdev="cni0"))
    assert (f.verdict, f.drop_reason_desc, f.icmp_type, f.icmp_code) == ("ERROR", desc, 3, code)
    assert (f.source.name, f.destination.name, f.destination.port, f.protocol) == ("node1/client", "node2/web2", 53, "UDP")
    assert f.cause.startswith(cause)
    assert f.summary().startswith("ICMPv4 DestinationUnreachable")


def test_a_rejected_service_is_named() -> None:
    quoted = ipv4("10.244.0.3", "10.96.0.3", 6, tcp(4000, 81))
    f = decoded(SERVICES, logged(SERVICES, "node1", "cni-lab error", unreachable4("10.244.0.1", "10.244.0.3", quoted, 3 + 10),
                                 "output", "", "cni0"))
    assert f.cause == ("rejected by a rule at node1: Service default/solo 10.96.0.3:81/TCP has no endpoints "
                       "(kube-proxy rejects it)")


def test_time_exceeded_suspects_a_loop() -> None:
    error = ipv4("192.168.1.1", "10.244.0.3", 1, icmp(11, 0, bytes(4), QUOTED))
    f = decoded(SERVICES, logged(SERVICES, "node1", "cni-lab error", error))
    assert (f.drop_reason_desc, f.drop_reason) == ("TTL_EXCEEDED", 196)
    assert f.cause == "TTL exceeded at router on the way to 10.244.1.2 (a loop?)"


@pytest.mark.parametrize(("kind", "code", "rest", "desc", "cause"), [
    (1, 3, bytes(4), "NO_NEIGHBOUR", "(NDP)"), (1, 0, bytes(4), "NO_ROUTE", "no route to"),
    (2, 0, struct.pack(">I", 1430), "MTU_EXCEEDED", "next hop MTU 1430"), (1, 4, bytes(4), "PORT_UNREACHABLE", "nothing listens"),
    (1, 1, bytes(4), "REJECTED_BY_RULE", "rejected"), (3, 0, bytes(4), "TTL_EXCEEDED", "a loop?"),
    (4, 0, bytes(4), "PARAMETER_PROBLEM", "bad header field"),
])
def test_icmpv6_errors(kind: int, code: int, rest: bytes, desc: str, cause: str) -> None:
    lab = catalog.load("dual-stack")
    a, b = lab.pods[0], lab.pods[-1]
    quoted = ipv6(str(a.ip6), str(b.ip6), 6, tcp(4000, 80))
    error = ipv6(str(lab.nodes[-1].ip6), str(a.ip6), 58, icmp(kind, code, rest, quoted))
    f = decoded(lab, logged(lab, a.node, "cni-lab error", error))
    assert (f.verdict, f.drop_reason_desc, f.source.name, f.destination.name, f.ip_version) == ("ERROR", desc, a.id, b.id, 6)
    assert cause in f.cause


def test_an_error_whose_quote_is_cut_off_is_still_an_error_with_a_cause() -> None:
    error = ipv4("192.168.1.3", "10.244.0.3", 1, icmp(3, 1, bytes(4), QUOTED[:10]))
    f = decoded(SERVICES, logged(SERVICES, "node1", "cni-lab error", error))
    assert f.verdict == "ERROR" and f.source.name == "node2" and f.cause


# -- conntrack --------------------------------------------------------------------------------------

def tracked(lab: Lab, node: str, protocol: int, orig: tuple[str, str, int, int], reply: tuple[str, str, int, int]) -> Tracked:
    return Tracked(T, names.node_netns(lab.name, node), protocol, orig[0], orig[1], orig[2], orig[3],
                   reply[0], reply[1], reply[2], reply[3])


def test_a_service_dnat_names_the_service_and_the_endpoint_chosen() -> None:
    f = decoded(SERVICES, tracked(SERVICES, "node1", 6, ("10.244.0.3", "10.96.0.2", 40000, 80),
                                  ("10.244.1.2", "10.244.0.3", 8080, 40000)))
    assert (f.verdict, f.event_source, f.source.name, f.destination.kind) == ("TRANSLATED", "conntrack", "node1/client", "service")
    assert f.translated is not None and (f.translated.name, f.translated.port) == ("node2/web2", 8080)
    assert f.cause == "Service default/web 10.96.0.2:80/TCP → endpoint node2/web2 10.244.1.2:8080"
    assert f.source_xlated == ""


def test_a_nodeport_with_masquerade_names_kube_proxys_masquerade() -> None:
    f = decoded(SERVICES, tracked(SERVICES, "node1", 6, ("198.51.100.10", "192.168.1.2", 50000, 30080),
                                  ("10.244.1.2", "192.168.1.2", 8080, 61000)))
    assert f.cause == ("NodePort default/web 192.168.1.2:30080/TCP → endpoint node2/web2 10.244.1.2:8080; "
                       "masquerade at node1: 198.51.100.10 → 192.168.1.2:61000 (kube-proxy's masquerade "
                       "(table ip kube-proxy, mark 0x00004000))")
    assert f.source_xlated == "192.168.1.2" and f.translated is not None and f.translated.name == "node2/web2"


def test_a_masquerade_to_the_outside_names_flannels_or_calicos_table() -> None:
    flannel = decoded(SERVICES, tracked(SERVICES, "node1", 17, ("10.244.0.3", "198.51.100.10", 5000, 53),
                                        ("198.51.100.10", "192.168.1.2", 53, 5000)))
    assert flannel.cause == "masquerade at node1: 10.244.0.3 → 192.168.1.2:5000 (flannel's --ip-masq, table ip flannel-ipv4)"
    assert flannel.translated is not None and flannel.translated.kind == "node"
    bgp = make_lab(dataplane="bgp", outside={})
    calico = decoded(bgp, tracked(bgp, "node1", 1, ("10.244.0.1", "198.51.100.10", 7, 7), ("198.51.100.10", "192.168.1.2", 7, 7)))
    assert calico.cause == "masquerade at node1: 10.244.0.1 → 192.168.1.2 (Calico's natOutgoing, table ip calico)"
    assert calico.protocol == "ICMPv4"


def test_conntrack_without_nat_gives_no_flow() -> None:
    plain = tracked(SERVICES, "node1", 6, ("10.244.0.3", "10.244.1.2", 40000, 80), ("10.244.1.2", "10.244.0.3", 80, 40000))
    assert Decoder(SERVICES).flow(plain) is None


# -- BPF events -------------------------------------------------------------------------------------

def ebpf_lab() -> Lab:
    return policy_lab(dataplane="ebpf")


def reported(lab: Lab, node: str, event: Event) -> Reported:
    return Reported(T, names.node_netns(lab.name, node), event)


def test_a_bpf_egress_policy_drop() -> None:
    lab = ebpf_lab()
    e = Event("drop", 133, 1, 258, 257, "", 1, "10.244.1.2", "10.244.0.3")  # api is node2's endpoint 1
    f = decoded(lab, reported(lab, "node2", e))
    assert (f.verdict, f.drop_reason_desc, f.direction, f.point) == ("DROPPED", "POLICY_DENIED", "EGRESS", "FROM_ENDPOINT")
    assert f.egress_denied_by == (PolicyRef("api-out", "default"),)
    assert "cil_from_container's egress policy lookup in cilium_policy_v2_1 of node2/api" in f.cause
    assert (f.source.identity, f.destination.identity, f.source.endpoint_id) == (258, 257, 1)


def test_a_bpf_ingress_policy_drop_and_its_verdict() -> None:
    lab = ebpf_lab()
    drop = decoded(lab, reported(lab, "node1", Event("drop", 133, 1, 258, 256, "", 6, "10.244.1.2:3000", "10.244.0.2:80")))
    assert drop.direction == "INGRESS" and drop.ingress_denied_by[0] == PolicyRef("deny-all", "default")
    assert "local_delivery's ingress policy lookup" in drop.cause and "no rule allows default/api on TCP/80" in drop.cause
    verdict = decoded(lab, reported(lab, "node1", Event("policy-verdict", 133, 1, 258, 0, "ingress", 6, "10.244.1.2:3000",
                                                        "10.244.0.2:80")))
    assert (verdict.verdict, verdict.event_type, verdict.source.identity) == ("DROPPED", 5, 258)


def test_an_allowed_bpf_verdict_is_forwarded_with_the_rule_that_allowed_it() -> None:
    lab = ebpf_lab()
    f = decoded(lab, reported(lab, "node1", Event("policy-verdict", 0, 1, 257, 0, "ingress", 6, "10.244.0.3:3000", "10.244.0.2:80")))
    assert f.verdict == "FORWARDED" and "default/allow-web ingress rule 0" in f.cause


def test_a_missing_backend_names_the_service_and_the_fault() -> None:
    lab = catalog.load("ebpf-svc")
    e = Event("drop", 158, 0, 256, 0, "", 6, "10.244.0.3:40000", "10.96.0.2:80")
    f = decoded(lab, reported(lab, "node1", e))
    assert (f.drop_reason, f.drop_reason_desc) == (158, "SERVICE_BACKEND_NOT_FOUND")
    assert f.cause == ("Service backend not found: cil_from_container (lb4_local) picked a backend of Service default/web "
                       "10.96.0.2:80/TCP that node1's cilium_lb4_backends_v3 does not hold")
    gone = Fault("bpf-backend-del", "node1>node2/web2", names.node_netns(lab.name, "node1"))
    assert decoded(lab, reported(lab, "node1", e), (gone,)).cause.startswith("fault bpf-backend-del node1>node2/web2")


@pytest.mark.parametrize(("reason", "desc", "words"), [
    (171, "INVALID_IDENTITY", "cil_from_overlay read a VNI"), (167, "NO_MAPPING_FOR_NAT_MASQUERADE", "cilium_snat_v4_external"),
    (150, "DROP_REASON_UNKNOWN", "Cilium drop reason 150"),
])
def test_other_bpf_drops(reason: int, desc: str, words: str) -> None:
    lab = catalog.load("ebpf-svc")
    f = decoded(lab, reported(lab, "node2", Event("drop", reason, 0, 2, 0, "", 17, "[fd00::1]:53", "[fd00::2]:9")))
    assert (f.drop_reason_desc, f.ip_version, f.source.port) == (desc, 6, 53) and words in f.cause


def test_a_bpf_event_without_addresses_gives_no_flow() -> None:
    assert Decoder(SERVICES).flow(reported(SERVICES, "node1", Event("drop", 133, 0, 0, 0, "", 0, "", ""))) is None


@pytest.mark.parametrize(("text", "parts"), [("10.0.0.1:80", ("10.0.0.1", 80)), ("[fd00::1]:80", ("fd00::1", 80)),
                                             ("10.0.0.1", ("10.0.0.1", None)), ("fd00::1", ("fd00::1", None))])
def test_event_addresses_split(text: str, parts: tuple[str, int | None]) -> None:
    assert split(text) == parts
