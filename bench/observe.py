"""What watching costs: how many flows a second `cni-lab observe` reports without losing one,
held against the nft counters of the very rules that log them, in the same run.

    sudo .venv/bin/python bench/observe.py            # rates up to 40,000 flows/s, 3 s each
    sudo .venv/bin/python bench/observe.py --quick    # 2 rates, 1 s each (the tests run this)

A lab of two host-gw nodes, one pod each. `cni-lab observe --json --node node1 --protocol udp
--verdict FORWARDED` runs as a user would run it (its JSON lines counted as they come); a pod on
node1 sends UDP datagrams to the pod on node2 (a sink there reads them), paced at each rate in
turn, every datagram its own flow for the stateless first-packet rules (rulesets/observe.py).
Per rate: the datagrams the forward chain's UDP rule counted at node1 (its nft counter, read
before and after), the flows observe printed, and their ratio. The figure: the highest rate at
which observe printed every counted flow (the goal: at least 5,000 flows/s on two cores), and
what a second of the loop costs the observer in CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cni_lab"]
LAB = "bobs"
GOAL = 5000
SINK_PORT = 9000
SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22); print("ready", flush=True)
while True:
    s.recv(2048)
"""
SENDER = """
import socket, sys, time
address, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
total = int(rate * seconds); batch = max(1, int(rate / 1000)); start = time.perf_counter(); sent = 0
while sent < total:
    for _ in range(min(batch, total - sent)):
        s.sendto(b"x", (address, port)); sent += 1
    ahead = start + sent / rate - time.perf_counter()
    if ahead > 0:
        time.sleep(ahead)
print(sent, time.perf_counter() - start)
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done


def udp_counter(netns: str) -> int:
    """Packets the observe table's UDP rule in the forward chain has counted."""
    listing = json.loads(sh("ip", "netns", "exec", netns, "nft", "-j", "list", "chain", "inet", "cni-lab-observe",
                            "forward").stdout)
    for item in listing["nftables"]:
        rule = item.get("rule")
        if rule and any("udp" in json.dumps(e.get("match", {})) for e in rule["expr"]):
            return next(int(e["counter"]["packets"]) for e in rule["expr"] if "counter" in e)
    raise SystemExit(f"no UDP rule in {netns}'s cni-lab-observe forward chain")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_rate(rate: int, seconds: float) -> dict[str, Any]:
    node1, client = f"cnilab-{LAB}.node1", f"cnilab-{LAB}.node1.pod-1"
    observer = subprocess.Popen([*CLI, "observe", LAB, "--json", "--node", "node1", "--protocol", "udp",
                                 "--verdict", "FORWARDED"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = [0]

    def count() -> None:
        assert observer.stdout is not None
        for _ in observer.stdout:
            seen[0] += 1

    reader = threading.Thread(target=count, daemon=True)
    try:
        assert observer.stderr is not None
        line = observer.stderr.readline()
        if "observing" not in line:
            raise SystemExit(f"observe did not start: {line.strip()} {observer.stderr.read()[-500:]}")
        reader.start()
        before, cpu0 = udp_counter(node1), cpu_seconds(observer.pid)
        sent = sh("ip", "netns", "exec", client, sys.executable, "-c", SENDER, "10.244.1.2", str(SINK_PORT),
                  str(rate), str(seconds)).stdout.split()
        time.sleep(1.0)  # what is still in the sockets
        counted, cpu = udp_counter(node1) - before, cpu_seconds(observer.pid) - cpu0
    finally:
        observer.send_signal(2)
        try:
            observer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            observer.kill()
    reader.join(timeout=5)
    elapsed = float(sent[1])
    return {"rate": rate, "sent": int(sent[0]), "send_seconds": round(elapsed, 3), "counted": counted,
            "observed": seen[0], "observed_share": seen[0] / counted if counted else None,
            "flows_s": round(seen[0] / elapsed), "observer_cpu_s": round(cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two rates, 1 s each (the tests run this)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "observe.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds namespaces: run it as root (sudo)")
    rates, seconds = ([2500, GOAL], 1.0) if args.quick else ([2500, 5000, 10000, 20000, 40000], 3.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "bobs.yaml"
        scenario.write_text(f"name: {LAB}\ndataplane: host-gw\nnodes:\n  - {{name: node1, pods: 1}}\n"
                            "  - {name: node2, pods: 1}\n")
        sh(*CLI, "up", str(scenario))
        sink = subprocess.Popen(["ip", "netns", "exec", f"cnilab-{LAB}.node2.pod-1", sys.executable, "-c", SINK,
                                 str(SINK_PORT)], stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None
            sink.stdout.readline()
            for rate in rates:
                print(f"{rate} flows/s for {seconds:g} s …", file=sys.stderr)
                rows.append(one_rate(rate, seconds))
        finally:
            sink.kill()
            sink.wait()
            sh(*CLI, "down", LAB, check=False)
    lossless = [r["flows_s"] for r in rows if r["counted"] and r["observed"] == r["counted"]]
    best = max(lossless, default=0)
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    Path(args.out).write_text(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
                                          "goal_flows_s": GOAL, "lossless_flows_s": best, "rates": rows}, indent=2))
    print(machine)
    print(f"{'rate/s':>8} {'counted':>9} {'observed':>9} {'share':>7} {'flows/s':>8} {'observer CPU s':>15}")
    for r in rows:
        share = f"{r['observed_share']:.3f}" if r["observed_share"] is not None else "n/a"
        print(f"{r['rate']:>8} {r['counted']:>9} {r['observed']:>9} {share:>7} {r['flows_s']:>8} {r['observer_cpu_s']:>15}")
    print(f"observed without loss, against the rules' own counters: up to {best} flows/s "
          f"({best / GOAL:.2f}x the goal of {GOAL})")


if __name__ == "__main__":
    main()
