"""observe in the terminal: one line per flow, as `hubble observe` prints them, with the lab's
cause after it, and the summary's tables. Functions take values and return renderables."""

from __future__ import annotations

from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cni_lab.observe.flows import Flow
from cni_lab.observe.summary import Summary

VERDICT_STYLE = {"FORWARDED": "green", "DROPPED": "bold red", "TRANSLATED": "cyan", "ERROR": "magenta"}


def clock(t: float) -> str:
    """HH:MM:SS.mmm in local time, as `hubble observe` starts its lines."""
    moment = datetime.fromtimestamp(t)
    return moment.strftime("%H:%M:%S") + f".{moment.microsecond // 1000:03d}"


def flow_line(f: Flow) -> Text:
    """`12:00:01.123 node1/web 10.244.0.2:40000 → node2/api 10.244.1.2:80 TCP Flags: SYN DROPPED
    @node2 TO_ENDPOINT — policy: ...`"""
    line = Text()
    line.append(clock(f.time) + " ", style="dim")
    line.append(f.source.describe(), style="bold" if f.source.kind == "pod" else "")
    line.append(" → ")
    line.append(f.destination.describe(), style="bold" if f.destination.kind == "pod" else "")
    if f.translated is not None:
        line.append(f" ⇒ {f.translated.describe()}", style="cyan")
    line.append(f" {f.summary()} ")
    line.append(f.verdict, style=VERDICT_STYLE.get(f.verdict, ""))
    if f.drop_reason_desc:
        line.append(f" {f.drop_reason_desc}", style=VERDICT_STYLE.get(f.verdict, ""))
    line.append(f" @{f.node}", style="dim")
    if f.point != "UNKNOWN_POINT":
        line.append(f" {f.point}", style="dim")
    if f.cause:
        line.append(f" — {f.cause}", style="yellow" if f.verdict in ("DROPPED", "ERROR") else "")
    return line


def summary_view(s: Summary) -> RenderableType:
    """Flows per verdict, the top talkers and the top drop causes."""
    counts = Text(f"{s.total} flows: ")
    for i, (verdict, n) in enumerate(s.verdicts):
        counts.append(", " if i else "")
        counts.append(f"{n} {verdict}", style=VERDICT_STYLE.get(verdict, ""))
    parts: list[RenderableType] = [counts]
    if s.talkers:
        talkers = Table(title="top talkers", title_justify="left")
        talkers.add_column("source")
        talkers.add_column("destination")
        talkers.add_column("flows", justify="right")
        for src, dst, n in s.talkers:
            talkers.add_row(src, dst, str(n))
        parts.append(talkers)
    if s.drops:
        drops = Table(title="top drop causes", title_justify="left")
        drops.add_column("cause", overflow="fold")
        drops.add_column("flows", justify="right")
        for cause, n in s.drops:
            drops.add_row(Text(cause, style="red"), str(n))
        parts.append(drops)
    return Group(*parts)
