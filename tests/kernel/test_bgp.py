"""Calico-style routed pods with real BIRD daemons."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from helpers import ns_of, run_in, seen_as_sender

from cni_lab import lifecycle, names, state
from cni_lab.cluster import Lab
from cni_lab.kernel import daemons
from cni_lab.lesson import explain
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]


def bgp_lab(**extra: Any) -> dict[str, Any]:
    return {"dataplane": "bgp", "nodes": [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]},
                                          {"name": "node3", "pods": ["cache"]}], **extra}


def bird_pids() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if cmd.endswith(b"bird") and ") Z" not in stat:
                found.add(int(entry))
    return found


def test_three_node_bgp_lab_passes_and_looks_like_calico(make_lab: MakeLab) -> None:
    lab = make_lab(bgp_lab())
    result = matrix.run(lab)
    assert {r.verdict for r in result.results} == {"ok"}
    assert seen_as_sender(lab, result.results)

    node1 = ns_of(lab, "node1")
    routes = run_in(node1, "ip", "route", check=True).stdout
    assert "blackhole 10.244.0.0/26 proto bird" in routes
    assert re.search(r"10\.244\.0\.64/26 via 192\.168\.1\.3 dev eth0 proto bird", routes)
    assert re.search(r"10\.244\.0\.128/26 via 192\.168\.1\.4 dev eth0 proto bird", routes)
    for pod in lab.node("node1").pods:
        cali = names.cali_veth(lab.name, "node1", pod.name)
        assert re.fullmatch(r"cali[0-9a-f]{11}", cali)
        assert f"{pod.ip} dev {cali} scope link" in routes
        assert run_in(node1, "cat", f"/proc/sys/net/ipv4/conf/{cali}/proxy_arp", check=True).stdout.strip() == "1"
        assert "inet " not in run_in(node1, "ip", "-4", "addr", "show", cali, check=True).stdout
        pod_routes = run_in(ns_of(lab, pod.id), "ip", "route", check=True).stdout
        assert "default via 169.254.1.1 dev eth0" in pod_routes and "169.254.1.1 dev eth0 scope link" in pod_routes
        assert f"inet {pod.ip}/32" in run_in(ns_of(lab, pod.id), "ip", "addr", "show", "eth0", check=True).stdout
    assert "cni0" not in run_in(node1, "ip", "link", check=True).stdout
    folder = state.lab_dir(lab.name) / "bird/node1"
    assert {"bird.conf", "bird.ctl", "bird.pid", "bird.log"} <= {p.name for p in folder.iterdir()}
    sessions = explain.read(lab, "node1")[0].bgp
    assert sessions is not None
    assert {s.name: s.info for s in sessions if s.proto == "BGP"} == {"Mesh_192_168_1_3": "Established", "Mesh_192_168_1_4": "Established"}


def test_stopping_one_bird_breaks_exactly_its_pairs_and_up_heals_them(make_lab: MakeLab) -> None:
    lab = make_lab(bgp_lab())
    node2 = ns_of(lab, "node2")
    pid = daemons.read_pid(state.lab_dir(lab.name) / "bird/node2/bird.pid")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # a stopping BIRD withdraws its kernel routes; its peers drop its block
    for _ in range(100):
        if not daemons.alive(pid):
            break
        time.sleep(0.05)
    run_in(node2, "ip", "route", "flush", "proto", "bird", check=True)
    st = lifecycle.status(lab.name)
    assert not st.healthy and st.daemons["node2"][1] is False
    time.sleep(0.3)  # the peers notice the closed sessions

    result = matrix.run(lab)

    def group(endpoint_id: str) -> str:
        return endpoint_id.split("/")[0]

    expected_broken = {
        (r.pair.src.id, r.pair.dst.id) for r in result.results
        if "node2" in (group(r.pair.src.id), group(r.pair.dst.id))
        and group(r.pair.src.id) != group(r.pair.dst.id)
        and not (r.pair.src.kind == "node" and r.pair.dst.kind == "node")
    }
    broken = {(r.pair.src.id, r.pair.dst.id) for r in result.results if r.verdict != "ok"}
    assert broken == expected_broken

    healed = lifecycle.up(lab)
    assert healed.healed == ("bird on node2",)
    assert {r.verdict for r in matrix.run(lab).results} == {"ok"}
    assert lifecycle.status(lab.name).healthy


def test_no_bird_outlives_down(make_lab: MakeLab) -> None:
    before = bird_pids()
    lab = make_lab(bgp_lab())
    assert len(bird_pids() - before) == 3
    lifecycle.down(lab.name)
    assert bird_pids() - before == set()


def test_missing_bird_is_one_line_and_exit_2_with_nothing_created(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # Debian's bird lives in /usr/sbin
    before = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    done = subprocess.run([sys.executable, "-m", "cni_lab", "up", str(ROOT / "scenarios/bgp.yaml"), "--name", "tnobird"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "dataplane bgp needs bird and birdc, not installed here: run `sudo apt-get install bird2`" in done.stderr
    after = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    assert after == before and state.read("tnobird") is None
