"""`demo` rendered: each event of lesson/demo.py as it happens, then a line per act."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from cni_lab.lesson import demo
from cni_lab.report import explain_view, trace_view
from cni_lab.report.terminal import check_view, lab_table, warnings


def event_view(event: object) -> RenderableType:
    if isinstance(event, demo.ActStarted):
        act = event.act
        parts: list[RenderableType] = [Rule(f"[bold]Act {act.number}: {act.title}[/]  (scenarios/{act.scenario}.yaml)"),
                                       Text(act.story)]
        parts += warnings(event.lab)
        parts.append(lab_table(event.lab))
        return Group(*parts)
    if isinstance(event, demo.Facts):
        return Group(Text("What the kernel says (read back from the namespaces):", style="bold"),
                     explain_view.view(event.lab, event.nodes))
    if isinstance(event, demo.Traced):
        return trace_view.view(event.trace, None, None)
    if isinstance(event, demo.Proved):
        return Group(Text("The proof (every pair probed for real):", style="bold"), check_view(event.result))
    if isinstance(event, demo.ActDone):
        if event.passed:
            return Panel(Text(event.act.notice), title=f"Act {event.act.number}: what to notice", border_style="green")
        return Panel(Text("\n".join(event.problems), style="red"), title=f"Act {event.act.number} did not show what it should",
                     border_style="red")
    return Text(str(event))


def summary_view(results: list[demo.ActDone]) -> RenderableType:
    lines = Text()
    for r in results:
        lines.append("✓ " if r.passed else "✗ ", style="green" if r.passed else "red")
        lines.append(f"Act {r.act.number}: {r.act.title}\n")
    return lines
