"""`graph --flow SRC DST`: the lab's picture with the way a pair's packets went, as the last `check`
observed it. Each flow recorded between the two (either way) is a hop, numbered in the order it
was observed: the node (or router) that saw it is outlined, the hop's number sits on it in its
verdict's colour (a drop red), consecutive hops at different places are joined by an arrow, and
a list under the picture says what each hop was and why a dropped one was dropped.

What is drawn is what was observed, nothing inferred: a node that forwarded a packet without a
log rule firing there has no number. The topology itself is topology.py's, unchanged; the SVG
overlay reads where each node and pod was drawn from that SVG's ids (node-NAME, pod-ID). Pure.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html import escape
from typing import Sequence

from cni_lab.errors import LabError
from cni_lab.observe import filters
from cni_lab.observe.flows import Flow, rfc3339
from cni_lab.report import topology
from cni_lab.report.html import FLOW_COLORS as COLORS
from cni_lab.report.topology import GAP, ROUTER, Topology

MAX_HOPS = 40  # drawn and listed; a longer record says how many more
PATH = "#1a73e8"
SVG_NS = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class Hop:
    step: int  # 1, 2, ... in the order observed
    flow: Flow
    back: bool  # seen on the way from DST to SRC (an answer, an error sent back)

    @property
    def failed(self) -> bool:
        return self.flow.verdict in ("DROPPED", "ERROR")

    def describe(self) -> str:
        f = self.flow
        to = f.destination.describe() + (f" ⇒ {f.translated.describe()}" if f.translated is not None else "")
        verdict = f.verdict + (f" {f.drop_reason_desc}" if f.drop_reason_desc else "")
        why = f" — {f.cause}" if f.cause else ""
        return (f"{self.step}. {rfc3339(f.time)[11:23]} @{f.node} {f.point}: {f.source.describe()} → {to} "
                f"{f.summary()} {verdict}{why}")


@dataclass(frozen=True)
class FlowPath:
    src: str
    dst: str
    hops: tuple[Hop, ...]
    more: int = 0  # recorded beyond MAX_HOPS

    def moves(self, drawn: set[str]) -> list[tuple[str, str, list[int]]]:
        """(from, to, the steps arriving) for consecutive hops at different places drawn, each pair once."""
        merged: dict[tuple[str, str], list[int]] = {}
        for a, b in zip(self.hops, self.hops[1:]):
            if a.flow.node != b.flow.node and {a.flow.node, b.flow.node} <= drawn:
                merged.setdefault((a.flow.node, b.flow.node), []).append(b.step)
        return [(a, b, steps) for (a, b), steps in merged.items()]

    def places(self, drawn: set[str] | None = None) -> dict[str, list[Hop]]:
        """Each node (or the router) that observed a hop → its hops; only those `drawn`, if given."""
        found: dict[str, list[Hop]] = {}
        for hop in self.hops:
            if drawn is None or hop.flow.node in drawn:
                found.setdefault(hop.flow.node, []).append(hop)
        return found


def path(flows: Sequence[Flow], src: str, dst: str) -> FlowPath:
    """The recorded flows between `src` and `dst` (pod ids, node names, addresses), by time; a
    one-line LabError when none was recorded."""
    there, back = filters.between(src, dst), filters.between(dst, src)
    found = sorted(((f, not there(f)) for f in flows if there(f) or back(f)), key=lambda found: found[0].time)
    if not found:
        raise LabError(f"the last check recorded no flow between {src} and {dst} ({len(flows)} flows recorded: "
                       "`sudo cni-lab observe --last-check` lists them)")
    hops = tuple(Hop(i, f, way_back) for i, (f, way_back) in enumerate(found[:MAX_HOPS], 1))
    return FlowPath(src, dst, hops, max(0, len(found) - MAX_HOPS))


def _lines(p: FlowPath) -> list[tuple[str, bool]]:
    """The list under the picture: (text, failed) per line."""
    head = [(f"flows between {p.src} and {p.dst} observed by the last check, in order:", False)]
    tail = [(f"… and {p.more} more flows (cni-lab observe --last-check lists them all)", False)] if p.more else []
    return head + [(("← " if h.back else "") + h.describe(), h.failed) for h in p.hops] + tail


def _boxes(root: ET.Element) -> dict[str, tuple[float, float, float, float]]:
    """node name, pod-ID or "router" → (x, y, width, height) of its box as svg() drew it."""
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for g in root.iter(f"{SVG_NS}g"):
        ident, rect = g.get("id") or "", g.find(f"{SVG_NS}rect")
        key = ident.removeprefix("node-") if ident.startswith(("node-", "pod-")) else (
            ROUTER if g.get("class") == "router" else "")
        if key and rect is not None:
            x, y, w, h = (float(rect.get(k) or 0) for k in ("x", "y", "width", "height"))
            boxes[key] = (x, y, w, h)
    return boxes


def _ends(p: FlowPath) -> set[str]:
    """The pods at either end, as drawn (pod-ID)."""
    first = p.hops[0].flow
    peers = (first.source, first.destination, *((first.translated,) if first.translated is not None else ()))
    return {f"pod-{peer.name}" for peer in peers if peer.kind == "pod"}


def svg(topo: Topology, p: FlowPath) -> str:
    base = topology.svg(topo)
    root = ET.fromstring(base)
    boxes = _boxes(root)
    width, height = float(root.get("width") or 0), float(root.get("height") or 0)
    lines = _lines(p)
    new_width = int(max(width, 2 * GAP + 7 * max(len(text) for text, _ in lines)))
    new_height = int(height + 20 * len(lines) + 20)
    out = [f'<defs><marker id="arrow-path" markerWidth="10" markerHeight="7" refX="10" refY="3.5" orient="auto">'
           f'<polygon points="0 0, 10 3.5, 0 7" fill="{PATH}"/></marker></defs>', '<g class="flow-path">']
    for key in sorted(_ends(p)):
        if key in boxes:
            x, y, w, h = boxes[key]
            out.append(f'<rect class="end" x="{x - 3}" y="{y - 3}" width="{w + 6}" height="{h + 6}" rx="6" fill="none" '
                       f'stroke="{PATH}" stroke-width="3"/>')
    centers: dict[int, tuple[float, float]] = {}
    for place, hops in p.places(set(boxes)).items():
        x, y, w, h = boxes[place]
        color = COLORS["DROPPED"] if any(hop.failed for hop in hops) else PATH
        out.append(f'<rect class="observed" id="observed-{escape(place)}" x="{x - 5}" y="{y - 5}" width="{w + 10}" '
                   f'height="{h + 10}" rx="12" fill="none" stroke="{color}" stroke-width="4"/>')
        for k, hop in enumerate(hops):
            cx, cy = x + w / 2 + (k - (len(hops) - 1) / 2) * 24, y
            centers[hop.step] = (cx, cy)
            out.append(f'<g class="hop {hop.flow.verdict.lower()}"><title>{escape(hop.describe())}</title>'
                       f'<circle cx="{cx}" cy="{cy}" r="10" fill="{COLORS.get(hop.flow.verdict, PATH)}" stroke="#fff"/>'
                       f'<text x="{cx}" y="{cy + 4}" text-anchor="middle" font-size="11" fill="#fff" '
                       f'font-weight="bold">{hop.step}</text></g>')
    for a, b in zip(p.hops, p.hops[1:]):
        if a.flow.node != b.flow.node and a.step in centers and b.step in centers:
            (x1, y1), (x2, y2) = centers[a.step], centers[b.step]
            dash = ' stroke-dasharray="5 3"' if b.back else ""
            out.append(f'<path class="move" d="M {x1} {y1 - 10} Q {(x1 + x2) / 2} {min(y1, y2) - 50} {x2} {y2 - 10}" '
                       f'fill="none" stroke="{PATH}" stroke-width="2"{dash} marker-end="url(#arrow-path)"/>')
    for i, (text, failed) in enumerate(lines):
        style = f' fill="{COLORS["DROPPED"]}"' if failed else ' font-weight="bold"' if i == 0 else ""
        out.append(f'<text class="{"drop" if failed else "hop-line"}" x="{GAP}" y="{height + 20 * i + 14}" '
                   f'font-size="12"{style}>{escape(text)}</text>')
    out.append("</g>")
    head, _, body = base.partition("\n")
    head = re.sub(r'width="[^"]*" height="[^"]*" viewBox="[^"]*"',
                  f'width="{new_width}" height="{new_height}" viewBox="0 0 {new_width} {new_height}"', head, count=1)
    return head + "\n" + body.removesuffix("</svg>") + "\n".join(out) + "\n</svg>"


def _drawn(topo: Topology) -> set[str]:
    """The places dot() and mermaid() draw a flow's observer at: the nodes and the router."""
    return {n.name for n in topo.lab.nodes} | ({ROUTER} if topo.lab.has_router else set())


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def dot(topo: Topology, p: FlowPath) -> str:
    lines = [f"  // the flows between {p.src} and {p.dst} the last check observed"]
    for place, hops in p.places(_drawn(topo)).items():
        color = "red" if any(hop.failed for hop in hops) else '"' + PATH + '"'
        numbers = ", ".join(str(h.step) for h in hops)
        lines.append(f'  "{_quoted(place)}" [color={color}, penwidth=3, xlabel="{numbers}"];')
        lines += [f'  "drop {h.step}" [shape=note, color=red, fontcolor=red, label="{_quoted(h.describe())}"];\n'
                  f'  "drop {h.step}" -> "{_quoted(place)}" [color=red, style=dotted, arrowhead=none];'
                  for h in hops if h.failed]
    for a, b, steps in p.moves(_drawn(topo)):
        lines.append(f'  "{_quoted(a)}" -> "{_quoted(b)}" [color="{PATH}", penwidth=2, constraint=false, '
                     f'label="{", ".join(map(str, steps))}"];')
    return topology.dot(topo).removesuffix("}\n") + "\n".join(lines) + "\n}\n"


def mermaid(topo: Topology, p: FlowPath) -> str:
    ident = topology.mermaid_id
    lines = [f"  %% the flows between {p.src} and {p.dst} the last check observed"]
    for place, hops in p.places(_drawn(topo)).items():
        box = ident(place) if place == ROUTER else f"{ident(place)}_box"
        color = COLORS["DROPPED"] if any(hop.failed for hop in hops) else PATH
        lines.append(f"  style {box} stroke:{color},stroke-width:4px")
        for h in hops:
            if h.failed:
                lines.append(f'  drop_{h.step}["{h.describe().replace(chr(34), chr(39))}"]')
                lines.append(f"  {ident(place)} -.- drop_{h.step}")
                lines.append(f"  style drop_{h.step} fill:#fce8e6,stroke:{COLORS['DROPPED']},color:{COLORS['DROPPED']}")
    for a, b, steps in p.moves(_drawn(topo)):
        lines.append(f'  {ident(a)} ==>|"{", ".join(map(str, steps))}"| {ident(b)}')
    return topology.mermaid(topo) + "\n".join(lines) + "\n"
