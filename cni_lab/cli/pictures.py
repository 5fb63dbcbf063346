"""Pictures: graph and the HTML report."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import click

from cni_lab import catalog, lifecycle, plan, privileges
from cni_lab.cli.app import _complete_labs, _complete_scenarios, cli, err
from cni_lab.errors import LabError
from cni_lab.lesson import explain as explain_lesson
from cni_lab.report import explain_view, html, topology


def _topology(target: str) -> tuple[topology.Topology, dict[str, Any] | None]:
    """A running lab (read from the kernel, needs root) or a scenario (from the plan, no root)."""
    if os.geteuid() == 0 and target in lifecycle.running():
        lab, _ = lifecycle.running_lab(target)
        facts = explain_lesson.read(lab)
        hops = topology.kernel_hops(explain_lesson.routing(lab, facts))
        return topology.build(lab, hops), explain_view.to_json(lab, facts)
    return topology.of_plan(plan.build(catalog.load(target))), None


@cli.command()
@click.argument("target", shell_complete=_complete_scenarios)
@click.option("-o", "--output", metavar="FILE", help="Write here (.svg, .png, .dot, .mmd); default: print the text.")
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot", "mermaid"]), help="Default: from the file name, else svg.")
def graph(target: str, output: str | None, fmt: str | None) -> None:
    """Draw a lab like the course's slides: graph SCENARIO|LAB -o lab.svg

    From a scenario file it needs no root (drawn from the plan); from a running lab it reads
    the kernel. PNG needs Graphviz (`dot`).

    \b
    Example: cni-lab graph scenarios/conflict.yaml -o conflict.svg
    """
    topo, _ = _topology(target)
    if fmt is None:
        suffix = os.path.splitext(output or "")[1].lower()
        fmt = {".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid"}.get(suffix, "svg")
    if fmt == "png":
        if not output:
            raise LabError("a PNG needs a file: cni-lab graph TARGET -o lab.png")
        try:
            done = subprocess.run(["dot", "-Tpng", "-o", output], input=topology.dot(topo), text=True,
                                  capture_output=True, timeout=60)
        except FileNotFoundError:
            raise LabError("a PNG is drawn by Graphviz: sudo apt-get install graphviz (or use -o lab.svg)") from None
        if done.returncode != 0:
            raise LabError(f"dot -Tpng: {done.stderr.strip()}")
    else:
        text = {"svg": topology.svg, "dot": topology.dot, "mermaid": topology.mermaid}[fmt](topo)
        if output:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            click.echo(text, nl=False)
            return
    err.print(f"[green]✓[/] {fmt} written to {output}")


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
