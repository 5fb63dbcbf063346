"""The MTU check: can a pod send a full-size packet to a pod on another node?

Each cross-node pod pair gets one UDP probe exactly the size of the sender's interface MTU with
DF set. A pair that fails is searched, all pairs at once, for the largest size that passes. An
overlay that takes 50 bytes while pods still think they have 1500 passes every ping and loses
every full-size packet: the classic MTU black hole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from cni_lab.probe.engine import OK, Prober, Settings
from cni_lab.probe.pairs import Endpoint, rule_of

MIN_SIZE = 68  # the smallest MTU IPv4 allows
MIN_SIZE6 = 1280  # IPv6's
FAST = Settings(attempts=2, interval=0.15, settle=0.25)


@dataclass(frozen=True)
class MtuResult:
    src: Endpoint
    dst: Endpoint
    size: int  # the full size that was tried (the sender's MTU)
    passed: bool
    largest: int | None  # the largest size that got through, when the full size did not


def run(prober: Prober, endpoints: list[Endpoint], mtu: int,
        pairs: Iterable[tuple[int, int]] | None = None) -> list[MtuResult]:
    """The cross-node pod pairs among `pairs` (default: all pairs of `endpoints`)."""
    if pairs is None:
        pairs = ((s, d) for s in range(len(endpoints)) for d in range(len(endpoints)) if s != d)
    cross = [(s, d) for s, d in pairs if rule_of(endpoints[s], endpoints[d]) == "pod-pod-cross-node"]
    if not cross:
        return []
    saved = prober.settings
    prober.settings = FAST
    try:
        full = prober.run(cross, sizes=[mtu] * len(cross))
        failing = [job for job, code in zip(cross, full.verdict) if code != OK]
        # per pair: the largest size known to pass (or below the minimum), the smallest known to fail
        minimum = MIN_SIZE6 if prober.family == 6 else MIN_SIZE
        bounds = {job: (minimum - 1, mtu) for job in failing}
        while True:
            open_jobs = [job for job in failing if bounds[job][1] - bounds[job][0] > 1]
            if not open_jobs:
                break
            sizes = [sum(bounds[job]) // 2 for job in open_jobs]
            outcome = prober.run(open_jobs, sizes=sizes)
            for job, size, code in zip(open_jobs, sizes, outcome.verdict):
                lo, hi = bounds[job]
                bounds[job] = (size, hi) if code == OK else (lo, size)
    finally:
        prober.settings = saved
    return [MtuResult(endpoints[s], endpoints[d], mtu, (s, d) not in bounds,
                      (bounds[(s, d)][0] if bounds[(s, d)][0] >= minimum else None) if (s, d) in bounds else None)
            for s, d in cross]
