"""`cni-lab report`: one self-contained HTML page (no network fetches) with the topology picture,
the last `check` as a heat-map matrix, the summary per Kubernetes rule, the flows it observed
(report/flow_table.py), and each node's addresses and routes. CI can keep it as an artifact."""

from __future__ import annotations

from html import escape
from typing import Any

from cni_lab.report import flow_table

VERDICT_COLORS = {"ok": "#34a853", "nat": "#a142f4", "wrong-peer": "#d93025", "timeout": "#f9ab00",
                  "unreachable": "#e8710a"}
# a flow's verdict coloured as a pair's: forwarded as ok, translated as NAT, dropped as a wrong
# answer, an ICMP error as unreachable
FLOW_COLORS = {"FORWARDED": VERDICT_COLORS["ok"], "TRANSLATED": VERDICT_COLORS["nat"],
               "DROPPED": VERDICT_COLORS["wrong-peer"], "ERROR": VERDICT_COLORS["unreachable"]}
GRID_LIMIT = 80  # endpoints; larger labs get the summary and the failing pairs only

STYLE = """
body{font-family:sans-serif;margin:24px;color:#202124}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse}td,th{padding:3px 6px;font-size:12px}
table.rules td,table.rules th,table.routes td{border:1px solid #dadce0}
table.matrix td{width:14px;height:14px;padding:0;border:1px solid #fff}
table.matrix th{font-weight:normal;text-align:right;white-space:nowrap}
.pass{color:#188038;font-weight:bold}.fail{color:#d93025;font-weight:bold}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
td.miss{outline:2px solid #202124}
"""


def _matrix(check: dict[str, Any]) -> str:
    first = (check.get("families") or [4])[0]
    endpoints = [e["id"] for e in check["endpoints"] if e.get("family", first) == first]
    # the first family's pair verdicts (a dual-stack lab's IPv6 pairs and a policy lab's port
    # probes are pairs of the same endpoints: they have sections of their own)
    cells = {(p["src"], p["dst"]): p for p in check["pairs"]
             if p.get("protocol", "ICMP") == "ICMP" and p.get("family", first) == first}
    rows = ['<table class="matrix" id="matrix"><tr><th>from \\ to</th>'
            + "".join(f'<th title="{escape(e)}">{i + 1}</th>' for i, e in enumerate(endpoints)) + "</tr>"]
    for i, src in enumerate(endpoints):
        tds = []
        for dst in endpoints:
            p = cells.get((src, dst))
            if p is None:
                tds.append('<td style="background:#f1f3f4"></td>')
                continue
            rtt = f", {p['rttMs']:.2f} ms" if p.get("rttMs") else ""
            seen = f", receiver saw {p['observedSource']}" if p.get("observedSource") else ""
            # then why: the probe's detail, in a policy lab why the policies say what they say, and
            # for a pair not as expected what check found broke it
            failed = (p.get("failureCause") or {}).get("words")
            title = f"{src} → {dst}: {p['verdict']}{rtt}{seen}." + "".join(
                f" {why}" for why in (p.get("detail"), p.get("cause"), failed and f"Cause: {failed}.") if why)
            cls = "" if p["met"] else ' class="miss"'
            tds.append(f'<td{cls} style="background:{VERDICT_COLORS[p["verdict"]]}" title="{escape(title)}"></td>')
        rows.append(f"<tr><th>{i + 1} {escape(src)}</th>{''.join(tds)}</tr>")
    rows.append("</table>")
    legend = "".join(f'<span style="background:{c}"></span>{v}' for v, c in VERDICT_COLORS.items())
    return "\n".join(rows) + f'<p class="legend">{legend} · outlined: not as expected</p>'


def _port_grids(check: dict[str, Any]) -> list[str]:
    """A NetworkPolicy lab's probes per port, as the e2e suite logs its truth tables: rows from,
    columns to, `.` reached, `X` blocked, `!` where the network did not do what the policies say."""
    by_port: dict[str, list[dict[str, Any]]] = {}
    for p in check["pairs"]:
        if p.get("protocol", "ICMP") != "ICMP":
            by_port.setdefault(f"{p['protocol']}/{p['port']}", []).append(p)
    parts = []
    for name, probes in by_port.items():
        pods = sorted({p["src"] for p in probes} | {p["dst"] for p in probes})
        cells = {(p["src"], p["dst"]): p for p in probes}
        lines = ["-\t" + "\t".join(escape(pod) for pod in pods)]
        for src in pods:
            row = []
            for dst in pods:
                p = cells.get((src, dst))
                if p is None:
                    row.append(".")
                    continue
                mark = "!" if not p["met"] else "." if p["verdict"] == "ok" else "X"
                # each cell says why as a tooltip: the policies' cause (or, without policies, the verdict)
                title = f"{src} → {dst} {name}: {p.get('cause') or p['verdict']}"
                row.append(f'<span title="{escape(title)}">{mark}</span>')
            lines.append(escape(src) + "\t" + "\t".join(row))
        wrong = sum(not p["met"] for p in probes)
        mark = '<span class="pass">✓</span>' if not wrong else '<span class="fail">✗</span>'
        parts.append(f"<h3>NetworkPolicy {escape(name)}: {len(probes) - wrong}/{len(probes)} as the policies say {mark}</h3>")
        parts.append(f'<pre class="truth" id="truth-{escape(name.replace("/", "-"))}">{chr(10).join(lines)}</pre>')
    return parts


def _services(check: dict[str, Any]) -> list[str]:
    """pod → Service and outside → NodePort: per Service port, who answered and what they saw."""
    probes = check.get("services") or []
    if not probes:
        return []
    rows = ['<h2>Services</h2><table class="rules" id="services"><tr><th>client</th><th>dialled</th>'
            "<th>answered by (source seen)</th><th></th></tr>"]
    for p in probes:
        name = f"{p['service']}:{p['portName']}" if p.get("portName") else p["service"]
        dialled = (f"{name} :{p['port']}/{p.get('protocol', 'TCP')}"
                   + (f" on {p['via']} ({p['externalTrafficPolicy']})" if p.get("via") else ""))
        answers = ", ".join(f"{a['answeredBy']} ({a['observedSource']})" + (f" on :{a['reachedPort']}" if "reachedPort" in a else "")
                            for a in p["answers"]) or ("not confirmed" if p.get("unconfirmed") else "no answer")
        mark = '<span class="pass">✓</span>' if p["ok"] else f'<span class="fail">✗ {escape(p["problem"] or "")}</span>'
        rows.append(f"<tr><td>{escape(p['src'])}</td><td>{escape(dialled)}</td><td>{escape(answers)}</td><td>{mark}</td></tr>")
    rows.append("</table>")
    return rows


def _lb_slot(entry: dict[str, Any]) -> str:
    """A slot of cilium_lb4_services_v2 (explain's JSON of `cilium bpf lb list`) in words."""
    if entry["slot"] == 0:
        return (f"BPF Service frontend [{', '.join(entry['flags'])}]: {entry['count']} backends, replies turned back "
                f"by reverse NAT {entry['revNatId']}")
    return f"DNAT to {entry['backend']}" if entry["backend"] else f"backend {entry['backendId']} not found: dropped"


def page(lab_name: str, topology_svg: str, check: dict[str, Any] | None, facts: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>cni-lab {escape(lab_name)}</title>"
             f"<style>{STYLE}{flow_table.STYLE}</style></head><body>",
             f"<h1>cni-lab · lab {escape(lab_name)} · {escape(facts.get('dataplane', ''))}</h1>",
             "<h2>Topology</h2>", topology_svg]
    if check is None:
        parts.append("<h2>Connectivity</h2><p>No check has run yet: <code>sudo cni-lab check</code>, then the report again.</p>")
    else:
        verdict = '<span class="pass">PASS</span>' if check["passed"] else '<span class="fail">FAIL</span>'
        total = sum(r["total"] for r in check["rules"])
        parts.append(f"<h2>Connectivity: {verdict} · {total} pairs in {check['durationSeconds']} s</h2>")
        parts.append('<table class="rules" id="rules"><tr><th>Kubernetes rule</th><th>ok without NAT</th>'
                     "<th>as expected</th><th></th></tr>")
        for r in check["rules"]:
            mark = '<span class="pass">✓</span>' if r["passed"] else '<span class="fail">✗</span>'
            parts.append(f"<tr><td>{escape(r['title'])}</td><td>{r['ok']}/{r['total']}</td>"
                         f"<td>{r['met']}/{r['total']}</td><td>{mark}</td></tr>")
        parts.append("</table>")
        if len(check["endpoints"]) <= GRID_LIMIT and not check.get("pairsOmitted"):
            parts += ["<h2>Matrix</h2>", _matrix(check)]
        else:
            parts.append(f"<p>{len(check['endpoints'])} endpoints: too many for a grid; the pairs not as expected follow.</p>")
        parts += _port_grids(check)
        parts += _services(check)
        bad = [p for p in check["pairs"] if not p["met"]]
        if bad:
            parts.append("<h2>Pairs not as expected</h2><table class=\"rules\"><tr><th>from</th><th>to</th>"
                         "<th>verdict</th><th>why</th></tr>")
            parts += [f"<tr><td>{escape(p['src'])}</td><td>{escape(p['dst'])}</td><td>{escape(p['verdict'])}</td>"
                      f"<td>{escape(p['detail'])}</td></tr>" for p in bad[:500]]
            parts.append("</table>")
        parts += flow_table.section(check, FLOW_COLORS)
    parts.append("<h2>Nodes</h2>")
    for node in facts.get("nodes", []):
        parts.append(f"<h3>{escape(node['name'])} · eth0 {escape(str(node['underlay']['address']))}</h3>")
        parts.append('<table class="routes"><tr><th>route</th><th>meaning</th></tr>')
        parts += [f"<tr><td><code>{escape(r['route'])}</code></td><td>{escape(r['meaning'])}</td></tr>" for r in node["routes"]]
        parts.append("</table><ul>")
        parts += [f"<li>pod {escape(p['name'])}: eth0 {escape(str(p['address']))}, host end {escape(str(p['hostVeth']))}</li>"
                  for p in node["pods"]]
        parts.append("</ul>")
        nat = node.get("nat") or {"masquerade": [], "services": []}
        rows = [f"<tr><td><code>{escape(m['chain'])}: {escape(m['rule'])}</code></td><td>{escape(m['meaning'])}</td></tr>"
                for m in nat["masquerade"]]
        rows += [f"<tr><td>kube-proxy</td><td>{escape(w)}</td></tr>" for w in nat["services"]]
        rows += [f"<tr><td><code>{escape(s['frontend'])} ({s['slot']})</code></td><td>{escape(_lb_slot(s))}</td></tr>"
                 for s in (node.get("bpf") or {}).get("services") or []]
        if rows:
            parts += ['<table class="routes nat"><tr><th>NAT here</th><th>meaning</th></tr>', *rows, "</table>"]
    parts.append("</body></html>")
    return "\n".join(parts)
