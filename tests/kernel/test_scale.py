"""Scale: a 200-pod lab passes completely, the host's ARP limit comes back, the benchmark runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from helpers import two_nodes

from cni_lab import lifecycle, state
from cni_lab.ipam import Lab
from cni_lab.kernel import apply, neighbours

MakeLab = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]


def test_a_200_pod_lab_passes_every_pair_and_down_puts_the_arp_limit_back(make_lab: MakeLab) -> None:
    before = neighbours.read()
    lab = make_lab({"dataplane": "host-gw", "nodes": [{"name": "node", "count": 10, "pods": 20}]})
    result = lifecycle.check(lab.name, neighbour_cap=16384)
    assert len(result) == 210 * 209
    assert not result.failures and result.passed
    assert all(s.ok == s.total for s in result.summaries())
    # raised while the lab is up: the entries the check made are still in the table
    assert neighbours.read()["gc_thresh3"] == 16384
    assert neighbours.entries() > before["gc_thresh3"]
    # what `down` does first: the entries go at once, not when the kernel frees the namespaces
    recorded = state.read(lab.name)
    assert recorded is not None
    apply.release_neighbours(recorded.namespaces, ("eth0", "cni0"))
    assert neighbours.entries() <= before["gc_thresh3"]
    lifecycle.down(lab.name)
    assert neighbours.read() == before
    assert neighbours.entries() <= before["gc_thresh3"]  # a new lab can make entries at once


def test_the_arp_limit_comes_back_when_the_last_lab_that_raised_it_goes(make_lab: MakeLab) -> None:
    before = neighbours.read()
    first = make_lab(two_nodes("host-gw"))
    second = make_lab(two_nodes("host-gw"))
    lifecycle.check(first.name, neighbour_cap=4096)
    lifecycle.check(second.name, neighbour_cap=8192)
    lifecycle.down(second.name)
    assert neighbours.read()["gc_thresh3"] == 8192  # the first lab still needs it
    assert lifecycle.check(first.name).passed
    lifecycle.down(first.name)
    assert neighbours.read() == before  # the values from before the first raise


def test_benchmark_quick_mode_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench/run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    tools = {r["tool"] for r in report["rows"]}
    assert {"cni-lab", "shell (ip + ping)"} <= tools
    assert any(r["tool"].startswith("Mininet") for r in report["rows"])  # measured, or why not
    assert all(r["pairs_ok"] == r["pairs"] for r in report["rows"] if r["tool"] == "cni-lab")
    assert report["ratios"] and "build, cni-lab vs shell" in " ".join(report["ratios"])


def test_a_lab_past_the_hosts_arp_cap_still_gets_every_verdict_right(make_lab: MakeLab) -> None:
    # without --neighbour-cap the host's table is too small for the matrix: the kernel drops ARP
    # resolutions, and check must probe those pairs again rather than call them timeouts
    cap = neighbours.read()["gc_thresh3"]
    pods = next(p for p in range(1, 200) if 3 * (p * p + p + 2) > cap)  # pairs.neighbours_needed
    if pods > 40:
        pytest.skip(f"this host's neighbour cap ({cap}) is raised: exceeding it takes {3 * pods} pods")
    lab = make_lab({"dataplane": "host-gw", "nodes": [{"name": "node", "count": 3, "pods": pods}]})
    heard: list[str] = []
    result = lifecycle.check(lab.name, notice=heard.append)
    assert heard and "--neighbour-cap" in heard[0]
    assert result.neighbours_needed > cap
    assert result.passed and not result.failures
    assert neighbours.read()["gc_thresh3"] == cap  # nothing on the host was changed
