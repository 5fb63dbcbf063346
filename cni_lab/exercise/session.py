"""An exercise's life on this machine: start (the lab built, then broken), the hints given,
stop. What runs is remembered in the lab's state folder (`exercise.json`), so `hint` knows which
hint is next and `grade` knows the lab is the exercise's (a lab rebuilt with `down` and `up`
is not: its folder, and the record, went with it)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from cni_lab import faults, lifecycle, privileges, service_changes, state, target_netns
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.exercise.spec import Exercise, Step

RECORD = "exercise.json"


def recorded(lab_name: str) -> dict[str, Any] | None:
    """The exercise running on a lab, as `start` recorded it (None: none)."""
    try:
        data = json.loads((state.lab_dir(lab_name) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("name"), str) else None


def _write(lab_name: str, data: dict[str, Any]) -> None:
    path = state.lab_dir(lab_name) / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def require_running(ex: Exercise) -> dict[str, Any]:
    privileges.require_root("exercise")
    data = recorded(ex.name) if ex.name in lifecycle.running() else None
    if data is None or data["name"] != ex.name:
        raise LabError(f"exercise {ex.name} is not running: start it with `sudo cni-lab exercise start {ex.name}`")
    return data


def start(ex: Exercise) -> Lab:
    """Build the exercise's lab afresh and break it as the file says. A teacher's file runs its
    `run:` steps as root: it must be root's alone, as code is (privileges.require_trusted)."""
    privileges.require_root("exercise start")
    if not ex.shipped:
        privileges.require_trusted([ex.source], f"exercise {ex.name}: its break steps run as root")
    if ex.name in lifecycle.running():
        if recorded(ex.name) is None:
            raise LabError(f"lab {ex.name} runs, but not as exercise {ex.name}: "
                           f"`sudo cni-lab down {ex.name}` first")
        lifecycle.down(ex.name)  # start again from a healthy lab
    lifecycle.up(ex.lab)
    try:
        for i, step in enumerate(ex.breaks):
            _break(ex, i, step)
        _write(ex.name, {"name": ex.name, "source": ex.source, "hints": 0, "started": time.time()})
    except BaseException:
        lifecycle.down(ex.name)  # a half-broken lab teaches nothing
        raise
    return ex.lab


def _break(ex: Exercise, i: int, step: Step) -> None:
    lab, _ = lifecycle.running_lab(ex.name)
    where = f"{ex.source}: break[{i}]"
    if step.kind == "run":
        ns = target_netns.target_netns(lab, step.target)
        # $LAB and $LAB_STATE: the lab's name and state folder (its BIRD and CNI files), wherever it is
        env = {**os.environ, "LAB": ex.name, "LAB_STATE": str(state.lab_dir(ex.name))}
        done = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", step.command], capture_output=True, text=True,
                              timeout=60, env=env)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise LabError(f"{where}: `{step.command}` in {step.target} failed: {said[-1] if said else done.returncode}")
    elif step.kind == "fault":
        kind, *args = step.command.split()
        with state.locked(ex.name):
            faults.inject(lab, kind, tuple(args), record=False)  # the learner finds the cause, not `status`
    elif step.kind == "service":
        try:  # as `cni-lab service apply` does: existing ClusterIPs and NodePorts kept, kube-dns follows
            lifecycle.set_services(ex.name, lambda current: service_changes.applied(current, step.services, step.where))
        except LabError as e:
            raise LabError(*(p if p.startswith(step.where) else f"{where}: {p}" for p in e.problems)) from None
    else:
        def add(current: Lab) -> tuple[Any, ...]:
            keys = {_key(s.document) for s in step.policies}
            return tuple(s for s in current.scenario.policies if _key(s.document) not in keys) + step.policies

        try:
            lifecycle.set_policies(ex.name, add)
        except LabError as e:
            raise LabError(*(f"{where}: {p}" for p in e.problems)) from None


def _key(document: dict[str, Any]) -> str:
    meta = document.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name')}" if isinstance(meta, dict) else ""


def next_hint(ex: Exercise) -> tuple[int, str] | None:
    """The next hint, numbered from 1, remembered as given; None when every one was."""
    data = require_running(ex)
    given = int(data.get("hints", 0))
    if given >= len(ex.hints):
        return None
    _write(ex.name, {**data, "hints": given + 1})
    return given + 1, ex.hints[given]


def hints_given(ex: Exercise) -> int:
    data = recorded(ex.name)
    return int(data.get("hints", 0)) if data else 0


def stop(name: str) -> list[str]:
    """The exercise's lab removed, namespaces and state (its record with them)."""
    privileges.require_root("exercise stop")
    return lifecycle.down(name)

