"""`check`: probe the whole matrix of a running lab and judge it against its expectations."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from cni_lab.ipam import Lab
from cni_lab.kernel import netns
from cni_lab.probe import pairs as pairing
from cni_lab.probe import mtu as mtu_check
from cni_lab.probe.engine import PairResult, Prober, Settings

GC_THRESH3 = "net/ipv4/neigh/default/gc_thresh3"


@dataclass(frozen=True)
class RuleSummary:
    rule: str
    title: str
    total: int
    ok: int
    met: int  # pairs whose verdict is what the scenario expects

    @property
    def passed(self) -> bool:
        return self.met == self.total


@dataclass
class CheckResult:
    lab: Lab
    results: list[PairResult]
    duration: float
    neighbours_needed: int
    neighbour_cap: int | None
    notes: list[str] = field(default_factory=list)
    mtu: list[mtu_check.MtuResult] | None = None  # only when asked for
    cni_problems: list[str] = field(default_factory=list)  # what CNI CHECK reported, for `cni` labs

    @property
    def passed(self) -> bool:
        return all(r.met for r in self.results) and all(m.passed for m in self.mtu or []) and not self.cni_problems

    @property
    def failures(self) -> list[PairResult]:
        return [r for r in self.results if not r.met]

    def summaries(self) -> list[RuleSummary]:
        out = []
        for rule, title in pairing.RULE_TITLES.items():
            rs = [r for r in self.results if r.pair.rule == rule]
            if rs:
                out.append(RuleSummary(rule, title, len(rs), sum(r.verdict == "ok" for r in rs), sum(r.met for r in rs)))
        return out


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
    pairs = pairing.all_pairs(lab)
    needed = pairing.neighbours_needed(lab)
    cap = neighbour_cap()
    notes = []
    if cap is not None and needed > cap:
        # Entries for finished pairs age out; keeping few pairs in flight keeps the ones being
        # resolved at once well under the cap, so the host's sysctl need not change.
        settings.window = max(16, min(settings.window, cap // 4))
        notes.append(
            f"a full matrix touches ~{needed} neighbour (ARP) entries, more than the kernel's shared cap "
            f"net.ipv4.neigh.default.gc_thresh3={cap}: probing at most {settings.window} pairs at a time "
            "so entries age out as it goes; if pairs still time out, raise gc_thresh3 yourself and restore it after"
        )
    missing = [ep.netns for ep in pairing.endpoints(lab) if not netns.is_netns(ep.netns)]
    if missing:
        from cni_lab.errors import LabError

        raise LabError(f"lab {lab.name} is damaged: {len(missing)} namespaces are missing (first: {missing[0]}); "
                       f"run `sudo cni-lab down {lab.name}` and `up` again")
    started = time.monotonic()
    with Prober(pairing.endpoints(lab), lab.name, settings) as prober:
        notes += prober.missing
        results = prober.run(pairs, progress)
        mtu_results = mtu_check.run(prober, pairs, lab.pod_mtu) if mtu else None
    return CheckResult(lab, results, time.monotonic() - started, needed, cap, notes, mtu_results)
