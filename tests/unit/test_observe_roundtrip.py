"""from_json is to_json's exact inverse: a flow `check` recorded reads back as the flow it was, over
every kind the decoder makes (translated peers, policies that denied, ICMP errors, BPF
identities, IPv6) and over flows made up at random."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_lab import catalog, names
from cni_lab.errors import LabError
from cni_lab.kernel.bpf import Event
from cni_lab.kernel.flowsources import Raw
from cni_lab.observe.decode import Decoder
from cni_lab.observe.flows import DIRECTIONS, KINDS, POINTS, SOURCES, VERDICTS, Flow, Peer, PolicyRef, epoch, from_json, rfc3339, to_json

from test_observe_decode import SERVICES, T, logged, reported, tracked
from test_observe_json import FLOWS, SCHEMA
from wire import ACK, SYN, icmp, ipv4, ipv6, tcp


def more_flows() -> list[Flow]:
    """The edges FLOWS leaves out: a quote cut off, a TCP header cut off, a protocol without ports,
    an echo reply, IPv6 TCP, NodePort with masquerade, BPF traces that translate, an IPv6 BPF drop."""
    svc, dual = catalog.load("ebpf-svc"), catalog.load("dual-stack")
    a, b = dual.pods[0], dual.pods[-1]
    cut = ipv4("192.168.1.3", "10.244.0.3", 1, icmp(3, 1, bytes(4), ipv4("10.244.0.3", "10.244.1.2", 6, tcp(1, 80))[:21]))
    raws: list[tuple[Any, Raw]] = [
        (SERVICES, logged(SERVICES, "node1", "cni-lab error", cut, indev="eth0", outdev="cni0")),
        (SERVICES, logged(SERVICES, "node1", "cni-lab forward", ipv4("10.244.0.3", "10.244.1.2", 6, tcp(1, 80)[:2]))),
        (SERVICES, logged(SERVICES, "node1", "cni-lab forward", ipv4("10.244.0.3", "10.244.1.2", 47, b"gre!"))),
        (SERVICES, logged(SERVICES, "node1", "cni-lab forward", ipv4("10.244.1.2", "10.244.0.3", 1, icmp(0)),
                          indev="eth0", outdev="cni0")),
        (dual, logged(dual, a.node, "cni-lab forward", ipv6(str(a.ip6), str(b.ip6), 6, tcp(4000, 443, SYN | ACK)))),
        (SERVICES, tracked(SERVICES, "node1", 6, ("198.51.100.10", "192.168.1.2", 50000, 30080),
                           ("10.244.1.2", "192.168.1.2", 8080, 61000))),
        (svc, reported(svc, "node1", Event("trace", 0, 1, 256, 257, "", 6, "10.244.0.3:40000", "10.244.1.2:8080",
                                           point="FROM_ENDPOINT", orig="10.96.0.2:80"))),
        (svc, reported(svc, "node1", Event("trace", 0, 0, 1, 2, "", 17, "192.168.1.2:61000", "198.51.100.10:53",
                                           point="TO_NETWORK", orig="10.244.0.3:5000"))),
        (svc, reported(svc, "node2", Event("drop", 171, 0, 2, 0, "", 17, "[fd00::1]:53", "[fd00::2]:9"))),
    ]
    out = [Decoder(lab).flow(raw) for lab, raw in raws]
    assert None not in out
    return [f for f in out if f is not None]


ALL = FLOWS + more_flows()


def test_the_edges_are_here() -> None:
    extra = ALL[len(FLOWS):]
    assert {f.protocol for f in extra} >= {"TCP", "UDP", "ICMPv4", "IP/47"}
    cut = extra[0]
    assert (cut.verdict, cut.protocol, cut.source.port, cut.icmp_type) == ("ERROR", "TCP", None, 3)
    traced = [f for f in extra if f.event_source == "bpf" and f.translated is not None]
    assert len(traced) == 2 and all(f.translated is not None and f.translated.labels for f in traced)
    assert any(f.is_reply for f in extra) and any(f.ip_version == 6 and f.tcp_flags == ("SYN", "ACK") for f in extra)


@pytest.mark.parametrize("flow", ALL, ids=lambda f: f"{f.event_source}-{f.verdict}-{f.protocol}")
def test_a_flow_reads_back_as_it_was(flow: Flow) -> None:
    doc = json.loads(json.dumps(to_json(flow)))  # as check's document stores it
    jsonschema.validate(doc, SCHEMA)
    assert from_json(doc) == flow
    assert from_json(doc["flow"]) == flow  # the flow object alone reads too


def test_translated_peers_keep_what_they_carry() -> None:
    f = next(f for f in ALL if f.event_source == "bpf" and f.translated is not None and f.translated.kind == "pod")
    t = to_json(f)["flow"]["translated"]
    assert t["node"] == "node2" and t["identity"] == 257 and "k8s:app=web" in t["labels"]
    assert from_json(to_json(f)).translated == f.translated


def test_time_reads_back_to_the_same_float() -> None:
    for t in (T, 1_700_000_000.123456789, 1_700_000_000.9999999999, 2**23 + 0.1, 4_000_000_000.0):
        assert epoch(rfc3339(t)) == t
    assert epoch("2023-11-14T22:13:20Z") == 1_700_000_000.0
    with pytest.raises(ValueError):
        epoch("2023-11-14 22:13:20")


@pytest.mark.parametrize("broken", [{}, {"flow": {"time": "x"}}, {"flow": []},
                                    {**to_json(FLOWS[0]), "flow": {**to_json(FLOWS[0])["flow"], "time": "yesterday"}}])
def test_a_document_cni_lab_did_not_write_is_one_line(broken: dict[str, Any]) -> None:
    with pytest.raises(LabError) as e:
        from_json(broken)
    assert len(e.value.problems) == 1 and "\n" not in e.value.problems[0]


# -- made up at random: every field a Flow has, in the combinations to_json can write -----------------

names_ = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/", min_size=1, max_size=12)
ports = st.integers(0, 65535)
ids = st.one_of(st.none(), st.integers(1, 70000))


@st.composite
def peers(draw: st.DrawFn, port: int | None, service_ok: bool = True) -> Peer:
    """A Service is never a source (a ClusterIP sends nothing; replies are un-NATed before they
    are seen): Hubble's JSON names a Service only as destination_service."""
    kind = draw(st.sampled_from([k for k in KINDS if service_ok or k != "service"]))
    address = draw(st.sampled_from(["10.244.0.2", "192.168.1.2", "fd00:10:244::2", "198.51.100.10"]))
    pod_or_service = kind in ("pod", "service")
    return Peer(kind, draw(names_), address, port, namespace=draw(names_) if pod_or_service else "",
                pod_name=draw(names_) if pod_or_service else "",
                node=draw(st.one_of(st.just(""), names_)),
                labels=tuple(draw(st.lists(st.sampled_from(["k8s:app=web", "reserved:host", "reserved:world"]), max_size=3))),
                identity=draw(ids), endpoint_id=draw(ids))


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    verdict = draw(st.sampled_from(VERDICTS))
    version = draw(st.sampled_from([4, 6]))
    icmp_name = "ICMPv6" if version == 6 else "ICMPv4"
    protocol = draw(st.sampled_from(["TCP", "UDP", "SCTP", icmp_name, "IP/47"]))
    ported = protocol in ("TCP", "UDP", "SCTP") and draw(st.booleans())
    sport, dport = (draw(ports), draw(ports)) if ported else (None, None)
    icmp_type: int | None = None
    if verdict == "ERROR" or protocol == icmp_name:
        icmp_type = draw(st.one_of(st.none(), st.integers(0, 255)))
    refs = st.lists(st.builds(PolicyRef, names_, names_, st.sampled_from(["NetworkPolicy", "CiliumNetworkPolicy"])),
                    max_size=2).map(tuple)
    desc = draw(st.sampled_from(["", "POLICY_DENIED", "NO_ROUTE"]))
    return Flow(
        time=draw(st.floats(min_value=2**23, max_value=4e9)), verdict=verdict, ip_version=version, protocol=protocol,
        source=draw(peers(sport, service_ok=False)), destination=draw(peers(dport)), node=draw(names_),
        event_source=draw(st.sampled_from(SOURCES)), rule=draw(names_), cause=draw(st.text(max_size=20)),
        point=draw(st.sampled_from(POINTS)), direction=draw(st.sampled_from(DIRECTIONS)),
        translated=draw(st.one_of(st.none(), peers(draw(st.one_of(st.none(), ports))))),
        source_xlated=draw(st.sampled_from(["", "192.168.1.2"])), drop_reason=draw(st.integers(0, 200)) if desc else 0,
        drop_reason_desc=desc, ingress_denied_by=draw(refs), egress_denied_by=draw(refs),
        is_reply=draw(st.one_of(st.none(), st.booleans())),
        tcp_flags=tuple(draw(st.lists(st.sampled_from(["SYN", "ACK", "FIN", "RST"]), unique=True)))
        if protocol == "TCP" and ported else (),
        icmp_type=icmp_type, icmp_code=None if icmp_type is None else draw(st.integers(0, 255)),
        event_type=draw(st.sampled_from([1, 4, 5])), event_subtype=draw(st.integers(0, 200)),
        interface=draw(st.sampled_from(["", "eth0", names.CNI_BRIDGE])))


@settings(max_examples=300, deadline=None)
@given(flows())
def test_any_flow_reads_back_as_it_was(flow: Flow) -> None:
    assert from_json(json.loads(json.dumps(to_json(flow)))) == flow

