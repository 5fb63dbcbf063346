"""The stub resolver without a network: DNS messages by struct (RFC 1035), glibc's search and
ndots, and how check judges a lookup (the rule dns, its JSON and JUnit)."""

from __future__ import annotations

import dataclasses
import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from cni_lab import dns_message as dm
from cni_lab.probe import dns_probes
from cni_lab.report import json_junit

from labs import make_lab, network_policy, pod
from test_machine import result as hand_made

ROOT = Path(__file__).resolve().parents[2]
CONF = dm.ResolvConf.parse("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                           "nameserver 10.96.0.10\noptions ndots:5\n")


def test_resolv_conf_is_read_as_glibc_reads_it() -> None:
    assert CONF == dm.ResolvConf(("10.96.0.10",), ("default.svc.cluster.local", "svc.cluster.local", "cluster.local"), 5)
    assert dm.ResolvConf.parse("domain a\nsearch b c # x\noptions ndots:99 rotate\n") == dm.ResolvConf((), ("b", "c"), 15)


@pytest.mark.parametrize("name,asked", [
    ("web", ["web.default.svc.cluster.local", "web.svc.cluster.local", "web.cluster.local", "web"]),
    ("web.x", ["web.x.default.svc.cluster.local", "web.x.svc.cluster.local", "web.x.cluster.local", "web.x"]),
    ("a.b.c.d.e.f", ["a.b.c.d.e.f", "a.b.c.d.e.f.default.svc.cluster.local", "a.b.c.d.e.f.svc.cluster.local",
                     "a.b.c.d.e.f.cluster.local"]),  # 5 dots or more: as it is first
    ("web.default.svc.cluster.local.", ["web.default.svc.cluster.local"]),  # absolute: alone
])
def test_the_search_path_and_ndots_as_glibc_walks_them(name: str, asked: list[str]) -> None:
    assert list(dm.candidates(name, CONF)) == asked


def _answer(question: bytes, *records: tuple[int, bytes], rcode: int = 0) -> bytes:
    """A server's answer to `question`: the header flipped to a response, the question kept, each
    record's owner a compression pointer to the question's name (offset 12)."""
    ident = question[:2]
    body = question[12:]
    out = ident + struct.pack("!HHHHH", 0x8580 | rcode, 1, len(records), 0, 0) + body
    for kind, rdata in records:
        out += b"\xc0\x0c" + struct.pack("!HHIH", kind, 1, 5, len(rdata)) + rdata
    return out


def test_a_query_and_its_answer_round_trip() -> None:
    q = dm.query("web.default.svc.cluster.local", "A", ident=77)
    assert q[:12] == struct.pack("!HHHHHH", 77, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x03web\x07default\x03svc\x07cluster\x05local\x00" + struct.pack("!HH", 1, 1)
    r = dm.decode(_answer(q, (1, bytes([10, 96, 0, 2]))))
    assert (r.id, r.rcode, r.authoritative, r.question) == (77, "NOERROR", True, "web.default.svc.cluster.local")
    assert r.answers == (dm.Answer("web.default.svc.cluster.local", "A", 5, "10.96.0.2"),) and r.addresses() == ("10.96.0.2",)
    srv = struct.pack("!HHH", 10, 100, 80) + b"\xc0\x0c"
    assert dm.decode(_answer(dm.query("_http._tcp.web", "SRV"), (33, srv))).answers[0].value == "10 100 80 _http._tcp.web."
    assert dm.decode(_answer(q, rcode=3)).rcode == "NXDOMAIN"
    assert dm.tcp_frame(q)[:2] == struct.pack("!H", len(q))


@pytest.mark.parametrize("data", [b"", b"\0" * 11, dm.query("a"), b"\0\0\x80\0\0\0\0\x01\0\0\0\0\xc0\x0c"])
def test_bytes_that_are_no_answer_are_refused_as_such(data: bytes) -> None:
    with pytest.raises(dm.MessageError):
        dm.decode(data)


def test_a_pointer_loop_is_no_name() -> None:
    looped = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c"
    with pytest.raises(dm.MessageError):
        dm.decode(looped)


def _lab(**keys: object):
    return make_lab([{"name": "n1", "pods": [pod("a", labels={"app": "web"}), pod("b", "x", {"role": "client"})]}],
                    name="d", namespaces={"x": {}}, services=[{"name": "web", "selector": {"app": "web"},
                                                                 "ports": [{"port": 80}]}], **keys)


def test_every_pod_asks_for_every_service_by_the_name_its_namespace_needs() -> None:
    lab = _lab()
    asked = {(p.id, s.qualified, name, t) for p, s, name, t in dns_probes.questions(lab)}
    assert ("n1/a", "default/web", "web", "UDP") in asked and ("n1/x/b", "default/web", "web.default", "TCP") in asked
    assert ("n1/x/b", "kube-system/kube-dns", "kube-dns.kube-system", "UDP") in asked
    assert len(asked) == len(lab.pods) * len(lab.services) * 2


def _probe(lab, src: str, addresses: tuple[str, ...], asked=(("web.default.svc.cluster.local", "NOERROR"),),
           reached: bool | None = True, transport: str = "UDP") -> dns_probes.DnsProbe:
    pod_ = next(p for p in lab.pods if p.id == src)
    svc = lab.services[0]
    return dns_probes.judge(lab, pod_, svc, "web", transport, dns_probes.Lookup(tuple(asked), addresses), reached)


def test_a_lookup_passes_with_the_cluster_ip_and_fails_with_anything_else() -> None:
    lab = _lab()
    assert _probe(lab, "n1/a", ("10.96.0.2",)).ok
    wrong = _probe(lab, "n1/a", (), asked=(("web.default.svc.cluster.local", "NXDOMAIN"), ("web", "REFUSED")))
    assert wrong.problem == ("got no address, not the ClusterIP 10.96.0.2 (web.default.svc.cluster.local NXDOMAIN, "
                             "web REFUSED)")
    assert "connection to it failed" in _probe(lab, "n1/a", ("10.96.0.2",), reached=False).problem


DENY_DNS = network_policy("no-dns", {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                                     "egress": [{"to": [{"podSelector": {}, "namespaceSelector": {}}],
                                                 "ports": [{"protocol": "TCP", "port": 80}]}]})


def test_a_policy_that_blocks_dns_is_expected_to_silence_it_while_the_cluster_ip_works() -> None:
    lab = _lab(policies=[DENY_DNS])
    blocked = _probe(lab, "n1/x/b", (), asked=(("web.default.x.svc.cluster.local", "timeout"),))
    assert blocked.ok and not blocked.allowed and "x/no-dns" in blocked.policy
    words = dns_probes.summary(blocked)
    assert "DNS blocked as the policies say" in words and "the ClusterIP 10.96.0.2 itself works" in words
    leaked = _probe(lab, "n1/x/b", ("10.96.0.2",))
    assert not leaked.ok and "but the policies block DNS" in leaked.problem
    assert _probe(lab, "n1/a", ("10.96.0.2",)).allowed  # a pod no policy isolates


def test_the_rule_dns_in_json_and_junit_and_none_without_dns() -> None:
    lab = _lab()
    base = dataclasses.replace(hand_made("host-gw", []), lab=lab)
    result = dataclasses.replace(base, dns=(_probe(lab, "n1/a", ("10.96.0.2",)), _probe(lab, "n1/a", ())))
    document = json.loads(json_junit.dumps(json_junit.check_json(result)))
    jsonschema.validate(document, json.loads((ROOT / "docs/check.schema.json").read_text()))
    rule = document["rules"][-1]
    assert (rule["rule"], rule["total"], rule["met"], rule["passed"]) == ("dns", 2, 1, False) and not document["passed"]
    assert document["dns"][0]["asked"] == [{"name": "web.default.svc.cluster.local", "rcode": "NOERROR"}]
    suite = ET.fromstring(json_junit.check_junit(result)).find("testsuite")
    assert suite is not None
    case = next(c for c in suite.iter("testcase") if (c.get("name") or "").startswith("dns:"))
    assert case.find("failure") is not None
    plain = hand_made("host-gw", [])
    assert "dns" not in json_junit.check_json(plain) and "dns:" not in json_junit.check_junit(plain)


def test_explain_and_trace_say_each_step_of_the_search() -> None:
    from rich.console import Console

    from cni_lab.lesson import name_lookups
    from cni_lab.report import dns_view

    lab = _lab()
    assert name_lookups.is_name(lab, "web") and name_lookups.is_name(lab, "web.default.svc.cluster.local")
    assert not name_lookups.is_name(lab, "n1/a") and not name_lookups.is_name(lab, "10.96.0.2:80")
    assert name_lookups.sample_names(lab, next(p for p in lab.pods if p.id == "n1/x/b")) == [
        "web.default", "kube-dns.kube-system"]
    found = dns_probes.Lookup((("web.x.svc.cluster.local", "NXDOMAIN"), ("web.svc.cluster.local", "NXDOMAIN"),
                               ("web.cluster.local", "NXDOMAIN"), ("web", "REFUSED")), ())
    facts = name_lookups.PodNames("n1/x/b", "search x.svc.cluster.local\nnameserver 10.96.0.10\n", (("web", found),))
    console = Console(width=200, record=True, color_system=None)
    console.print(dns_view.pod_view(facts))
    shown = console.export_text()
    assert "nameserver 10.96.0.10" in shown and "web: 0 dots < ndots 5, so the search list first" in shown
    assert "1. web.x.svc.cluster.local  → NXDOMAIN: no such name: the next search domain" in shown
    assert "4. web  → REFUSED: not the cluster's (no upstream: nothing leaves the machine)" in shown
