"""Why each pair of `check` that is not as expected failed: its cause, never empty.

In this order, the first that applies:
  1. the recorded faults (`fault`) that explain it: one touches the pair's path, as the trace's
     hops show it (a hop in the fault's namespace through its device, or the drop there), or by a
     rule per kind where a trace cannot see the fault (forward-drop's table, a downed pod);
  2. the drop the trace meets at its last hop: no route, nobody answering ARP, a policy chain, a
     BPF program's policy lookup;
  3. a NAT that rewrote the source, or the policies (or the scenario's `expect`) that decided what
     was expected against what the network did;
  4. "unexplained": trace delivers it but the probe did not.

Only pairs that failed are traced, at most TRACE_CAP per family, over one wiring read once per
check (a trace reads the kernel: routes, links, tables, maps); beyond the cap the faults' rules and
the policies alone decide, and a note says so.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from cni_lab import faults, names
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.faults import Fault
from cni_lab.lesson import trace as tracing
from cni_lab.lesson.fault_rules import fault_words, pod_netns, touches_pair
from cni_lab.lesson.hops import Hop
from cni_lab.probe.matrix import CheckResult, FailureCause, PairResult
from cni_lab.probe.pairs import Decided, Endpoint, PairCause
from cni_lab.probe.service_probes import ServiceProbe

TRACE_CAP = 200  # failing pairs traced per family; a trace reads a few tables per hop


def touched_by_hops(f: Fault, hops: Sequence[Hop]) -> bool:
    """Whether a traced way meets the fault: through its device in its namespace, or dropped there
    (a node's lost route, a pod whose link is down, a program missing from a device)."""
    if f.kind == "bpf-backend-del":
        return False
    for hop in hops:
        if hop.netns == f.netns and f.ifname and f.ifname in (hop.came_in, hop.out):
            return True
    last = hops[-1] if hops else None
    return last is not None and last.action == "drop" and last.netns == f.netns


def touches_service(lab: Lab, f: Fault, probe: ServiceProbe) -> bool:
    """Whether the fault lies on a Service probe's way: its client, the node dialled, the endpoints."""
    service = next((s for s in lab.services if s.qualified == probe.service), None)
    endpoints = service.endpoints if service is not None else ()
    client = next((p for p in lab.pods if p.id == probe.src), None)
    nodes = {n for n in (client.node if client else None, probe.via or None) if n} | {p.node for p in endpoints}
    pods = {names.pod_netns(lab.name, p.node, p.name) for p in (*endpoints, *([client] if client else []))}
    if f.kind in ("link-down", "forward-drop"):
        return f.target in nodes
    if f.kind == "route-del":
        holder, other = f.target.split(">")
        return other in nodes and (holder == "router" or holder in nodes)
    if f.kind in ("pod-down", "bpf-detach"):
        return pod_netns(lab, f.target) in pods
    if f.kind == "bpf-backend-del":
        node, pod = f.target.split(">")
        by = {client.node if client else None, probe.via or None}
        return node in by and pod_netns(lab, pod) in pods
    return False


def _from_faults(found: Sequence[Fault]) -> FailureCause:
    return FailureCause("fault", "; ".join(fault_words(f) for f in found), found[0])


def _drop(t: tracing.Trace) -> Hop | None:
    """The hop where the traced packet, or its reply, was dropped (None: delivered both ways)."""
    for leg in (t.there, t.back):
        if leg is not None and leg.hops and leg.hops[-1].action == "drop":
            return leg.hops[-1]
    return None


def _from_trace(t: tracing.Trace, dst: Endpoint) -> FailureCause | None:
    hop = _drop(t)
    if hop is not None:
        policy = (hop.policy is not None and not hop.policy.allowed) or "DROP_POLICY" in hop.reason
        where = f"{hop.where} ({hop.bpf})" if hop.bpf and not hop.reason.startswith("no program") else hop.where
        return FailureCause("policy" if policy else "route", f"{where}: {hop.reason or 'dropped'}")
    if t.outcome == "wrong-peer":
        return FailureCause("route", f"trace delivers it to {t.there.delivered_to}, not {dst.id}")
    return None


def _policy_words(cause: PairCause) -> str:
    if isinstance(cause, Decided):
        return cause.describe()
    return ("the policies allow it: " if cause.allowed else "the policies deny it: ") + cause.describe()


def pair_cause(lab: Lab, recorded: Sequence[Fault], r: PairResult, traced: tracing.Trace | None,
               untraced: str = "") -> FailureCause:
    """One failing pair's cause (the module's order); `traced`: its trace, where one was made,
    else `untraced` says why not."""
    src, dst = r.pair.src, r.pair.dst
    if r.verdict == "nat" and "nat" not in r.pair.expected:
        return FailureCause("nat", f"a source NAT rewrote it: {dst.id} saw {r.observed or '?'}, not {src.address}")
    if r.verdict == "nat":  # masqueraded, but to another address than its node's
        return FailureCause("nat", f"masqueraded to {r.observed or '?'}, not to {src.node}'s address")
    if r.verdict == "ok" and "nat" in r.pair.expected:
        return FailureCause("nat", f"not masqueraded: {dst.id} saw {r.observed or src.address}, its own address")
    delivered = r.verdict == "ok"
    if not delivered:
        found = [f for f in recorded if (traced is not None and touched_by_hops(f, [*traced.there.hops,
                 *(traced.back.hops if traced.back else [])])) or touches_pair(lab, f, src, dst)]
        if found:
            return _from_faults(found)
        if traced is not None and (said := _from_trace(traced, dst)) is not None:
            return said
    why = r.cause  # the policies', or what decides instead (pairs.Expected.cause)
    if why is not None:
        got = "the network delivered it" if delivered else f"the network said {r.verdict}"
        return FailureCause("policy", f"{_policy_words(why)}; {got}")
    if delivered:
        return FailureCause("unexplained", f"unexplained: delivered, but expected {'/'.join(sorted(r.pair.expected))}")
    if traced is not None:
        return FailureCause("unexplained", "unexplained: trace delivers it but the probe did not")
    return FailureCause("unexplained", f"unexplained: {untraced or 'not traced'}")


def service_cause(lab: Lab, recorded: Sequence[Fault], probe: ServiceProbe) -> FailureCause:
    found = [f for f in recorded if touches_service(lab, f, probe)]
    if found:
        return _from_faults(found)
    return FailureCause("unexplained", f"unexplained: no recorded fault lies on its way ({probe.problem})")


class _Tracer:
    """Traces of one check's failing pairs over one wiring, read when the first is asked for."""

    def __init__(self, lab: Lab, cap: int) -> None:
        self.lab, self.cap = lab, cap
        self.wiring: tracing.Wiring | None = None
        self.broken = ""  # why the wiring cannot be read
        self.traced = 0  # in the family being judged
        self.skipped = 0

    def __call__(self, r: PairResult) -> tuple[tracing.Trace | None, str]:
        """The pair's trace, or None and why not."""
        if "outside" in (r.pair.src.kind, r.pair.dst.kind):
            return None, "trace does not follow the outside host's pairs"
        if self.traced >= self.cap:
            self.skipped += 1
            return None, f"not traced: check traces the first {self.cap} failing pairs"
        if self.wiring is None and not self.broken:
            try:
                self.wiring = tracing.Wiring(self.lab)
            except (OSError, LabError) as e:
                self.broken = f"not traced: the lab's wiring cannot be read ({e})"
        if self.wiring is None:
            return None, self.broken
        self.traced += 1
        try:
            return tracing.trace(self.lab, r.pair.src.id, r.pair.dst.id, r.pair.src.family, wiring=self.wiring), ""
        except (OSError, LabError) as e:
            return None, f"its trace failed ({e})"


def _family(one: CheckResult, recorded: Sequence[Fault], tracer: _Tracer) -> CheckResult:
    """One family's failing pairs, each with its cause; only those the network did not deliver are traced."""
    if not one.failures:
        return one
    tracer.traced = tracer.skipped = 0
    causes = {}
    for r in one.failures:
        t, untraced = tracer(r) if r.verdict not in ("ok", "nat") else (None, "")
        causes[r.pair.index] = pair_cause(one.lab, recorded, r, t, untraced)
    notes = one.notes
    if tracer.skipped:
        notes += (f"causes: {tracer.traced} failing pairs traced, {tracer.skipped} more judged by the recorded "
                  "faults and the policies alone (a trace reads the kernel)",)
    return dataclasses.replace(one, causes=causes, notes=notes)


def attach(result: CheckResult, cap: int = TRACE_CAP) -> CheckResult:
    """The check with a cause for every pair (both families) and Service probe not as expected."""
    recorded = faults.recorded(result.lab.name)
    tracer = _Tracer(result.lab, cap)  # one wiring for both families
    first = _family(result, recorded, tracer)
    if result.ipv6 is not None:
        first = dataclasses.replace(first, ipv6=_family(result.ipv6, recorded, tracer))
    bad = {i: service_cause(result.lab, recorded, s) for i, s in enumerate(result.services) if not s.ok}
    return dataclasses.replace(first, service_causes=bad) if bad else first


def attach_observed(result: CheckResult) -> CheckResult:
    """Each failing pair's cause with what check's observation saw of it (result.flows): the
    first flow dropped or answered with an ICMP error between its two addresses, the pair's own
    direction before its reply's. A pair nothing was seen of keeps its cause as it is."""
    if not result.flows:
        return result
    seen: dict[tuple[str, str], str] = {}
    for f in result.flows:
        if f.verdict in ("DROPPED", "ERROR"):
            seen.setdefault((f.source.address, f.destination.address), f"{f.verdict} at {f.node}: {f.cause}")

    def family(one: CheckResult) -> CheckResult:
        causes = dict(one.causes)
        for r in one.failures:
            cause = causes.get(r.pair.index)
            src, dst = r.pair.src.address, r.pair.dst.address
            words = seen.get((src, dst)) or seen.get((dst, src))
            if cause is not None and words:
                causes[r.pair.index] = dataclasses.replace(cause, observed=words)
        return dataclasses.replace(one, causes=causes)

    out = family(result)
    if result.ipv6 is not None:
        out = dataclasses.replace(out, ipv6=family(result.ipv6))
    return out
