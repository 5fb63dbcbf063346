"""The report's "Flows of the last check": what `check` observed while it probed (its document's
`flows`, Hubble's JSON), one row per flow, with a text box that hides the rows not matching
(a few lines of inline JavaScript: the page fetches nothing, it works offline)."""

from __future__ import annotations

from html import escape
from typing import Any, Mapping

from cni_lab.observe.flows import Flow, recorded, rfc3339

STYLE = """
table.flows td,table.flows th{border:1px solid #dadce0;vertical-align:top}
table.flows td:not(:last-child){white-space:nowrap}table.flows td.verdict{color:#fff;font-weight:bold}
input.filter{font-size:13px;padding:3px 6px;width:32em;margin:6px 0}
.note{color:#5f6368}
"""
# every word typed must be in a row (case does not matter) for the row to stay shown
SCRIPT = """<script>
function filterFlows(box){
  var words=box.value.toLowerCase().split(/\\s+/).filter(function(w){return w;}), shown=0;
  document.querySelectorAll('#flows tr.flow').forEach(function(row){
    var text=row.textContent.toLowerCase();
    var keep=words.every(function(w){return text.indexOf(w)>=0;});
    row.style.display=keep?'':'none'; if(keep){shown++;}
  });
  document.getElementById('flows-shown').textContent=shown;
}
</script>"""


def _time(f: Flow) -> str:
    stamp = rfc3339(f.time)
    return f'<span title="{stamp}">{stamp[11:23]}</span>'


def _row(f: Flow, colors: Mapping[str, str]) -> str:
    where = f.destination.describe() + (f" ⇒ {f.translated.describe()}" if f.translated is not None else "")
    port = f"{f.protocol}/{f.port}" if f.port is not None else f.protocol
    verdict = f.verdict + (f" {f.drop_reason_desc}" if f.drop_reason_desc else "")
    return (f'<tr class="flow {f.verdict.lower()}"><td>{_time(f)}</td><td>{escape(f.source.describe())}</td>'
            f'<td>{escape(where)}</td><td title="{escape(f.summary())}">{escape(port)}</td>'
            f'<td class="verdict" style="background:{colors.get(f.verdict, "#5f6368")}">{escape(verdict)}</td>'
            f"<td>{escape(f.node)}</td><td>{escape(f.point)}</td><td>{escape(f.cause)}</td></tr>")


def section(check: Mapping[str, Any], colors: Mapping[str, str]) -> list[str]:
    """The section's HTML, or nothing when the check recorded no flows (an older check);
    `colors`: verdict → the colour of its cell."""
    if "flows" not in check:
        return []
    flows = recorded(check)
    seen = check.get("flowsSeen", len(flows))
    parts = [f"<h2>Flows of the last check · {len(flows)} flows</h2>"]
    if seen > len(flows):
        parts.append(f'<p class="note">{seen} flows observed: the first {len(flows)} recorded.</p>')
    if check.get("flowsNote"):
        parts.append(f'<p class="note">{escape(str(check["flowsNote"]))}</p>')
    if not flows:
        parts.append("<p>No flow was observed while check probed.</p>")
        return parts
    parts.append('<input class="filter" id="flow-filter" type="search" oninput="filterFlows(this)" '
                 'placeholder="filter: words every row shown contains, e.g. DROPPED node2" '
                 f'aria-label="filter the flows"> <span id="flows-shown">{len(flows)}</span> shown')
    parts.append('<table class="flows" id="flows"><tr><th>time (UTC)</th><th>source</th><th>destination</th>'
                 "<th>protocol/port</th><th>verdict</th><th>node</th><th>observation point</th><th>cause</th></tr>")
    parts += [_row(f, colors) for f in flows]
    parts += ["</table>", SCRIPT]
    return parts
