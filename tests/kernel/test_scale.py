"""Scale: a 200-pod lab passes completely, the host's ARP limit comes back, the benchmark runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from helpers import pings, run_in, two_nodes

from cni_lab import faults, lifecycle, state
from cni_lab.cluster import Lab
from cni_lab.kernel import neighbours

MakeLab = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]
# inside a container's own network namespace the kernel does not show the neighbour limits
hidden_limits = pytest.mark.skipif(neighbours.ARP.cap() is None,
                                   reason="the neighbour table's limits are not visible in this network namespace "
                                          "(a container's own): --neighbour-cap cannot work here")


def limits() -> dict[str, int] | None:
    return neighbours.read() if neighbours.ARP.cap() is not None else None


@hidden_limits
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
    neighbours.release_neighbours(recorded.namespaces, ("eth0", "cni0"))
    assert neighbours.entries() <= before["gc_thresh3"]
    lifecycle.down(lab.name)
    assert neighbours.read() == before
    assert neighbours.entries() <= before["gc_thresh3"]  # a new lab can make entries at once


@hidden_limits
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
    generated = report["conformance"]  # generated NetworkPolicy cases a minute on the netpol model
    assert generated["passed"] and generated["cases"] == 20 and generated["per_min"] > 0
    assert "generated conformance cases per minute on the shipped netpol model" in done.stdout


def over_the_cap(times: float) -> int:
    """Pods per node of a 3-node host-gw lab whose full matrix needs `times` the host's cap."""
    cap = neighbours.ARP.cap() or neighbours.ARP.default_cap
    pods = next(p for p in range(1, 400) if 3 * (p * p + p + 2) > times * cap)  # pairs.neighbours_needed
    if pods > 60:
        pytest.skip(f"this host's neighbour cap ({cap}) is raised: exceeding it takes {3 * pods} pods")
    return pods


def test_a_lab_past_the_hosts_arp_cap_gets_every_verdict_right_within_the_budget(make_lab: MakeLab) -> None:
    # without --neighbour-cap the host's table is too small for the matrix at once: check probes
    # it in batches that fit and deletes the lab's entries between them
    before = limits()
    lab = make_lab({"dataplane": "host-gw", "nodes": [{"name": "node", "count": 3, "pods": over_the_cap(1)}]})
    heard: list[str] = []
    result = lifecycle.check(lab.name, notice=heard.append)
    use = result.neighbours
    assert any("batches" in h for h in heard) and not any("--neighbour-cap" in h for h in heard)
    assert use.needed > use.cap and use.batches > 1 and use.deleted > 0
    assert result.passed and not result.failures
    assert use.peak <= use.bound  # the table never came near the cap (a count, sampled every 20 ms)
    assert limits() == before  # nothing on the host was changed


def test_the_host_keeps_resolving_neighbours_while_a_big_check_runs(make_lab: MakeLab) -> None:
    lab = make_lab({"dataplane": "host-gw", "nodes": [{"name": "node", "count": 3, "pods": over_the_cap(4)}]})
    # two namespaces that stand for the host and its gateway (named for the lab, so `down` takes them)
    host, gateway = f"cnilab-{lab.name}.test-host", f"cnilab-{lab.name}.test-gw"
    for ns in (host, gateway):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    run_in(host, "ip", "link", "add", "h0", "type", "veth", "peer", "name", "g0", "netns", gateway, check=True)
    for ns, dev, ip in ((host, "h0", "10.255.0.1/24"), (gateway, "g0", "10.255.0.2/24")):
        run_in(ns, "ip", "addr", "add", ip, "dev", dev, check=True)
        run_in(ns, "ip", "link", "set", dev, "up", check=True)
    resolved: list[bool] = []

    def now_and_then(done: int, total: int) -> None:
        if len(resolved) < 3 and done >= total * (len(resolved) + 1) // 4:
            run_in(host, "ip", "neigh", "flush", "dev", "h0")  # a fresh resolution each time
            resolved.append(pings(host, "10.255.0.2"))

    result = lifecycle.check(lab.name, progress=now_and_then)
    assert resolved == [True] * 3
    assert result.neighbours.needed > 4 * result.neighbours.cap
    assert result.passed


def test_a_real_failure_still_stands_when_the_check_runs_in_batches(make_lab: MakeLab) -> None:
    # the pairs that time out are probed again after their batch: that must not hide a real fault
    lab = make_lab({"dataplane": "host-gw", "nodes": [{"name": "node", "count": 3, "pods": over_the_cap(1)}]})
    faults.inject(lab, "pod-down", ("node2/pod-3",))
    result = lifecycle.check(lab.name)
    assert result.neighbours.batches > 1
    broken = {(r.pair.src.id, r.pair.dst.id) for r in result.failures}
    others = [ep.id for ep in result.endpoints if ep.id != "node2/pod-3"]
    assert broken == {(x, "node2/pod-3") for x in others} | {("node2/pod-3", x) for x in others}
    assert result.neighbours.retried >= len(others)  # probed again, and failed again
