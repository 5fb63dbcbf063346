"""The scale benchmark: cni-lab against the way people build labs by hand, in one run.

    sudo .venv/bin/python bench/run.py            # 100, 500, 1000 pods; shell baseline and Mininet at 100
    sudo .venv/bin/python bench/run.py --quick    # small sizes, for CI (it must not rot)

1. cni-lab: `up`, `check` (every ordered pair of pods and nodes, with the NAT and right-peer
   checks), `down` of host-gw labs of 20 pods per node; times, pairs/s, peak RSS.
2. A shell baseline: `ip netns add`, `ip link add … type veth`, `ip addr`, `ip route` per object,
   and `ip netns exec … ping -c1 -W1` per pair. Its matrix is timed on a random sample of pairs
   and extrapolated to all pairs (said so in the output).
3. Mininet (Debian's `mininet`, Linux bridge, no controller) building the same number of hosts
   and running `pingAll`, inside a namespace of the benchmark's own (Mininet puts its switch in
   whatever namespace it starts in). Where it cannot run, the output says why.
4. `cni-lab conformance` on the shipped netpol model (scenarios/netpol.yaml, host-gw): generated
   NetworkPolicy cases a minute, as a whole command, against policy-assistant's reported run
   (kubernetes-sigs/network-policy-api #348: 112 cases in 3 h 15 min) and the goal of 100.

Everything it makes carries the `cnilab-` prefix, so `cni-lab down --all` would find leftovers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cni_lab.kernel import neighbours  # noqa: E402  (the benchmark runs from a checkout)
PODS_PER_NODE = 20
SHELL_LAB = "cnilab-bshell"
MININET_NS = "cnilab-bmn.mininet"


def _busy_jiffies() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


SETTLE_NS = "cnilab-bsettle"
_settle_probe: Any = None


def settle(most: float = 15.0) -> None:
    """Wait until the kernel is quiet: the CPUs idle and the rtnl lock free (a no-op link change
    answered at once), three times in a row, for at most `most` seconds. The kernel frees removed
    namespaces in the background, holding the rtnl lock for long stretches, and a tool timed
    meanwhile pays for the previous one's teardown (up to 2x, measured)."""
    global _settle_probe
    from cni_lab.kernel import netns
    from cni_lab.kernel.rtnl import Rtnl

    if _settle_probe is None:
        netns.create(SETTLE_NS)
        _settle_probe = Rtnl(SETTLE_NS)
    deadline = time.monotonic() + most
    busy, total = _busy_jiffies()
    calm = 0
    while calm < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        started = time.perf_counter()
        _settle_probe.set_link(1, up=True)  # lo, already up: only the lock is measured
        answered = time.perf_counter() - started
        now_busy, now_total = _busy_jiffies()
        idle = now_total > total and (now_busy - busy) / (now_total - total) < 0.05
        busy, total = now_busy, now_total
        calm = calm + 1 if idle and answered < 0.002 else 0


def _settle_done() -> None:
    global _settle_probe
    from cni_lab.kernel import netns

    if _settle_probe is not None:
        _settle_probe.close()
        _settle_probe = None
    netns.remove(SETTLE_NS)


def timed(argv: list[str]) -> tuple[float, int, str]:
    """Run a command as a whole process, on a quiet machine: (seconds, its peak RSS in KB, its
    stdout). The CPU time it used goes to `timed.user_s` and `timed.kernel_s` (system time: its
    own syscalls, namespaces, links, packets: the kernel's share, the floor no tool gets under)."""
    settle()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        timed.kernel_s = usage.ru_stime  # type: ignore[attr-defined]
        timed.user_s = usage.ru_utime  # type: ignore[attr-defined]
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.read().strip()[-500:]}")
        return seconds, int(usage.ru_maxrss), out.read()


RAISED_CAP = 65536


def cni_lab(pods: int, workdir: Path) -> dict[str, Any]:
    nodes = max(1, pods // PODS_PER_NODE)
    name = f"bench{pods}"
    scenario = workdir / f"{name}.yaml"
    scenario.write_text(f"name: {name}\ndataplane: host-gw\nnodes:\n  - {{name: node, count: {nodes}, pods: {PODS_PER_NODE}}}\n")
    cli = [sys.executable, "-m", "cni_lab"]
    up_s, up_rss, _ = timed([*cli, "up", str(scenario)])
    up_kernel_s, up_user_s = timed.kernel_s, timed.user_s  # type: ignore[attr-defined]
    # the default: check keeps its neighbour budget; the table sampled from outside, every 20 ms
    visible = neighbours.ARP.cap() is not None  # not in a container's own network namespace
    limits = neighbours.read() if visible else None
    with neighbours.PeakSampler(neighbours.ARP) as sampler:
        check_s, check_rss, out = timed([*cli, "check", name, "--json"])
    if visible and neighbours.read() != limits:
        raise SystemExit("check changed the host's neighbour limits")
    result = json.loads(out)
    budget = result["neighbours"]
    capped_s, capped_rss, capped_out = check_s, check_rss, out
    if visible:  # the same matrix with the table's cap raised out of the way (what --neighbour-cap is for)
        capped_s, capped_rss, capped_out = timed([*cli, "check", name, "--json", "--neighbour-cap", str(RAISED_CAP)])
    down_s, down_rss, _ = timed([*cli, "down", name])
    down_kernel_s, down_user_s = timed.kernel_s, timed.user_s  # type: ignore[attr-defined]
    # the kernel frees removed namespaces after `down` has returned, in its own worker: how long
    # until it is quiet again (the CPUs idle, the rtnl lock free)
    started = time.perf_counter()
    settle(60)
    freed_s = time.perf_counter() - started
    capped = json.loads(capped_out)
    pairs = sum(r["total"] for r in result["rules"])
    ok = min(sum(r["ok"] for r in result["rules"]), sum(r["ok"] for r in capped["rules"]))
    row = {
        "tool": "cni-lab", "pods": nodes * PODS_PER_NODE, "nodes": nodes, "up_s": up_s, "check_s": check_s,
        # the kernel's share of the build (system CPU time of `up`, start-up included)
        "up_kernel_s": up_kernel_s, "up_user_s": up_user_s,
        "down_s": down_s, "down_kernel_s": down_kernel_s, "down_user_s": down_user_s, "kernel_frees_after_down_s": freed_s, "pairs": pairs, "pairs_ok": ok, "pairs_per_s": pairs / check_s,
        # the matrix itself: opening the probe sockets, forking the workers, probing every pair
        "probe_s": result["durationSeconds"], "matrix_pairs_per_s": pairs / result["durationSeconds"],
        "peak_rss_mb": max(up_rss, check_rss, capped_rss, down_rss) / 1024,
        "passed": result["passed"] and capped["passed"],
        # the neighbour budget: batches, the table's peak (sampled here) against its bound
        "check_capped_s": capped_s, "budget_vs_capped": check_s / capped_s, "batches": budget["batches"],
        "table_cap": budget["cap"], "table_at_start": budget["atStart"], "table_peak": sampler.peak,
        "table_bound": max(budget["atStart"] + 512, budget["cap"] // 2),
    }
    if not visible:  # nothing to compare with: the cap cannot be raised from here
        del row["check_capped_s"], row["budget_vs_capped"]
    return row


CONFORMANCE_LAB = "bconform"
POLICY_ASSISTANT_PER_MIN = 112 / (3 * 60 + 15)  # kubernetes-sigs/network-policy-api #348: 112 cases in 3 h 15 min
CONFORMANCE_GOAL_PER_MIN = 100.0


def conformance(cases: int) -> dict[str, Any]:
    """Generated NetworkPolicy cases a minute on the shipped netpol model: `cni-lab conformance`
    as a whole command (its start-up and the lab's own policies put back included), and the
    per-case phases it reports (apply: render and load on 3 nodes, empty conntrack; probe;
    reference)."""
    cli = [sys.executable, "-m", "cni_lab"]
    timed([*cli, "up", "netpol", "--name", CONFORMANCE_LAB])
    try:
        seconds, rss, out = timed([*cli, "conformance", CONFORMANCE_LAB, "--cases", str(cases), "--seed", "0", "--json"])
    finally:
        subprocess.run([*cli, "down", CONFORMANCE_LAB], check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out)
    return {"cases": cases, "seconds": seconds, "per_min": 60 * cases / seconds,
            "inside_per_min": result["casesPerMinute"], "per_case_s": result["perCaseSeconds"],
            "reprobed_cells": result["reprobedCells"], "cells": result["cells"], "passed": result["passed"],
            "cases_differing": result["casesDiffering"], "peak_rss_mb": rss / 1024}


def shell_script_build(pods: int) -> tuple[str, list[tuple[str, str]], list[str]]:
    """A bash script building the same host-gw lab by hand; also the endpoints (netns, ip)."""
    nodes = max(1, pods // PODS_PER_NODE)
    u = f"{SHELL_LAB}.u"
    lines = ["set -e", f"ip netns add {u}", f"ip -n {u} link add br0 type bridge", f"ip -n {u} link set br0 up"]
    endpoints: list[tuple[str, str]] = []
    namespaces = [u]
    for n in range(nodes):
        ns, ip = f"{SHELL_LAB}.n{n}", f"192.168.1.{n + 2}"
        namespaces.append(ns)
        lines += [f"ip netns add {ns}", f"ip -n {ns} link set lo up",
                  f"ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1",
                  f"ip -n {ns} link add eth0 type veth peer name n{n} netns {u}",
                  f"ip -n {u} link set n{n} master br0 up", f"ip -n {ns} addr add {ip}/24 dev eth0",
                  f"ip -n {ns} link set eth0 up", f"ip -n {ns} link add cni0 type bridge",
                  f"ip -n {ns} addr add 10.244.{n}.1/24 dev cni0", f"ip -n {ns} link set cni0 up"]
        endpoints.append((ns, ip))
        for p in range(PODS_PER_NODE):
            pns, pip = f"{SHELL_LAB}.n{n}.p{p}", f"10.244.{n}.{p + 2}"
            namespaces.append(pns)
            lines += [f"ip netns add {pns}", f"ip -n {pns} link set lo up",
                      f"ip -n {pns} link add eth0 type veth peer name v{p} netns {ns}",
                      f"ip -n {ns} link set v{p} master cni0 up", f"ip -n {pns} addr add {pip}/24 dev eth0",
                      f"ip -n {pns} link set eth0 up", f"ip -n {pns} route add default via 10.244.{n}.1"]
            endpoints.append((pns, pip))
    for n in range(nodes):
        for m in range(nodes):
            if n != m:
                lines.append(f"ip -n {SHELL_LAB}.n{n} route add 10.244.{m}.0/24 via 192.168.1.{m + 2}")
    return "\n".join(lines) + "\n", endpoints, namespaces


def shell_baseline(pods: int, sample: int) -> dict[str, Any]:
    script, endpoints, namespaces = shell_script_build(pods)
    try:
        build_s, _, _ = timed(["bash", "-c", script])
        all_pairs = [(a, b) for a in endpoints for b in endpoints if a != b]
        rng = random.Random(7)
        chosen = rng.sample(all_pairs, min(sample, len(all_pairs)))
        settle()
        started = time.perf_counter()
        ok = 0
        for (src, _), (_, dst_ip) in chosen:
            ok += subprocess.run(["ip", "netns", "exec", src, "ping", "-c1", "-W1", dst_ip],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        per_pair = (time.perf_counter() - started) / len(chosen)
    finally:
        settle()
        started = time.perf_counter()
        for ns in reversed(namespaces):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        down_s = time.perf_counter() - started
    return {
        "tool": "shell (ip + ping)", "pods": pods, "up_s": build_s, "down_s": down_s, "pairs": len(all_pairs),
        "sampled_pairs": len(chosen), "sampled_ok": ok, "check_s": per_pair * len(all_pairs),
        "pairs_per_s": 1 / per_pair, "extrapolated": True,
        "note": f"matrix timed on {len(chosen)} random pairs of {len(all_pairs)} and extrapolated",
    }


MININET_PROGRAM = """
import json, sys, time
from mininet.net import Mininet
from mininet.topo import SingleSwitchTopo
from mininet.nodelib import LinuxBridge
from mininet.log import setLogLevel
setLogLevel('error')
n = int(sys.argv[1])
t = time.time()
net = Mininet(topo=SingleSwitchTopo(n), switch=LinuxBridge, controller=None)
net.start()
build = time.time() - t
t = time.time()
loss = net.pingAll(timeout=1)
ping = time.time() - t
t = time.time()
net.stop()
print(json.dumps({"build": build, "ping": ping, "loss": loss, "stop": time.time() - t}))
"""


def mininet(hosts: int) -> dict[str, Any]:
    python = "/usr/bin/python3"
    why = None
    if not shutil.which("mn"):
        why = "Mininet is not installed (sudo apt-get install mininet bridge-utils)"
    elif subprocess.run([python, "-c", "import mininet.nodelib"], capture_output=True).returncode != 0:
        why = "Debian's python3 cannot import mininet"
    elif not shutil.which("brctl"):
        why = "Mininet's Linux bridge needs brctl (sudo apt-get install bridge-utils)"
    elif neighbours.ARP.cap() is None:
        why = "its pingAll needs a raised neighbour cap, and the limits are not visible here (a container)"
    if why:
        return {"tool": "Mininet", "pods": hosts, "skipped": why}
    subprocess.run(["ip", "netns", "add", MININET_NS], check=True)
    # pingAll of n hosts on one L2 segment needs n*(n-1) ARP entries: with the host's default
    # neighbour cap it spends most of its time in 1 s timeouts. Give it the same explicit,
    # restored cap cni-lab's check gets, so the comparison is of the tools, not of the cap.
    folder = Path(tempfile.mkdtemp(prefix="cnilab-bench-"))
    neighbours.raise_cap(folder, max(1024, 4 * hosts * hosts))
    try:
        settle()
        done = subprocess.run(["ip", "netns", "exec", MININET_NS, python, "-c", MININET_PROGRAM, str(hosts)],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            return {"tool": "Mininet", "pods": hosts, "skipped": f"Mininet failed: {done.stderr.strip()[-300:]}"}
        r = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        # Not `mn -c`: its cleanup deletes /tmp/*.log and kills by broad patterns on the host.
        # net.stop() ends Mininet's hosts; only if Mininet died first are its shells left over.
        _kill_mininet_hosts()
        subprocess.run(["ip", "netns", "del", MININET_NS])
        neighbours.restore(folder)
        shutil.rmtree(folder, ignore_errors=True)
    pairs = hosts * (hosts - 1)
    return {"tool": "Mininet (lxbr, pingAll)", "pods": hosts, "up_s": r["build"], "check_s": r["ping"],
            "down_s": r["stop"], "pairs": pairs, "pairs_per_s": pairs / r["ping"], "loss_pct": r["loss"]}


def _kill_mininet_hosts() -> None:
    """Mininet's host shells (`bash … mininet:h1`) left by a Mininet that died, and nothing else."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.startswith(b"mininet:h") for part in cmd) and cmd[0].endswith(b"bash"):
            try:
                os.kill(int(entry), 9)
            except OSError:
                pass


def build_pairs(pods: int, workdir: Path, rounds: int = 5) -> dict[str, Any]:
    """The shell script's build and cni-lab's `up` of the same lab, in turn, `rounds` times (each
    torn down before the next): one build of each is a single sample of a noisy machine (the
    script's took 1.3 to 1.7 s between runs here); the median of the paired ratios is not."""
    import statistics

    script, _, namespaces = shell_script_build(pods)
    nodes = max(1, pods // PODS_PER_NODE)
    scenario = workdir / "pairs.yaml"
    scenario.write_text(f"name: bpairs\ndataplane: host-gw\nnodes:\n  - {{name: node, count: {nodes}, pods: {PODS_PER_NODE}}}\n")
    cli = [sys.executable, "-m", "cni_lab"]
    shell_s, ours_s = [], []
    for _ in range(rounds):
        try:
            shell_s.append(timed(["bash", "-c", script])[0])
        finally:
            for ns in reversed(namespaces):
                subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        try:
            ours_s.append(timed([*cli, "up", str(scenario)])[0])
        finally:
            subprocess.run([*cli, "down", "bpairs"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"pods": pods, "rounds": rounds, "shell_s": shell_s, "cni_lab_s": ours_s,
            "ratio_median": statistics.median(a / b for a, b in zip(shell_s, ours_s))}


def rtnl_serialization(pairs: int = 100) -> dict[str, float]:
    """Does the build's kernel work spread over the cores? 2×`pairs` veth pairs (peer in another
    namespace, up), encoded beforehand, sent from one thread, then from two threads at once."""
    import socket
    import struct
    import threading

    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    from cni_lab.kernel import netns
    from cni_lab.kernel.rtnl import CREATE, RTM_NEWLINK

    def messages(prefix: str, peer_fd: int) -> list[bytes]:
        out = []
        for i in range(pairs):
            peer = {"attrs": [("IFLA_IFNAME", f"p{prefix}{i}"), ("IFLA_NET_NS_FD", peer_fd)]}
            m = ifinfmsg()
            m["attrs"] = [("IFLA_IFNAME", f"{prefix}{i}"), ("IFLA_LINKINFO", {"attrs": [
                ("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]})]
            m["flags"] = m["change"] = 1
            m["header"].update({"type": RTM_NEWLINK, "flags": CREATE, "sequence_number": i + 1})
            m.encode()
            out.append(bytes(m.data))
        return out

    def send(sock: socket.socket, batch: list[bytes]) -> None:
        for data in batch:
            sock.send(data)
            reply = sock.recv(65536)
            if struct.unpack_from("=i", reply, 16)[0]:
                raise SystemExit("veth creation failed in the rtnl probe")

    seconds = {}
    for mode in ("one thread", "two threads"):
        spaces = [f"cnilab-brtnl.{x}" for x in "abcd"]
        fds: list[int] = []
        socks: list[socket.socket] = []
        try:
            for ns in spaces:
                netns.create(ns)
            fds = [os.open(netns.netns_path(ns), os.O_RDONLY) for ns in spaces]
            for ns in spaces[::2]:
                sock = netns.in_netns(ns, netns.route_socket)
                sock.bind((0, 0))
                socks.append(sock)
            work = [(socks[0], messages("a", fds[1])), (socks[1], messages("b", fds[3]))]
            settle()
            started = time.perf_counter()
            if mode == "one thread":
                for sock, batch in work:
                    send(sock, batch)
            else:
                threads = [threading.Thread(target=send, args=w) for w in work]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            seconds[mode] = time.perf_counter() - started
        finally:
            for sock in socks:
                sock.close()
            for fd in fds:
                os.close(fd)
            for ns in spaces:
                netns.remove(ns)
    return seconds


def delete_encoding(count: int = 10_000) -> dict[str, float]:
    """Microseconds to encode one RTM_DELNEIGH (check sends one per entry a batch made): pyroute2
    each time, against pyroute2's bytes encoded once with the entry's fields filled in."""
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    addresses = [socket.inet_aton(f"10.244.{i // 250}.{i % 250 + 2}") for i in range(count)]
    started = time.perf_counter()
    for seq, dst in enumerate(addresses):
        msg = ndmsg()
        msg["family"], msg["ifindex"] = socket.AF_INET, 5
        msg["attrs"] = [("NDA_DST", socket.inet_ntoa(dst))]
        msg["header"]["type"], msg["header"]["flags"] = neighbours.RTM_DELNEIGH, 5
        msg["header"]["sequence_number"] = seq
        msg.encode()
    each = (time.perf_counter() - started) / count
    with neighbours.Flusher(neighbours.ARP, []) as flusher:
        started = time.perf_counter()
        for seq, dst in enumerate(addresses):
            flusher.delete_request(5, dst, seq)
        once = (time.perf_counter() - started) / count
    return {"pyroute2 each time": each * 1e6, "encoded once": once * 1e6}


def render(rows: list[dict[str, Any]], ratios: dict[str, float]) -> str:
    head = (f"{'tool':<26}{'pods':>6}{'up s':>9}{'check s':>10}{'probe s':>9}{'pairs':>10}{'pairs/s':>11}"
            f"{'down s':>8}{'RSS MB':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['tool']:<26}{r['pods']:>6}   skipped: {r['skipped']}")
            continue
        check = f"{r['check_s']:.2f}" + ("*" if r.get("extrapolated") else "")
        probe = f"{r['probe_s']:.2f}" if "probe_s" in r else "-"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        lines.append(f"{r['tool']:<26}{r['pods']:>6}{r['up_s']:>9.2f}{check:>10}{probe:>9}{r['pairs']:>10}"
                     f"{r.get('matrix_pairs_per_s', r['pairs_per_s']):>11.0f}{r.get('down_s', 0):>8.2f}{rss:>8}")
    if any(r.get("extrapolated") for r in rows):
        lines.append("* extrapolated from a random sample of pairs")
    lines.append("the neighbour budget (check with no flag) against `check --neighbour-cap "
                 f"{RAISED_CAP}`, and the shared ARP table's peak (sampled every 20 ms) against its bound:")
    for r in rows:
        if "budget_vs_capped" in r:
            within = "within" if r["table_peak"] <= r["table_bound"] else "OVER"
            lines.append(f"  {r['pods']:>5} pods: {r['check_s']:.2f} s in {r['batches']} batches vs {r['check_capped_s']:.2f} s "
                         f"= {r['budget_vs_capped']:.2f}x; peak {r['table_peak']} entries, {within} the bound "
                         f"{r['table_bound']} (cap {r['table_cap']}, {r['table_at_start']} at start)")
    lines.append("cni-lab's `up` and `down` as whole processes: wall, user and system CPU seconds (system: the "
                 "kernel's share, the floor); wall/sys is the distance to it:")
    for r in rows:
        if "up_kernel_s" in r:
            lines.append(f"  {r['pods']:>5} pods  up {r['up_s']:.2f} s = user {r['up_user_s']:.2f} + sys "
                         f"{r['up_kernel_s']:.2f} (wall/sys {r['up_s'] / r['up_kernel_s']:.2f})   down {r['down_s']:.2f} s "
                         f"= user {r['down_user_s']:.2f} + sys {r['down_kernel_s']:.2f} "
                         f"(wall/sys {r['down_s'] / max(r['down_kernel_s'], 1e-3):.2f}); the kernel, freeing "
                         f"them after, quiet {r['kernel_frees_after_down_s']:.2f} s later (0.3 s of it to see so)")
    lines.append("up, check, down: whole commands (a Python start-up, ~0.15 s with imports, included); "
                 "probe: the matrix inside check; pairs/s: during the matrix (the shell's: per ping)")
    lines.append("")
    lines += [f"{k}: {v:.2f}x" for k, v in ratios.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds namespaces: run it as root (sudo)")
    sizes, baseline_pods, sample = ([20, 40], 20, 40) if args.quick else ([100, 500, 1000], 100, 300)
    # cni-lab as installed: its bytecode compiled (setup.sh does it; so does pip for a package), so
    # no run pays for compiling sources, even where PYTHONDONTWRITEBYTECODE is set
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "cni_lab")], check=True, stdout=subprocess.DEVNULL)
    # and its netlink templates stored, as after its first `up` (kernel/templates.py): one small lab
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.yaml"
        warm.write_text("name: bwarm\ndataplane: host-gw\nnodes:\n  - {name: node, count: 2, pods: 1}\n")
        for command in (["up", str(warm)], ["down", "bwarm"]):
            subprocess.run([sys.executable, "-m", "cni_lab", *command], check=True, stdout=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    try:
        serialization, pairs = measure(rows, sizes, baseline_pods, sample)
        cases = 20 if args.quick else 300
        print(f"conformance, {cases} generated cases on the netpol model …", file=sys.stderr)
        generated = conformance(cases)
    finally:
        _settle_done()
    report(rows, serialization, measure_encoding(), pairs, baseline_pods, args.quick, Path(args.out), generated)


def measure(rows: list[dict[str, Any]], sizes: list[int], baseline_pods: int,
            sample: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Every tool, one after the other on a quiet kernel; the rows go to `rows` as they come."""
    with tempfile.TemporaryDirectory() as tmp:
        for pods in sizes:
            print(f"cni-lab, {pods} pods …", file=sys.stderr)
            rows.append(cni_lab(pods, Path(tmp)))
    print(f"shell baseline, {baseline_pods} pods …", file=sys.stderr)
    shell = shell_baseline(baseline_pods, sample)
    rows.append(shell)
    print(f"Mininet, {baseline_pods} hosts …", file=sys.stderr)
    mn = mininet(baseline_pods)
    rows.append(mn)
    print(f"builds in turn, shell and cni-lab, {baseline_pods} pods …", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = build_pairs(baseline_pods, Path(tmp), 3 if baseline_pods < 100 else 5)
    print("rtnl: one thread against two …", file=sys.stderr)
    return rtnl_serialization(), pairs


def measure_encoding() -> dict[str, float]:
    return delete_encoding()


def report(rows: list[dict[str, Any]], serialization: dict[str, float], encoding: dict[str, float],
           pairs: dict[str, Any], baseline_pods: int, quick: bool, out: Path, generated: dict[str, Any]) -> None:
    shell = next(r for r in rows if r["tool"].startswith("shell"))
    mn = next(r for r in rows if r["tool"].startswith("Mininet"))
    ours = next(r for r in rows if r["tool"] == "cni-lab" and r["pods"] == baseline_pods)
    ratios = {
        f"build, cni-lab vs shell at {baseline_pods} pods (whole `up` vs whole script, one of each)": shell["up_s"] / ours["up_s"],
        f"matrix, cni-lab vs shell at {baseline_pods} pods (pairs/s while probing vs per `ping`)":
            ours["matrix_pairs_per_s"] / shell["pairs_per_s"],
        f"check, cni-lab vs shell at {baseline_pods} pods (whole `check --json` vs the shell's matrix)":
            shell["check_s"] / ours["check_s"],
    }
    largest_up = max((r for r in rows if "up_kernel_s" in r), key=lambda r: r["pods"])
    ratios[f"up at {largest_up['pods']} pods, wall / its own system CPU time (goal <= 1.25)"] = \
        largest_up["up_s"] / largest_up["up_kernel_s"]
    ratios[f"down at {largest_up['pods']} pods, wall / its own system CPU time"] = \
        largest_up["down_s"] / max(largest_up["down_kernel_s"], 1e-3)
    if pairs:
        ratios[f"build, cni-lab vs shell at {baseline_pods} pods, median of {pairs['rounds']} builds of each in turn "
               "(goal >= 5)"] = pairs["ratio_median"]
    compared = [r for r in rows if "budget_vs_capped" in r]
    if compared:
        largest = max(compared, key=lambda r: r["pods"])
        ratios[f"check at {largest['pods']} pods, neighbour budget vs --neighbour-cap {RAISED_CAP} (goal <= 1.5)"] = \
            largest["budget_vs_capped"]
    if "skipped" not in mn:
        ratios[f"build, cni-lab vs Mininet at {baseline_pods}"] = mn["up_s"] / ours["up_s"]
        ratios[f"matrix, cni-lab vs Mininet pingAll at {baseline_pods} (pairs/s)"] = (
            ours["matrix_pairs_per_s"] / mn["pairs_per_s"])
    ratios["generated conformance cases a minute, cni-lab vs policy-assistant's reported run (112 cases in 3 h 15 min, "
           "kubernetes-sigs/network-policy-api #348)"] = generated["per_min"] / POLICY_ASSISTANT_PER_MIN
    ratios[f"generated conformance cases a minute vs the goal of {CONFORMANCE_GOAL_PER_MIN:.0f} on 2 cores "
           "(goal >= 1)"] = generated["per_min"] / CONFORMANCE_GOAL_PER_MIN
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    document = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "quick": quick, "rows": rows, "ratios": ratios,
                "rtnl_200_veth_pairs_s": serialization, "neighbour_delete_us": encoding, "build_pairs": pairs,
                "conformance": generated}
    out.write_text(json.dumps(document, indent=2))
    print(machine)
    print(render(rows, ratios))
    print("200 veth pairs (kernel work only, encoded beforehand): "
          + ", ".join(f"{mode} {s * 1000:.0f} ms" for mode, s in serialization.items())
          + ": a second thread gains little, the kernel makes link changes one at a time (rtnl lock)")
    print("one RTM_DELNEIGH (check deletes its entries between batches): "
          + ", ".join(f"{mode} {us:.1f} µs" for mode, us in encoding.items())
          + f" = {encoding['pyroute2 each time'] / encoding['encoded once']:.1f}x")
    print(conformance_line(generated))
    failed = [r for r in rows if r["tool"] == "cni-lab" and (not r["passed"] or r["pairs_ok"] != r["pairs"])]
    over = [r["pods"] for r in rows if r.get("table_peak", 0) > r.get("table_bound", 1 << 30)]
    if over:
        raise SystemExit(f"check filled the host's neighbour table past its bound at {over} pods")
    if failed:
        raise SystemExit(f"cni-lab lost pairs at {[r['pods'] for r in failed]} pods")
    if not generated["passed"]:
        raise SystemExit(f"conformance: {generated['cases_differing']} of {generated['cases']} generated cases differ "
                         "from the reference on the netpol model")


def conformance_line(generated: dict[str, Any]) -> str:
    phases = generated["per_case_s"]
    return (f"generated conformance cases per minute on the shipped netpol model: {generated['per_min']:.0f} "
            f"({generated['cases']} cases in {generated['seconds']:.1f} s, the whole command; "
            f"{generated['inside_per_min']:.0f} inside it); per case: apply {phases['apply'] * 1000:.0f} ms, "
            f"probe {phases['probe'] * 1000:.0f} ms, reference {phases['judge'] * 1000:.0f} ms; "
            f"{generated['reprobed_cells']} cells probed again; policy-assistant's reported run "
            f"{POLICY_ASSISTANT_PER_MIN:.2f}/min (112 cases in 3 h 15 min, kubernetes-sigs/network-policy-api #348); "
            f"goal {CONFORMANCE_GOAL_PER_MIN:.0f}/min")


if __name__ == "__main__":
    main()
