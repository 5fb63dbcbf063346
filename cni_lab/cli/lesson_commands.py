"""The lesson: explain, trace, demo, and breaking things on purpose (fault, heal)."""

from __future__ import annotations

import sys

import click

from cni_lab import faults, lifecycle, privileges
from cni_lab.cli.app import _complete_labs, _complete_targets, _json, cli, out
from cni_lab.errors import LabError
from cni_lab.kernel import readback
from cni_lab.lesson import demo as demo_lesson, explain as explain_lesson, service_trace, trace as trace_lesson
from cni_lab.report import explain_view, trace_view


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
    """Each node as the kernel has it, in the words of the lesson: explain [LAB] [NODE | NODE/POD]

    A pod (node1/web): its resolv.conf, and what its resolver asks kube-dns for each Service's name.

    \b
    Example: sudo cni-lab explain node1
    """
    privileges.require_root("explain")
    if len(args) > 2:
        raise LabError("usage: cni-lab explain [LAB] [NODE | NODE/POD]")
    lab_name, node = (args[0], args[1]) if len(args) == 2 else (None, None)
    if len(args) == 1:
        lab_name, node = (args[0], None) if args[0] in lifecycle.running() else (None, args[0])
    lab, _ = lifecycle.running_lab(lab_name)
    if node is not None and "/" in node:  # a pod: its resolv.conf and what its resolver asks
        from cni_lab.lesson import name_lookups
        from cni_lab.report import dns_view

        out.print(dns_view.pod_view(name_lookups.explain_pod(lab, node)))
        return
    facts = explain_lesson.read(lab, node)
    if as_json:
        _json(explain_view.to_json(lab, facts))
    elif raw:
        for nf in facts:
            for ns in [nf.netns, *(pf.netns for pf in nf.pods)]:
                out.rule(f"[bold]{ns}")
                out.print(readback.raw(ns), highlight=False, markup=False)
    else:
        out.print(explain_view.view(lab, facts))


@cli.command()
@click.argument("args", nargs=-1, required=True, shell_complete=_complete_targets)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable hops.")
@click.option("--no-probe", is_flag=True, help="Only trace; do not send the real packets to compare.")
@click.option("-6", "--ipv6", "ipv6", is_flag=True, help="Trace IPv6 (a dual-stack lab's pods and nodes by name).")
def trace(args: tuple[str, ...], as_json: bool, no_probe: bool, ipv6: bool) -> None:
    """The path a packet takes from SRC to DST, hop by hop: trace [LAB] SRC DST

    SRC and DST are nodes (node1), pods (node1/web) or their IPs. Each hop is the kernel's own
    route lookup; then a real probe checks that the packet agrees. DST may be a Service's
    ClusterIP (10.96.0.2 or 10.96.0.2:80): the trace goes through kube-proxy's DNAT, to the
    endpoint the node's conntrack entry for one real connection names (on ebpf: through
    cil_from_container's load balancer, to the backend its CT_SERVICE entry names).

    \b
    Example: sudo cni-lab trace node1/web node2/api
    Example: sudo cni-lab trace node1/client 10.96.0.2:80
    Example: sudo cni-lab trace node1/client web    (a name: the lookup through kube-dns, then the connection)
    """
    privileges.require_root("trace")
    lab_name, (src, dst) = _lab_and_rest(args, 2, "trace [LAB] SRC DST")
    lab, _ = lifecycle.running_lab(lab_name)
    from cni_lab.lesson import name_lookups

    if name_lookups.is_name(lab, dst):  # a name: the lookup through kube-dns, then the connection
        from cni_lab.report import dns_view

        nt = name_lookups.trace_name(lab, src, dst)
        out.print(dns_view.name_trace_view(nt))
        sys.exit(0 if nt.address else 1)
    service = service_trace.parse_destination(lab, dst)
    if service is not None:  # a ClusterIP: through the DNAT, the endpoint from conntrack (or the BPF maps)
        st = service_trace.trace(lab, src, *service)
        if as_json:
            _json(trace_view.service_to_json(st))
        else:
            out.print(trace_view.service_view(st))
        sys.exit(0 if st.outcome == "ok" else 1)
    t = trace_lesson.trace(lab, src, dst, 6 if ipv6 else 4)
    before = trace_lesson.bpf_counters(lab)
    verdict = None if no_probe else trace_lesson.verify(lab, t)
    agree = None if verdict is None else trace_lesson.agrees(t, verdict)
    # in an ebpf lab, what the programs counted while the probe ran shows the hops were theirs
    moved = trace_lesson.counters_moved(before, trace_lesson.bpf_counters(lab)) if verdict is not None else {}
    if as_json:
        _json(trace_view.probed_json(lab, t, verdict, agree, moved))
    else:
        out.print(trace_view.view(t, verdict, agree, moved))
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
    privileges.require_root("demo")
    from cni_lab.report import demo_view  # with the check's tables: explain and trace start without them

    def pause(act: demo_lesson.Act) -> None:
        click.pause(f"Press any key for act {act.number}: {act.title} …")

    results = []
    for event in demo_lesson.run(pause=pause if step else None):
        if isinstance(event, demo_lesson.ActDone):
            results.append(event)
        out.print(demo_view.event_view(event))
    out.print(demo_view.summary_view(results))
    sys.exit(0 if results and all(r.passed for r in results) else 1)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, shell_complete=_complete_targets)
def fault(args: tuple[str, ...]) -> None:
    """Break one thing in a running lab: fault [LAB] KIND TARGET...

    \b
    KIND: link-down NODE        the node's underlay link goes down
          route-del NODE OTHER  NODE loses its route to OTHER's pods
          pod-down NODE/POD     the pod's eth0 goes down
          forward-drop NODE     nftables drops what NODE forwards for pods (and counts it)
          bpf-detach NODE/POD   (ebpf) cil_from_container comes off the pod's lxc device
          bpf-backend-del NODE NODE/POD
                                (ebpf) the pod's backends leave NODE's cilium_lb4_backends_v3 only
    Then `check` shows the pairs it breaks; `heal` undoes every fault.

    \b
    Example: sudo cni-lab fault route-del node1 node2 && sudo cni-lab check
    """
    privileges.require_root("fault")
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
    privileges.require_root("heal")
    name = lifecycle.pick(lab)
    from cni_lab.exercise import session

    if session.recorded(name) is not None:
        # heal applies the plan again: it would undo the exercise's break, not teach its fix
        raise LabError(f"lab {name} runs exercise {name}: fix it with the node's own tools (ip, nft, sysctl ...); "
                       f"`sudo cni-lab exercise hint {name}` helps, `sudo cni-lab exercise stop {name}` ends it")
    with lifecycle.state.locked(name):
        the_lab, _ = lifecycle.running_lab(name)
        undone = faults.heal(the_lab)
    if undone:
        for f in undone:
            out.print(f"[green]✓[/] healed {f.describe()}")
    else:
        out.print(f"[green]✓[/] lab {name} had no faults; its plan was applied again")
