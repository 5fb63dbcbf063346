"""NetworkPolicy on a running lab: policy list, apply, delete."""

from __future__ import annotations

import click
from rich.text import Text

from cni_lab import lifecycle, model
from cni_lab.cli.app import _complete_labs, cli, err, out
from cni_lab.errors import LabError


@cli.group()
def policy() -> None:
    """The NetworkPolicies of a running lab: list them, apply a file of them, delete one.

    \b
    Example: sudo cni-lab policy apply netpol scenarios/policies/deny-ingress-x.yaml && sudo cni-lab check netpol
    """


def _key(s: model.PolicySource) -> str:
    """namespace/name of a policy document, as kubectl keys it."""
    meta = s.document.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name')}" if isinstance(meta, dict) else ""


def _read(path: str) -> tuple[model.PolicySource, ...]:
    sources = model.load_policy_file(path)
    if not sources:
        raise LabError(f"{path}: no NetworkPolicy objects in it")
    return sources


@policy.command("list")
@click.argument("lab", required=False, shell_complete=_complete_labs)
def list_policies(lab: str | None) -> None:
    """The lab's policies and the pods each selects."""
    the_lab, _ = lifecycle.running_lab(lab)
    if not the_lab.policies:
        out.print(f"lab {the_lab.name} has no NetworkPolicies: every pod reaches every pod")
    for p in the_lab.policies:
        selected = [w.qualified for w in the_lab.workloads if w.namespace == p.namespace and p.pod_selector.matches(w.labels)]
        out.print(f"[bold]{p.qualified}[/] ({', '.join(p.policy_types)}): selects {', '.join(selected) or 'no pod'}")


@policy.command("apply")
@click.argument("args", nargs=-1, required=True)
def apply_policies(args: tuple[str, ...]) -> None:
    """policy apply [LAB] FILE: add or replace the file's policies (by namespace/name)."""
    if len(args) not in (1, 2):
        raise LabError("usage: cni-lab policy apply [LAB] FILE")
    lab, path = (None, args[0]) if len(args) == 1 else args
    new = _read(path)

    replaced = {_key(s) for s in new}

    def change(current: object) -> tuple[model.PolicySource, ...]:
        return tuple(s for s in current.scenario.policies if _key(s) not in replaced) + new  # type: ignore[attr-defined]

    _, after = lifecycle.set_policies(lab, change)
    for w in (w for p in after.policies if p.qualified in replaced for w in p.warnings):
        err.print(Text(f"Warning: {w}", style="yellow"))  # as kubectl prints the API server's
    out.print(f"[green]✓[/] {len(new)} policies applied; lab {after.name} has {len(after.policies)}. "
              "Next: [bold]sudo cni-lab check[/]")


@policy.command("delete")
@click.argument("args", nargs=-1, required=True)
def delete_policy(args: tuple[str, ...]) -> None:
    """policy delete [LAB] [NAMESPACE/]NAME: take one policy away."""
    if len(args) not in (1, 2):
        raise LabError("usage: cni-lab policy delete [LAB] [NAMESPACE/]NAME")
    lab, name = (None, args[0]) if len(args) == 1 else args
    qualified = name if "/" in name else f"default/{name}"

    def change(current: object) -> tuple[model.PolicySource, ...]:
        kept = tuple(s for s, p in zip(current.scenario.policies, current.policies) if p.qualified != qualified)  # type: ignore[attr-defined]
        if len(kept) == len(current.scenario.policies):  # type: ignore[attr-defined]
            raise LabError(f"lab {current.name} has no policy {qualified} "  # type: ignore[attr-defined]
                           f"(policies: {', '.join(p.qualified for p in current.policies) or 'none'})")  # type: ignore[attr-defined]
        return kept

    _, after = lifecycle.set_policies(lab, change)
    out.print(f"[green]✓[/] {qualified} deleted; lab {after.name} has {len(after.policies)} policies")
