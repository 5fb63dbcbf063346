"""Where users run it: an installed wheel outside the repo, doctor, the Vagrant box's file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_runs_the_demo_outside_the_repo(tmp_path: Path) -> None:
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
    demo = subprocess.run([exe, "demo"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr
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


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (.ci/run installs it)")
def test_vagrantfile_is_valid_ruby() -> None:
    done = subprocess.run(["ruby", "-c", str(ROOT / "Vagrantfile")], capture_output=True, text=True)
    assert done.returncode == 0 and "Syntax OK" in done.stdout


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="Debian's vagrant is not installed (its dependencies do not install on this Debian mirror)")
def test_vagrant_validates_the_vagrantfile() -> None:
    checked = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
