"""Commands that build, show and remove labs: validate, plan, up, status, exec, down, scenarios."""

from __future__ import annotations

import os
import sys

import click
from rich.table import Table

from cni_lab import catalog, lifecycle, plan, privileges, target_netns
from cni_lab.cli.app import _complete_labs, _complete_scenarios, _complete_targets, _json, _progress, cli, err, out
from cni_lab.errors import LabError
from cni_lab.report import json_junit, terminal


@cli.command()
@click.argument("scenario", shell_complete=_complete_scenarios)
@click.option("--json", "as_json", is_flag=True, help="Print the resolved lab as JSON.")
def validate(scenario: str, as_json: bool) -> None:
    """Check a scenario file: schema, names and addresses. No root needed.

    \b
    Example: cni-lab validate scenarios/two-nodes.yaml
    """
    lab = catalog.load(scenario)
    plan.build(lab)  # what the data plane itself rules out (host-gw across segments ...)
    if as_json:
        _json(json_junit.lab_json(lab))
        return
    out.print(terminal.lab_table(lab))
    for w in terminal.warnings(lab):
        err.print(w)
    out.print(f"[green]✓[/] {lab.scenario.source} is valid: {len(lab.nodes)} nodes, {len(lab.pods)} pods")


@cli.command("plan")
@click.argument("scenario", shell_complete=_complete_scenarios)
@click.option("--name", help="Lab name to plan for instead of the file's.")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def plan_command(scenario: str, name: str | None, as_json: bool) -> None:
    """Show every kernel object `up` would create, as `ip` commands. No root needed.

    \b
    Example: cni-lab plan scenarios/two-nodes.yaml
    """
    built = plan.build(catalog.load(scenario, name))
    if as_json:
        _json([{"op": type(s).__name__, "netns": s.netns, "command": s.describe()} for s in built.steps])
        return
    out.print(terminal.plan_view(built))
    if built.lab.policies:
        from cni_lab import policy  # the truth table the policies give, as the e2e suite prints it

        out.print(f"\n[bold]What the {len(built.lab.policies)} NetworkPolicies allow[/] (rows: from, columns: to; "
                  "`.` allowed, `X` denied)")
        for protocol, port in policy.probes(built.lab.probe_ports):
            out.print(f"\n{protocol}" + (f"/{port}" if port else ""), style="bold")
            # tab-separated, as the e2e suite logs it (diffable against its output)
            click.echo(policy.truth_table(built.lab.evaluator, built.lab.workloads, protocol, port))


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
    lab = catalog.load(scenario, name)
    for w in terminal.warnings(lab):
        err.print(w)
    with _progress(f"building lab {lab.name}") as progress:
        result = lifecycle.up(lab, progress)
    if as_json:
        _json(json_junit.lab_json(lab, lifecycle.status(lab.name)))
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
        _json(json_junit.lab_json(st.lab, st))
    else:
        out.print(terminal.status_view(st))
    if not st.healthy:
        sys.exit(1)


@cli.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True, shell_complete=_complete_targets)
def exec_command(args: tuple[str, ...]) -> None:
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
    privileges.require_root("exec")
    lab, _ = lifecycle.running_lab(head[0] if len(head) == 2 else None)
    ns = target_netns.target_netns(lab, head[-1])
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


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def scenarios(as_json: bool) -> None:
    """The scenarios shipped with cni-lab; `up`, `run`, `plan` ... take their names.

    \b
    Example: cni-lab scenarios && sudo cni-lab run vxlan
    """
    found = catalog.builtin_scenarios()
    if as_json:
        _json([{"name": n, "dataplane": d, "description": t} for n, d, t in found])
        return
    table = Table(title=f"scenarios in {catalog.BUILTIN_SCENARIOS}", title_justify="left")
    for col in ("name", "data plane", "what it shows"):
        table.add_column(col)
    for row in found:
        table.add_row(*row)
    out.print(table)
