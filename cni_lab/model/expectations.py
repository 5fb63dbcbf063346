"""The `expect` section: which verdicts `check` should find, where the lab is built to fail."""

from __future__ import annotations

from typing import Any

from cni_lab.model.problems import Problems, hint
from cni_lab.model.scenario import RULES, VERDICTS, Expectation

EXPECT_KEYS = ("from", "to", "rule", "verdict")


def read_expectations(problems: Problems, value: Any) -> tuple[Expectation, ...]:
    """`full` (the default): every pair must be ok; or a list of {from, to, rule, verdict}."""
    if value == "full" or value is None:
        return ()
    if not isinstance(value, list):
        problems.add("expect", "must be 'full' or a list of {from, to, rule, verdict} entries")
        return ()
    out = []
    for key, raw in problems.mappings(value, "expect", EXPECT_KEYS):
        src, dst = raw.get("from", "*"), raw.get("to", "*")
        for k, v in (("from", src), ("to", dst)):
            if not isinstance(v, str) or not v:
                problems.add(f"{key}.{k}", f"{v!r} is not an endpoint pattern such as node1 or node2/*")
        rule = raw.get("rule")
        if rule is not None and rule not in RULES:
            problems.add(f"{key}.rule", f"{rule!r} is not one of {', '.join(RULES)}{hint(rule, RULES)}")
        verdict = raw.get("verdict", "ok")
        verdicts = verdict if isinstance(verdict, list) else [verdict]
        allowed = (*VERDICTS, "fail")
        bad = [v for v in verdicts if v not in allowed]
        if bad or not verdicts:
            problems.add(f"{key}.verdict", f"{verdict!r}: use one or a list of {', '.join(allowed)}")
            continue
        expanded: set[str] = set()
        for v in verdicts:
            expanded |= set(VERDICTS) - {"ok"} if v == "fail" else {v}
        out.append(Expectation(src=str(src), dst=str(dst), rule=rule, verdicts=frozenset(expanded)))
    return tuple(out)
