"""Where users run it: an installed wheel outside the repo, doctor on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_runs_a_shipped_scenario_outside_the_repo(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(wheels)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("cni_lab-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run([str(env_dir / "bin/pip"), "install", "-q", str(wheel)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-1000:]
    exe = str(env_dir / "bin/cni-lab")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert version.returncode == 0 and "cni-lab, version" in version.stdout
    listed = subprocess.run([exe, "scenarios", "--json"], capture_output=True, text=True, cwd=tmp_path)
    names = {s["name"] for s in json.loads(listed.stdout)}
    assert {"two-nodes", "single-node", "conflict", "routed"} <= names
    assert str(ROOT) not in listed.stdout  # the scenarios came from the installed package
    # the demo's acts are found the same way (tests/kernel/test_lesson.py runs the demo itself)
    run = subprocess.run([exe, "run", "two-nodes", "--name", "twheel"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr


def test_doctor_json_on_this_machine() -> None:
    done = subprocess.run([sys.executable, "-m", "cni_lab", "doctor", "--json"], capture_output=True, text=True)
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    for name in ("root", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "network namespaces", "/proc/sys writable",
                 "kernel: veth", "kernel: bridge", "kernel: vxlan", "BIRD", "CNI plugins"):
        assert checks[name]["ok"], checks[name]
    assert done.returncode == 0
    assert all(c["ok"] or c["fix"] for c in checks.values())
