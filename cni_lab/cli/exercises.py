"""Exercises that grade themselves: exercise list, start, hint, grade, solution, stop, validate."""

from __future__ import annotations

import os
import sys

import click
from rich.text import Text

from cni_lab.cli.app import _json, cli, err, out
from cni_lab.errors import LabError
from cni_lab.exercise import library, spec

DIR_HELP = "Also a teacher's folder of exercise files (*.yaml)."


@cli.group()
def exercise() -> None:
    """Break-and-fix labs that grade themselves: start one, fix it with a node's own tools
    (ip, bridge, nft, sysctl, birdc, tc ...), and `grade` proves whether it is fixed.

    \b
    Example: cni-lab exercise list
             sudo cni-lab exercise start hostgw-route
             sudo cni-lab exercise grade hostgw-route --junit grade.xml
    """


@exercise.command("list")
@click.option("--dir", "folder", metavar="DIR", help=DIR_HELP)
@click.option("--json", "as_json", is_flag=True)
def list_exercises(folder: str | None, as_json: bool) -> None:
    """Every exercise: name, data plane, level, and what is wrong (the symptom). No root needed.

    \b
    Example: cni-lab exercise list --dir ./my-class
    """
    from cni_lab.report import exercise_view

    found = library.load_all(folder)
    if as_json:
        _json(exercise_view.list_json(found))
        return
    out.print(exercise_view.list_table(found))


@exercise.command()
@click.argument("name")
@click.option("--dir", "folder", metavar="DIR", help=DIR_HELP)
def start(name: str, folder: str | None) -> None:
    """Build the exercise's lab, break it, and print the task (the symptom, never the cause).

    \b
    Example: sudo cni-lab exercise start hostgw-route
    """
    from cni_lab.exercise import session
    from cni_lab.report import exercise_view

    ex = library.find(name, folder)
    with err.status(f"building and breaking lab {ex.name}"):
        session.start(ex)
    out.print(exercise_view.task_view(ex))


@exercise.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def hint(name: str, as_json: bool) -> None:
    """The next hint (each more direct than the last; the lab remembers which were given).

    \b
    Example: sudo cni-lab exercise hint hostgw-route
    """
    from cni_lab.exercise import session

    ex = _running(name)
    given = session.next_hint(ex)
    if as_json:
        _json({"exercise": ex.name, "hint": given[0] if given else None, "of": len(ex.hints),
               "text": given[1] if given else None})
        return
    if given is None:
        out.print(f"No more hints ({len(ex.hints)} given). The reference fix: "
                  f"[bold]cni-lab exercise solution {ex.name}[/]")
        return
    out.print(Text.assemble((f"Hint {given[0]} of {len(ex.hints)}: ", "bold"), given[1]))


@exercise.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The verdict and every assertion, as JSON.")
@click.option("--junit", metavar="FILE", help="Also write JUnit XML: a test case per assertion.")
def grade(name: str, as_json: bool, junit: str | None) -> None:
    """Prove whether it is fixed: the lab's own check and the exercise's assertions, read from
    the kernel. Exit 0 when fixed, 1 when not, 2 on bad input.

    \b
    Example: sudo cni-lab exercise grade hostgw-route --junit grade.xml
    """
    from cni_lab.exercise import grading
    from cni_lab.report import exercise_view

    ex = _running(name)
    if junit and not os.access(os.path.dirname(os.path.abspath(junit)), os.W_OK):
        raise LabError(f"--junit {junit}: cannot write there (no such folder, or not writable)")
    g = grading.grade(ex)
    if junit:
        with open(junit, "w", encoding="utf-8") as f:
            f.write(exercise_view.grade_junit(g))
    if as_json:
        _json(exercise_view.grade_json(g))
    else:
        out.print(exercise_view.grade_view(g))
    sys.exit(0 if g.passed else 1)


@exercise.command()
@click.argument("name")
@click.option("--dir", "folder", metavar="DIR", help=DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="The commands, as a JSON list.")
def solution(name: str, folder: str | None, as_json: bool) -> None:
    """The reference fix: shell commands, runnable as written from the repository's root.

    \b
    Example: cni-lab exercise solution hostgw-route
    """
    ex = _running(name, folder, must_run=False)
    if as_json:
        _json(list(ex.solution))
        return
    out.print(f"# the reference fix of exercise {ex.name}", style="dim")
    for command in ex.solution:
        click.echo(command)


@exercise.command()
@click.argument("name")
def stop(name: str) -> None:
    """Tear the exercise's lab down: namespaces, state, what was given.

    \b
    Example: sudo cni-lab exercise stop hostgw-route
    """
    from cni_lab.exercise import session

    removed = session.stop(name)
    out.print(f"[green]✓[/] exercise {name} stopped: lab {name} removed ({len(removed)} namespaces)")


@exercise.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check one exercise file: one line per problem (exit 2), or OK. No root needed.

    \b
    Example: cni-lab exercise validate my-class/route.yaml
    """
    ex = library.load(file)
    out.print(f"[green]✓[/] {file}: OK: exercise {ex.name} ({ex.level}, data plane {ex.dataplane}), "
              f"{len(ex.breaks)} break steps, {len(ex.hints)} hints, {len(ex.grade)} assertions, "
              f"{len(ex.wrong_fixes)} wrong fixes")


def _running(name: str, folder: str | None = None, must_run: bool = True) -> spec.Exercise:
    """The exercise: from the file its running lab was started from (no --dir needed again),
    else by name."""
    if must_run:
        from cni_lab.exercise import session

        try:
            data = session.recorded(name)
        except LabError:
            data = None
        if data is not None and os.path.isfile(data.get("source", "")):
            return library.load(data["source"])
    return library.find(name, folder)
