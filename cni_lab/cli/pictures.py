"""Pictures: graph and the HTML report."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Callable

import click

from cni_lab import catalog, lifecycle, plan, privileges
from cni_lab.cli.app import _complete_labs, _complete_scenarios, cli, err
from cni_lab.errors import LabError
from cni_lab.lesson import explain as explain_lesson
from cni_lab.observe.flows import recorded
from cni_lab.report import explain_view, flow_path, html, topology


def _topology(target: str) -> tuple[topology.Topology, dict[str, Any] | None]:
    """A running lab (read from the kernel, needs root) or a scenario (from the plan, no root)."""
    if os.geteuid() == 0 and target in lifecycle.running():
        lab, _ = lifecycle.running_lab(target)
        facts = explain_lesson.read(lab)
        hops = topology.kernel_hops(explain_lesson.routing(lab, facts))
        return topology.build(lab, hops), explain_view.to_json(lab, facts)
    return topology.of_plan(plan.build(catalog.load(target))), None


@cli.command()
@click.argument("target", required=False, shell_complete=_complete_scenarios)
@click.option("-o", "--output", metavar="FILE", help="Write here (.svg, .png, .dot, .mmd); default: print the text.")
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot", "mermaid"]), help="Default: from the file name, else svg.")
@click.option("--flow", nargs=2, metavar="SRC DST", help="Highlight where the last check observed flows between "
              "SRC and DST (pods like node1/a, nodes, addresses), in order, drops in red with their cause.")
def graph(target: str | None, output: str | None, fmt: str | None, flow: tuple[str, str] | None) -> None:
    """Draw a lab like the course's slides: graph SCENARIO|LAB -o lab.svg

    From a scenario file it needs no root (drawn from the plan); from a running lab it reads
    the kernel. PNG needs Graphviz (`dot`). With --flow, LAB is a running lab (default: the
    only one) whose last `check` recorded the flows it observed.

    \b
    Example: cni-lab graph scenarios/conflict.yaml -o conflict.svg
    Example: sudo cni-lab graph netpol --flow node2/x/b node1/x/a -o path.svg
    """
    if flow:
        topo, path = _flow_path(target, *flow)
        draw: dict[str, Callable[[topology.Topology], str]] = {
            "svg": lambda t: flow_path.svg(t, path), "dot": lambda t: flow_path.dot(t, path),
            "mermaid": lambda t: flow_path.mermaid(t, path)}
    elif target is None:
        raise click.UsageError("Missing argument 'TARGET'.")
    else:
        topo, _ = _topology(target)
        draw = {"svg": topology.svg, "dot": topology.dot, "mermaid": topology.mermaid}
    if fmt is None:
        suffix = os.path.splitext(output or "")[1].lower()
        fmt = {".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid"}.get(suffix, "svg")
    if fmt == "png":
        if not output:
            raise LabError("a PNG needs a file: cni-lab graph TARGET -o lab.png")
        try:
            done = subprocess.run(["dot", "-Tpng", "-o", output], input=draw["dot"](topo), text=True,
                                  capture_output=True, timeout=60)
        except FileNotFoundError:
            raise LabError("a PNG is drawn by Graphviz: sudo apt-get install graphviz (or use -o lab.svg)") from None
        if done.returncode != 0:
            raise LabError(f"dot -Tpng: {done.stderr.strip()}")
    else:
        text = draw[fmt](topo)
        if output:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            click.echo(text, nl=False)
            return
    err.print(f"[green]✓[/] {fmt} written to {output}")


def _flow_path(target: str | None, src: str, dst: str) -> tuple[topology.Topology, flow_path.FlowPath]:
    """A running lab's picture and the flows its last check recorded between src and dst."""
    name = lifecycle.pick(target)
    document = lifecycle.last_check(name)
    if document is None:
        raise LabError(f"lab {name} has no check on record: run `sudo cni-lab check {name}` first")
    if "flows" not in document:
        raise LabError(f"lab {name}'s last check recorded no flows: run `sudo cni-lab check {name}` again")
    path = flow_path.path(recorded(document), src, dst)
    if os.geteuid() == 0:
        return _topology(name)[0], path
    return topology.of_plan(plan.build(lifecycle.running_lab(name)[0])), path


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
@click.option("-o", "--output", metavar="FILE", default="report.html", show_default=True)
def report(lab: str | None, output: str) -> None:
    """One self-contained HTML page: topology, the last check's matrix, per-node routes.

    \b
    Example: sudo cni-lab check && sudo cni-lab report -o report.html
    """
    privileges.require_root("report")
    name = lifecycle.pick(lab)
    _write_report(name, output)
    hint = "" if lifecycle.last_check(name) else " (no check yet: run `sudo cni-lab check` for the matrix)"
    err.print(f"[green]✓[/] report written to {output}{hint}")


def _write_report(name: str, output: str) -> None:
    topo, facts = _topology(name)
    document = html.page(name, topology.svg(topo), lifecycle.last_check(name), facts or {})
    with open(output, "w", encoding="utf-8") as f:
        f.write(document)
