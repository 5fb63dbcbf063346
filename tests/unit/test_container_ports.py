"""A pod's container ports (`ports: [{name: http, containerPort: 8080, protocol: TCP}]` on a pod
entry), taken as the API server takes a container's (validateContainerPorts in kubernetes
pkg/apis/core/validation/validation.go, IsValidPortName and IsValidPortNum in apimachinery's
util/validation): what named ports in policies and Services resolve through, and what a policy
lab probes when its scenario names no ports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cni_lab import codec, model
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.model import ContainerPort

from labs import make_lab, network_policy, pod

HTTP = {"name": "http", "containerPort": 8080, "protocol": "TCP"}


def with_ports(*ports: Any, name: str = "a") -> dict[str, Any]:
    return {**pod(name, "x", {"pod": name}), "ports": list(ports)}


def ports_lab(*entries: dict[str, Any], **keys: Any) -> Lab:
    return make_lab([{"name": "n1", "pods": list(entries)}], name="cp", namespaces={"x": {}}, **keys)


def refusal(*ports: Any) -> list[str]:
    with pytest.raises(LabError) as e:
        ports_lab(with_ports(*ports))
    return list(e.value.problems)


def test_the_resolved_pod_carries_its_declared_ports_in_order() -> None:
    lab = ports_lab(with_ports(HTTP, {"containerPort": 53, "protocol": "UDP", "name": "dns"}, {"containerPort": 9000}),
                    with_ports(name="b"))
    a, b = lab.pods
    assert a.ports == (ContainerPort(8080, "TCP", "http"), ContainerPort(53, "UDP", "dns"), ContainerPort(9000, "TCP", ""))
    assert b.ports == ()
    assert [p.label for p in a.ports] == ["http 8080/TCP", "dns 53/UDP", "9000/TCP"]


def test_find_port_matches_name_and_protocol_as_find_port_does() -> None:
    """pkg/api/v1/pod/util.go, FindPort: `port.Name == name && port.Protocol == svcPort.Protocol`,
    the first such port of the pod; no match: none."""
    (a,) = ports_lab(with_ports(HTTP, {"name": "dns", "containerPort": 53, "protocol": "UDP"})).pods
    assert a.find_port("http", "TCP") == 8080 and a.find_port("dns", "UDP") == 53
    assert a.find_port("http", "UDP") is None and a.find_port("dns", "TCP") is None  # the protocol must match
    assert a.find_port("metrics", "TCP") is None


def test_protocol_defaults_to_tcp_and_a_port_may_go_unnamed() -> None:
    (a,) = ports_lab(with_ports({"containerPort": 80}, {"name": "web", "containerPort": 81})).pods
    assert a.ports == (ContainerPort(80), ContainerPort(81, "TCP", "web"))


@pytest.mark.parametrize(("port", "message"), [
    ({"name": "HTTP", "containerPort": 80},
     "ports[0].name: 'HTTP' is not a valid port name (IANA_SVC_NAME): must contain only alpha-numeric characters "
     "(a-z, 0-9), and hyphens (-)"),
    ({"name": "a-very-long-port-name", "containerPort": 80},
     "ports[0].name: 'a-very-long-port-name' is not a valid port name (IANA_SVC_NAME): must be no more than 15 characters"),
    ({"name": "8080", "containerPort": 80},
     "ports[0].name: '8080' is not a valid port name (IANA_SVC_NAME): must contain at least one letter (a-z)"),
    ({"name": "web--a", "containerPort": 80},
     "ports[0].name: 'web--a' is not a valid port name (IANA_SVC_NAME): must not contain consecutive hyphens"),
    ({"name": "-web", "containerPort": 80},
     "ports[0].name: '-web' is not a valid port name (IANA_SVC_NAME): must not begin or end with a hyphen"),
    ({"name": "web"}, "ports[0].containerPort: required"),
    ({"containerPort": 0}, "ports[0].containerPort: required"),
    ({"containerPort": 65536}, "ports[0].containerPort: 65536: must be between 1 and 65535, inclusive"),
    ({"containerPort": "80"}, "ports[0].containerPort: '80': must be between 1 and 65535, inclusive"),
    ({"containerPort": True}, "ports[0].containerPort: True: must be between 1 and 65535, inclusive"),
    ({"containerPort": 80, "protocol": "ICMP"}, "ports[0].protocol: 'ICMP': supported values: SCTP, TCP, UDP"),
    ({"containerPort": 80, "protocol": "tcp"}, "ports[0].protocol: 'tcp': supported values: SCTP, TCP, UDP"),
    ({"containerPort": 80, "hostPort": 8080}, "ports[0].hostPort: unknown key"),
    ("http", "ports[0]: must be a mapping with keys name, containerPort, protocol"),
], ids=["upper", "long", "no-letter", "hyphens", "edge-hyphen", "no-number", "zero", "too-high", "text-number", "bool",
        "icmp", "lowercase-protocol", "host-port", "not-a-mapping"])
def test_what_the_api_server_refuses_in_a_containers_ports_is_one_line(port: Any, message: str) -> None:
    problems = refusal(port)
    assert len(problems) == 1 and problems[0].startswith(f"s.yaml: nodes[0].pods[0].{message}"), problems


def test_a_name_given_twice_in_a_pod_is_refused_and_every_problem_is_reported_at_once() -> None:
    problems = refusal(HTTP, {"name": "http", "containerPort": 8081}, {"containerPort": 0, "protocol": "GRE"})
    assert problems == [
        "s.yaml: nodes[0].pods[0].ports[1].name: 'http' is given twice: a pod's port names are unique "
        "(the API server's validateContainerPorts)",
        "s.yaml: nodes[0].pods[0].ports[2].containerPort: required",
        "s.yaml: nodes[0].pods[0].ports[2].protocol: 'GRE': supported values: SCTP, TCP, UDP"]
    with pytest.raises(LabError, match=r"nodes\[0\].pods\[0\].ports: must be a list of container ports"):
        ports_lab({**pod("a", "x"), "ports": {"http": 8080}})


def test_the_same_name_may_serve_other_numbers_on_other_pods_and_one_number_two_protocols() -> None:
    lab = ports_lab(with_ports(HTTP, {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}),
                    with_ports({"name": "http", "containerPort": 9090}, name="b"))
    assert [p.find_port("http", "TCP") for p in lab.pods] == [8080, 9090]


def test_a_default_namespace_pod_with_ports_keeps_them() -> None:
    lab = make_lab([{"name": "n1", "pods": [{"name": "web", "ports": [HTTP]}, "db"]}], name="cp")
    web, db = lab.pods
    assert web.id == "n1/web" and web.ports == (ContainerPort(8080, "TCP", "http"),) and db.ports == ()


def test_the_record_keeps_them_and_a_record_from_before_still_reads() -> None:
    lab = ports_lab(with_ports(HTTP), with_ports(name="b"))
    document = json.loads(json.dumps(codec.encode(lab)))
    assert codec.load(Lab, document) == lab
    old = json.loads(json.dumps(document))
    for node in old["nodes"]:
        for p in node["pods"]:
            del p["ports"]  # what `up` recorded before pods had ports
    for spec in old["scenario"]["nodes"]:
        for p in spec["pod_specs"]:
            del p["ports"]
    before = codec.load(Lab, old)
    assert [p.ports for p in before.pods] == [(), ()] and [p.id for p in before.pods] == [p.id for p in lab.pods]


def test_a_policy_lab_without_probe_ports_probes_the_declared_ports() -> None:
    """Each (protocol, port) a pod declares, once, TCP before UDP before SCTP and by number."""
    deny = network_policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    entries = (with_ports({"name": "dns", "containerPort": 53, "protocol": "UDP"}, HTTP),
               with_ports({"name": "http", "containerPort": 80}, {"containerPort": 8080}, name="b"))
    lab = ports_lab(*entries, policies=[deny])
    assert [(p.protocol, p.port) for p in lab.probe_ports] == [("TCP", 80), ("TCP", 8080), ("UDP", 53)]
    assert lab.scenario.probe_ports == ()
    given = ports_lab(*entries, policies=[deny], probe={"ports": ["udp/81"]})
    assert [(p.protocol, p.port) for p in given.probe_ports] == [("UDP", 81)]  # probe.ports, when given, is what is probed
    assert ports_lab(*entries).probe_ports == ()  # no policy: nothing but the model's own probes


def test_check_and_plan_use_the_labs_probe_ports(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cni_lab.cli import cli

    scenario = tmp_path / "np.yaml"
    scenario.write_text("name: np\nnamespaces: {x: {}}\n"
                        "policies: [{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: d, namespace: x},"
                        " spec: {podSelector: {}, policyTypes: [Ingress]}}]\n"
                        "nodes:\n  - {name: node1, pods: [{name: a, namespace: x, ports: [{name: http, containerPort: 8080}]}, web]}\n")
    result = CliRunner().invoke(cli, ["plan", str(scenario)])
    assert result.exit_code == 0, result.output
    assert "TCP/8080" in result.output
    assert model.load_file(scenario).probe_ports == ()


def test_a_declared_sctp_port_that_check_would_probe_is_held_against_the_kernel() -> None:
    """kernel/transports.py refuses, in one line naming the use, what this kernel cannot open."""
    deny = network_policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    sig = with_ports({"name": "sig", "containerPort": 90, "protocol": "SCTP"})
    assert ports_lab(sig, policies=[deny]).scenario.protocol_uses() == {
        "SCTP": ("probe port sctp/90 (a port the pods declare)",)}
    assert ports_lab(sig).scenario.protocol_uses() == {}  # not probed: no policy
