"""`check`: probe the whole matrix of a running lab and judge it against its expectations."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from array import array
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from cni_lab import names
from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.kernel import neighbours, netns
from cni_lab.probe import budget
from cni_lab.probe import mtu as mtu_check
from cni_lab.probe import ports as port_probes
from cni_lab.probe import dns_probes, service_probes
from cni_lab.probe.dns_probes import DnsProbe
from cni_lab.probe.ports import PortResult
from cni_lab.probe.service_probes import ServiceProbe
from cni_lab.probe import pairs as pairing
from cni_lab.probe.budget import Batch, Budget
from cni_lab.probe.engine import NAT, OK, TIMEOUT, UNREACHABLE, Extra, Outcomes, Prober, Settings, identity, verdict_of
from cni_lab.probe.pairs import AllPairs, Endpoint, Pair, PairCause
from cni_lab.probe.workers import Picked, Workers

if TYPE_CHECKING:  # the evaluator's values: a lab with policies loads them; a fault as recorded
    from cni_lab.faults import Fault
    from cni_lab.observe.flows import Flow
    from cni_lab.policy import Workload
    from cni_lab.policy.cause import Cause

PARALLEL_FROM = 2_000  # pairs; below, one process is faster than forking
MAX_WORKERS = 4
FAILURE_KINDS = ("fault", "route", "policy", "nat", "unexplained")


@dataclass(frozen=True)
class FailureCause:
    """Why a pair (or a Service probe) is not as expected, as check found it after probing
    (lesson/causes.py): a recorded fault, the drop a trace meets (no route, no neighbour, a
    policy chain), the policies or a NAT, or, never empty, that nothing found explains it."""

    kind: str  # one of FAILURE_KINDS
    words: str
    fault: Fault | None = None  # kind "fault": the first recorded fault that explains it
    observed: str = ""  # what check's observation saw of it: `DROPPED at node2: policy: ...` (lesson/causes.py)


@dataclass
class PairResult:
    pair: Pair
    verdict: str
    rtt_ms: float | None = None
    observed: str | None = None  # the source address the responder saw
    answered_by: str | None = None  # identity of whoever answered the UDP probe
    detail: str = ""
    # a policy lab's: works out `cause` when it is first asked for (pairs.Expected.cause)
    explain: Callable[[], PairCause | None] | None = dataclasses.field(default=None, repr=False, compare=False)
    failure: FailureCause | None = None  # a pair not as expected: why (lesson/causes.py), once attached

    @property
    def met(self) -> bool:
        return self.verdict in self.pair.expected

    @cached_property
    def cause(self) -> PairCause | None:
        """Why the pair is expected as it is: the policies' cause, or what decides instead; None
        in a lab without policies."""
        return None if self.explain is None else self.explain()


@dataclass(frozen=True)
class RuleSummary:
    rule: str
    title: str
    total: int
    ok: int
    met: int  # pairs whose verdict is what the scenario expects
    must_fail: int = 0  # pairs the scenario expects not to be ok
    failed_as_expected: int = 0

    @property
    def passed(self) -> bool:
        return self.met == self.total


@dataclass(frozen=True)
class NeighbourUse:
    """How the check kept within the shared neighbour table (probe/budget.py)."""

    table: str  # "arp"
    cap: int  # gc_thresh3 (the kernel's default where it cannot be read)
    cap_known: bool
    at_start: int  # entries in the table when the check began
    budget: int  # entries the check allowed itself at once
    bound: int  # what the table must never exceed meanwhile
    needed: int  # entries the full matrix would need at once
    batches: int
    peak: int  # the most entries the table held while the check ran (sampled every 20 ms)
    deleted: int  # the lab's entries deleted between batches
    retried: int  # pairs probed again after their batch's entries were freed


@dataclass(frozen=True)
class CheckResult:
    lab: Lab
    endpoints: list[Endpoint]
    outcomes: Outcomes
    duration: float
    neighbours: NeighbourUse
    notes: tuple[str, ...] = ()
    mtu: tuple[mtu_check.MtuResult, ...] | None = None  # only when asked for
    cni_problems: tuple[str, ...] = ()  # what CNI CHECK reported, for `cni` labs
    faults: tuple[str, ...] = ()  # what injected faults saw (forward-drop's counters)
    family: int = 4  # the addresses these pairs were probed over
    ipv6: CheckResult | None = None  # a dual-stack lab's matrix over IPv6 (this one is IPv4's)
    ports: tuple[PortResult, ...] = ()  # probe.ports: every pod pair on each port (NetworkPolicy labs)
    services: tuple[ServiceProbe, ...] = ()  # pod → Service: every pod to every Service port
    dns: tuple[DnsProbe, ...] = ()  # pod → name: every pod looks every Service up (a lab with cluster DNS)
    # (node, destination) ids → the source the node's kernel picks for it: what policies see (ipBlock)
    node_sources: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    # why each pair (by index) and Service probe (by its index in `services`) failed: lesson/causes.attach
    causes: dict[int, FailureCause] = dataclasses.field(default_factory=dict)
    service_causes: dict[int, FailureCause] = dataclasses.field(default_factory=dict)
    # what check observed while probing (observing.py): every flow, decoded; a note where none was read
    flows: tuple[Flow, ...] = ()
    flows_note: str = ""

    def port_expected(self, r: PortResult) -> bool:
        """Whether the policies let this port probe through (no policies: every probe must pass)."""
        if not self.lab.policies:
            return True
        by_id = {w.id: w for w in self.lab.workloads}
        return self.lab.evaluator.allowed(by_id[r.src.id], by_id[r.dst.id], r.protocol, r.port, r.src.family)

    def port_cause(self, r: PortResult) -> Cause | None:
        """Why the policies let this port probe through or not (None in a lab without policies)."""
        if not self.lab.policies:
            return None
        by_id = self._workloads
        return self.lab.evaluator.explain(by_id[r.src.id], by_id[r.dst.id], r.protocol, r.port, r.src.family)

    @cached_property
    def _workloads(self) -> dict[str, Workload]:
        return {w.id: w for w in self.lab.workloads}

    @cached_property
    def port_failures(self) -> list[PortResult]:
        return [r for r in self.ports if (r.verdict == "ok") != self.port_expected(r)]

    @property
    def by_family(self) -> tuple[CheckResult, ...]:
        """This family's matrix, then the other's where the lab has two."""
        return (self,) if self.ipv6 is None else (self, self.ipv6)

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.by_family)

    def __len__(self) -> int:
        return len(self.outcomes.verdict)

    def _pair(self, i: int) -> Pair:
        s, d = self.outcomes.jobs[i]
        src, dst = self.endpoints[s], self.endpoints[d]
        rule = pairing.rule_of(src, dst)
        return Pair(i, src, dst, rule, self._expected(src, dst, rule))

    def result(self, i: int) -> PairResult:
        pair = self._pair(i)
        code = self.outcomes.verdict[i]
        rtt = self.outcomes.rtt[i] or None
        extra = self.outcomes.extra.get(i)
        expected = self._expected
        why = None if expected.evaluator is None else functools.partial(expected.cause, pair.src, pair.dst, pair.rule)
        failure = self.causes.get(i)
        if code == OK:  # a node's source is the kernel's choice: any of its addresses (engine.Prober.owns)
            seen = extra.observed if extra is not None and extra.observed else pair.src.address
            return PairResult(pair, "ok", rtt, seen, identity(self.lab.name, pair.dst), explain=why, failure=failure)
        verdict = verdict_of(code)
        if extra is None:
            return PairResult(pair, verdict, rtt, explain=why, failure=failure)
        return PairResult(pair, verdict, rtt, extra.observed, extra.answered_by, extra.detail, why, failure)

    def _met_flags(self) -> Iterator[tuple[int, str, bool, bool]]:
        """(index, rule, met, expected ok) per pair, without building result objects."""
        expected = self._expected
        eps = self.endpoints
        jobs = self.outcomes.jobs
        for i, code in enumerate(self.outcomes.verdict):
            s, d = jobs[i]
            rule = pairing.rule_of(eps[s], eps[d])
            if expected.trivial:
                yield i, rule, code == OK, True
                continue
            want = expected(eps[s], eps[d], rule)
            met = verdict_of(code) in want
            if met and code == NAT and rule == "pod-outside":  # masqueraded: to its own node's address
                extra = self.outcomes.extra.get(i)
                met = extra is not None and extra.observed == str(self.lab.node(eps[s].node).ip)
            yield i, rule, met, "ok" in want

    @cached_property
    def _expected(self) -> pairing.Expected:
        return pairing.Expected(self.lab, self.node_sources)

    @cached_property
    def results(self) -> list[PairResult]:
        """Every pair as an object: for small labs, reports and tests."""
        return [self.result(i) for i in range(len(self))]

    @cached_property
    def failures(self) -> list[PairResult]:
        return [self.result(i) for i, _, met, _ in self._met_flags() if not met]

    @cached_property
    def _summaries(self) -> list[RuleSummary]:
        counts: dict[str, list[int]] = {}
        verdicts = self.outcomes.verdict
        for i, rule, met, want_ok in self._met_flags():
            c = counts.setdefault(rule, [0, 0, 0, 0, 0])
            c[0] += 1
            c[1] += verdicts[i] == OK
            c[2] += met
            if not want_ok:
                c[3] += 1
                c[4] += met
        return [RuleSummary(rule, title, *counts[rule]) for rule, title in pairing.RULE_TITLES.items() if rule in counts]

    def summaries(self) -> list[RuleSummary]:
        return self._summaries

    @property
    def passed(self) -> bool:
        return (not self.failures and all(m.passed for m in self.mtu or []) and not self.cni_problems
                and (self.ipv6 is None or self.ipv6.passed) and not self.port_failures
                and all(s.ok for s in self.services) and all(d.ok for d in self.dns))


def table_room(table: neighbours.Table = neighbours.ARP) -> Budget:
    """The budget this check may spend, from the table as it is now. Where the cap cannot be read
    (a container's own namespace) the kernel's default is assumed: the host's limit still applies."""
    cap = table.cap()
    return Budget(cap if cap is not None else table.default_cap, table.entries(), cap is not None)


class _Matrix:
    """The batches of one check, probed in order: after each, the entries it made are deleted in
    the lab's namespaces, and the pairs whose failure a full table also causes are probed again;
    only a failure that repeats stands."""

    def __init__(self, jobs: AllPairs, outcomes: Outcomes, probe: Callable[..., Outcomes],
                 flusher: neighbours.Flusher | None, progress: Callable[[int, int], None] | None) -> None:
        self.jobs, self.outcomes, self.probe = jobs, outcomes, probe
        self.flusher, self.progress = flusher, progress
        self.finished = 0
        self.retried = 0

    def _tell(self, done: int) -> None:
        if self.progress is not None:
            self.progress(min(self.finished + done, len(self.jobs)), len(self.jobs))

    def run(self, batch: Batch) -> None:
        got = self.probe(batch.jobs, self._tell)
        self._merge(batch.jobs, got)
        self.finished += len(batch)
        if self.flusher is None:
            return
        self.flusher.flush(batch.namespaces)
        again = array("I", (j for j in batch.jobs if self._maybe_table(j)))
        if again:
            self.retried += len(again)
            self._merge(again, self.probe(again, None))
            self.flusher.flush(batch.namespaces)

    def _maybe_table(self, j: int) -> bool:
        code = self.outcomes.verdict[j]
        if code == TIMEOUT:
            return True
        extra = self.outcomes.extra.get(j)
        return code == UNREACHABLE and extra is not None and extra.unresolved

    def _merge(self, indexes: Sequence[int], got: Outcomes) -> None:
        out = self.outcomes
        if len(indexes) == len(out.verdict):  # the whole matrix in one batch (range order)
            out.verdict[:], out.rtt[:], out.extra = got.verdict, got.rtt, dict(got.extra)
            return
        for k, j in enumerate(indexes):
            out.verdict[j], out.rtt[j] = got.verdict[k], got.rtt[k]
        if got.extra or out.extra:
            for j in indexes:
                out.extra.pop(j, None)
            for k, e in got.extra.items():
                out.extra[indexes[k]] = e


def _in_process(prober: Prober, jobs: AllPairs) -> Callable[..., Outcomes]:
    def probe(batch: Sequence[int], progress: Callable[[int], None] | None) -> Outcomes:
        return prober.run(Picked(jobs, batch), None if progress is None else lambda done, _: progress(done))
    return probe


def run(lab: Lab, settings: Settings | None = None, progress: Callable[[int, int], None] | None = None,
        mtu: bool = False, notice: Callable[[str], None] | None = None) -> CheckResult:
    """The whole matrix, in batches that keep the neighbour entries it causes within the budget;
    in a dual-stack lab once per family (IPv4's result carries IPv6's)."""
    result = _run_family(lab, lab.families[0], settings, progress, mtu, notice)
    if lab.dual_stack:
        result = dataclasses.replace(result, ipv6=_run_family(lab, 6, settings, progress, mtu, notice))
    if lab.probe_ports:
        pods = [ep for ep in pairing.endpoints(lab) if ep.kind == "pod"]
        wanted = [(p.protocol, p.port) for p in lab.probe_ports]
        result = dataclasses.replace(result, ports=tuple(port_probes.run(pods, wanted)))
    if lab.services:
        result = dataclasses.replace(result, services=tuple(service_probes.run(lab, lab.services)))
    if lab.dns_service is not None:  # then names: resolved, and the ClusterIP they give reached (above)
        reached: dict[tuple[str, str], bool] = {}
        for s in result.services:
            if not s.via:
                reached[(s.src, s.service)] = reached.get((s.src, s.service), True) and s.ok
        result = dataclasses.replace(result, dns=tuple(dns_probes.run(lab, reached)))
    return result


def _run_family(lab: Lab, family: int, settings: Settings | None, progress: Callable[[int, int], None] | None,
                mtu: bool, notice: Callable[[str], None] | None) -> CheckResult:
    settings = settings or Settings()
    table = neighbours.ARP if family == 4 else neighbours.NDP
    endpoints = pairing.endpoints(lab, 4 if family == lab.families[0] else 6)
    missing = [ep.netns for ep in endpoints if not netns.is_netns(ep.netns)]
    if missing:
        raise LabError(f"lab {lab.name} is damaged: {len(missing)} namespaces are missing (first: {missing[0]}); "
                       f"run `sudo cni-lab down {lab.name}` and `up` again")
    room = table_room(table)
    # NDP: the routers' link-local addresses get entries of their own besides the global ones
    needed = pairing.neighbours_needed(lab) * (2 if family == 6 else 1)
    infrastructure = [ns for ns in (names.router_netns(lab.name), names.underlay_netns(lab.name)) if netns.is_netns(ns)]
    jobs = AllPairs(len(endpoints))
    if needed <= room.entries:
        batches = [Batch(array("I", range(len(jobs))), (), needed)]
    else:
        batches = budget.schedule(endpoints, budget.Costs(lab.has_router), room.entries, infrastructure)
    notes = []
    if not room.cap_known:
        notes.append(f"the neighbour table's cap and size cannot be read here (a container's own network "
                     f"namespace): assuming the kernel's default cap, {room.cap}, and keeping within half of it")
    if len(batches) > 1:
        notes.append(f"the full matrix would need ~{needed} neighbour ({table.name.upper()}) entries at once, and the host's table "
                     f"(cap {room.cap}, {room.at_start} in use) leaves this check {room.entries}: probing in "
                     f"{len(batches)} batches that fit, deleting the lab's entries after each")
    for text in notes:
        if notice is not None:
            notice(text)
    started = time.monotonic()
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    outcomes = Outcomes(jobs)
    with neighbours.PeakSampler(table) as sampler, Prober(endpoints, lab.name, settings) as prober, \
            contextlib.ExitStack() as stack:
        notes += prober.missing
        flusher = None
        if len(batches) > 1:
            spaces = sorted({ns for b in batches for ns in b.namespaces})
            flusher = stack.enter_context(neighbours.Flusher(table, spaces))
        with contextlib.ExitStack() as processes:
            probe = _in_process(prober, jobs)
            if len(jobs) >= PARALLEL_FROM and workers > 1:
                # the probe loop is CPU-bound Python: big matrices are split over the cores
                probe = processes.enter_context(Workers(prober, jobs, workers)).run
            matrix = _Matrix(jobs, outcomes, probe, flusher, progress)
            deadline = started + settings.deadline
            for batch in batches:
                if time.monotonic() < deadline:
                    matrix.run(batch)
                    continue
                for j in batch.jobs:
                    outcomes.verdict[j] = TIMEOUT
                    outcomes.extra[j] = Extra(detail="check ran out of time")
        mtu_results = None
        if mtu:  # here, the workers gone; batch by batch too, the table kept within the budget
            mtu_results = []
            for batch in batches:
                mtu_results += mtu_check.run(prober, endpoints, lab.pod_mtu, (jobs[j] for j in batch.jobs))
                if flusher is not None:
                    flusher.flush(batch.namespaces)
    outcomes.duration = time.monotonic() - started
    use = NeighbourUse(table.name, room.cap, room.cap_known, room.at_start, room.entries, room.bound,
                       needed, len(batches), sampler.peak, flusher.deleted if flusher else 0, matrix.retried)
    return CheckResult(lab, endpoints, outcomes, outcomes.duration, use, tuple(notes),
                       None if mtu_results is None else tuple(mtu_results), family=family,
                       node_sources=node_sources(endpoints) if lab.policies else {})


def node_sources(endpoints: Sequence[Endpoint]) -> dict[tuple[str, str], str]:
    """The source address each node's kernel picks towards each other endpoint (a connected UDP
    socket's own address: nothing is sent). A node sends unbound, as its agents do, so an ipBlock
    sees flannel.1's or cilium_host's address where the route says so, not always the underlay's."""
    import socket

    out: dict[tuple[str, str], str] = {}
    for src in (ep for ep in endpoints if ep.kind == "node"):
        def pick(src: Endpoint = src) -> None:
            for dst in endpoints:
                if dst is src:
                    continue
                with socket.socket(socket.AF_INET6 if dst.family == 6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
                    try:
                        s.connect((dst.address, pairing.PROBE_PORT))
                    except OSError:
                        continue  # no route: the probe says so
                    out[(src.id, dst.id)] = s.getsockname()[0]
        netns.in_netns(src.netns, pick)
    return out
