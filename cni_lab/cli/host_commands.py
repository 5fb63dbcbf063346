"""The machine cni-lab runs on: doctor and shell completion."""

from __future__ import annotations

import sys

import click
from click.shell_completion import get_completion_class

from cni_lab.cli.app import _json, cli, out


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable checks.")
def doctor_command(as_json: bool) -> None:
    """Can this machine run cni-lab? Kernel features, tools, privileges, leftovers: each with its fix.

    \b
    Example: sudo cni-lab doctor
    """
    from cni_lab import doctor

    checks = doctor.run()
    if as_json:
        _json([{"name": c.name, "ok": c.ok, "found": c.found, "fix": c.fix, "required": c.required} for c in checks])
    else:
        for c in checks:
            mark = "[green]✓[/]" if c.ok else ("[red]✗[/]" if c.required else "[yellow]![/]")
            fix = f"  → {c.fix}" if not c.ok and c.fix else ""
            out.print(f"{mark} {c.name}: {c.found}{fix}", highlight=False)
    sys.exit(0 if all(c.ok for c in checks if c.required) else 1)


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
