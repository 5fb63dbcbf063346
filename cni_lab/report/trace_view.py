"""`trace` rendered: the hops as rich trees, the JSON documents (`trace --json`), and the outcome
in a sentence. The hops and their reasons come from lesson/trace.py and lesson/service_trace.py
(a Service through kube-proxy's table, or through the ebpf programs' maps)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from cni_lab.cluster import Lab
from cni_lab.dataplanes.capabilities import CILIUM_LB_LOOPBACK
from cni_lab.kernel import bpf
from cni_lab.lesson.service_trace import (BACKENDS_MAP, LB_PROGRAM, REVERSE_NAT_MAP, SERVICES_MAP, BpfServiceTrace,
                                         ServiceTrace, ct_map)
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


def _address(pair: tuple[str, int] | None) -> str:
    return f"{pair[0]}:{pair[1]}" if pair is not None else "?"


def bpf_service_summary(t: BpfServiceTrace) -> str:
    """The balancing as the BPF maps recorded it, and who answered, in one sentence."""
    c = t.choice
    if c.backend is None or c.slot is None or c.frontend is None:
        return f"{t.lb_at}: {c.why}"
    f = c.frontend
    text = (f"{LB_PROGRAM} on {t.lb_at} ({t.device}) rewrote {f.address}:{f.port} to {_address(c.backend)} "
            f"({t.backend_pod or 'no pod of the lab'}): backend {c.slot.backend_id}, slot {c.slot.slot} of {f.count}, "
            f"as the CT_SERVICE entry for {t.src.ip}:{t.sport} holds")
    if c.loopback:
        text += f"; the source was SNATed to {CILIUM_LB_LOOPBACK} (the pod reached itself)"
    r = t.reverse
    if r is None or r.frontend is None:
        text += "; no reverse NAT for the reply: its source stays the backend's"
    else:
        text += f"; the reply's source is turned back to {r.frontend} in {r.at} ({REVERSE_NAT_MAP}[{r.index}])"
    if not t.answered_by:
        return text + "; but no endpoint answered"
    return text + f"; answered by {t.answered_by}, which saw {t.seen}"


def _leg_tree(title: str, leg: Leg, arrive: str = "arrives at kube-proxy's table") -> Tree:
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
            node = tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", (arrive, "bold")))
        elif hop.action == "deliver":
            node = tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("delivered", "bold green"), f" ({hop.route})"))
        elif hop.action == "drop":
            node = tree.add(Text.assemble(f"{i}. {hop.where}{came}: ", ("dropped", "bold red"), f": {hop.reason}"))
        elif hop.bridge is not None:
            node = tree.add(Text.assemble(f"{i}. {hop.where}{came}: bridged on ", (hop.bridge, "cyan"),
                                          f" → out {hop.out}, to {hop.next_hop}"))
        else:
            node = tree.add(Text.assemble(f"{i}. {hop.where}{came}: route ", (hop.route or "?", "cyan"),
                                          f" → out {hop.out}, next hop {hop.next_hop}"))
        if hop.policy is not None and hop.action != "drop":  # a drop's reason is the hook's words already
            node.add(Text.assemble(("policy ", "bold magenta"), hop.policy.words))
        if hop.wire and hop.action == "forward":
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
    parts += _counted(moved or {})
    return Group(*parts)


def _counted(moved: dict[str, dict[str, int]]) -> list[RenderableType]:
    """What the programs counted while the probe ran, a line a node."""
    return [Text(f"  cilium_metrics on {node} during the probe: " + ", ".join(f"{k} +{v}" for k, v in counts.items()),
                 style="dim") for node, counts in moved.items()]


def service_view(t: ServiceTrace | BpfServiceTrace) -> RenderableType:
    """pod → ClusterIP: the way to the node, the DNAT as conntrack recorded it, the way on."""
    if isinstance(t, BpfServiceTrace):
        return bpf_service_view(t)
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
             "out": h.out, "nextHop": h.next_hop, "wire": h.wire, "reason": h.reason, "bpf": h.bpf,
             "bridge": h.bridge, "policy": h.policy.to_json() if h.policy is not None else None}
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


def service_to_json(t: ServiceTrace | BpfServiceTrace) -> dict[str, Any]:
    if isinstance(t, BpfServiceTrace):
        return bpf_service_to_json(t)
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


def _pods_of(t: BpfServiceTrace) -> dict[str, str]:
    """Endpoint address → pod id, to name the backends of the frontend's slots."""
    return {str(p.ip): p.id for p, _ in t.service.backends(t.port)}


def _ct_words(e: bpf.CtEntry) -> str:
    return f"{ct_map(e.tuple.protocol)} {e.tuple.direction} {e.tuple.src} → {e.tuple.dst}"


def bpf_service_view(t: BpfServiceTrace) -> RenderableType:
    """pod → ClusterIP on a data plane whose programs balance it: the way to the lxc device, the
    lookup and the backend as the maps recorded them, the way on, the reply and its reverse NAT."""
    svc, port, c = t.service, t.port, t.choice
    title = f"{t.src.id} ({t.src.ip}) → Service {svc.qualified} {svc.cluster_ip}:{port.port}/{port.protocol}"
    arrive = f"arrives at {t.program} (tc ingress of {t.device})" if t.program else "arrives: no program at its tc ingress"
    parts: list[RenderableType] = [_leg_tree(title, t.to_lb, arrive)]
    lb = Tree(Text(f"at {t.lb_at}: {LB_PROGRAM} on {t.device or '?'}, from the node's BPF maps "
                   "(no kube-proxy, no netfilter conntrack)", style="bold"))
    f = c.frontend
    if f is None:
        lb.add(Text.assemble(f"lb4_lookup_service: {svc.cluster_ip}:{port.port}/{port.protocol} in {SERVICES_MAP}: ",
                             ("none", "bold red")))
    else:
        lb.add(Text.assemble("lb4_lookup_service: ", (f"{f.address}:{f.port}/{f.protocol}", "cyan"),
                             f" in {SERVICES_MAP} (slot 0) → {f.count} backend slot{'s' * (f.count != 1)}, "
                             f"rev_nat_index {f.rev_nat_index}"))
        pods = _pods_of(t)
        if c.slots:
            lb.add("; ".join(f"slot {s.slot} → backend {s.backend_id} "
                             + (f"{_address(s.backend)} ({pods.get(s.backend[0], 'no pod')})" if s.backend
                                else f"(not in {BACKENDS_MAP})") for s in c.slots))
    e = c.service_entry
    if e is not None:
        lb.add(Text.assemble("lb4_select: ", (_ct_words(e), "cyan"), f" holds backend {e.backend_id} "
                             f"({e.packets} packets): a slot drawn at random for the connection's first packet, "
                             "kept for the rest"))
    if c.backend is not None and c.slot is not None:
        lb.add(Text.assemble("DNAT → ", (_address(c.backend), "cyan"),
                             f" ({t.backend_pod or 'no pod of the lab'}), {BACKENDS_MAP}[{c.slot.backend_id}]"))
        if c.loopback:
            lb.add(Text(f"SNAT → {CILIUM_LB_LOOPBACK}: the backend is the client itself, which would otherwise see "
                        "its own address come back", style="magenta"))
    if c.out_entry is not None:
        lb.add(Text.assemble("for the reply: ", (_ct_words(c.out_entry), "cyan"),
                             f" holds rev_nat_index {c.out_entry.rev_nat_index}"
                             + (" (lb_loopback)" if c.out_entry.lb_loopback else "")))
    if c.why:
        lb.add(Text(c.why, style="red"))
    parts.append(lb)
    source = CILIUM_LB_LOOPBACK if c.loopback else str(t.src.ip)
    if t.onward is not None:
        parts.append(_leg_tree(f"on, rewritten: {source} → {_address(c.backend)} ({t.backend_pod})", t.onward))
    r = t.reverse
    if t.back is not None:
        to = f"{CILIUM_LB_LOOPBACK}, back to {t.src.ip} at {t.device}" if c.loopback else str(t.src.ip)
        turned = f"its source turned back to {r.frontend} on {t.lb_at}" if r is not None and r.frontend else "no reverse NAT"
        parts.append(_leg_tree(f"reply {_address(c.backend)} → {to} ({turned})", t.back))
    if c.backend is not None:
        reverse = Tree(Text("reverse NAT", style="bold"))
        dialled = f"{svc.cluster_ip}:{port.port}"
        if r is None or r.frontend is None:
            index = f"[{r.index}]" if r is not None else ""
            reverse.add(Text(f"{REVERSE_NAT_MAP}{index}: no entry; the reply keeps {_address(c.backend)} as its source, "
                             f"and the client, connected to {dialled}, does not take it", style="red"))
        else:
            reverse.add(Text.assemble(f"{REVERSE_NAT_MAP}[{r.index}] = ", (r.frontend, "cyan"),
                                      f": in {r.at} on {t.lb_at}, the reply's source {_address(c.backend)} "
                                      f"becomes {r.frontend}"))
            if r.frontend != dialled:
                reverse.add(Text(f"not {dialled}, the address the client dialled: it does not take the reply",
                                 style="bold red"))
        parts.append(reverse)
    parts.append(_result(t.outcome, bpf_service_summary(t)))
    parts += _counted(t.counted)
    return Group(*parts)


def _ct_json(e: bpf.CtEntry | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"map": ct_map(e.tuple.protocol), "direction": e.tuple.direction, "protocol": e.tuple.protocol,
            "src": e.tuple.src, "dst": e.tuple.dst, "backendId": e.backend_id, "revNatIndex": e.rev_nat_index,
            "lbLoopback": e.lb_loopback, "packets": e.packets, "bytes": e.bytes}


def bpf_service_to_json(t: BpfServiceTrace) -> dict[str, Any]:
    """`trace --json` to a ClusterIP the programs balance: the same facts as the view."""
    c, f, r = t.choice, t.choice.frontend, t.reverse
    pods = _pods_of(t)
    return {
        "src": t.src.id, "srcIP": str(t.src.ip), "service": t.service.qualified, "clusterIP": str(t.service.cluster_ip),
        "port": t.port.port, "dnatAt": t.lb_at, "device": t.device or None, "program": t.program,
        "sport": t.sport or None,
        "bpfService": None if f is None else {
            "map": SERVICES_MAP, "frontend": f"{f.address}:{f.port}/{f.protocol}", "slots": f.count,
            "revNatIndex": f.rev_nat_index,
            "backends": [{"slot": s.slot, "backendId": s.backend_id, "address": _address(s.backend) if s.backend else None,
                          "pod": pods.get(s.backend[0]) if s.backend else None} for s in c.slots]},
        "ctEntry": _ct_json(c.service_entry),
        "backend": None if c.backend is None or c.slot is None else {
            "map": BACKENDS_MAP, "id": c.slot.backend_id, "slot": c.slot.slot, "address": c.backend[0],
            "port": c.backend[1], "pod": t.backend_pod or None},
        "outEntry": _ct_json(c.out_entry),
        "loopback": CILIUM_LB_LOOPBACK if c.loopback else None,
        "reverseNat": None if r is None else {"map": REVERSE_NAT_MAP, "index": r.index, "frontend": r.frontend, "at": r.at},
        "why": c.why or None,
        "answeredBy": t.answered_by or None, "observedSource": t.seen or None,
        "outcome": t.outcome, "summary": bpf_service_summary(t),
        "toDnat": leg_json(t.to_lb), "onward": leg_json(t.onward), "back": leg_json(t.back),
        "bpfCounters": t.counted,
    }
