"""A Service's ports as the API server takes them (ValidateService, validateServicePort in
kubernetes pkg/apis/core/validation/validation.go) and as kube-proxy's nftables mode names and
rules them (servicePortChainNameBase, servicePortEndpointChainNameBase in pkg/proxy/nftables/proxier.go)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from cni_lab import codec
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.rulesets import kubeproxy

from labs import make_lab, pod


def services_lab(*specs: dict[str, Any], **keys: Any) -> Lab:
    """Three pods and these Services alone (no cluster DNS: these tests are about ports and chains)."""
    return make_lab([{"name": "n1", "pods": [pod("a", labels={"app": "web"}), "b"]},
                     {"name": "n2", "pods": [pod("c", labels={"app": "web"})]}],
                    name="s", services=list(specs), **{"dns": False, **keys})


TWO_PORTS = {"name": "web", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "metrics", "port": 81, "targetPort": 9090}]}


def refusal(*ports: dict[str, Any]) -> str:
    with pytest.raises(LabError) as caught:
        services_lab({"name": "web", "selector": {"app": "web"}, "ports": list(ports)})
    return str(caught.value)


def test_every_port_of_a_multi_port_service_is_named_uniquely_with_a_dns_label() -> None:
    # validateServicePort(sp, requireName = len(ports) > 1, ...): field.Required(name) ...
    assert refusal({"port": 80}, {"name": "b", "port": 81}) == (
        "s.yaml: services[0].ports[0].name: required: a Service with more than one port names every port "
        "(the API server's validateServicePort)")
    # ... field.Duplicate(name) ...
    assert refusal({"name": "http", "port": 80}, {"name": "http", "port": 81}) == (
        "s.yaml: services[0].ports[1].name: 'http' is given twice: a Service's port names are unique")
    # ... and ValidateDNS1123Label(name): an RFC 1123 label, not the IANA_SVC_NAME a container port takes
    assert "ports[1].name: required" in refusal({"name": "a", "port": 80}, {"name": "", "port": 81})  # "" is no name
    for bad in ("HTTP", "http_1", "-a", "a-", "a" * 64, "a\n", 80):
        assert f"services[0].ports[0].name: {bad!r} is not a DNS label" in refusal({"name": bad, "port": 80})
    for good in ("http", "80-tcp", "a" * 63, "serve-80-tcp-and-more"):  # longer than IANA's 15, digits first: fine
        assert services_lab({"name": "web", "selector": {"app": "web"}, "ports": [{"name": good, "port": 80}]})
    one = services_lab({"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80}]})
    assert one.services[0].spec.ports[0].name == ""  # a single port needs no name
    with pytest.raises(LabError, match="'web\\\\n' is not a valid Service name"):  # one line, the newline shown
        services_lab({"name": "web\n", "selector": {"app": "web"}, "ports": [{"port": 80}]})


def test_sctp_is_a_service_protocol_as_the_api_server_says() -> None:
    # supportedPortProtocols: TCP, UDP, SCTP; refusing SCTP where the kernel lacks it is up's and check's
    lab = services_lab({"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "SCTP"}]})
    assert lab.services[0].spec.ports[0].protocol == "SCTP"
    assert "'ICMP' is not TCP, UDP or SCTP" in refusal({"port": 80, "protocol": "ICMP"})


def test_named_ports_survive_the_record() -> None:
    lab = services_lab(TWO_PORTS)
    back = codec.load(Lab, json.loads(json.dumps(codec.encode(lab))))
    assert back == lab and [p.name for p in back.services[0].spec.ports] == ["http", "metrics"]
    old = codec.encode(lab)  # a record written before ports had names decodes with none
    for p in old["scenario"]["services"][0]["ports"]:
        del p["name"]
    assert [p.name for p in codec.load(Lab, old).services[0].spec.ports] == ["", ""]


def test_chains_are_named_as_kube_proxy_names_them() -> None:
    # the examples of proxier.go's comments: "ULMVA6XW-ns1/svc1/tcp/p80", "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    lab = make_lab([{"name": "n1", "pods": [pod("a", "ns1", {"app": "svc1"})]}], name="s", namespaces={"ns1": {}},
                   services=[{"name": "svc1", "namespace": "ns1", "selector": {"app": "svc1"},
                              "ports": [{"name": "p80", "port": 80}]}])
    svc = lab.services[0]
    port = svc.spec.ports[0]
    assert kubeproxy.service_chain(svc, port) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert kubeproxy.external_chain(svc, port) == "external-ULMVA6XW-ns1/svc1/tcp/p80"
    assert kubeproxy.chain_base("ns1/svc1/tcp/p80__10.180.0.1/80") == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    assert kubeproxy.endpoint_chain(svc, port, svc.endpoints[0]) == (
        "endpoint-" + kubeproxy.chain_base(f"ns1/svc1/tcp/p80__{svc.endpoints[0].ip}/80"))
    unnamed = make_lab([{"name": "n1", "pods": [pod("a", labels={"app": "web"})]}], name="s",
                       services=[{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80}]}]).services[0]
    assert kubeproxy.service_chain(unnamed, unnamed.spec.ports[0]).endswith("-default/web/tcp/")  # portName ""


def _targets(ruleset: str, service_ip: str, proto: str, port: int) -> set[str]:
    """Where the kube-proxy table sends a ClusterIP and port: the ports its DNATs go to."""
    chains: dict[str, list[str]] = {}
    current = None
    for line in ruleset.splitlines():
        m = re.match(r"\s*chain (\S+) \{", line)
        if m:
            current = m[1]
            chains[current] = []
        elif current and line.strip() != "}":
            chains[current].append(line.strip())
    element = re.search(rf"{re.escape(service_ip)} \. {proto} \. {port} : goto (\S+?)[, ]", ruleset)
    assert element, ruleset
    endpoints = [e for rule in chains[element[1]] for e in re.findall(r"goto (endpoint-\S+?)(?:,| \})", rule + " }")]
    return {m for e in endpoints for rule in chains[e] for m in re.findall(r"dnat to [\d.]+:(\d+)", rule)}


def test_two_ports_of_one_service_never_share_a_chain() -> None:
    lab = services_lab(TWO_PORTS)
    svc = lab.services[0]
    http, metrics = svc.spec.ports
    assert kubeproxy.service_chain(svc, http) != kubeproxy.service_chain(svc, metrics)
    table = kubeproxy.ruleset(lab, lab.services, lab.node("n1"))
    assert _targets(table, str(svc.cluster_ip), "tcp", 80) == {"8080"}  # ClusterIP:80 → targetPort 8080 only
    assert _targets(table, str(svc.cluster_ip), "tcp", 81) == {"9090"}
    assert "service-" + kubeproxy.chain_base("default/web/tcp/http") in table
    listing = re.sub(r"\n((?:  )+)", lambda m: "\n" + "\t" * (len(m[1]) // 2), table)  # as `nft list` indents
    words = kubeproxy.describe(lab, lab.node("n1"), listing)
    assert kubeproxy.endpoints(listing, "default/web") == ["10.244.0.2:8080", "10.244.0.2:9090", "10.244.1.2:8080",
                                                           "10.244.1.2:9090"]  # every port's, as the kernel lists them
    assert kubeproxy.endpoints(listing, "default/other") == []
    assert len(words) == 2 and words[0].startswith(f"ClusterIP {svc.cluster_ip}:80/tcp (default/web:http) → DNAT to one of "
                                                   "10.244.0.2:8080 (n1/a), 10.244.1.2:8080 (n2/c)")
    # the same targetPort behind two ports: two endpoint chains per pod all the same
    same = services_lab({**TWO_PORTS, "ports": [{"name": "a", "port": 80, "targetPort": 8080},
                                                {"name": "b", "port": 81, "targetPort": 8080}]})
    text = kubeproxy.ruleset(same, same.services, same.node("n1"))
    assert text.count("chain endpoint-") == 4


def test_a_udp_port_is_matched_and_dnated_as_udp() -> None:
    lab = services_lab({"name": "dns", "type": "NodePort", "selector": {"app": "web"},
                        "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                                  {"name": "dns-tcp", "port": 53, "targetPort": 5353, "protocol": "TCP"}]})
    svc = lab.services[0]
    table = kubeproxy.ruleset(lab, lab.services, lab.node("n1"))
    assert f"{svc.cluster_ip} . udp . 53 : goto service-" + kubeproxy.chain_base("default/dns/udp/dns") in table
    assert f"ip daddr {svc.cluster_ip} udp dport 53 ip saddr != 10.244.0.0/16 jump mark-for-masquerade" in table
    assert "meta l4proto udp dnat to 10.244.0.2:5353" in table and "meta l4proto tcp dnat to 10.244.0.2:5353" in table
    assert _targets(table, str(svc.cluster_ip), "udp", 53) == {"5353"}
    assert re.search(r"udp \. 3000\d : goto external-", table)


def test_trace_takes_a_port_by_number_or_name_and_follows_tcp() -> None:
    from cni_lab.lesson import service_trace

    lab = services_lab({"name": "dns", "selector": {"app": "web"},
                        "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                                  {"name": "dns-tcp", "port": 53, "targetPort": 5353},
                                  {"name": "metrics", "port": 9153}]})
    svc = lab.services[0]
    assert service_trace.parse_destination(lab, f"{svc.cluster_ip}:53") == (svc, svc.spec.ports[1])  # the TCP one
    assert service_trace.parse_destination(lab, f"{svc.cluster_ip}:metrics") == (svc, svc.spec.ports[2])
    assert service_trace.parse_destination(lab, f"{svc.cluster_ip}") == (svc, svc.spec.ports[1])  # the first TCP port
    with pytest.raises(LabError, match=r"default/dns has no port 54 \(ports: dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP\)"):
        service_trace.parse_destination(lab, f"{svc.cluster_ip}:54")
    with pytest.raises(LabError, match="trace follows TCP Services for now .default/dns:dns 53/UDP is UDP"):
        service_trace.trace(lab, "n1/b", svc, svc.spec.ports[0])


def test_status_lists_each_port_with_its_name() -> None:
    from cni_lab.report import json_junit

    (svc,) = json_junit.lab_json(services_lab(TWO_PORTS))["services"]
    assert svc["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": None,
                             "endpoints": ["10.244.0.2:8080", "10.244.1.2:8080"]},
                            {"name": "metrics", "port": 81, "targetPort": 9090, "protocol": "TCP", "nodePort": None,
                             "endpoints": ["10.244.0.2:9090", "10.244.1.2:9090"]}]
    (one,) = json_junit.lab_json(services_lab({"name": "w", "selector": {"app": "web"}, "ports": [{"port": 80}]}))["services"]
    assert one["ports"][0]["name"] is None  # as the API omits an empty name
