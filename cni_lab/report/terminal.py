"""Rich renderables for the terminal. Functions take values and return renderables."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cni_lab import names
from cni_lab.ipam import Lab
from cni_lab.lifecycle import Status
from cni_lab.plan import Plan


def lab_table(lab: Lab, present: dict[str, bool] | None = None) -> Table:
    title = f"lab [bold]{lab.name}[/] · data plane [bold]{lab.dataplane}[/] · underlay {lab.underlay}"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("node")
    table.add_column("underlay IP")
    table.add_column("pod CIDR")
    table.add_column("gateway (cni0)")
    table.add_column("pods")
    for node in lab.nodes:
        pods = Text()
        for i, pod in enumerate(node.pods):
            if i:
                pods.append("\n")
            pods.append(f"{pod.name} ", style="bold")
            pods.append(str(pod.ip))
            if present is not None and not present.get(names.pod_netns(lab.name, node.name, pod.name), False):
                pods.append(" (missing)", style="red")
        node_label = Text(node.name, style="bold")
        if present is not None and not present.get(names.node_netns(lab.name, node.name), False):
            node_label.append(" (missing)", style="red")
        table.add_row(node_label, str(node.ip), str(node.pod_cidr), str(node.gateway), pods or "-")
    return table


def warnings(lab: Lab) -> list[Text]:
    return [Text(f"warning: {w}", style="yellow") for w in lab.warnings]


def plan_view(plan: Plan) -> RenderableType:
    lines = Text()
    current = None
    for step in plan.steps:
        if step.netns != current:
            current = step.netns
            lines.append(f"# {current}\n", style="dim")
        lines.append(step.describe() + "\n")
    counts = {}
    for step in plan.steps:
        counts[type(step).__name__] = counts.get(type(step).__name__, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return Group(lab_table(plan.lab), lines, Text(f"{len(plan.steps)} steps: {summary}", style="dim"))


def status_view(st: Status) -> RenderableType:
    state = "up" if st.healthy else ("building" if st.status == "building" else "degraded")
    style = {"up": "green", "building": "yellow"}.get(state, "red")
    header = Text.assemble(("status: ", ""), (state, f"bold {style}"), f" · from {st.lab.scenario.source}")
    return Group(lab_table(st.lab, st.present), header, *warnings(st.lab))
