"""Rich renderables for the terminal. Functions take values and return renderables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.dataplanes.capabilities import CILIUM_LB_LOOPBACK
from cni_lab.state import Status
from cni_lab.plan import Plan
from cni_lab.probe.pairs import endpoints

if TYPE_CHECKING:  # results are made by `check`; `up` renders a table without loading the prober
    from cni_lab.probe.matrix import CheckResult, FailureCause
    from cni_lab.probe.service_probes import ServiceProbe
    from cni_lab.probe.dns_probes import DnsProbe


PODS_LISTED = 8  # a node with more pods shows them as a range


def lab_table(lab: Lab, present: dict[str, bool] | None = None) -> Table:
    underlay = ", ".join(f"{s.name} {s.cidr}" if len(lab.segments) > 1 else str(s.cidr) for s in lab.segments)
    title = f"lab [bold]{lab.name}[/] · data plane [bold]{lab.dataplane}[/] · underlay {underlay}"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("node")
    table.add_column("underlay IP", overflow="fold")
    table.add_column("pod CIDR", overflow="fold")
    table.add_column("pod gateway", overflow="fold")
    table.add_column("pods")
    for node in lab.nodes:
        missing = {p.name for p in node.pods if present is not None
                   and not present.get(names.pod_netns(lab.name, node.name, p.name), False)}
        pods = Text()
        # a node with many pods gets one line for all of them (and one per missing pod): a
        # 1000-pod lab's table stays one screen per 50 nodes
        listed = node.pods if len(node.pods) <= PODS_LISTED else [p for p in node.pods if p.name in missing]
        if len(node.pods) > PODS_LISTED:
            first, last = node.pods[0], node.pods[-1]
            head, _, tail = str(last.ip).rpartition(".")
            to = f".{tail}" if str(first.ip).startswith(head + ".") else str(last.ip)
            pods.append(f"{len(node.pods)} pods", style="bold")
            pods.append(f"\n{first.ip} … {to}")
        for pod in listed:
            if pods:
                pods.append("\n")
            pods.append(f"{pod.name.replace('.', '/')} ", style="bold")
            pods.append(", ".join(str(ip) for ip in pod.ips))
            if pod.name in missing:
                pods.append(" (missing)", style="red")
        node_label = Text(node.name, style="bold")
        if present is not None and not present.get(names.node_netns(lab.name, node.name), False):
            node_label.append(" (missing)", style="red")
        ip = "\n".join(str(a) for a in node.ips) + (f" ({node.segment.name})" if len(lab.segments) > 1 else "")
        gateway = {"proxy-arp": f"{names.CALICO_GATEWAY} (proxy ARP)",
                   "cilium_host": f"{node.gateway} ({names.CILIUM_HOST})"}.get(lab.capabilities.pod_gateway, f"{node.gateway} (cni0)")
        if node.gateway6 is not None and lab.capabilities.pod_gateway == "cni0":
            gateway += f"\n{node.gateway6} (cni0)"
        table.add_row(node_label, ip, "\n".join(str(c) for c in node.pod_cidrs), gateway, pods or "-")
    return table


def warnings(lab: Lab) -> list[Text]:
    return [Text(f"warning: {w}", style="yellow") for w in lab.all_warnings]


def plan_view(plan: Plan) -> RenderableType:
    lines = Text()
    current = None
    for step in plan.steps:
        if step.netns != current:
            current = step.netns
            lines.append(f"# {current}\n", style="dim")
        lines.append(step.describe() + "\n")
    counts: dict[str, int] = {}
    for step in plan.steps:
        counts[type(step).__name__] = counts.get(type(step).__name__, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return Group(lab_table(plan.lab), lines, Text(f"{len(plan.steps)} steps: {summary}", style="dim"))


def status_view(st: Status) -> RenderableType:
    state = "up" if st.healthy else ("building" if st.status == "building" else
                                     "faulted" if st.faults and all(st.present.values()) else "degraded")
    style = {"up": "green", "building": "yellow"}.get(state, "red")
    header = Text.assemble(("status: ", ""), (state, f"bold {style}"), f" · from {st.lab.scenario.source}")
    lines = [Text.assemble(f"bird on {node}: ", ("running", "green") if ok else ("NOT RUNNING", "bold red"),
                           f" (pid {pid})" if pid else "")
             for node, (pid, ok) in st.daemons.items()]
    if st.dns is not None:
        pod, pid, ok = st.dns
        lines.append(Text.assemble(f"dnsmasq (kube-dns) in {pod}: ", ("running", "green") if ok else
                                   ("NOT RUNNING", "bold red"), f" (pid {pid})" if pid else ""))
    lines += [Text(f"fault: {f} (undo with `sudo cni-lab heal`)", style="yellow") for f in st.faults]
    return Group(lab_table(st.lab, st.present), *lines, header, *warnings(st.lab))


VERDICT_STYLE = {"ok": "green", "nat": "magenta", "wrong-peer": "red", "timeout": "yellow", "unreachable": "bright_red"}
VERDICT_MARK = {"ok": "✓", "nat": "N", "wrong-peer": "W", "timeout": "T", "unreachable": "U"}
GRID_LIMIT = 16
GRID_LEGEND = "✓ ok  N nat  W wrong peer  T timeout  U unreachable  (red background: not as expected)"


def check_view(result: CheckResult) -> RenderableType:
    """The check of one family, or of both in a dual-stack lab (IPv4, then IPv6)."""
    parts: list[RenderableType] = []
    dual = result.ipv6 is not None
    for one in result.by_family:
        if dual:
            parts.append(Text(f"── IPv{one.family} " + "─" * 40, style="bold"))
        parts += _family_view(one, dual)
    parts += ports_view(result)
    parts += [Text(line, style="cyan") for line in masquerade_lines(result)]
    parts += services_view(result)
    parts += dns_view(result)
    parts += [Text(f"note: {n}", style="yellow") for n in result.notes]
    parts += [Text(f"fault: {f}", style="yellow") for f in result.faults]
    verdict = Text("PASS", style="bold green") if result.passed else Text("FAIL", style="bold red")
    failed = sum(len(one.failures) for one in result.by_family)
    summary = f": {result.total - failed}/{result.total} pairs as expected"
    if dual:
        summary += " (" + ", ".join(f"IPv{one.family} {len(one) - len(one.failures)}/{len(one)}" for one in result.by_family) + ")"
    if any(one.mtu is not None and not all(m.passed for m in one.mtu) for one in result.by_family):
        summary += ", but full-size packets are lost (MTU)"
    if result.cni_problems:
        summary += ", but CNI CHECK failed"
    if result.port_failures:
        summary += f", but {len(result.port_failures)} port probes are not as the policies say"
    if any(not d.ok for d in result.dns):
        summary += f", but {sum(not d.ok for d in result.dns)} name lookups are not as expected (dns)"
    parts.append(Text.assemble(verdict, summary))
    return Group(*parts)


MASQUERADE_HOW: dict[object, str] = {"calico": "as Calico's natOutgoing does", "cilium-bpf": "as Cilium's BPF masquerade does (cilium_snat_v4_external)"}


def masquerade_lines(result: CheckResult) -> list[str]:
    """Where pods' traffic to the outside host was masqueraded, in the lesson's words."""
    seen: dict[str, set[str]] = {}
    for r in result.results if any(e.kind == "outside" for e in result.endpoints) else []:
        if r.pair.rule == "pod-outside" and r.verdict == "nat" and r.observed:
            seen.setdefault(r.pair.src.node, set()).add(r.observed)
    how = MASQUERADE_HOW.get(result.lab.capabilities.masquerade, "as flannel --ip-masq does")
    return [f"pod → outside: masqueraded at {node} (the outside host saw {', '.join(sorted(ips))}), {how}"
            for node, ips in sorted(seen.items())]


@dataclass(frozen=True)
class ServiceWords:
    """How a Service answering as expected is said, in the words of what balances it
    (probe/service_probes.py judges each by the same rules)."""

    standard: str  # whose behaviour the probes hold it to
    hairpin: str  # what a pod reaching itself through its Service sees
    cluster_nodeport: str  # what an endpoint reached through a NodePort (externalTrafficPolicy Cluster) sees


SERVICE_WORDS: dict[object, ServiceWords] = {
    "kube-proxy-nftables": ServiceWords("as kube-proxy does it", "hairpin masqueraded", "masqueraded to the node dialled"),
    "cilium-bpf": ServiceWords("as Cilium's kube-proxy replacement does it", f"hairpin seen from {CILIUM_LB_LOOPBACK}",
                               "SNATed to the node dialled unless the endpoint is on it"),
}


def service_words(lab: Lab) -> ServiceWords:
    return SERVICE_WORDS.get(lab.capabilities.services, SERVICE_WORDS["kube-proxy-nftables"])


def _target(probe: ServiceProbe) -> str:
    """`8080`, or a named targetPort with each endpoint's number: `http (n1/a 8080, n2/c 9090)`."""
    if not isinstance(probe.target_port, str):
        return str(probe.target_port)
    return f"{probe.target_port} ({', '.join(f'{pid} {number}' for pid, number in probe.targets)})"


def services_view(result: CheckResult) -> list[RenderableType]:
    """pod → Service and outside → NodePort: who answered, how the load spread, what source the
    endpoint saw; a line per port dialled, and a note per endpoint port a server of its own holds."""
    groups: dict[str, list[ServiceProbe]] = {}
    for s in result.services:
        groups.setdefault(s.title, []).append(s)
    parts: list[RenderableType] = []
    words = service_words(result.lab)
    why = {id(s): c for i, s in enumerate(result.services) if (c := result.service_causes.get(i)) is not None}
    for title, probes in groups.items():
        spread: dict[str, int] = {}
        for p in probes:
            for a in p.answers:
                spread[a.endpoint] = spread.get(a.endpoint, 0) + 1
        unconfirmed = sum(p.unconfirmed for p in probes)
        bad = [p for p in probes if not p.ok]
        mark = Text("✓", style="bold green") if not bad else Text("✗", style="bold red")
        shares = ", ".join([f"{who} {n}" for who, n in sorted(spread.items())]
                           + ([f"not confirmed {unconfirmed}"] if unconfirmed else []))
        head = f" → targetPort {_target(probes[0])}  {len(probes) - len(bad)}/{len(probes)} "
        if probes[0].kind == "clusterIP":
            parts.append(Text.assemble((title, "bold"), head + f"pods answered by its endpoints ({shares}), the client's "
                                       f"address kept, {words.hairpin}  ", mark))
        else:
            how = (words.cluster_nodeport if probes[0].policy == "Cluster" else
                   "the client's address kept; nodes without a local endpoint do not answer")
            silent = [p.via for p in probes if p.ok and not p.answers and not p.unconfirmed]
            parts.append(Text.assemble((title, "bold"), head + f"nodes {words.standard} ({shares}"
                                       + (f"; silent: {', '.join(silent)}" if silent else "") + f"), {how}  ", mark))
        parts += [Text(f"  {p.via or p.src}: {p.problem}" + (f" — cause: {c.words}" if (c := why.get(id(p))) else ""),
                       style="red") for p in bad]
    for busy in sorted({b for s in result.services for b in s.busy}):
        pod, _, port = busy.partition(" ")
        accepted = "datagrams it answered" if port.endswith("/UDP") else "connections it accepted"
        parts.append(Text(f"note: {pod} has a server of its own on {port}: the {accepted} count as reached, but which "
                          "endpoint answered and the source it saw are not confirmed", style="yellow"))
    return parts


def dns_view(result: CheckResult) -> list[RenderableType]:
    """The rule dns: per Service, how many lookups got its ClusterIP over UDP and TCP; the lookups
    the policies block, said as such (DNS blocked, the ClusterIP itself still works); each one not
    as expected in red."""
    if not result.dns:
        return []
    from cni_lab.probe.dns_probes import summary

    svc = result.lab.dns_service
    where = f"kube-dns {svc.cluster_ip}" if svc is not None else "kube-dns"
    parts: list[RenderableType] = []
    groups: dict[str, list[DnsProbe]] = {}
    for d in result.dns:
        groups.setdefault(d.service, []).append(d)
    for service, probes in groups.items():
        bad = [d for d in probes if not d.ok]
        blocked = [d for d in probes if d.ok and not d.allowed]
        mark = Text("✓", style="bold green") if not bad else Text("✗", style="bold red")
        answered = sum(d.ok and d.allowed for d in probes)
        text = (f" {answered}/{len(probes)} lookups (UDP and TCP, through the search path) answered {probes[0].expected} "
                f"by {where}" + (f", {len(blocked)} blocked as the policies say" if blocked else "") + "  ")
        parts.append(Text.assemble((f"dns: pod → name {service}", "bold"), text, mark))
        parts += [Text(f"  {d.src}: {d.name} over {d.transport}: {d.problem}", style="red") for d in bad]
        parts += [Text(f"  {summary(d)}", style="cyan") for d in blocked]
    return parts


def ports_view(result: CheckResult) -> list[RenderableType]:
    """Per probe port, the grid the e2e suite logs: `.` reached, `X` blocked, as the policies say;
    where the network did otherwise, `!` (and the pair is listed)."""
    if not result.ports:
        return []
    parts: list[RenderableType] = []
    by_port: dict[tuple[str, int], list[object]] = {}
    for r in result.ports:
        by_port.setdefault((r.protocol, r.port), []).append(r)
    for (protocol, port), probes in by_port.items():
        # pods as the e2e suite names them (namespace/name), in its order
        label = {p.id: p.qualified for p in result.lab.pods}
        names = sorted({p.src.id for p in probes} | {p.dst.id for p in probes}, key=lambda i: label[i])  # type: ignore[attr-defined]
        cells = {(p.src.id, p.dst.id): p for p in probes}  # type: ignore[attr-defined]
        bad = [p for p in probes if p in result.port_failures]
        mark = Text("✓", style="bold green") if not bad else Text("✗", style="bold red")
        parts.append(Text.assemble((f"{protocol}/{port}", "bold"), f"  {len(probes) - len(bad)}/{len(probes)} probes as "
                                   "the policies say (rows: from, columns: to; . reached, X blocked, ! not as they say)  ",
                                   mark))
        lines = ["-\t" + "\t".join(label[n] for n in names)]
        for src in names:
            row = []
            for dst in names:
                p = cells.get((src, dst))
                if p is None:
                    row.append(".")  # itself
                    continue
                reached = p.verdict == "ok"  # type: ignore[attr-defined]
                row.append("!" if p in bad else "." if reached else "X")
            lines.append(label[src] + "\t" + "\t".join(row))
        parts.append(Text("\n".join(lines), no_wrap=True))
        for p in bad:  # every `!`, and why the policies say otherwise
            expected = "allowed" if result.port_expected(p) else "denied"  # type: ignore[arg-type]
            cause = result.port_cause(p)  # type: ignore[arg-type]
            parts.append(Text(f"  {p.src.id} → {p.dst.id} {protocol}/{port}: the policies say {expected}, "  # type: ignore[attr-defined]
                              f"the network said {p.verdict}"  # type: ignore[attr-defined]
                              + ("" if cause is None else f": {cause.describe()}"), style="red"))
    return parts


def grouped(causes: list[FailureCause | None]) -> list[tuple[str, int]]:
    """The causes' words with how many said them, most first (unknown: not looked for)."""
    counts: dict[str, int] = {}
    for c in causes:
        words = c.words if c is not None else "cause not looked for"
        counts[words] = counts.get(words, 0) + 1
    return sorted(counts.items(), key=lambda item: -item[1])


CAUSES_LISTED = 5  # per rule, under the rules' table; --json has every pair's


def _family_view(result: CheckResult, dual: bool) -> list[RenderableType]:
    lab = result.lab
    parts: list[RenderableType] = []
    endpoint_count = len(endpoints(lab))
    if endpoint_count <= GRID_LIMIT:
        parts += [matrix_grid(result), Text(GRID_LEGEND, style="dim")]
    family = f" over IPv{result.family}" if dual else ""
    rules = Table(title=f"lab {lab.name} · {len(result)} pairs{family} in {result.duration:.2f}s",
                  title_justify="left", box=None, show_header=False, pad_edge=False)
    rules.add_column()
    rules.add_column()
    rules.add_column()
    for s in result.summaries():
        text = f"{s.ok}/{s.total} reach the right peer without NAT"
        if s.must_fail:
            text += f" · {s.failed_as_expected}/{s.must_fail} expected failures seen"
        mark = Text("✓", style="bold green") if s.passed else Text("✗", style="bold red")
        rules.add_row(Text(s.title, style="bold"), text, mark)
        causes = [r.failure for r in result.failures if r.pair.rule == s.rule]
        if any(causes):  # why this rule's pairs failed, the commonest cause first
            counts = grouped(causes)
            for words, n in counts[:CAUSES_LISTED]:
                rules.add_row("", Text(f"{n} × {words}", style="red"), "")
            if len(counts) > CAUSES_LISTED:
                rules.add_row("", Text(f"… and {len(counts) - CAUSES_LISTED} more causes (see --json)", style="red"), "")
    parts.append(rules)
    failures = result.failures
    if failures:
        table = Table(title=f"{len(failures)} pairs not as expected", title_justify="left", title_style="bold red")
        for col in ("from", "to", "verdict", "expected", "why"):
            table.add_column(col)
        for r in failures[:50]:
            policy = r.cause.describe() if r.cause is not None and r.failure is None else ""
            seen = f"seen: {r.failure.observed}" if r.failure is not None and r.failure.observed else ""
            why = " · ".join(w for w in (r.detail, r.failure.words if r.failure is not None else policy, seen) if w)
            table.add_row(f"{r.pair.src.id} {r.pair.src.ip}", f"{r.pair.dst.id} {r.pair.dst.ip}",
                          Text(r.verdict, style=VERDICT_STYLE[r.verdict]), "/".join(sorted(r.pair.expected)), why)
        if len(failures) > 50:
            table.caption = f"… and {len(failures) - 50} more (see --json)"
        parts.append(table)
    if result.mtu is not None:
        parts.append(mtu_view(result))
    if result.lab.capabilities.runs_cni_plugins and result.family == 4:
        mark = Text("✓", style="bold green") if not result.cni_problems else Text("✗", style="bold red")
        parts.append(Text.assemble(("CNI CHECK", "bold"), "  every plugin confirms what it set up for each pod  ", mark))
        parts += [Text(f"  {p}", style="red") for p in result.cni_problems]
    if result.family == 6:
        parts += [Text(f"note: {n}", style="yellow") for n in result.notes]
    return parts


def matrix_grid(result: CheckResult) -> Table:
    eps = result.endpoints
    by_pair = {(r.pair.src.id, r.pair.dst.id): r for r in result.results}
    grid = Table(title="from ↓ to →", title_justify="left", title_style="dim", box=None, pad_edge=False, padding=(0, 1))
    grid.add_column("")
    for i, _ in enumerate(eps):
        grid.add_column(str(i + 1), justify="center")
    for i, src in enumerate(eps):
        cells: list[Text] = [Text(f"{i + 1:>2} {src.id} {src.ip}")]
        for dst in eps:
            r = by_pair.get((src.id, dst.id))
            if r is None:
                cells.append(Text("-", style="dim"))
                continue
            style = VERDICT_STYLE[r.verdict] + ("" if r.met else " on dark_red")
            cells.append(Text(VERDICT_MARK[r.verdict], style=style))
        grid.add_row(*cells)
    return grid


def mtu_view(result: CheckResult) -> RenderableType:
    mtu = result.mtu or ()
    size = result.lab.pod_mtu
    good = sum(m.passed for m in mtu)
    mark = Text("✓", style="bold green") if good == len(mtu) else Text("✗", style="bold red")
    head = Text.assemble(("MTU", "bold"), f"  {good}/{len(mtu)} cross-node pod pairs carry {size}-byte packets with DF set  ", mark)
    lines = [head]
    for m in mtu:
        if not m.passed:
            largest = f"largest that passes: {m.largest} bytes" if m.largest else "nothing passes"
            lines.append(Text(f"  {m.src.id} → {m.dst.id}: {size} bytes lost, {largest}", style="red"))
    return Group(*lines)
