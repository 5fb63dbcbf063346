"""The command line: parse, call, render. Nothing here builds or probes anything itself."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Any, Callable, Iterator

import click
from click.shell_completion import CompletionItem, get_completion_class
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cni_lab import __version__, faults, lifecycle, plan as planning
from cni_lab.errors import LabError
from cni_lab.kernel import inspect
from cni_lab.lesson import demo as demo_lesson, explain as explain_lesson, trace as trace_lesson
from cni_lab.probe.check import CheckResult
from cni_lab.report import html, lesson as lesson_view, machine, terminal, topology

out = Console()
err = Console(stderr=True)


class LabGroup(click.Group):
    """Maps user errors to one line each and exit 2; tracebacks only with --debug."""

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
            ctx.exit(130)


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
    names = [n for n, _, _ in lifecycle.builtin_scenarios() if n.startswith(incomplete)]
    return [CompletionItem(n) for n in names] + [CompletionItem(incomplete, type="file")]


def _json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


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


@cli.command()
@click.argument("scenario", shell_complete=_complete_scenarios)
@click.option("--json", "as_json", is_flag=True, help="Print the resolved lab as JSON.")
def validate(scenario: str, as_json: bool) -> None:
    """Check a scenario file: schema, names and addresses. No root needed.

    \b
    Example: cni-lab validate scenarios/two-nodes.yaml
    """
    lab = lifecycle.load(scenario)
    planning.build(lab)  # what the data plane itself rules out (host-gw across segments ...)
    if as_json:
        _json(lifecycle.Status(lab, "planned", {}).to_json())
        return
    out.print(terminal.lab_table(lab))
    for w in terminal.warnings(lab):
        err.print(w)
    out.print(f"[green]✓[/] {lab.scenario.source} is valid: {len(lab.nodes)} nodes, {len(lab.pods)} pods")


@cli.command()
@click.argument("scenario", shell_complete=_complete_scenarios)
@click.option("--name", help="Lab name to plan for instead of the file's.")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def plan(scenario: str, name: str | None, as_json: bool) -> None:
    """Show every kernel object `up` would create, as `ip` commands. No root needed.

    \b
    Example: cni-lab plan scenarios/two-nodes.yaml
    """
    the_plan = planning.build(lifecycle.load(scenario, name))
    if as_json:
        _json([{"op": type(s).__name__, "netns": s.netns, "command": s.describe()} for s in the_plan.steps])
        return
    out.print(terminal.plan_view(the_plan))


@cli.command()
@click.argument("scenario", shell_complete=_complete_scenarios)
@click.option("--name", help="Run under this lab name instead of the file's (run one file twice).")
@click.option("--json", "as_json", is_flag=True, help="Print the lab's status as JSON.")
def up(scenario: str, name: str | None, as_json: bool) -> None:
    """Build the lab: underlay, nodes, pods and data plane, for real.

    Safe to repeat: the same scenario again is a no-op. A failed or interrupted `up`
    removes everything it made.

    \b
    Example: sudo cni-lab up scenarios/two-nodes.yaml
    """
    lab = lifecycle.load(scenario, name)
    for w in terminal.warnings(lab):
        err.print(w)
    with _progress(f"building lab {lab.name}") as progress:
        result = lifecycle.up(lab, progress)
    if as_json:
        _json(lifecycle.status(lab.name).to_json())
        return
    out.print(terminal.lab_table(lab))
    if result.healed:
        out.print(f"[green]✓[/] lab {lab.name} was up; started again what had died: {', '.join(result.healed)}")
    elif not result.created:
        out.print(f"[green]✓[/] lab {lab.name} was already up with this scenario: nothing to do")
    else:
        if result.replaced_stale:
            err.print(f"[yellow]note:[/] removed what an earlier, unfinished `up` of {lab.name} left behind")
        out.print(f"[green]✓[/] lab {lab.name} is up. Next: [bold]sudo cni-lab exec {lab.name} "
                  f"{lab.pods[0].id if lab.pods else lab.nodes[0].name} -- ip route[/]")


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable status.")
def status(lab: str | None, as_json: bool) -> None:
    """What runs: nodes, pods and addresses, from the record and the kernel.

    \b
    Example: sudo cni-lab status --json
    """
    st = lifecycle.status(lab)
    if as_json:
        _json(st.to_json())
    else:
        out.print(terminal.status_view(st))
    if not st.healthy:
        sys.exit(1)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True, shell_complete=_complete_targets)
def exec(args: tuple[str, ...]) -> None:
    """Run a command inside a node or pod: exec [LAB] NODE[/POD] -- COMMAND...

    \b
    Example: sudo cni-lab exec node1/web -- ip route
    """
    words = list(args)
    if "--" in words:
        i = words.index("--")
        head, command = words[:i], words[i + 1 :]
    else:
        head, command = words[:2] if len(words) > 2 else words[:1], words[2:] if len(words) > 2 else words[1:]
    if len(head) not in (1, 2) or not command:
        raise LabError("usage: cni-lab exec [LAB] NODE[/POD] -- COMMAND...")
    lifecycle.require_root("exec")
    lab, _ = lifecycle.running_lab(head[0] if len(head) == 2 else None)
    ns = lifecycle.target_netns(lab, head[-1])
    try:
        os.execvp("ip", ["ip", "netns", "exec", ns, *command])
    except OSError as e:
        raise LabError(f"cannot run `ip netns exec`: {e.strerror} (install iproute2)") from None


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
@click.option("--all", "everything", is_flag=True, help="Every lab, and anything a killed run left behind.")
def down(lab: str | None, everything: bool) -> None:
    """Remove a lab: namespaces, links, processes and state files.

    \b
    Example: sudo cni-lab down --all
    """
    if everything:
        if lab:
            raise LabError("give a lab name or --all, not both")
        with err.status("removing every lab"):
            removed = lifecycle.down_all()
        for name, namespaces in removed.items():
            out.print(f"[green]✓[/] lab {name} removed ({len(namespaces)} namespaces)")
        if not removed:
            out.print("nothing to remove: no cni-lab objects on this machine")
        return
    name = lifecycle.pick(lab) if lab is None else lab
    with err.status(f"removing lab {name}"):
        namespaces = lifecycle.down(name)
    out.print(f"[green]✓[/] lab {name} removed ({len(namespaces)} namespaces)")


def _report_check(result: CheckResult, as_json: bool, junit: str | None) -> None:
    if junit:
        with open(junit, "w", encoding="utf-8") as f:
            f.write(machine.check_junit(result))
    if as_json:
        _json(machine.check_json(result))
    else:
        out.print(terminal.check_view(result))
        if junit:
            out.print(f"JUnit written to {junit}", style="dim")


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (gone when done) for long work: building, probing. Only on a
    terminal: in scripts and CI stderr carries nothing but errors."""
    if not err.is_terminal:
        yield lambda done, total: None
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result (schema: docs/check.schema.json).")
@click.option("--junit", metavar="FILE", help="Also write JUnit XML: one test case per Kubernetes rule.")
@click.option("--mtu", is_flag=True, help="Also send full-size DF packets between pods of different nodes.")
@click.option("--neighbour-cap", type=click.IntRange(1024, 1 << 20), metavar="N",
              help="Raise the host's shared ARP table limit (gc_thresh3) to N for this check, then put it back. "
                   "Needed for labs of hundreds of pods.")
def check(lab: str | None, as_json: bool, junit: str | None, mtu: bool, neighbour_cap: int | None) -> None:
    """Prove the Kubernetes network model: probe every ordered pair of pods and nodes.

    Each pair gets an ICMP echo and a UDP probe whose reply says which source address the
    receiver saw (no NAT) and who answered (the right peer). Exit 0 when every pair is as the
    scenario expects (`ok` unless it says otherwise), 1 when not, 2 on bad input.

    \b
    Example: sudo cni-lab check --junit check.xml
    """
    with _progress("probing pairs") as progress:
        result = lifecycle.check(lab, progress, mtu=mtu, neighbour_cap=neighbour_cap)
    _report_check(result, as_json, junit)
    sys.exit(0 if result.passed else 1)


@cli.command()
@click.argument("scenario", shell_complete=_complete_scenarios)
@click.option("--name", help="Run under this lab name instead of the file's.")
@click.option("--json", "as_json", is_flag=True, help="Print the check result as JSON.")
@click.option("--junit", metavar="FILE", help="Also write JUnit XML.")
@click.option("--mtu", is_flag=True, help="Also run the MTU check.")
@click.option("--neighbour-cap", type=click.IntRange(1024, 1 << 20), metavar="N",
              help="As for check: raise the host's ARP table limit for the check, then put it back.")
@click.option("--report", "report_file", metavar="FILE", help="Also write the HTML report before the lab goes.")
def run(scenario: str, name: str | None, as_json: bool, junit: str | None, mtu: bool,
        neighbour_cap: int | None, report_file: str | None) -> None:
    """Up, check and down in one go, for CI: exits with check's code, never leaves the lab behind.

    \b
    Example: sudo cni-lab run scenarios/two-nodes.yaml --junit out.xml
    """
    lab = lifecycle.load(scenario, name)
    with _progress(f"building lab {lab.name}") as progress:
        result = lifecycle.up(lab, progress)
    try:
        with _progress("probing pairs") as progress:
            checked = lifecycle.check(lab.name, progress, mtu=mtu, neighbour_cap=neighbour_cap)
        if report_file:
            _write_report(lab.name, report_file)
    finally:
        if result.created:
            with err.status(f"removing lab {lab.name}"):
                lifecycle.down(lab.name)
    _report_check(checked, as_json, junit)
    sys.exit(0 if checked.passed else 1)


def _lab_and_rest(args: tuple[str, ...], rest: int, usage: str) -> tuple[str | None, list[str]]:
    """Split `[LAB] A B...`: a first word naming a running lab is the lab."""
    words = list(args)
    if len(words) == rest + 1:
        return words[0], words[1:]
    if len(words) == rest:
        return None, words
    raise LabError(f"usage: cni-lab {usage}")


@cli.command()
@click.argument("args", nargs=-1, shell_complete=_complete_targets)
@click.option("--raw", is_flag=True, help="Show `ip addr`, `ip route` and `bridge link` from inside each namespace.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable facts.")
def explain(args: tuple[str, ...], raw: bool, as_json: bool) -> None:
    """Each node as the kernel has it, in the words of the lesson: explain [LAB] [NODE]

    \b
    Example: sudo cni-lab explain node1
    """
    lifecycle.require_root("explain")
    if len(args) > 2:
        raise LabError("usage: cni-lab explain [LAB] [NODE]")
    lab_name, node = (args[0], args[1]) if len(args) == 2 else (None, None)
    if len(args) == 1:
        lab_name, node = (args[0], None) if args[0] in lifecycle.running() else (None, args[0])
    lab, _ = lifecycle.running_lab(lab_name)
    facts = explain_lesson.read(lab, node)
    if as_json:
        _json(explain_lesson.to_json(lab, facts))
    elif raw:
        for nf in facts:
            for ns in [nf.netns, *(pf.netns for pf in nf.pods)]:
                out.rule(f"[bold]{ns}")
                out.print(inspect.raw(ns), highlight=False, markup=False)
    else:
        out.print(lesson_view.explain_view(lab, facts))


@cli.command()
@click.argument("args", nargs=-1, required=True, shell_complete=_complete_targets)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable hops.")
@click.option("--no-probe", is_flag=True, help="Only trace; do not send the real packets to compare.")
def trace(args: tuple[str, ...], as_json: bool, no_probe: bool) -> None:
    """The path a packet takes from SRC to DST, hop by hop: trace [LAB] SRC DST

    SRC and DST are nodes (node1), pods (node1/web) or their IPs. Each hop is the kernel's own
    route lookup; then a real probe checks that the packet agrees.

    \b
    Example: sudo cni-lab trace node1/web node2/api
    """
    lifecycle.require_root("trace")
    lab_name, (src, dst) = _lab_and_rest(args, 2, "trace [LAB] SRC DST")
    lab, _ = lifecycle.running_lab(lab_name)
    t = trace_lesson.trace(lab, src, dst)
    verdict = None if no_probe else trace_lesson.verify(lab, t)
    agree = None if verdict is None else trace_lesson.agrees(t, verdict)
    if as_json:
        _json({**trace_lesson.to_json(t), "probe": verdict, "agrees": agree})
    else:
        out.print(lesson_view.trace_view(t, verdict, agree))
    sys.exit(0 if t.outcome == "ok" else 1)


@cli.command()
@click.option("--step", is_flag=True, help="Pause between acts (for a class).")
def demo(step: bool) -> None:
    """The story of pod networking in three acts, built for real and proved.

    \b
    1. one node, one pod: the pod gets 10.244.0.2
    2. two nodes, the same pod network: the addresses collide
    3. a pod CIDR per node and routes between them: everything works, without NAT
    Exit 0 only if every act showed what it should.

    \b
    Example: sudo cni-lab demo --step
    """
    lifecycle.require_root("demo")

    def pause(act: demo_lesson.Act) -> None:
        click.pause(f"Press any key for act {act.number}: {act.title} …")

    results = []
    for event in demo_lesson.run(pause=pause if step else None):
        if isinstance(event, demo_lesson.ActDone):
            results.append(event)
        out.print(lesson_view.demo_event(event))
    out.print(lesson_view.demo_summary(results))
    sys.exit(0 if results and all(r.passed for r in results) else 1)


def _topology(target: str) -> tuple[topology.Topology, dict[str, Any] | None, str]:
    """A running lab (read from the kernel, needs root) or a scenario (from the plan, no root)."""
    if os.geteuid() == 0 and target in lifecycle.running():
        lab, _ = lifecycle.running_lab(target)
        facts = explain_lesson.to_json(lab, explain_lesson.read(lab))
        routes = {n["name"]: [(r["dst"], r["gateway"], r["dev"]) for r in n["routes"]] for n in facts["nodes"]}
        return topology.build(lab, routes), facts, lab.name
    lab = lifecycle.load(target)
    planning.build(lab)
    return topology.build(lab), None, lab.name


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
    topo, _, _ = _topology(target)
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
    lifecycle.require_root("report")
    name = lifecycle.pick(lab)
    _write_report(name, output)
    hint = "" if lifecycle.last_check(name) else " (no check yet: run `sudo cni-lab check` for the matrix)"
    err.print(f"[green]✓[/] report written to {output}{hint}")


def _write_report(name: str, output: str) -> None:
    topo, facts, _ = _topology(name)
    document = html.page(name, topology.svg(topo), lifecycle.last_check(name), facts or {})
    with open(output, "w", encoding="utf-8") as f:
        f.write(document)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, shell_complete=_complete_targets)
def fault(args: tuple[str, ...]) -> None:
    """Break one thing in a running lab: fault [LAB] KIND TARGET...

    \b
    KIND: link-down NODE        the node's underlay link goes down
          route-del NODE OTHER  NODE loses its route to OTHER's pods
          pod-down NODE/POD     the pod's eth0 goes down
    Then `check` shows the pairs it breaks; `heal` undoes every fault.

    \b
    Example: sudo cni-lab fault route-del node1 node2 && sudo cni-lab check
    """
    lifecycle.require_root("fault")
    words = list(args)
    lab_name = words.pop(0) if words and words[0] not in faults.KINDS else None
    if not words or words[0] not in faults.KINDS:
        raise LabError(f"usage: cni-lab fault [LAB] {{{'|'.join(faults.KINDS)}}} TARGET...")
    name = lifecycle.pick(lab_name)
    with lifecycle.state.locked(name):
        lab, _ = lifecycle.running_lab(name)
        done = faults.inject(lab, words[0], tuple(words[1:]))
    out.print(f"[yellow]fault[/] {done.describe()}. Next: [bold]sudo cni-lab check[/], then [bold]sudo cni-lab heal[/]")


@cli.command()
@click.argument("lab", required=False, shell_complete=_complete_labs)
def heal(lab: str | None) -> None:
    """Undo every fault injected with `fault`, and re-apply the lab's plan.

    \b
    Example: sudo cni-lab heal && sudo cni-lab check
    """
    lifecycle.require_root("heal")
    name = lifecycle.pick(lab)
    with lifecycle.state.locked(name):
        the_lab, _ = lifecycle.running_lab(name)
        undone = faults.heal(the_lab)
    if undone:
        for f in undone:
            out.print(f"[green]✓[/] healed {f.describe()}")
    else:
        out.print(f"[green]✓[/] lab {name} had no faults; its plan was applied again")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable checks.")
def doctor(as_json: bool) -> None:
    """Can this machine run cni-lab? Kernel features, tools, privileges, leftovers: each with its fix.

    \b
    Example: sudo cni-lab doctor
    """
    from cni_lab import doctor as checkup

    checks = checkup.run()
    if as_json:
        _json([{"name": c.name, "ok": c.ok, "found": c.found, "fix": c.fix, "required": c.required} for c in checks])
    else:
        for c in checks:
            mark = "[green]✓[/]" if c.ok else ("[red]✗[/]" if c.required else "[yellow]![/]")
            fix = f"  → {c.fix}" if not c.ok and c.fix else ""
            out.print(f"{mark} {c.name}: {c.found}{fix}", highlight=False)
    sys.exit(0 if all(c.ok for c in checks if c.required) else 1)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def scenarios(as_json: bool) -> None:
    """The scenarios shipped with cni-lab; `up`, `run`, `plan` ... take their names.

    \b
    Example: cni-lab scenarios && sudo cni-lab run vxlan
    """
    found = lifecycle.builtin_scenarios()
    if as_json:
        _json([{"name": n, "dataplane": d, "description": t} for n, d, t in found])
        return
    table = Table(title=f"scenarios in {lifecycle.BUILTIN_SCENARIOS}", title_justify="left")
    for col in ("name", "data plane", "what it shows"):
        table.add_column(col)
    for row in found:
        table.add_row(*row)
    out.print(table)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (commands, lab, node and pod names).

    \b
    Example: cni-lab completion bash | sudo tee /etc/bash_completion.d/cni-lab
    """
    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "cni-lab", "_CNI_LAB_COMPLETE").source())


def main() -> None:
    cli(prog_name="cni-lab")
