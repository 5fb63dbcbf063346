"""observe's filters, summary and terminal line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from rich.console import Console

from cni_lab.errors import LabError
from cni_lab.observe import filters
from cni_lab.observe.flows import Flow
from cni_lab.observe.summary import summarize, to_json as summary_json
from cni_lab.report.flow_view import clock, flow_line, summary_view

from test_observe_json import FLOWS

NOW = FLOWS[0].time + 100


def kept(**options: object) -> list[Flow]:
    return [f for f in FLOWS if filters.build(now=NOW, **options).matches(f)]  # type: ignore[arg-type]


def test_no_option_keeps_everything() -> None:
    assert kept() == FLOWS


@pytest.mark.parametrize("name", ["default/client", "node1/client", "client"])
def test_pod_matches_either_end_by_any_of_its_names(name: str) -> None:
    found = kept(pod=[name])
    assert found and all("node1/client" in (f.source.name, f.destination.name) for f in found)
    assert len(found) < len(FLOWS)


def test_node_is_where_it_was_seen() -> None:
    assert {f.node for f in kept(node=["node2"])} == {"node2"}


def test_from_and_to_by_name_address_and_cidr() -> None:
    services = kept(to=["10.96.0.0/12"])
    assert services and services == [f for f in FLOWS if f.destination.address.startswith("10.96.")]
    assert {f.source.address for f in kept(from_=["10.244.0.3"])} == {"10.244.0.3"}
    assert {f.source.name for f in kept(from_=["node2/api"])} == {"node2/api"}
    assert kept(from_=["fd00::/8"]) == [f for f in FLOWS if f.source.address.startswith("fd00")]
    assert kept(to=["outside"]) == [f for f in FLOWS if f.destination.kind == "outside"]


def test_port_matches_either_end_or_the_translated_one() -> None:
    found = kept(port=["8080"])
    assert len(found) == 1 and found[0].verdict == "TRANSLATED"
    assert all(80 in (f.source.port, f.destination.port) for f in kept(port=[80]))


def test_protocol_and_verdict_are_case_insensitive_and_icmp_is_both_families() -> None:
    assert {f.protocol for f in kept(protocol=["ICMP"])} == {"ICMPv4", "ICMPv6"}
    assert {f.verdict for f in kept(verdict=["dropped", "Error"])} == {"DROPPED", "ERROR"}
    assert {f.protocol for f in kept(protocol=["tcp"], verdict=["translated"])} == {"TCP"}


def test_since_counts_back_from_now_or_takes_a_time() -> None:
    assert kept(since="2m") == FLOWS and kept(since="30s") == [] and kept(since="99.5") == []
    assert kept(since="2023-11-14T22:13:20Z") == FLOWS
    assert kept(since="2023-11-14T23:13:20+01:00") == FLOWS and kept(since="2023-11-14T23:14:00+01:00") == []
    later = replace(FLOWS[0], time=NOW)
    assert filters.build(since="10s", now=NOW).matches(later)


@pytest.mark.parametrize(("options", "message"), [
    ({"port": ["http"]}, "--port 'http': a port is a number from 1 to 65535"),
    ({"port": [0]}, "--port 0"),
    ({"protocol": ["gre"]}, "--protocol 'gre': use tcp, udp, icmp or sctp"),
    ({"verdict": ["lost"]}, "--verdict 'lost': use one of FORWARDED, DROPPED, TRANSLATED, ERROR"),
    ({"since": "yesterday"}, "--since 'yesterday': give seconds"),
    ({"since": "2023-11-14T22:13:20"}, "carries its offset"),
    ({"to": ["10.0.0.0/33"]}, "--to '10.0.0.0/33': not an address or a CIDR"),
    ({"pod": [""]}, "--pod ''"),
    ({"node": ["node1/"]}, "--node 'node1/'"),
])
def test_bad_values_are_one_line_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(LabError) as e:
        filters.build(**options)  # type: ignore[arg-type]
    assert len(e.value.problems) == 1 and message in e.value.problems[0] and "\n" not in e.value.problems[0]


def test_summary_counts_verdicts_talkers_and_drop_causes() -> None:
    doubled = FLOWS + [f for f in FLOWS if f.rule == "cni-lab fault forward-drop"]
    s = summarize(doubled, top=2)
    assert s.total == len(FLOWS) + 1
    assert dict(s.verdicts) == {v: sum(f.verdict == v for f in doubled) for v in ("FORWARDED", "DROPPED", "TRANSLATED", "ERROR")}
    assert s.talkers[0] == ("node1/client", "node2/web2", 5)
    assert len(s.talkers) == 2 and len(s.drops) == 2
    assert s.drops[0] == ("fault forward-drop at node1: nft table inet cni-lab-fault drops the pod traffic it forwards", 2)
    assert [v for v, _ in s.verdicts] == ["FORWARDED", "DROPPED", "TRANSLATED", "ERROR"]


def test_summary_of_nothing() -> None:
    s = summarize([])
    assert (s.total, s.verdicts, s.talkers, s.drops) == (0, (), (), ())
    assert summary_json(s) == {"total": 0, "verdicts": {}, "topTalkers": [], "topDropCauses": []}


def test_summary_json_keeps_the_order_most_first() -> None:
    doubled = FLOWS + [f for f in FLOWS if f.rule == "cni-lab fault forward-drop"]
    doc = json.loads(json.dumps(summary_json(summarize(doubled, top=2))))
    assert doc["total"] == len(doubled)
    assert list(doc["verdicts"]) == ["FORWARDED", "DROPPED", "TRANSLATED", "ERROR"]
    assert doc["verdicts"]["DROPPED"] == sum(f.verdict == "DROPPED" for f in doubled)
    assert doc["topTalkers"][0] == {"source": "node1/client", "destination": "node2/web2", "flows": 5}
    assert doc["topDropCauses"][0] == {"cause": "fault forward-drop at node1: nft table inet cni-lab-fault drops the pod "
                                                "traffic it forwards", "flows": 2}
    assert len(doc["topTalkers"]) == len(doc["topDropCauses"]) == 2


def render(renderable: object) -> str:
    console = Console(width=400, record=True, color_system="truecolor")
    console.print(renderable)
    return console.export_text()


def test_a_flow_line_reads_left_to_right_with_its_cause() -> None:
    f = next(f for f in FLOWS if f.rule == "cni-lab policy-drop ingress")
    line = flow_line(f)
    assert line.plain.startswith(clock(f.time) + " node2/api 10.244.1.2:1 → node1/web 10.244.0.2:80 TCP Flags: SYN DROPPED "
                                 "POLICY_DENIED @node1 TO_ENDPOINT — policy: default/deny-all")
    assert any(span.style == "bold red" for span in line.spans)
    dnat = flow_line(next(f for f in FLOWS if f.verdict == "TRANSLATED"))
    assert "⇒ node2/web2 10.244.1.2:8080" in dnat.plain and any(s.style == "cyan" for s in dnat.spans)


def test_clock_is_hours_to_milliseconds() -> None:
    assert len(clock(FLOWS[0].time)) == 12 and clock(FLOWS[0].time).endswith(".250")


def test_summary_view_shows_the_tables() -> None:
    text = render(summary_view(summarize(FLOWS)))
    assert f"{len(FLOWS)} flows:" in text and "top talkers" in text and "top drop causes" in text
    assert "node1/client" in text and "fault forward-drop at node1" in text
    assert "top drop causes" not in render(summary_view(summarize([f for f in FLOWS if f.verdict == "FORWARDED"])))
