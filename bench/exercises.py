"""How long `cni-lab exercise grade` takes, for every shipped exercise: the goal is under five
seconds on two cores, broken or fixed (a learner runs it again and again).

    sudo .venv/bin/python bench/exercises.py                 # every shipped exercise
    sudo .venv/bin/python bench/exercises.py hostgw-route    # some of them

Per exercise: `exercise start`, then `exercise grade` timed as a whole command (Python's start-up
included) on the broken lab, then the solution's commands, then `grade` timed again on the fixed
lab, then `exercise stop`. Prints the seconds of each grade and their ratio to the goal; writes
bench/exercises.json. Never asserted in the tests: a measurement, not a check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "cni_lab"]
GOAL = 5.0


def cli(*args: str) -> tuple[float, int]:
    started = time.monotonic()
    done = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True)
    return time.monotonic() - started, done.returncode


def shell(command: str) -> None:
    """A solution's line, run as root from the repository's root (cni-lab: this tree's)."""
    command = re.sub(r"^sudo\s+", "", command.strip())
    command = re.sub(r"(^|\s)cni-lab(?=\s)", rf"\1{sys.executable} -m cni_lab", command)
    subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def measure(name: str, solution: tuple[str, ...], settle: float) -> dict[str, Any]:
    started, code = cli("exercise", "start", name)
    if code != 0:
        return {"exercise": name, "error": f"start exited {code}"}
    try:
        broken, broken_code = cli("exercise", "grade", name)
        for command in solution:
            shell(command)
        time.sleep(settle)
        fixed, fixed_code = cli("exercise", "grade", name)
    finally:
        cli("exercise", "stop", name)
    return {"exercise": name, "start_s": round(started, 3), "broken_s": round(broken, 3), "broken_exit": broken_code,
            "fixed_s": round(fixed, 3), "fixed_exit": fixed_code}


def main() -> None:
    from cni_lab.exercise import library

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="exercises to time (default: every shipped one)")
    args = parser.parse_args()
    exercises = [library.find(n) for n in args.names] if args.names else library.load_all()
    print(f"vm: {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}")
    print(f"{'exercise':14} {'data plane':10} {'broken s':>9} {'ratio':>6} {'fixed s':>8} {'ratio':>6}   exits")
    rows = []
    for ex in exercises:
        # BGP sessions come back when the peers' error wait ends (up to 30 s: calico_bird.py)
        settle = 30.0 if any(a.kind == "bgp" for a in ex.grade) else 0.3
        row = measure(ex.name, ex.solution, settle)
        rows.append(row)
        if "error" in row:
            print(f"{ex.name:14} {ex.dataplane:10} {row['error']}")
            continue
        print(f"{ex.name:14} {ex.dataplane:10} {row['broken_s']:9.2f} {row['broken_s'] / GOAL:5.2f}x "
              f"{row['fixed_s']:8.2f} {row['fixed_s'] / GOAL:5.2f}x   {row['broken_exit']}/{row['fixed_exit']} (want 1/0)")
    done = [r for r in rows if "error" not in r]
    if done:
        worst = max(max(r["broken_s"], r["fixed_s"]) for r in done)
        print(f"slowest grade {worst:.2f} s = {worst / GOAL:.2f}x the {GOAL:.0f} s goal "
              f"({'met' if worst <= GOAL else 'not met'}); ratio = seconds / goal, lower is better")
    (ROOT / "bench" / "exercises.json").write_text(json.dumps(
        {"cpus": os.cpu_count(), "kernel": platform.release(), "goal_s": GOAL, "exercises": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
