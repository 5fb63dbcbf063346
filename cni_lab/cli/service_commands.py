"""Services on a running lab: service list, apply, delete (kubectl's job on a real cluster)."""

from __future__ import annotations

import click

from cni_lab import lifecycle, model, service_changes
from cni_lab.cli.app import _complete_labs, cli, out
from cni_lab.cluster import HeadlessService, Lab, Service
from cni_lab.errors import LabError


@cli.group()
def service() -> None:
    """The Services of a running lab: list them, apply a file of them, delete one. Every node's
    kube-proxy table (or the ebpf data plane's Service maps) and kube-dns's records follow at once;
    existing Services keep their ClusterIPs and NodePorts.

    \b
    Example: sudo cni-lab service apply services api.yaml && sudo cni-lab check services
    """


def _namespaces(lab: Lab) -> set[str]:
    return {ns.name for ns in lab.scenario.namespaces} or {model.DEFAULT_NAMESPACE}


def _line(svc: Service | HeadlessService) -> str:
    address = "None (headless)" if isinstance(svc, HeadlessService) else str(svc.cluster_ip)
    ports = ", ".join(p.label + (f"→{p.target_port}" if p.target_port != p.port else "")
                      + (f" nodePort {p.node_port}" if p.node_port else "") for p in svc.spec.ports)
    selects = (f"pods {', '.join(svc.spec.pods)}" if svc.spec.pods
               else ",".join(f"{k}={v}" for k, v in svc.spec.selector))
    ends = ", ".join(p.id for p in svc.endpoints) or "[yellow]no endpoints[/]"
    return f"[bold]{svc.qualified}[/] {svc.spec.type} {address} · {ports} · selects {selects} → {ends}"


@service.command("list")
@click.argument("lab", required=False, shell_complete=_complete_labs)
def list_services(lab: str | None) -> None:
    """The lab's Services: ClusterIP, ports, selector and endpoints."""
    the_lab, _ = lifecycle.running_lab(lab)
    if not the_lab.all_services:
        out.print(f"lab {the_lab.name} has no Services")
    for svc in the_lab.all_services:
        out.print(_line(svc), highlight=False)


@service.command("apply")
@click.argument("args", nargs=-1, required=True)
def apply_services(args: tuple[str, ...]) -> None:
    """service apply [LAB] FILE: add the file's Services, or replace those of the same
    namespace/name. FILE holds one Service or a list, each a scenario `services:` entry
    ({name, namespace, selector | pods, ports, type, externalTrafficPolicy, clusterIP}) or a
    Kubernetes manifest (apiVersion: v1, kind: Service; metadata.name and namespace, and spec's
    selector, ports, type, externalTrafficPolicy, clusterIP); several YAML documents may follow
    one another (---). All is checked first: one line per problem, exit 2, nothing changed."""
    if len(args) not in (1, 2):
        raise LabError("usage: cni-lab service apply [LAB] FILE")
    lab, path = (None, args[0]) if len(args) == 1 else args
    applied: list[str] = []

    def change(current: Lab) -> tuple[model.ServiceSpec, ...]:
        new = model.load_service_file(path, _namespaces(current))
        applied.extend(service_changes.qualified(s) for s in new)
        return service_changes.applied(current, new, path)

    before, after = lifecycle.set_services(lab, change)
    known = {s.qualified for s in before.all_services}
    for svc in (s for s in after.all_services if s.qualified in applied):
        verb = "replaced" if svc.qualified in known else "added"
        out.print(f"[green]✓[/] {verb} {_line(svc)}", highlight=False)
    if after.dns is not None and after.dns_service is not None:
        names = [f"{name}.{namespace}.svc.{after.dns.cluster_domain}"
                 for namespace, _, name in (q.partition("/") for q in applied)]
        out.print(f"kube-dns answers {', '.join(names)}", highlight=False)
    out.print(f"lab {after.name} has {len(after.all_services)} Services. Next: [bold]sudo cni-lab check {after.name}[/]")


@service.command("delete")
@click.argument("args", nargs=-1, required=True)
def delete_service(args: tuple[str, ...]) -> None:
    """service delete [LAB] [NAMESPACE/]NAME: take one Service away (its name is NXDOMAIN at once)."""
    if len(args) not in (1, 2):
        raise LabError("usage: cni-lab service delete [LAB] [NAMESPACE/]NAME")
    lab, name = (None, args[0]) if len(args) == 1 else args
    qualified = name if "/" in name else f"{model.DEFAULT_NAMESPACE}/{name}"
    _, after = lifecycle.set_services(lab, lambda current: service_changes.deleted(current, qualified))
    out.print(f"[green]✓[/] {qualified} deleted; lab {after.name} has {len(after.all_services)} Services")
