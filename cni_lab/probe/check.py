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
from cni_lab.probe.engine import OK, TIMEOUT, VERDICTS, AllPairs, Outcomes, Prober, Settings, identity
from cni_lab.probe.pairs import Endpoint, Pair

GC_THRESH3 = "net/ipv4/neigh/default/gc_thresh3"
PARALLEL_FROM = 2_000  # pairs; below, one process is faster than forking
MAX_WORKERS = 4
REACHABLE_TIME = "net/ipv4/neigh/default/base_reachable_time_ms"


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


def room_after() -> float:
    """Seconds until the kernel can reuse the ARP entries a probe round made: an entry stays
    REACHABLE (and held by its timer) for up to 1.5 × base_reachable_time after its last
    confirmation, then STALE, and the table evicts it for a new one once it is 5 s stale."""
    try:
        with open(f"/proc/sys/{REACHABLE_TIME}") as f:
            reachable = int(f.read()) / 1000
    except (OSError, ValueError):
        reachable = 30.0  # the kernel's default
    return 1.5 * reachable + 5 + 1


def _probe_refused_again(prober: Prober, outcomes: Outcomes, deadline: float) -> None:
    """Past the neighbour cap the kernel drops ARP resolutions while the table is full of fresh
    entries, and the pairs that needed one time out: a limit of the host, not a verdict on the
    lab. Probe the timed-out pairs again once the kernel can reuse entries, round after round,
    while a round still turns some of them into answers (a pair that never answers stays a
    timeout). Measured: a 60-pod lab (1,266 entries against a cap of 1,024) lost 262 of 3,906
    pairs without this, and passed whole after one more round."""
    pause = room_after()
    while time.monotonic() + pause < deadline:
        waiting = [j for j, v in enumerate(outcomes.verdict) if v == TIMEOUT]
        if not waiting:
            return
        time.sleep(pause)
        again = prober.run([outcomes.jobs[j] for j in waiting])
        answered = 0
        for k, j in enumerate(waiting):
            if again.verdict[k] == TIMEOUT:
                continue
            answered += 1
            outcomes.verdict[j], outcomes.rtt[j] = again.verdict[k], again.rtt[k]
            outcomes.extra.pop(j, None)
            if k in again.extra:
                outcomes.extra[j] = again.extra[k]
        if not answered:
            return


def run(lab: Lab, settings: Settings | None = None, progress: Callable[[int, int], None] | None = None,
        mtu: bool = False, notice: Callable[[str], None] | None = None) -> CheckResult:
    """The whole matrix. `notice` hears at once what the result's notes will say about how the
    check runs (a lab past the neighbour cap takes minutes: the user should know before, not after)."""
    settings = settings or Settings()
    endpoints = pairing.endpoints(lab)
    needed = pairing.neighbours_needed(lab)
    cap = neighbour_cap()
    notes = []
    over_cap = cap is not None and needed > cap
    if cap is not None and over_cap:
        # Past the cap the kernel makes room only by evicting stale entries: fewer pairs in
        # flight, and the pairs whose ARP it dropped are probed again once it can (room_after).
        settings.window = max(16, min(settings.window, cap // 4))
        notes.append(
            f"a full matrix needs ~{needed} neighbour (ARP) entries, more than the kernel's shared cap "
            f"net.ipv4.neigh.default.gc_thresh3={cap}, which only frees entries 5 s old: probing at most "
            f"{settings.window} pairs at a time, and once more after ~{room_after():.0f} s, when the kernel "
            f"can reuse its entries, the pairs that timed out: this takes minutes, not seconds. "
            f"Run `check --neighbour-cap {needed * 2}` instead "
            "(raises gc_thresh1-3 while the lab is up; `down` puts them back)"
        )
        if notice is not None:
            notice(notes[-1])
    missing = [ep.netns for ep in endpoints if not netns.is_netns(ep.netns)]
    if missing:
        raise LabError(f"lab {lab.name} is damaged: {len(missing)} namespaces are missing (first: {missing[0]}); "
                       f"run `sudo cni-lab down {lab.name}` and `up` again")
    started = time.monotonic()
    jobs = AllPairs(len(endpoints))
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    with Prober(endpoints, lab.name, settings) as prober:
        notes += prober.missing
        if len(jobs) >= PARALLEL_FROM and workers > 1 and not over_cap:
            # the probe loop is CPU-bound Python: big matrices are split over the cores
            outcomes = prober.run_parallel(jobs, workers, progress)
        else:
            outcomes = prober.run(jobs, progress)
        if over_cap:
            _probe_refused_again(prober, outcomes, started + settings.deadline)
            for j, verdict in enumerate(outcomes.verdict):
                if verdict == TIMEOUT and j in outcomes.extra:
                    outcomes.extra[j].detail += (f" (the host's ARP table was full during this check: "
                                                 f"`check --neighbour-cap {needed * 2}` rules that out)")
        result = CheckResult(lab, endpoints, outcomes, 0.0, needed, cap, notes)
        if mtu:
            result.mtu = mtu_check.run(prober, endpoints, lab.pod_mtu)
    result.duration = time.monotonic() - started
    return result
