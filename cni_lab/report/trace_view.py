"""`trace` rendered: the hops as rich trees, the JSON documents (`trace --json`), and the outcome
in a sentence. The hops and their reasons come from lesson/trace.py and lesson/service_trace.py."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from cni_lab.cluster import Lab
from cni_lab.lesson.service_trace import ServiceTrace
from cni_lab.lesson.trace import Leg, Trace


def summary(t: Trace) -> str:
    """The outcome in one sentence: where it was dropped, or who answered (the last line of
    the view, `summary` in the JSON)."""
    there = t.there
    if there.delivered_to is None:
        last = there.hops[-1]
        return f"dropped at {last.where}: {last.reason}"
    if there.delivered_to != t.dst.id:
        return f"delivered to {there.delivered_to}, not {t.dst.id}: the address {t.dst.ip} is also {there.delivered_to}'s"
    if t.back is None or t.back.delivered_to is None:
        final = t.back.hops[-1] if t.back and t.back.hops else None
        why = f"dropped at {final.where}: {final.reason}" if final else "no way back"
        return f"delivered to {t.dst.id}, but the reply is {why}"
    return f"delivered to {t.dst.id}, and the reply reaches {t.src.id}"


def service_summary(t: ServiceTrace) -> str:
    """The DNAT as conntrack recorded it, and who answered, in one sentence."""
    if t.connection is None:
        return (f"no conntrack entry on {t.dnat_at} for the connection: the packet never reached "
                "kube-proxy's table, or no endpoint exists")
    c = t.connection
    text = (f"{t.dnat_at} rewrote {c.dst}:{c.dport} to {c.reply_src}:{c.reply_sport} "
            f"(conntrack: reply from {c.reply_src}:{c.reply_sport} to {c.reply_dst}:{c.reply_dport})")
    if c.reply_dst != c.src:
        text += f"; the source was masqueraded to {c.reply_dst}"
    if not t.answered_by:
        return text + "; but no endpoint answered"
    return text + f"; answered by {t.answered_by}, which saw {t.seen}"


def _leg_tree(title: str, leg: Leg) -> Tree:
    tree = Tree(Text(title, style="bold"))
    for i, hop in enumerate(leg.hops, 1):
        came = f" (in on {hop.came_in})" if hop.came_in else ""
        if hop.bpf is not None:
            label = Text.assemble(f"{i}. {hop.where}{came}: ", ("BPF ", "bold magenta"), hop.bpf)
            if hop.action == "drop":
                label.append_text(Text.assemble(": ", ("dropped", "bold red"), f": {hop.reason}"))
            elif hop.action == "deliver":
                label.append_text(Text(" (delivered)", style="bold green"))
            node = tree.add(label)
            if hop.wire:
                node.add(Text(" → ".join(hop.wire), style="dim"))
            continue
        if hop.action == "arrive":
            tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("arrives at kube-proxy's table", "bold")))
        elif hop.action == "deliver":
            tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("delivered", "bold green"), f" ({hop.route})"))
        elif hop.action == "drop":
            tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("dropped", "bold red"), f": {hop.reason}"))
        else:
            node = tree.add(Text.assemble(f"{i}. {hop.where}{came}: route ", (hop.route or "?", "cyan"),
                                          f" → out {hop.out}, next hop {hop.next_hop}"))
            if hop.wire:
                node.add(Text(" → ".join(hop.wire), style="dim"))
    return tree


def _result(outcome: str, said: str) -> Text:
    style = "green" if outcome == "ok" else "red"
    return Text.assemble(("result: ", "bold"), (said, style))


def view(t: Trace, verdict: str | None, agree: bool | None,
         moved: dict[str, dict[str, int]] | None = None) -> RenderableType:
    parts: list[RenderableType] = [_leg_tree(f"{t.src.id} ({t.src.ip}) → {t.dst.id} ({t.dst.ip})", t.there)]
    if t.back is not None:
        parts.append(_leg_tree(f"reply {t.back.src.id} ({t.back.src.ip}) → {t.src.ip}", t.back))
    parts.append(_result(t.outcome, summary(t)))
    if verdict is not None:
        mark = ("✓ agrees", "green") if agree else ("✗ DISAGREES", "bold red")
        parts.append(Text.assemble(f"real probe: {verdict} ", mark))
    for node, counts in (moved or {}).items():
        counted = ", ".join(f"{k} +{v}" for k, v in counts.items())
        parts.append(Text(f"  cilium_metrics on {node} during the probe: {counted}", style="dim"))
    return Group(*parts)


def service_view(t: ServiceTrace) -> RenderableType:
    """pod → ClusterIP: the way to the node, the DNAT as conntrack recorded it, the way on."""
    svc, port = t.service, t.port
    parts: list[RenderableType] = []
    title = f"{t.src.id} ({t.src.ip}) → Service {svc.qualified} {svc.cluster_ip}:{port.port}/{port.protocol}"
    if t.to_dnat.hops:
        parts.append(_leg_tree(title, t.to_dnat))
    else:
        parts.append(Text(f"{title}: sent by the node itself (nat-output)", style="bold"))
    if t.dnat_at:
        hook = "nat-output" if not t.to_dnat.hops else "nat-prerouting"
        dnat = Tree(Text(f"at {t.dnat_at}: kube-proxy's table (table ip kube-proxy)", style="bold"))
        dnat.add(Text.assemble(f"{hook} → services: ", (f"{svc.cluster_ip} . tcp . {port.port}", "cyan"),
                               f" in map service-ips → goto {t.chain}"))
        backends = svc.backends(port)  # a named targetPort: each endpoint's own number
        dnat.add(f"{t.chain}: numgen random mod {len(backends)} picks one of "
                 + ", ".join(f"{p.id} {p.ip}:{number}" for p, number in backends))
        c = t.connection
        if c is not None:
            dnat.add(Text.assemble("conntrack: ", (f"{c.src}:{c.sport} → {c.dst}:{c.dport}", "cyan"), "  reply ",
                                   (f"{c.reply_src}:{c.reply_sport} → {c.reply_dst}:{c.reply_dport}", "cyan"),
                                   f"  [{c.status}]"))
            if c.reply_dst != c.src:
                dnat.add(Text(f"the reply goes to {c.reply_dst}: the source was masqueraded (hairpin: the client is "
                              "the endpoint itself)", style="magenta"))
        parts.append(dnat)
    if t.onward is not None and t.connection is not None:
        parts.append(_leg_tree(f"on, rewritten: {t.src.ip} → {t.connection.reply_src}:{t.connection.reply_sport}", t.onward))
    if t.back is not None and t.connection is not None:
        parts.append(_leg_tree(f"reply {t.connection.reply_src} → {t.connection.reply_dst} "
                               f"(un-DNATed to {svc.cluster_ip} on {t.dnat_at} by conntrack)", t.back))
    parts.append(_result(t.outcome, service_summary(t)))
    return Group(*parts)


def leg_json(lg: Leg | None) -> list[dict[str, Any]] | None:
    if lg is None:
        return None
    return [{"at": h.where, "netns": h.netns, "in": h.came_in, "action": h.action, "route": h.route,
             "out": h.out, "nextHop": h.next_hop, "wire": h.wire, "reason": h.reason, "bpf": h.bpf}
            for h in lg.hops]


def to_json(t: Trace) -> dict[str, Any]:
    return {
        "src": t.src.id, "dst": t.dst.id, "srcIP": str(t.src.ip), "dstIP": str(t.dst.ip),
        "outcome": t.outcome, "summary": summary(t), "there": leg_json(t.there), "back": leg_json(t.back),
    }


def probed_json(lab: Lab, t: Trace, verdict: str | None, agree: bool | None,
                moved: dict[str, dict[str, int]]) -> dict[str, Any]:
    """`trace --json`: the path, then the real probe's verdict and what the programs counted."""
    return {**to_json(t), "probe": verdict, "agrees": agree,
            "bpfCounters": moved if lab.capabilities.loads_bpf else None}


def service_to_json(t: ServiceTrace) -> dict[str, Any]:
    c = t.connection
    return {
        "src": t.src.id, "srcIP": str(t.src.ip), "service": t.service.qualified, "clusterIP": str(t.service.cluster_ip),
        "port": t.port.port, "dnatAt": t.dnat_at, "chain": t.chain,
        "conntrack": None if c is None else {
            "original": {"src": c.src, "sport": c.sport, "dst": c.dst, "dport": c.dport},
            "reply": {"src": c.reply_src, "sport": c.reply_sport, "dst": c.reply_dst, "dport": c.reply_dport},
            "status": c.status},
        "answeredBy": t.answered_by or None, "observedSource": t.seen or None,
        "outcome": t.outcome, "summary": service_summary(t),
        "toDnat": leg_json(t.to_dnat), "onward": leg_json(t.onward), "back": leg_json(t.back),
    }
