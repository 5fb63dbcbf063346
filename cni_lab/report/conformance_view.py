"""A conformance run (conformance.Run) for the terminal, as JSON (schema cni-lab/conformance/v1)
and as JUnit XML (one test case per generated case)."""

from __future__ import annotations

from typing import Any

import yaml
from rich.console import Group, RenderableType
from rich.text import Text

from cni_lab.conformance import Cell, CaseVerdict, Run

SCHEMA_ID = "cni-lab/conformance/v1"
SHOWN_IN_FULL = 5  # differing cases shown with their policies and grids; the rest one line each
CELLS_LISTED = 10
LEGEND = ("ICMP is check's pair probe (an echo and UDP/31999, nodes included), the others the case's ports between "
          "pods; grids: rows from, columns to, . allowed and X denied as the reference says, ! where the network did "
          "the opposite")


def policy_line(document: dict[str, Any]) -> str:
    """A policy on one line: namespace/name and its spec in YAML's flow style, as written."""
    meta = document.get("metadata") or {}
    spec = yaml.safe_dump(document.get("spec") or {}, default_flow_style=True, sort_keys=False, width=1 << 20).strip()
    return f"{meta.get('namespace', 'default')}/{meta.get('name')}: {spec}"


def cell_line(run: Run, c: Cell) -> str:
    said = "allows" if c.allowed else "denies"
    return f"{run.label(c.src)} → {run.label(c.dst)} {c.probe}: the reference {said} it, the network said {c.observed}"


def _counts(v: CaseVerdict) -> str:
    counts: dict[str, int] = {}
    for c in v.differing:
        counts[c.probe] = counts.get(c.probe, 0) + 1
    return ", ".join(f"{probe} {n}" for probe, n in counts.items())


def terminal_view(run: Run) -> RenderableType:
    parts: list[RenderableType] = [Text.assemble(("conformance", "bold"), f" · lab {run.lab} ({run.dataplane}) · "
                                                 f"{run.selection.describe()} · probes: {', '.join(run.probes)}")]
    if run.failed:
        parts.append(Text(LEGEND, style="dim"))
    for i, v in enumerate(run.failed):
        head = Text.assemble(("✗ ", "bold red"), (v.case.name, "bold"), f"  {len(v.differing)}/{v.compared} cells "
                             f"differ ({_counts(v)})")
        if i >= SHOWN_IN_FULL:
            parts.append(Text.assemble(head, f" · re-run: {run.rerun(v.case)}"))
            continue
        parts.append(head)
        parts.append(Text("  its policies:", style="dim"))
        parts += [Text(f"    {policy_line(doc)}", no_wrap=False) for doc in v.case.policies]
        for probe, grid in v.grids:
            parts.append(Text("  " + probe, style="bold"))
            parts.append(Text("\n".join("  " + line for line in grid.splitlines()), no_wrap=True))
        parts += [Text(f"  {cell_line(run, c)}", style="red") for c in v.differing[:CELLS_LISTED]]
        if len(v.differing) > CELLS_LISTED:
            parts.append(Text(f"  … and {len(v.differing) - CELLS_LISTED} more (see --json)", style="red"))
        parts.append(Text(f"  re-run: {run.rerun(v.case)}", style="cyan"))
    parts += [Text(f"note: {n}", style="yellow") for n in run.notes]
    total = len(run.verdicts)
    agreed = total - len(run.failed)
    if run.passed:
        parts.append(Text.assemble(("PASS", "bold green"), f": {agreed}/{total} cases agree with the reference, "
                                   f"{run.cells:,} cells · {run.selection.describe()}"))
    else:
        differing = sum(len(v.differing) for v in run.failed)
        parts.append(Text.assemble(("FAIL", "bold red"), f": {agreed}/{total} cases agree with the reference; "
                                   f"{len(run.failed)} differ in {differing:,} of {run.cells:,} cells · "
                                   f"{run.selection.describe()}"))
    parts.append(Text(timing_line(run), style="dim"))
    return Group(*parts)


def timing_line(run: Run) -> str:
    line = (f"{len(run.verdicts)} cases in {run.duration:.1f} s: {run.cases_per_minute:.0f} cases a minute · per case: "
            f"apply {run.mean('apply') * 1000:.0f} ms (render, load on every node, empty conntrack), "
            f"probe {run.mean('probe') * 1000:.0f} ms, reference {run.mean('judge') * 1000:.0f} ms")
    if run.reprobed:
        line += f" · {run.reprobed} cells probed again with check's waits"
    return line


def cell_json(c: Cell, run: Run) -> dict[str, Any]:
    return {"probe": c.probe, "src": run.label(c.src), "dst": run.label(c.dst), "srcId": c.src, "dstId": c.dst,
            "expected": "allowed" if c.allowed else "denied", "observed": c.observed}


def conformance_json(run: Run) -> dict[str, Any]:
    """One document: the run, then a line per case (its policies only where it differs: the
    others are drawn again from their names)."""
    return {
        "schema": SCHEMA_ID,
        "lab": run.lab,
        "dataplane": run.dataplane,
        "passed": run.passed,
        "seed": None if run.selection.names else run.selection.seed,
        "cases": len(run.verdicts),
        "casesDiffering": len(run.failed),
        "cells": run.cells,
        "probes": list(run.probes),
        "durationSeconds": round(run.duration, 3),
        "casesPerMinute": round(run.cases_per_minute, 1),
        "perCaseSeconds": {phase: round(run.mean(phase), 4) for phase in ("apply", "probe", "judge")},
        "reprobedCells": run.reprobed,
        "notes": list(run.notes),
        "results": [
            {"case": v.case.name, "passed": v.passed, "cells": v.compared, "tags": sorted(v.case.tags),
             "differing": [cell_json(c, run) for c in v.differing], "rerun": run.rerun(v.case),
             **({} if v.passed else {"policies": list(v.case.policies), "grids": dict(v.grids)})}
            for v in run.verdicts
        ],
    }


def conformance_junit(run: Run) -> str:
    """One test case per generated case; a failing one lists its differing cells and how to re-run it."""
    import xml.etree.ElementTree as ET  # JUnit alone needs it

    suite = ET.Element("testsuite", name=f"cni-lab conformance {run.lab}", tests=str(len(run.verdicts)),
                       failures=str(len(run.failed)), errors="0", time=f"{run.duration:.3f}")
    for v in run.verdicts:
        seconds = v.apply_s + v.probe_s + v.judge_s
        case = ET.SubElement(suite, "testcase", classname=f"cni-lab.conformance.{run.lab}", name=v.case.name,
                             time=f"{seconds:.3f}")
        if v.passed:
            ET.SubElement(case, "system-out").text = f"{v.compared}/{v.compared} cells as the reference says"
            continue
        failure = ET.SubElement(case, "failure", message=f"{len(v.differing)}/{v.compared} cells differ from the reference")
        failure.text = "\n".join([*(cell_line(run, c) for c in v.differing), *(policy_line(d) for d in v.case.policies),
                                  f"re-run: {run.rerun(v.case)}"])
    suites = ET.Element("testsuites")
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)
