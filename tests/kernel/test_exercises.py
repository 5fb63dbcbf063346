"""Honest grading, for every shipped exercise: `grade` fails right after `start`; each listed wrong
fix, applied to a fresh start, still fails; the solution's commands, run as written (from the
repository's root, `sudo` and `cni-lab` taken as this interpreter's), make it pass; `stop` leaves
no namespace, pin or state of the lab."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cni_lab import lifecycle, names, state
from cni_lab.exercise import grading, library, session
from cni_lab.exercise.spec import Exercise
from cni_lab.kernel import netns

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [p.stem for p in library.files()]


def runnable(command: str) -> str:
    """A solution's line as this test runs it: as root already (no sudo), cni-lab from this tree,
    the lab's state wherever this run keeps it (CNI_LAB_STATE_DIR)."""
    command = re.sub(r"(^|[;&|]\s*)sudo\s+", r"\1", command.strip())
    command = command.replace("/run/cni-lab/", f"{state.STATE_ROOT}/")
    return re.sub(r"(^|[\s;&|(])cni-lab(?=\s)", rf"\1{sys.executable} -m cni_lab", command)


def apply(commands: tuple[str, ...], must_work: bool) -> list[str]:
    said = []
    for command in commands:
        done = subprocess.run(runnable(command), shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        said.append(f"$ {command}\n{done.stdout}{done.stderr}")
        if must_work:
            assert done.returncode == 0, "\n".join(said)
    return said


def settle(ex: Exercise) -> float:
    """BGP takes its time: after `birdc configure` a session comes back when its peer's error
    wait ends (5 s, doubling to 30 s with each failed attempt: calico_bird.py)."""
    return 5.0 if any(a.kind == "bgp" for a in ex.grade) else 0.3


def graded(ex: Exercise, want: bool, within: float) -> grading.Grade:
    """Grade until it says `want` or `within` seconds are over (one grade when 0)."""
    deadline = time.monotonic() + within
    while True:
        g = grading.grade(ex)
        if g.passed == want or time.monotonic() > deadline:
            return g
        time.sleep(1)


def words(g: grading.Grade) -> str:
    return "\n".join(f"{'ok ' if o.ok else 'BAD'} {o.words}" for o in g.outcomes)


def leftovers(name: str) -> list[str]:
    found = [n for n in netns.listing() if names.lab_of_netns(n) == name]
    found += [str(p) for p in (state.lab_dir(name), Path(names.bpf_dir(name))) if p.exists()]
    return found


@pytest.mark.parametrize("name", SHIPPED)
def test_grading_is_honest(name: str) -> None:
    ex = library.find(name)
    assert ex.shipped and ex.name == name
    try:
        session.start(ex)
        g = grading.grade(ex)
        assert not g.passed, f"{name}: grade passes right after start:\n{words(g)}"
        assert g.seconds < 15, g.seconds  # the goal is 5 s (bench/exercises.py measures it)
        for i, fix in enumerate(ex.wrong_fixes):
            session.start(ex)  # a fresh start for each
            said = apply(fix, must_work=False)
            time.sleep(settle(ex))
            g = grading.grade(ex)
            assert not g.passed, f"{name}: wrong fix {i} passes grading:\n" + "\n".join(said) + "\n" + words(g)
        session.start(ex)
        said = apply(ex.solution, must_work=True)
        g = graded(ex, True, 45 if settle(ex) > 1 else 3)
        assert g.passed, f"{name}: the solution does not pass:\n" + "\n".join(said) + "\n" + words(g)
        assert session.recorded(name) is not None
    finally:
        if name in lifecycle.running():
            session.stop(name)
    assert leftovers(name) == []


def test_cli_session(tmp_path: Path) -> None:
    """The learner's commands, end to end on one exercise: start, hint, grade (exit 1, JUnit),
    heal refused, solution applied, grade (exit 0, JSON), stop."""
    import json
    import xml.etree.ElementTree as ET

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cni_lab", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    ex = library.find("hostgw-route")
    try:
        started = cli("exercise", "start", ex.name)
        assert started.returncode == 0, started.stderr
        assert ex.task.split()[0] in started.stdout and "ip route del" not in started.stdout
        first, second = cli("exercise", "hint", ex.name), cli("exercise", "hint", ex.name, "--json")
        assert "Hint 1 of 3" in first.stdout and json.loads(second.stdout)["hint"] == 2
        junit = tmp_path / "grade.xml"
        failing = cli("exercise", "grade", ex.name, "--junit", str(junit))
        assert failing.returncode == 1 and "NOT FIXED" in failing.stdout
        assert ET.parse(junit).getroot().find("testsuite").get("failures") != "0"  # type: ignore[union-attr]
        refused = cli("heal", ex.name)
        assert refused.returncode == 2 and "runs exercise" in refused.stderr
        apply(ex.solution, must_work=True)
        passing = cli("exercise", "grade", ex.name, "--json")
        assert passing.returncode == 0 and json.loads(passing.stdout)["passed"] is True
        assert json.loads(passing.stdout)["hintsGiven"] == 2
    finally:
        stopped = cli("exercise", "stop", ex.name)
    assert stopped.returncode == 0 and leftovers(ex.name) == []
