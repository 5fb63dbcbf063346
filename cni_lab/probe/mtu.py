"""The MTU check: can a pod send a full-size packet to a pod on another node?

Each cross-node pod pair gets one UDP probe exactly the size of the sender's interface MTU with
DF set. A pair that fails is searched, all pairs at once, for the largest size that passes. An
overlay that takes 50 bytes while pods still think they have 1500 passes every ping and loses
every full-size packet: the classic MTU black hole.
"""

from __future__ import annotations

from dataclasses import dataclass

from cni_lab.probe.engine import Prober, Settings
from cni_lab.probe.pairs import Pair

MIN_SIZE = 68  # the smallest MTU IPv4 allows
FAST = Settings(attempts=2, interval=0.15, settle=0.25)


@dataclass(frozen=True)
class MtuResult:
    pair: Pair
    size: int  # the full size that was tried (the sender's MTU)
    passed: bool
    largest: int | None  # the largest size that got through, when the full size did not


def run(prober: Prober, pairs: list[Pair], mtu: int) -> list[MtuResult]:
    cross = [p for p in pairs if p.rule == "pod-pod-cross-node"]
    if not cross:
        return []
    saved = prober.settings
    prober.settings = FAST
    try:
        full = prober.run(cross, sizes={p.index: mtu for p in cross})
        failing = [r.pair for r in full if r.verdict != "ok"]
        # per pair: `passing` got through (or is below the minimum), `failing` did not
        bounds = {p.index: (MIN_SIZE - 1, mtu) for p in failing}
        while any(hi - lo > 1 for lo, hi in bounds.values()):
            open_pairs = [p for p in failing if bounds[p.index][1] - bounds[p.index][0] > 1]
            sizes = {p.index: sum(bounds[p.index]) // 2 for p in open_pairs}
            for r in prober.run(open_pairs, sizes=sizes):
                lo, hi = bounds[r.pair.index]
                size = sizes[r.pair.index]
                bounds[r.pair.index] = (size, hi) if r.verdict == "ok" else (lo, size)
    finally:
        prober.settings = saved
    largest = {i: (lo if lo >= MIN_SIZE else None) for i, (lo, _) in bounds.items()}
    return [MtuResult(p, mtu, p.index not in bounds, largest.get(p.index)) for p in cross]
