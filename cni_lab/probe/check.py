"""`check`: probe the whole matrix of a running lab and judge it against its expectations."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator

from cni_lab.errors import LabError
from cni_lab.ipam import Lab
from cni_lab.kernel import netns
from cni_lab.probe import mtu as mtu_check
from cni_lab.probe import pairs as pairing
from cni_lab.probe.engine import OK, VERDICTS, AllPairs, Outcomes, Prober, Settings, identity
from cni_lab.probe.pairs import Endpoint, Pair

GC_THRESH3 = "net/ipv4/neigh/default/gc_thresh3"
PARALLEL_FROM = 2_000  # pairs; below, one process is faster than forking
MAX_WORKERS = 4


@dataclass
class PairResult:
    pair: Pair
    verdict: str
    rtt_ms: float | None = None
    observed: str | None = None  # the source address the responder saw
    answered_by: str | None = None  # identity of whoever answered the UDP probe
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.verdict in self.pair.expected


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


@dataclass
class CheckResult:
    lab: Lab
    endpoints: list[Endpoint]
    outcomes: Outcomes
    duration: float
    neighbours_needed: int
    neighbour_cap: int | None
    notes: list[str] = field(default_factory=list)
    mtu: list[mtu_check.MtuResult] | None = None  # only when asked for
    cni_problems: list[str] = field(default_factory=list)  # what CNI CHECK reported, for `cni` labs
    document: str = ""  # the result as JSON text, once written to the state folder (report/machine.py)

    def __len__(self) -> int:
        return len(self.outcomes.verdict)

    def _pair(self, i: int) -> Pair:
        s, d = self.outcomes.jobs[i]
        src, dst = self.endpoints[s], self.endpoints[d]
        rule = pairing.rule_of(src, dst)
        return Pair(i, src, dst, rule, pairing.expected(self.lab.scenario.expect, src, dst, rule))

    def result(self, i: int) -> PairResult:
        pair = self._pair(i)
        code = self.outcomes.verdict[i]
        rtt = self.outcomes.rtt[i] or None
        extra = self.outcomes.extra.get(i)
        if code == OK:
            return PairResult(pair, "ok", rtt, pair.src.address, identity(self.lab.name, pair.dst))
        verdict = VERDICTS[code] if code < len(VERDICTS) else "timeout"
        if extra is None:
            return PairResult(pair, verdict, rtt)
        return PairResult(pair, verdict, rtt, extra.observed, extra.answered_by, extra.detail)

    def _met_flags(self) -> Iterator[tuple[int, str, bool, bool]]:
        """(index, rule, met, expected ok) per pair, without building result objects."""
        expectations = self.lab.scenario.expect
        n = len(self.endpoints)
        eps = self.endpoints
        for i, code in enumerate(self.outcomes.verdict):
            s, r = divmod(i, n - 1)
            d = r if r < s else r + 1
            rule = pairing.rule_of(eps[s], eps[d])
            if not expectations:
                yield i, rule, code == OK, True
                continue
            want = pairing.expected(expectations, eps[s], eps[d], rule)
            verdict = VERDICTS[code] if code < len(VERDICTS) else "timeout"
            yield i, rule, verdict in want, "ok" in want

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
        return not self.failures and all(m.passed for m in self.mtu or []) and not self.cni_problems


def neighbour_cap() -> int | None:
    """gc_thresh3 of the root namespace: the cap of the neighbour table every namespace shares."""
    try:
        with open(f"/proc/sys/{GC_THRESH3}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def run(lab: Lab, settings: Settings | None = None, progress: Callable[[int, int], None] | None = None,
        mtu: bool = False) -> CheckResult:
    settings = settings or Settings()
    endpoints = pairing.endpoints(lab)
    needed = pairing.neighbours_needed(lab)
    cap = neighbour_cap()
    notes = []
    if cap is not None and needed > cap:
        # The kernel frees a neighbour entry for a new one only once it is 5 s old, so past the
        # cap entries are made at ~cap/5 per second: fewer pairs in flight keep ARP from failing.
        settings.window = max(16, min(settings.window, cap // 4))
        notes.append(
            f"a full matrix needs ~{needed} neighbour (ARP) entries, more than the kernel's shared cap "
            f"net.ipv4.neigh.default.gc_thresh3={cap}, which only frees entries 5 s old: probing at most "
            f"{settings.window} pairs at a time. For large labs run `check --neighbour-cap {needed * 2}` "
            "(raises gc_thresh1-3 while the lab is up; `down` puts them back)"
        )
    missing = [ep.netns for ep in endpoints if not netns.is_netns(ep.netns)]
    if missing:
        raise LabError(f"lab {lab.name} is damaged: {len(missing)} namespaces are missing (first: {missing[0]}); "
                       f"run `sudo cni-lab down {lab.name}` and `up` again")
    started = time.monotonic()
    jobs = AllPairs(len(endpoints))
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    with Prober(endpoints, lab.name, settings) as prober:
        notes += prober.missing
        if len(jobs) >= PARALLEL_FROM and workers > 1:
            # the probe loop is CPU-bound Python: big matrices are split over the cores
            outcomes = prober.run_parallel(jobs, workers, progress)
        else:
            outcomes = prober.run(jobs, progress)
        result = CheckResult(lab, endpoints, outcomes, 0.0, needed, cap, notes)
        if mtu:
            result.mtu = mtu_check.run(prober, endpoints, lab.pod_mtu)
    result.duration = time.monotonic() - started
    return result
