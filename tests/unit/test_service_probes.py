"""pod → Service and outside → NodePort, judged without a kernel: what check dials (every port,
TCP, UDP and SCTP alike), and how an endpoint's answer (who it is, the source it saw, the port it
was reached on) passes or fails the pair. The sockets are the kernel tests' (tests/kernel/test_services.py)."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cni_lab import model
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.kernel import transports
from cni_lab.probe import service_probes as probes
from cni_lab.probe.service_exchange import Dial, Exchange, Reply
from cni_lab.report import json_junit, terminal

from labs import make_lab, pod
from test_machine import result as hand_made

ROOT = Path(__file__).resolve().parents[2]

WEB = {"name": "web", "type": "NodePort", "selector": {"app": "web"},
       "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "metrics", "port": 81, "targetPort": 9090},
                 {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}


def services_lab(*specs: dict[str, Any]) -> Lab:
    return make_lab([{"name": "n1", "pods": [pod("a", labels={"app": "web"}), "b"]},
                     {"name": "n2", "pods": [pod("c", labels={"app": "web"})]}],
                    name="s", outside={}, services=list(specs or [WEB]))


def dial(lab: Lab, src: str, port_name: str) -> Dial:
    svc = lab.services[0]
    port = next(p for p in svc.spec.ports if p.name == port_name)
    return next(d for d in probes.dials(lab, lab.services) if d.src == src and d.port == port and d.via is None)


def ip(lab: Lab, pod_id: str) -> str:
    return str(next(p.ip for p in lab.pods if p.id == pod_id))


def judged(lab: Lab, d: Dial, *data: bytes, connected: bool = True,
           busy: frozenset[tuple[str, str, int]] = frozenset()) -> probes.ServiceProbe:
    replies = [Reply(d, raw, 40000 + i, connected) for i, raw in enumerate(data)]
    (one,) = probes.judge(lab, Exchange(replies, busy))
    return one


def test_every_port_is_dialled_udp_and_sctp_too() -> None:
    lab = services_lab({**WEB, "ports": [*WEB["ports"], {"name": "sig", "port": 90, "protocol": "SCTP"}]})
    found = probes.dials(lab, lab.services)
    by_kind = {(d.port.protocol, d.via is None) for d in found}
    assert by_kind == {(p, inside) for p in ("TCP", "UDP", "SCTP") for inside in (True, False)}
    inside = [d for d in found if d.via is None and d.port.protocol == "UDP"]
    # every pod dials, the DNS pod too (kube-dns itself is proven by check's dns rule: its endpoint is dnsmasq)
    assert sorted(d.src for d in inside) == ["n1/a", "n1/b", "n1/kube-system/coredns", "n2/c"] and {d.number for d in inside} == {53}
    outside = [d for d in found if d.via is not None and d.port.protocol == "UDP"]
    assert {(d.via.name, d.address) for d in outside if d.via} == {("n1", "192.168.1.2"), ("n2", "192.168.1.3")}


def test_an_answer_says_who_what_source_and_which_port() -> None:
    assert probes.parse_answer(b"n1/a|10.244.0.3|8080") == probes.Answer("n1/a", "10.244.0.3", 8080)
    for other in (b"", b"HTTP/1.1 400 Bad Request\r\n", b"n1/a|10.244.0.3", b"n1/a|10.244.0.3|http", b"\xff|x|1",
                  "n1/a|x|²".encode()):
        assert probes.parse_answer(other) is None


def test_a_dnat_to_the_wrong_target_port_fails_the_pair() -> None:
    lab = services_lab()
    d = dial(lab, "n1/b", "http")
    right = f"n2/c|{ip(lab, 'n1/b')}|8080".encode()
    assert judged(lab, d, right, right).ok
    wrong = judged(lab, d, right, f"n1/a|{ip(lab, 'n1/b')}|9090".encode())
    assert wrong.problem == "n1/a was reached on port 9090, not default/web:http's targetPort 8080"
    assert wrong.answers[1] == probes.Answer("n1/a", ip(lab, "n1/b"), 9090) and wrong.target_port == 8080


def test_udp_is_judged_like_tcp() -> None:
    lab = services_lab()
    d = dial(lab, "n1/b", "dns")
    assert d.port.protocol == "UDP" and d.number == 53
    one = judged(lab, d, f"n1/a|{ip(lab, 'n1/b')}|5353".encode(), b"", connected=False)
    assert one.protocol == "UDP" and one.problem == "1 of 2 datagrams got no answer"
    snat = judged(lab, d, "n2/c|10.244.0.1|5353".encode(), connected=False)
    assert snat.problem == f"n2/c saw 10.244.0.1, not n1/b's own {ip(lab, 'n1/b')} (SNAT)"
    nodeport = next(x for x in probes.dials(lab, lab.services) if x.via is not None and x.port.name == "dns")
    masqueraded = judged(lab, nodeport, f"n1/a|{nodeport.via.ip if nodeport.via else ''}|5353".encode(), connected=False)
    assert masqueraded.ok and masqueraded.kind == "nodePort"


def test_a_server_of_the_pods_own_on_the_target_port_is_probed_through() -> None:
    lab = services_lab()
    d = dial(lab, "n1/b", "http")
    busy = frozenset({("n1/a", "TCP", 8080)})
    confirmed = f"n2/c|{ip(lab, 'n1/b')}|8080".encode()
    # the pod's own server accepted two connections and said nothing cni-lab knows
    through = judged(lab, d, confirmed, b"", b"HTTP/1.1 400 Bad Request", busy=busy)
    assert through.ok and through.unconfirmed == 2 and through.busy == ("n1/a 8080/TCP",)
    assert [a.endpoint for a in through.answers] == ["n2/c"]
    # without a busy endpoint, something else answering is a problem; so is nothing connecting
    assert "2 of 3 connections were answered by something other than cni-lab's responder" in judged(
        lab, d, confirmed, b"", b"x").problem
    assert judged(lab, d, b"", connected=False, busy=busy).problem == "1 of 1 connections got no answer"


def test_the_kernel_is_asked_for_each_transport_once_and_refuses_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert transports.socket_kind("TCP") == (socket.SOCK_STREAM, socket.IPPROTO_TCP)
    assert transports.socket_kind("UDP") == (socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    assert transports.socket_kind("SCTP") == (socket.SOCK_STREAM, socket.IPPROTO_SCTP)  # one-to-one style: as TCP
    lab = services_lab({**WEB, "ports": [*WEB["ports"], {"name": "sig", "port": 90, "protocol": "SCTP"}]})
    lab = dataclasses.replace(lab, scenario=dataclasses.replace(lab.scenario, probe_ports=(model.ProbePort("SCTP", 99),)))
    uses = lab.scenario.protocol_uses()
    assert uses["SCTP"] == ("services[0].ports[3].protocol", "probe port sctp/99")
    assert uses["TCP"] == ("services[0].ports[0].protocol", "services[0].ports[1].protocol")
    monkeypatch.setattr(transports, "missing", lambda protocol: "Protocol not supported" if protocol == "SCTP" else "")
    with pytest.raises(LabError) as refused:
        transports.require(uses, "s.yaml")
    assert refused.value.problems == (
        "s.yaml: services[0].ports[3].protocol, probe port sctp/99: SCTP needs the kernel's SCTP sockets "
        "(CONFIG_IP_SCTP, the sctp module), which this kernel lacks (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): "
        "Protocol not supported): load it (sudo modprobe sctp) or use TCP or UDP",)
    monkeypatch.setattr(transports, "missing", lambda protocol: "")
    transports.require(uses, "s.yaml")  # a kernel with SCTP: nothing to say


def test_sctp_probe_ports_are_read_and_refused_where_the_kernel_is_asked() -> None:
    assert model.load_probe_ports(("sctp/80",), "--port") == (model.ProbePort("SCTP", 80),)


def _with_services(*found: probes.ServiceProbe) -> Any:
    base = hand_made("host-gw", [])
    return dataclasses.replace(base, services=found)


def test_reports_say_the_port_reached_the_protocol_and_a_busy_port() -> None:
    lab = services_lab()
    d = dial(lab, "n1/b", "http")
    busy = frozenset({("n1/a", "TCP", 8080)})
    ok = judged(lab, d, f"n2/c|{ip(lab, 'n1/b')}|8080".encode(), b"", busy=busy)
    wrong = judged(lab, d, f"n1/a|{ip(lab, 'n1/b')}|9090".encode())
    udp = judged(lab, dial(lab, "n1/b", "dns"), f"n1/a|{ip(lab, 'n1/b')}|5353".encode(), connected=False)
    result = _with_services(ok, wrong, udp)
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    jsonschema.validate(document, json.loads((ROOT / "docs/check.schema.json").read_text()))
    first = document["services"][0]
    assert first["protocol"] == "TCP" and first["portName"] == "http" and first["targetPort"] == 8080
    assert first["unconfirmed"] == 1 and first["busy"] == ["n1/a 8080/TCP"]
    assert first["answers"] == [{"answeredBy": "n2/c", "observedSource": ip(lab, "n1/b"), "reachedPort": 8080}]
    assert document["services"][2]["protocol"] == "UDP" and not document["passed"]

    from rich.console import Console

    console = Console(width=200, record=True)
    for part in terminal.services_view(result):
        console.print(part)
    text = console.export_text()
    assert "pod → Service default/web:http :80/TCP → targetPort 8080" in text
    assert "pod → Service default/web:dns :53/UDP → targetPort 5353" in text
    assert "n1/b: n1/a was reached on port 9090, not default/web:http's targetPort 8080" in text
    assert ("note: n1/a has a server of its own on 8080/TCP: the connections it accepted count as reached, but "
            "which endpoint answered and the source it saw are not confirmed") in text

    junit = json_junit.check_junit(result)
    assert 'name="pod → Service default/web:http :80/TCP"' in junit and "reached on port 9090" in junit
    assert 'name="pod → Service default/web:dns :53/UDP"' in junit


def test_up_refuses_sctp_where_the_kernel_has_none_before_touching_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    from cni_lab import lifecycle, plan

    monkeypatch.setattr(lifecycle, "require_root", lambda what: None)
    monkeypatch.setattr(transports, "missing", lambda protocol: "Protocol not supported" if protocol == "SCTP" else "")
    monkeypatch.setattr(plan, "build", lambda lab: pytest.fail("planned a lab the kernel cannot probe"))
    lab = services_lab({**WEB, "ports": [*WEB["ports"], {"name": "sig", "port": 90, "protocol": "SCTP"}]})
    with pytest.raises(LabError, match=r"^s.yaml: services\[0\].ports\[3\].protocol: SCTP needs the kernel's SCTP sockets"):
        lifecycle.up(lab)
