"""A Service's targetPort given as a name: resolved on each endpoint pod as the EndpointSlice
controller resolves it (getEndpointPorts → FindPort, kubernetes pkg/api/v1/pod/util.go: the
pod's container port of that name and the Service port's protocol; a pod without one is no
endpoint of that port), DNATed by kube-proxy to each endpoint's own number, and probed so that
an endpoint passes only when reached on its own number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cni_lab import codec
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.probe import service_probes as probes
from cni_lab.probe.service_exchange import Exchange, Reply, responders
from cni_lab.report import json_junit, terminal
from cni_lab.rulesets import kubeproxy

from labs import make_lab, pod
from test_machine import result as hand_made

ROOT = Path(__file__).resolve().parents[2]

WEB = {"name": "web", "type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
       "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                 {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}]}


def lab_of(*specs: dict[str, Any]) -> Lab:
    """n1/a serves http on 8080 and dns on UDP 5353, n1/b (no app label) nothing, n2/c http on
    9090 and a dns over TCP only, n2/d (app: web) no port at all."""
    return make_lab([{"name": "n1", "pods": [{**pod("a", labels={"app": "web"}), "ports": [
                         {"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]},
                                             "b"]},
                     {"name": "n2", "pods": [{**pod("c", labels={"app": "web"}), "ports": [
                         {"name": "http", "containerPort": 9090}, {"name": "dns", "containerPort": 53}]},
                                             pod("d", labels={"app": "web"})]}],
                    name="s", outside={}, services=list(specs or [WEB]), dns=False)  # the Services alone


def port_of(lab: Lab, name: str) -> Any:
    return next(p for p in lab.services[0].spec.ports if p.name == name)


def ip(lab: Lab, pod_id: str) -> str:
    return str(next(p.ip for p in lab.pods if p.id == pod_id))


def test_a_target_port_may_be_a_port_name_as_the_api_server_takes_it() -> None:
    """validateServicePort: ValidatePortNumOrName(sp.TargetPort): a number 1-65535 or an
    IANA_SVC_NAME."""
    lab = lab_of()
    assert [p.target_port for p in lab.services[0].spec.ports] == ["http", "dns"]
    with pytest.raises(LabError) as e:
        lab_of({**WEB, "ports": [{"name": "http", "port": 80, "targetPort": "HTTP"}]})
    assert e.value.problems == ("s.yaml: services[0].ports[0].targetPort: 'HTTP' is not a valid port name (IANA_SVC_NAME): "
                                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-); must contain at "
                                "least one letter (a-z)",)
    with pytest.raises(LabError, match=r"services\[0\].ports\[0\]: port 80 and targetPort 0 must be port numbers"):
        lab_of({**WEB, "ports": [{"name": "http", "port": 80, "targetPort": 0}]})


def test_each_endpoint_serves_a_named_port_on_its_own_number_and_one_without_it_is_no_endpoint_of_it() -> None:
    lab = lab_of()
    svc = lab.services[0]
    assert [p.id for p in svc.endpoints] == ["n1/a", "n2/c", "n2/d"]  # the selector's pods
    assert [(b.pod.id, b.port) for b in svc.backends(port_of(lab, "http"))] == [("n1/a", 8080), ("n2/c", 9090)]
    # n2/c's dns is TCP: FindPort matches the Service port's protocol too
    assert [(b.pod.id, b.port) for b in svc.backends(port_of(lab, "dns"))] == [("n1/a", 5353)]
    numbered = lab_of({**WEB, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}).services[0]
    assert [(b.pod.id, b.port) for b in numbered.backends(numbered.spec.ports[0])] == [
        ("n1/a", 8080), ("n2/c", 8080), ("n2/d", 8080)]  # a number is every endpoint's
    gone = lab.services_without(frozenset({"n1/a"}))[0]
    assert [(b.pod.id, b.port) for b in gone.backends(port_of(lab, "http"))] == [("n2/c", 9090)]


def test_kube_proxy_dnats_each_endpoint_to_its_own_number() -> None:
    lab = lab_of()
    svc = lab.services[0]
    http, dns = port_of(lab, "http"), port_of(lab, "dns")
    table = kubeproxy.ruleset(lab, lab.services, lab.node("n2"))
    a, c = (next(p for p in lab.pods if p.id == i) for i in ("n1/a", "n2/c"))
    assert kubeproxy.endpoint_chain(svc, http, a, 8080) == "endpoint-" + kubeproxy.chain_base(f"default/web/tcp/http__{a.ip}/8080")
    assert f"meta l4proto tcp dnat to {a.ip}:8080" in table and f"meta l4proto tcp dnat to {c.ip}:9090" in table
    assert f"meta l4proto udp dnat to {a.ip}:5353" in table and f"dnat to {c.ip}:53" not in table
    assert "numgen random mod 2 vmap" in table and "numgen random mod 3" not in table  # n2/d is no endpoint of http
    # Local: n2's endpoints of http (n2/c), and none of dns here, so its nodePort is dropped on n2
    local = table[table.index(f"chain {kubeproxy.local_chain(svc, http)} {{"):]
    assert kubeproxy.endpoint_chain(svc, http, c, 9090) in local.split("}")[0]
    assert f"udp . {dns.node_port} : drop" in table


def test_a_port_no_endpoint_declares_is_rejected_like_a_service_without_endpoints() -> None:
    lab = lab_of({**WEB, "type": "ClusterIP", "externalTrafficPolicy": None,
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                            {"name": "metrics", "port": 81, "targetPort": "metrics"}]})
    svc = lab.services[0]
    table = kubeproxy.ruleset(lab, lab.services, lab.node("n1"))
    assert f"{svc.cluster_ip} . tcp . 81 : goto reject-chain" in table
    assert f"{svc.cluster_ip} . tcp . 80 : goto service-" in table
    assert [(d.port.name, d.src) for d in probes.dials(lab, lab.services) if d.src == "n1/b"] == [("http", "n1/b")]


def test_the_record_keeps_a_named_target_port() -> None:
    lab = lab_of()
    assert codec.load(Lab, json.loads(json.dumps(codec.encode(lab)))) == lab


def test_each_endpoint_answers_on_its_own_number() -> None:
    lab = lab_of()
    wanted = responders(probes.dials(lab, lab.services))
    assert wanted == {"n1/a": {("TCP", 8080), ("UDP", 5353)}, "n2/c": {("TCP", 9090)}}


def judged(lab: Lab, port: str, *data: bytes, src: str = "n1/b") -> probes.ServiceProbe:
    d = next(x for x in probes.dials(lab, lab.services) if x.src == src and x.port.name == port and x.via is None)
    (one,) = probes.judge(lab, Exchange([Reply(d, raw, 40000 + i, True) for i, raw in enumerate(data)], frozenset()))
    return one


def test_a_pair_passes_only_when_each_endpoint_was_reached_on_its_own_number() -> None:
    lab = lab_of()
    b = ip(lab, "n1/b")
    good = judged(lab, "http", f"n1/a|{b}|8080".encode(), f"n2/c|{b}|9090".encode())
    assert good.ok and good.target_port == "http" and good.targets == (("n1/a", 8080), ("n2/c", 9090))
    swapped = judged(lab, "http", f"n1/a|{b}|8080".encode(), f"n2/c|{b}|8080".encode())
    assert swapped.problem == "n2/c was reached on port 8080, not default/web:http's targetPort http (9090 on n2/c)"
    stranger = judged(lab, "http", f"n2/d|{b}|8080".encode())
    assert stranger.problem == "answered by n2/d, which is no endpoint of default/web:http"


def test_reports_name_the_target_port_and_each_endpoints_number() -> None:
    from rich.console import Console

    lab = lab_of()
    b = ip(lab, "n1/b")
    result = json.loads(json_junit.dumps(json_junit.check_json(
        _with(judged(lab, "http", f"n1/a|{b}|8080".encode(), f"n2/c|{b}|9090".encode())))))
    jsonschema.validate(result, json.loads((ROOT / "docs/check.schema.json").read_text()))
    assert result["services"][0]["targetPort"] == "http"
    assert result["services"][0]["targetPorts"] == {"n1/a": 8080, "n2/c": 9090}
    console = Console(width=200, record=True)
    for part in terminal.services_view(_with(judged(lab, "http", f"n1/a|{b}|8080".encode()))):
        console.print(part)
    assert "pod → Service default/web:http :80/TCP → targetPort http (n1/a 8080, n2/c 9090)" in console.export_text()
    (svc,) = json_junit.lab_json(lab)["services"]
    assert svc["ports"][0]["targetPort"] == "http"
    assert svc["ports"][0]["endpoints"] == [f"{ip(lab, 'n1/a')}:8080", f"{ip(lab, 'n2/c')}:9090"]


def _with(*found: probes.ServiceProbe) -> Any:
    import dataclasses

    return dataclasses.replace(hand_made("host-gw", []), services=found)
