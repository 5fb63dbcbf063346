"""What a run of observe saw, in a few lines: flows per verdict, the top talkers (pairs by flow
count) and the top causes of drops and errors. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from cni_lab.observe.flows import VERDICTS, Flow


@dataclass(frozen=True)
class Summary:
    total: int
    verdicts: tuple[tuple[str, int], ...]  # every verdict seen, in VERDICTS' order
    talkers: tuple[tuple[str, str, int], ...]  # (source, destination, flows), most first
    drops: tuple[tuple[str, int], ...]  # (cause, DROPPED and ERROR flows), most first


def summarize(flows: Iterable[Flow], top: int = 5) -> Summary:
    """The counts, the `top` talkers and drop causes (ties in the order first seen)."""
    verdicts: Counter[str] = Counter()
    talkers: Counter[tuple[str, str]] = Counter()
    drops: Counter[str] = Counter()
    total = 0
    for f in flows:
        total += 1
        verdicts[f.verdict] += 1
        talkers[(f.source.name if f.source.kind != "world" else f.source.address,
                 f.destination.name if f.destination.kind != "world" else f.destination.address)] += 1
        if f.verdict in ("DROPPED", "ERROR"):
            drops[f.cause or f.drop_reason_desc or "unexplained"] += 1
    return Summary(total, tuple((v, verdicts[v]) for v in VERDICTS if verdicts[v]),
                   tuple((a, b, n) for (a, b), n in talkers.most_common(top)), tuple(drops.most_common(top)))


def to_json(s: Summary) -> dict[str, Any]:
    """`observe --summary --json`: the counts, top talkers and top drop causes, most first."""
    return {"total": s.total, "verdicts": dict(s.verdicts),
            "topTalkers": [{"source": a, "destination": b, "flows": n} for a, b, n in s.talkers],
            "topDropCauses": [{"cause": cause, "flows": n} for cause, n in s.drops]}
