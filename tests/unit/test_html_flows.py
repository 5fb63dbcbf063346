"""The HTML report's "Flows of the last check": one row per recorded flow, coloured by verdict,
a filter box that works offline, the note when check recorded fewer flows than it saw."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Any

import pytest

from cni_lab.observe.flows import to_json
from cni_lab.report import flow_table, html

from test_observe_json import FLOWS

CHECK: dict[str, Any] = {"passed": True, "durationSeconds": 1.0, "rules": [], "endpoints": [], "pairs": [], "families": [4]}
FACTS: dict[str, Any] = {"dataplane": "host-gw", "nodes": []}


class Rows(HTMLParser):
    """The flows table's rows as cell texts, and every attribute that could fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.styles: list[str] = []
        self.fetches: list[str] = []
        self._in_flows = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.fetches += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "table":
            self._in_flows = a.get("id") == "flows"
        elif tag == "tr" and self._in_flows and "flow" in (a.get("class") or "").split():
            self.rows.append([])
        elif tag == "td" and self._in_flows and self.rows:
            self._cell = []
            if a.get("class") == "verdict":
                self.styles.append(a.get("style") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._in_flows = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def report(**check: Any) -> tuple[str, Rows]:
    page = html.page("lab", "<svg/>", {**CHECK, **check}, FACTS)
    parsed = Rows()
    parsed.feed(page)
    return page, parsed


def test_every_recorded_flow_is_a_row_coloured_by_its_verdict() -> None:
    flows = [json.loads(json.dumps(to_json(f))) for f in FLOWS]
    page, parsed = report(flows=flows, flowsSeen=len(flows))
    assert f"<h2>Flows of the last check · {len(FLOWS)} flows</h2>" in page
    assert len(parsed.rows) == len(FLOWS) and all(len(r) == 8 for r in parsed.rows)
    for f, row, style in zip(FLOWS, parsed.rows, parsed.styles):
        assert row[1] == f.source.describe() and row[5] == f.node and row[6] == f.point and row[7] == f.cause
        assert row[4].startswith(f.verdict) and html.FLOW_COLORS[f.verdict] in style
    drop = parsed.rows[next(i for i, f in enumerate(FLOWS) if f.rule == "cni-lab policy-drop ingress")]
    assert drop[3] == "TCP/80" and drop[4] == "DROPPED POLICY_DENIED" and drop[7].startswith("policy: ")
    dnat = parsed.rows[next(i for i, f in enumerate(FLOWS) if f.verdict == "TRANSLATED")]
    assert dnat[2] == "service default/web 10.96.0.2:80 ⇒ node2/web2 10.244.1.2:8080"
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", parsed.rows[0][0])
    assert html.FLOW_COLORS["DROPPED"] == html.VERDICT_COLORS["wrong-peer"]
    assert "flows observed: the first" not in page


def test_the_page_fetches_nothing_and_keeps_its_style() -> None:
    page, parsed = report(flows=[to_json(f) for f in FLOWS])
    assert parsed.fetches == [] and "http" not in page.split("<h2>Flows")[1]
    assert 'id="flow-filter"' in page and "function filterFlows" in page and "table.flows td" in page


def test_a_capped_record_says_so_with_its_note() -> None:
    page, parsed = report(flows=[to_json(f) for f in FLOWS[:3]], flowsSeen=2500,
                          flowsNote="check keeps the first 2000 flows <of any run>")
    assert len(parsed.rows) == 3
    assert "2500 flows observed: the first 3 recorded." in page
    assert "check keeps the first 2000 flows &lt;of any run&gt;" in page


def test_an_older_check_has_no_section_and_an_empty_one_says_nothing_was_seen() -> None:
    page, _ = report()
    assert "Flows of the last check" not in page and "filterFlows" not in page
    page, parsed = report(flows=[], flowsSeen=0)
    assert "No flow was observed while check probed." in page and parsed.rows == [] and "filterFlows" not in page


FAKE_DOM = """
const rows = ROWS.map(t => ({textContent: t, style: {display: ''}}));
const shown = {textContent: ''};
global.document = {querySelectorAll: () => rows, getElementById: () => shown};
SCRIPT
filterFlows({value: QUERY});
console.log(JSON.stringify({shown: shown.textContent, hidden: rows.map(r => r.style.display === 'none')}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="the filter's JavaScript runs under node")
@pytest.mark.parametrize(("query", "hidden", "shown"), [
    ("", [False, False, False], 3), ("dropped", [True, False, True], 1), ("  NODE2   tcp ", [True, False, False], 2),
    ("nothing-like-this", [True, True, True], 0)])
def test_the_filter_keeps_rows_holding_every_word(query: str, hidden: list[bool], shown: int) -> None:
    script = flow_table.SCRIPT.removeprefix("<script>").removesuffix("</script>")
    rows = ["12:00 node1/a → node1/b UDP FORWARDED node1", "12:00 node1/a → node2/b TCP/80 DROPPED node2",
            "12:00 node2/b → node1/a TCP/80 FORWARDED node2"]
    program = (FAKE_DOM.replace("ROWS", json.dumps(rows)).replace("SCRIPT", script)
               .replace("QUERY", json.dumps(query)))
    done = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"shown": shown, "hidden": hidden}
