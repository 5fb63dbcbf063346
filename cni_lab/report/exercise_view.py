"""Exercises rendered: the list, the task as a learner reads it, a grade in words, JSON and JUnit."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cni_lab.exercise.grading import Grade
from cni_lab.exercise.spec import Exercise


def list_json(exercises: list[Exercise]) -> list[dict[str, Any]]:
    return [{"name": e.name, "title": e.title, "level": e.level, "dataplane": e.dataplane, "hints": len(e.hints),
             "shipped": e.shipped, "source": e.source} for e in exercises]


def list_table(exercises: list[Exercise]) -> Table:
    table = Table(title="exercises: `sudo cni-lab exercise start NAME`", title_justify="left")
    for col in ("name", "data plane", "level", "what is wrong"):
        table.add_column(col)
    for e in exercises:
        table.add_row(e.name, e.dataplane, e.level, e.title + ("" if e.shipped else " [dim](teacher's)[/]"))
    return table


def task_view(ex: Exercise) -> RenderableType:
    """What `start` prints: the symptom, never the cause, and what to do next."""
    nodes = ", ".join(n.name for n in ex.lab.nodes)
    pods = ", ".join(p.id for p in ex.lab.pods)
    return Group(
        Text.assemble(("exercise ", "bold"), (ex.name, "bold cyan"), f" · {ex.level} · data plane {ex.dataplane} · "
                      f"lab {ex.name}"),
        Text(f"nodes: {nodes}; pods: {pods}", style="dim"),
        Text(""),
        Text(ex.task),
        Text(""),
        Text.assemble("Look around: ", (f"sudo cni-lab check {ex.name}", "bold"), ", ",
                      (f"sudo cni-lab exec {ex.name} node1 -- ip route", "bold"), " (ip, bridge, nft, sysctl ...)"),
        Text.assemble("Stuck? ", (f"sudo cni-lab exercise hint {ex.name}", "bold"),
                      f" ({len(ex.hints)} hints).  Fixed? ", (f"sudo cni-lab exercise grade {ex.name}", "bold")),
    )


def grade_view(g: Grade) -> RenderableType:
    lines: list[RenderableType] = []
    for o in g.outcomes:
        mark = ("✓ ", "green") if o.ok else ("✗ ", "red")
        lines.append(Text.assemble(mark, o.words))
    failed = len(g.failed)
    if g.passed:
        lines.append(Text.assemble(("FIXED", "bold green"), f": exercise {g.exercise.name}, every check holds "
                                   f"({len(g.outcomes)}/{len(g.outcomes)}; graded in {g.seconds:.1f} s)"))
        if g.exercise.lesson:
            lines += [Text(""), Text.assemble(("What was wrong: ", "bold"), " ".join(g.exercise.lesson.split()))]
        lines.append(Text(f"Done: sudo cni-lab exercise stop {g.exercise.name}", style="dim"))
    else:
        lines.append(Text.assemble(("NOT FIXED", "bold red"), f": {failed} of {len(g.outcomes)} checks fail "
                                   f"(graded in {g.seconds:.1f} s). "
                                   f"Hint: sudo cni-lab exercise hint {g.exercise.name}"))
    return Group(*lines)


def grade_json(g: Grade) -> dict[str, Any]:
    return {"exercise": g.exercise.name, "passed": g.passed, "seconds": round(g.seconds, 3), "hintsGiven": g.hints_given,
            "assertions": [{"at": o.assertion.at, "kind": o.assertion.kind, "args": o.assertion.args, "ok": o.ok,
                            "words": o.words} for o in g.outcomes]}


def grade_junit(g: Grade) -> str:
    """One test suite, a test case per assertion (the lab's check first): for classroom CI."""
    import xml.etree.ElementTree as ET

    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name=f"exercise {g.exercise.name}", tests=str(len(g.outcomes)),
                          failures=str(len(g.failed)), time=f"{g.seconds:.3f}")
    for o in g.outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"exercise.{g.exercise.name}",
                             name=f"{o.assertion.at}: {o.assertion.kind}", time="0")
        if not o.ok:
            ET.SubElement(case, "failure", message=o.words).text = o.words
        else:
            ET.SubElement(case, "system-out").text = o.words
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)
