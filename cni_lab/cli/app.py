"""The click group, the two consoles, completion helpers and progress bars every command shares."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from typing import Any, Callable, Iterator

import click
from click.shell_completion import CompletionItem
from rich.console import Console
from rich.text import Text

from cni_lab import __version__, catalog, lifecycle
from cni_lab.errors import LabError


INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C

# no emoji codes: ":cd:" in an IPv6 address (fd00:cd::1) must stay text (and their table is not loaded)
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


# Every command, and the module (under cni_lab/cli/) that defines it. tests/unit checks this
# against what the modules register.
COMMANDS = {
    "validate": "lab_commands", "plan": "lab_commands", "up": "lab_commands", "status": "lab_commands",
    "exec": "lab_commands", "down": "lab_commands", "scenarios": "lab_commands",
    "check": "proof", "run": "proof", "conformance": "proof",
    "explain": "lesson_commands", "trace": "lesson_commands", "demo": "lesson_commands", "fault": "lesson_commands",
    "heal": "lesson_commands",
    "graph": "pictures", "report": "pictures",
    "doctor": "host_commands", "completion": "host_commands",
    "policy": "policies",
    "service": "service_commands",
    "observe": "flows",
    "exercise": "exercises",
}


class LabGroup(click.Group):
    """Loads a command's module when the command is asked for; maps user errors to one line
    each and exit 2 (tracebacks only with --debug)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and name not in self.commands:
            importlib.import_module(f"cni_lab.cli.{COMMANDS[name]}")
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabError as e:
            if os.environ.get("CNI_LAB_DEBUG"):
                raise
            for problem in e.problems:
                err.print(Text.assemble(("error: ", "bold red"), problem), highlight=False, soft_wrap=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted: everything this command made was removed[/]")
            ctx.exit(INTERRUPTED)


def _complete_labs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    try:
        return [CompletionItem(n) for n in lifecycle.running() if n.startswith(incomplete)]
    except (OSError, LabError):
        return []  # not root: the state folder is root-only


def _complete_targets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Lab names, then node and node/pod names of the running lab(s)."""
    items = [i.value for i in _complete_labs(ctx, param, incomplete)]
    try:
        for name in lifecycle.running():
            recorded = lifecycle.state.read(name)
            if recorded is None:
                continue
            lab = lifecycle.from_state(recorded)
            items += [n.name for n in lab.nodes] + [p.id for p in lab.pods]
    except (OSError, LabError):
        pass
    return [CompletionItem(i) for i in dict.fromkeys(items) if i.startswith(incomplete)]


def _complete_scenarios(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    names = [n for n, _, _ in catalog.builtin_scenarios() if n.startswith(incomplete)]
    return [CompletionItem(n) for n in names] + [CompletionItem(incomplete, type="file")]


def _json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (gone when done) for long work: building, probing. Only on a
    terminal: in scripts and CI stderr carries nothing but errors."""
    if not err.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


@click.group(cls=LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cni-lab")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Build a real miniature Kubernetes pod network in network namespaces, and prove it works.

    \b
    Example:
      cni-lab validate scenarios/two-nodes.yaml
      sudo cni-lab up scenarios/two-nodes.yaml
      sudo cni-lab exec node1/web -- ping -c1 10.244.1.2
      sudo cni-lab down
    """
    if debug:
        os.environ["CNI_LAB_DEBUG"] = "1"


def main() -> None:
    try:
        cli(prog_name="cni-lab")
    except SystemExit as e:
        if e.code != INTERRUPTED:
            raise
        # Everything was cleaned up and said. Leave now: an interrupted run sometimes ended by
        # SIGINT (exit -2) instead of 130 while the interpreter finalized (1 run in ~10 under test)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
