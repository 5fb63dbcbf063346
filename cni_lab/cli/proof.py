"""The proof: check, run, and conformance (generated NetworkPolicy cases)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator

import click
from rich.text import Text

from cni_lab import catalog, lifecycle
from cni_lab.conformance import DEFAULT_COUNT, DEFAULT_SEED, Selection
from cni_lab.errors import LabError
from cni_lab.cli.app import _complete_labs, _complete_scenarios, _progress, cli, err, out
from cni_lab.probe.matrix import CheckResult
from cni_lab.report import json_junit, terminal


def _notice(text: str) -> None:
    """Said before probing, on a terminal (the result repeats it for logs and --json)."""
    if err.is_terminal:
        err.print(Text(f"note: {text}", style="yellow"), soft_wrap=True)


def _check(lab: str | None, mtu: bool, neighbour_cap: int | None,
           ports: tuple[str, ...] | None = None, observe: bool | None = None) -> tuple[CheckResult, str]:
    """Probe the lab and record the result for `report`; the JSON comes back as recorded, and
    --json prints that same text."""
    with _progress("probing pairs") as progress:
        result = lifecycle.check(lab, progress, mtu=mtu, neighbour_cap=neighbour_cap, notice=_notice, ports=ports,
                                 observe=observe)
    return result, lifecycle.record_check(result)


def _report_check(result: CheckResult, document: str, as_json: bool, junit: str | None) -> None:
    if junit:
        with open(junit, "w", encoding="utf-8") as f:
            f.write(json_junit.check_junit(result))
    if as_json:
        click.echo(document)
    else:
        out.print(terminal.check_view(result))
        if junit:
            out.print(f"JUnit written to {junit}", style="dim")


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result (schema: docs/check.schema.json).")
@click.option("--junit", metavar="FILE", help="Also write JUnit XML: one test case per Kubernetes rule.")
@click.option("--mtu", is_flag=True, help="Also send full-size DF packets between pods of different nodes.")
@click.option("--neighbour-cap", type=click.IntRange(1024, 1 << 20), metavar="N",
              help="Raise the host's shared ARP table limit (gc_thresh3) to N while this lab is up; `down` "
                   "puts it back. Not needed: without it, check probes big labs in batches that fit the table.")
@click.option("--port", "ports", multiple=True, metavar="PROTO/PORT",
              help="Probe every pod pair on this port (tcp/80, udp/81; repeat it) instead of the scenario's probe.ports.")
@click.option("--observe/--no-observe", default=None,
              help="Record the flows the probes make, as `observe` sees them (default: labs of up to 200 pods and "
                   "nodes): each failure's cause quotes the drop seen; `report` and `observe --last-check` show them.")
def check(lab: str | None, as_json: bool, junit: str | None, mtu: bool, neighbour_cap: int | None,
          ports: tuple[str, ...], observe: bool | None) -> None:
    """Prove the Kubernetes network model: probe every ordered pair of pods and nodes.

    Each pair gets an ICMP echo and a UDP probe whose reply says which source address the
    receiver saw (no NAT) and who answered (the right peer). Exit 0 when every pair is as the
    scenario expects (`ok` unless it says otherwise), 1 when not, 2 on bad input.

    \b
    Example: sudo cni-lab check --junit check.xml
    """
    result, document = _check(lab, mtu, neighbour_cap, ports or None, observe)
    _report_check(result, document, as_json, junit)
    sys.exit(0 if result.passed else 1)


@cli.command()
@click.argument("scenario", shell_complete=_complete_scenarios)
@click.option("--name", help="Run under this lab name instead of the file's.")
@click.option("--json", "as_json", is_flag=True, help="Print the check result as JSON.")
@click.option("--junit", metavar="FILE", help="Also write JUnit XML.")
@click.option("--mtu", is_flag=True, help="Also run the MTU check.")
@click.option("--neighbour-cap", type=click.IntRange(1024, 1 << 20), metavar="N",
              help="As for check: raise the host's ARP table limit while the lab is up (put back at its end).")
@click.option("--report", "report_file", metavar="FILE", help="Also write the HTML report before the lab goes.")
def run(scenario: str, name: str | None, as_json: bool, junit: str | None, mtu: bool,
        neighbour_cap: int | None, report_file: str | None) -> None:
    """Up, check and down in one go, for CI: exits with check's code, never leaves the lab behind.

    \b
    Example: sudo cni-lab run scenarios/two-nodes.yaml --junit out.xml
    """
    lab = catalog.load(scenario, name)
    with _progress(f"building lab {lab.name}") as progress:
        result = lifecycle.up(lab, progress)
    try:
        checked, document = _check(lab.name, mtu, neighbour_cap)
        if report_file:
            from cni_lab.cli.pictures import _write_report  # the report's modules, only when asked for

            _write_report(lab.name, report_file)
    finally:
        if result.created:
            with err.status(f"removing lab {lab.name}"):
                lifecycle.down(lab.name)
    _report_check(checked, document, as_json, junit)
    sys.exit(0 if checked.passed else 1)


@contextlib.contextmanager
def _case_progress() -> Iterator[Callable[[int, int, str, int], None]]:
    """Cases done of all, the one running, how many differed so far: on stderr, on a terminal."""
    if not err.is_terminal:
        yield lambda done, total, current, differing: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task("generated cases", total=None)

    def update(done: int, total: int, current: str, differing: int) -> None:
        now = f"{current} · " if current else ""
        bar.update(task, completed=done, total=total, description=f"{now}{differing} differ so far")

    with bar:
        yield update


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
@click.option("--cases", "count", type=int, metavar="N", help=f"How many generated cases (default {DEFAULT_COUNT}).")
@click.option("--seed", type=int, metavar="S", help=f"The generator's seed (default {DEFAULT_SEED}): a seed always "
              "draws the same cases.")
@click.option("--case", "names", multiple=True, metavar="NAME",
              help="Run this case alone (case-S-K, as a run names it); repeat it for several.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: every case's verdict and differing cells.")
@click.option("--junit", metavar="FILE", help="Also write JUnit XML: one test case per generated case.")
def conformance(lab: str | None, count: int | None, seed: int | None, names: tuple[str, ...], as_json: bool,
                junit: str | None) -> None:
    """Hold the data plane's NetworkPolicy enforcement against the reference, on generated cases.

    On a running lab of the e2e suite's model (scenarios/netpol.yaml), each generated case's
    policies replace the lab's on every node, live; the matrix and the case's ports are probed,
    and every cell where the network differs from the reference is reported in the suite's grid
    form. The lab's own policies are put back at the end. Exit 0 when every case agrees, 1 when
    a cell differs, 2 on bad input.

    \b
    Example: sudo cni-lab conformance netpol --cases 500 --seed 7 --junit conformance.xml
             sudo cni-lab conformance netpol --case case-7-0042
    """
    selection = Selection.of(count, seed, names)
    if junit and not os.access(os.path.dirname(os.path.abspath(junit)), os.W_OK):
        raise LabError(f"--junit {junit}: cannot write there (no such folder, or not writable)")
    with _case_progress() as progress:
        result = lifecycle.run_cases(lab, selection, progress)
    from cni_lab.report import conformance_view

    if junit:
        with open(junit, "w", encoding="utf-8") as f:
            f.write(conformance_view.conformance_junit(result))
    if as_json:
        click.echo(json_junit.dumps(conformance_view.conformance_json(result)))
    else:
        out.print(conformance_view.terminal_view(result))
        if junit:
            out.print(f"JUnit written to {junit}", style="dim")
    sys.exit(0 if result.passed else 1)
