"""Is it fixed? The lab's own `check` (every pair, as the scenario expects) and the exercise's
assertions, each judged on what the kernel holds now (facts.py), never on what the learner typed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cni_lab import lifecycle
from cni_lab.exercise import assertions, session
from cni_lab.exercise.facts import Reader, check_facts
from cni_lab.exercise.spec import Exercise


@dataclass(frozen=True)
class Grade:
    exercise: Exercise
    outcomes: tuple[assertions.Outcome, ...]
    seconds: float
    hints_given: int = 0

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failed(self) -> list[assertions.Outcome]:
        return [o for o in self.outcomes if not o.ok]


def grade(ex: Exercise) -> Grade:
    """Every assertion of the exercise judged; the check runs once, whether the file asks for it
    or not (a fix that breaks something else is no fix)."""
    session.require_running(ex)
    started = time.monotonic()
    result = lifecycle.check(ex.name, observe=False)
    checked = check_facts(result)
    lab, _ = lifecycle.running_lab(ex.name)
    reader = Reader(lab)
    wanted = ex.grade if any(a.kind == "check" and not a.args for a in ex.grade) else \
        (assertions.Assertion("check", {}, "the lab's check"), *ex.grade)
    outcomes = tuple(assertions.judge(a, checked if a.kind in ("check", "pair") else reader.read(a)) for a in wanted)
    return Grade(ex, outcomes, time.monotonic() - started, session.hints_given(ex))
