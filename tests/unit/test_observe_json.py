"""observe's JSON: Hubble's shape (`hubble observe -o json`), held against docs/flow.schema.json on
flows of every kind; and the observe package stays pure."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cni_lab import catalog, names
from cni_lab.faults import Fault
from cni_lab.kernel.bpf import Event
from cni_lab.kernel.flowsources import Logged, Raw, Reported, Tracked
from cni_lab.observe.decode import Decoder
from cni_lab.observe.flows import Flow, rfc3339, to_json

from test_observe_decode import T, policy_lab
from wire import SYN, icmp, ipv4, ipv6, tcp, udp, unreachable4

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "flow.schema.json").read_text())


def flows() -> list[Flow]:
    """One flow of every kind the decoder makes, from three labs."""
    services, dual, ebpf = catalog.load("services"), catalog.load("dual-stack"), policy_lab(dataplane="ebpf")
    pol = policy_lab()
    n1, s2 = names.node_netns(services.name, "node1"), names.node_netns(services.name, "node2")
    a, b = dual.pods[0], dual.pods[-1]
    quoted = ipv4("10.244.0.3", "10.244.1.2", 17, udp(5000, 53))
    raws: list[tuple[Any, Raw, tuple[Fault, ...]]] = [
        (services, Logged(T, n1, "cni-lab forward", "forward", "cni0", "eth0", ipv4("10.244.0.3", "10.244.1.2", 6, tcp(1, 80, SYN))), ()),
        (services, Logged(T, s2, "cni-lab input", "input", "eth0", "", ipv4("10.244.0.3", "192.168.1.3", 1, icmp(8))), ()),
        (services, Logged(T, n1, "cni-lab output", "output", "", "eth0", ipv4("192.168.1.2", "10.96.0.2", 132, udp(1, 2))), ()),
        (services, Logged(T, n1, "cni-lab fault forward-drop", "forward", "cni0", "eth0", ipv4("10.244.0.3", "10.244.1.2", 17, udp(1, 2))), ()),
        (services, Logged(T, n1, "cni-lab error", "forward", "eth0", "cni0", unreachable4("192.168.1.3", "10.244.0.3", quoted, 1)),
         (Fault("link-down", "node2", s2, "eth0"),)),
        (services, Logged(T, n1, "cni-lab error", "forward", "eth0", "cni0", unreachable4("192.168.1.3", "10.244.0.3", quoted[:21], 4, 1400)), ()),
        (services, Tracked(T, n1, 6, "10.244.0.3", "10.96.0.2", 1, 80, "10.244.1.2", "10.244.0.3", 8080, 1), ()),
        (services, Tracked(T, n1, 17, "10.244.0.3", "198.51.100.10", 1, 53, "198.51.100.10", "192.168.1.2", 53, 9), ()),
        (dual, Logged(T, names.node_netns(dual.name, a.node), "cni-lab forward", "forward", "cni0", "eth0",
                      ipv6(str(a.ip6), str(b.ip6), 58, icmp(128))), ()),
        (dual, Logged(T, names.node_netns(dual.name, a.node), "cni-lab error", "forward", "eth0", "cni0",
                      ipv6(str(dual.nodes[-1].ip6), str(a.ip6), 58, icmp(1, 3, bytes(4), ipv6(str(a.ip6), str(b.ip6), 6, tcp(1, 2))))), ()),
        (pol, Logged(T, names.node_netns(pol.name, "node1"), "cni-lab policy-drop ingress", "forward", "eth0", "cni0",
                     ipv4("10.244.1.2", "10.244.0.2", 6, tcp(1, 80))), ()),
        (pol, Logged(T, names.node_netns(pol.name, "node2"), "cni-lab policy-drop egress", "forward", "cni0", "eth0",
                     ipv4("10.244.1.2", "8.8.8.8", 17, udp(1, 53))), ()),
        (ebpf, Reported(T, names.node_netns(ebpf.name, "node1"), Event("drop", 133, 1, 258, 256, "", 6, "10.244.1.2:1", "10.244.0.2:80")), ()),
        (ebpf, Reported(T, names.node_netns(ebpf.name, "node1"), Event("policy-verdict", 0, 1, 257, 0, "ingress", 6, "10.244.0.3:1", "10.244.0.2:80")), ()),
        (ebpf, Reported(T, names.node_netns(ebpf.name, "node2"), Event("drop", 158, 0, 258, 0, "", 17, "10.244.1.2:1", "10.96.0.9:53")), ()),
    ]
    out = [Decoder(lab, faults).flow(raw) for lab, raw, faults in raws]
    assert None not in out
    return [f for f in out if f is not None]


FLOWS = flows()


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"{f.event_source}-{f.verdict}-{f.protocol}")
def test_every_flow_validates_against_the_schema(flow: Flow) -> None:
    jsonschema.validate(json.loads(json.dumps(to_json(flow))), SCHEMA)


def test_the_schema_refuses_what_it_must() -> None:
    good = to_json(next(f for f in FLOWS if f.verdict == "DROPPED"))
    for broken in ({**good["flow"], "cause": ""}, {**good["flow"], "verdict": "MAYBE"}, {**good["flow"], "extra": 1},
                   {k: v for k, v in good["flow"].items() if k != "drop_reason_desc"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "flow": broken}, SCHEMA)


def test_the_kinds_of_flow_are_all_here() -> None:
    assert {f.verdict for f in FLOWS} == {"FORWARDED", "DROPPED", "TRANSLATED", "ERROR"}
    assert {f.event_source for f in FLOWS} == {"nflog", "conntrack", "bpf"}
    assert {f.protocol for f in FLOWS} >= {"TCP", "UDP", "SCTP", "ICMPv4", "ICMPv6"}


def test_hubbles_field_names_for_a_policy_drop() -> None:
    f = next(f for f in FLOWS if f.rule == "cni-lab policy-drop ingress")
    doc = to_json(f)
    flow = doc["flow"]
    assert (doc["node_name"], doc["time"]) == ("node1", flow["time"])
    assert flow["IP"] == {"source": "10.244.1.2", "destination": "10.244.0.2", "ipVersion": "IPv4"}
    assert flow["l4"] == {"TCP": {"source_port": 1, "destination_port": 80, "flags": {"SYN": True}}}
    assert (flow["verdict"], flow["drop_reason"], flow["drop_reason_desc"]) == ("DROPPED", 133, "POLICY_DENIED")
    assert flow["destination"] == {"namespace": "default", "pod_name": "web",
                                   "labels": ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]}
    assert flow["ingress_denied_by"] == [{"name": "deny-all", "namespace": "default", "kind": "NetworkPolicy"},
                                         {"name": "allow-web", "namespace": "default", "kind": "NetworkPolicy"}]
    assert (flow["traffic_direction"], flow["trace_observation_point"]) == ("INGRESS", "TO_ENDPOINT")
    assert flow["event_type"] == {"type": 1, "sub_type": 133} and flow["Summary"] == "TCP Flags: SYN"


def test_ebpf_flows_carry_identities_and_endpoint_ids() -> None:
    f = next(f for f in FLOWS if f.event_source == "bpf" and f.drop_reason == 133)
    dst = to_json(f)["flow"]["destination"]
    assert (dst["ID"], dst["identity"]) == (1, 256)
    assert "identity" not in to_json(FLOWS[0])["flow"]["source"]  # host-gw: no identities


def test_translations_in_json() -> None:
    dnat, snat = [to_json(f)["flow"] for f in FLOWS if f.verdict == "TRANSLATED"]
    assert dnat["translated"] == {"kind": "pod", "name": "node2/web2", "address": "10.244.1.2", "port": 8080,
                                  "namespace": "default", "pod_name": "web2", "node": "node2",
                                  "labels": ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]}
    assert dnat["destination_service"] == {"name": "web", "namespace": "default"}
    assert snat["IP"]["source_xlated"] == "192.168.1.2" and snat["cni_lab"]["source"] == "conntrack"


def test_an_error_keeps_its_icmp_type_beside_the_quoted_ports() -> None:
    flow = to_json(next(f for f in FLOWS if f.verdict == "ERROR" and f.protocol == "UDP"))["flow"]
    assert flow["l4"] == {"UDP": {"source_port": 5000, "destination_port": 53}}
    assert flow["cni_lab"]["icmp_error"] == {"type": 3, "code": 1}
    assert flow["cause"].startswith("fault link-down at node2")


def test_time_is_rfc3339_with_nanoseconds() -> None:
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250000000Z"
    assert rfc3339(0.000000001) == "1970-01-01T00:00:00.000000001Z"


def test_observe_stays_pure() -> None:
    """No kernel, no terminal: of cni_lab only pure modules and the values the kernel layer hands over."""
    allowed = ("cni_lab.observe", "cni_lab.errors", "cni_lab.names", "cni_lab.cluster", "cni_lab.plan", "cni_lab.policy",
               "cni_lab.dataplanes", "cni_lab.rulesets", "cni_lab.probe.pairs", "cni_lab.faults",
               "cni_lab.kernel.flowsources", "cni_lab.kernel.bpf", "cni_lab.lesson.fault_rules")
    for path in sorted((ROOT / "cni_lab" / "observe").glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m.split(".")[0] for m in modules} & {"pyroute2", "subprocess", "rich", "socket"}, path
        ours = {m for m in modules if m.startswith("cni_lab")}
        assert not [m for m in ours if m != "cni_lab" and not m.startswith(allowed)], path
