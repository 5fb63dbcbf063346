"""Data planes against each other on one machine, in one run: what the eBPF datapath's bypass of
the node's stack is worth (or costs) against flannel's host-gw and vxlan.

    sudo .venv/bin/python bench/dataplanes.py            # 3 rounds, 5 s of iperf3 each
    sudo .venv/bin/python bench/dataplanes.py --quick    # 1 round, 1 s (the tests run this)

Per data plane (host-gw, vxlan, ebpf in tunnel mode, ebpf native), a lab of two nodes:
1. throughput: iperf3, one TCP stream from a pod on node1 to a pod on node2;
2. request/response latency: one TCP connection between the same pods, a 1-byte request and
   a 1-byte answer, again and again (netperf's TCP_RR); the median and 99th percentile;
3. the matrix: `check` of a 3-node lab of 30 pods per node, its pairs per second;
4. Service request/response latency (host-gw, with kube-proxy's nftables mode, and both ebpf
   modes, with Cilium's BPF load balancer): a lab with a ClusterIP Service whose one endpoint is on
   node2, the same loop as 2. from a pod on node1 to ClusterIP:80 and, in the same lab, straight to
   the endpoint's pod IP:8080; the difference of the two medians is what the Service costs.
The data planes take turns within each round (so a slow minute of the machine hits them all)
and the medians over the rounds are compared: ebpf against host-gw and vxlan, as ratios (the
Service figures against host-gw only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cni_lab"]
PLANES = {  # name -> scenario lines
    "host-gw": "dataplane: host-gw\n",
    "vxlan": "dataplane: vxlan\n",
    "ebpf-tunnel": "dataplane: ebpf\nebpf: {routing: tunnel}\n",
    "ebpf-native": "dataplane: ebpf\nebpf: {routing: native}\n",
}
PORT = 5201
RR_PORT = 5202
# Services: kube-proxy's nftables mode (host-gw stands for the kube-proxy planes), Cilium's BPF
# load balancer in both routing modes
SERVICE_PLANES = ("host-gw", "ebpf-tunnel", "ebpf-native")
SERVICE_PORT, TARGET_PORT = 80, 8080
SERVICE_NOTE = (f"svc_*: a pod on node1 to a ClusterIP:{SERVICE_PORT} whose one endpoint is on node2; direct_*: the same "
                f"pods and lab, to the endpoint's pod IP:{TARGET_PORT}; svc_overhead_us: svc_p50_us - direct_p50_us per "
                "lab, its median over the rounds")

RR_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); print("ready", flush=True)
for _ in range(int(sys.argv[2])):  # the clients, one after the other
    c, peer = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(1)):
        c.sendall(b)
    c.close()
"""
RR_CLIENT = """
import socket, sys, time, json
n = int(sys.argv[2]); c = socket.create_connection((sys.argv[1], int(sys.argv[3])), timeout=10)
c.settimeout(None)  # blocking again: the timeout is for the handshake only, the loop is as it was
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(n):
    t = time.perf_counter_ns(); c.sendall(b"x"); b = c.recv(1); times.append(time.perf_counter_ns() - t)
    if not b:
        sys.exit("the server closed the connection")
times.sort(); print(json.dumps({"p50_us": times[n // 2] / 1000, "p99_us": times[n * 99 // 100] / 1000}))
"""


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done


def up(name: str, plane: str, nodes: list[tuple[str, int]], workdir: Path) -> None:
    scenario = workdir / f"{name}.yaml"
    lines = "".join(f"  - {{name: {n}, pods: {p}}}\n" for n, p in nodes)
    scenario.write_text(f"name: {name}\n{PLANES[plane]}nodes:\n{lines}")
    sh(*CLI, "up", str(scenario))


def down(name: str) -> None:
    sh(*CLI, "down", name, check=False)


def pair_lab(plane: str, seconds: float, requests: int, workdir: Path) -> dict[str, float]:
    """Throughput and request/response latency between a pod on node1 and one on node2."""
    name = "bdp-" + plane.replace("ebpf-", "e")[:7]
    up(name, plane, [("node1", 1), ("node2", 1)], workdir)
    client, server = f"cnilab-{name}.node1.pod-1", f"cnilab-{name}.node2.pod-1"
    server_ip = "10.244.1.2"
    try:
        iperf = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", str(PORT)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        out = sh("ip", "netns", "exec", client, "iperf3", "-c", server_ip, "-p", str(PORT), "-t", str(seconds), "-J").stdout
        iperf.wait(timeout=10)
        gbps = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
        [latency] = request_response(server, RR_PORT, client, [(server_ip, RR_PORT)], requests)
    finally:
        down(name)
    return {"gbit_s": gbps, **latency}


def request_response(server: str, port: int, client: str, targets: list[tuple[str, int]],
                     requests: int) -> list[dict[str, float]]:
    """A server in namespace `server` listening on `port`; from namespace `client`, one TCP
    connection to each of `targets` (address, port) in turn, `requests` 1-byte exchanges on each:
    the median and 99th percentile of each, in the targets' order."""
    rr = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", RR_SERVER, str(port), str(len(targets))],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert rr.stdout is not None
        if rr.stdout.readline().strip() != "ready":
            raise SystemExit(f"the request/response server in {server} did not start (port {port} taken?)")
        out = [json.loads(sh("ip", "netns", "exec", client, sys.executable, "-c", RR_CLIENT, address, str(requests),
                             str(number)).stdout) for address, number in targets]
        rr.wait(timeout=10)
    finally:
        if rr.poll() is None:
            rr.kill()
            rr.wait()
    return out


def service_scenario(name: str, plane: str) -> str:
    """Two nodes: a client pod on node1, and on node2 the one endpoint of the ClusterIP Service
    `web` (port 80 to the pod's 8080). No cluster DNS: the benchmark measures the Service alone."""
    return (f"name: {name}\n{PLANES[plane]}dns: false\nnodes:\n"
            "  - {name: node1, pods: [client]}\n"
            "  - {name: node2, pods: [{name: web, labels: {app: web}}]}\n"
            "services:\n"
            f"  - {{name: web, selector: {{app: web}}, ports: [{{port: {SERVICE_PORT}, targetPort: {TARGET_PORT}}}]}}\n")


def service_targets(lab: dict[str, Any]) -> dict[str, str]:
    """From the lab's JSON (`up --json`): the client's and the endpoint's namespaces, the
    ClusterIP and the endpoint's pod IP."""
    pods = {p["id"]: p for node in lab["nodes"] for p in node["pods"]}
    client, web = pods["node1/client"], pods["node2/web"]
    [service] = [s for s in lab["services"] if s["name"] == "web"]
    if service["ports"][0]["endpoints"] != [f"{web['ip']}:{TARGET_PORT}"]:
        raise SystemExit(f"{lab['name']}: the Service's endpoints are {service['ports'][0]['endpoints']}, "
                         f"not node2/web's {web['ip']}:{TARGET_PORT}")
    return {"client": client["netns"], "server": web["netns"], "cluster_ip": service["clusterIP"], "pod_ip": web["ip"]}


def service_figures(via_service: dict[str, float], direct: dict[str, float]) -> dict[str, float]:
    """One lab's Service figures: the overhead is the Service's median less the direct one's
    (the same pods, the same lab, one after the other)."""
    return {"svc_p50_us": via_service["p50_us"], "svc_p99_us": via_service["p99_us"],
            "direct_p50_us": direct["p50_us"], "direct_p99_us": direct["p99_us"],
            "svc_overhead_us": via_service["p50_us"] - direct["p50_us"]}


def service_lab(plane: str, requests: int, workdir: Path, service_first: bool) -> dict[str, float]:
    """Request/response latency from a pod on node1 to a ClusterIP Service whose one endpoint is
    on node2, and in the same lab to that endpoint's pod IP: the difference is the Service's cost
    (kube-proxy's DNAT and conntrack in the node, or the BPF load balancer in the pod's program).
    `service_first`: which of the two goes first (the rounds take turns, so neither always warms
    the path for the other)."""
    name = "bds-" + plane.replace("ebpf-", "e")[:7]
    scenario = workdir / f"{name}.yaml"
    scenario.write_text(service_scenario(name, plane))
    done = sh(*CLI, "up", str(scenario), "--json")
    try:
        t = service_targets(json.loads(done.stdout))
        targets = {"service": (t["cluster_ip"], SERVICE_PORT), "direct": (t["pod_ip"], TARGET_PORT)}
        order = ["service", "direct"] if service_first else ["direct", "service"]
        measured = dict(zip(order, request_response(t["server"], TARGET_PORT, t["client"],
                                                    [targets[k] for k in order], requests)))
    finally:
        down(name)
    return service_figures(measured["service"], measured["direct"])


def matrix(plane: str, workdir: Path) -> float:
    """Pairs per second of `check` (the matrix itself) on 3 nodes of 30 pods."""
    name = "bdm-" + plane.replace("ebpf-", "e")[:7]
    up(name, plane, [("node1", 30), ("node2", 30), ("node3", 30)], workdir)
    try:
        result = json.loads(sh(*CLI, "check", name, "--json", check=False).stdout)
    finally:
        down(name)
    if not result["passed"]:
        raise SystemExit(f"{plane}: check failed")
    pairs = sum(r["total"] for r in result["rules"])
    return pairs / result["durationSeconds"]


def compare(medians: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """ebpf against host-gw and vxlan, as ratios of the medians; the Service figures where both
    planes have them (host-gw). A ratio of overheads is None when the base's is not above 0
    (within the noise, nothing to divide by)."""
    ratios: dict[str, dict[str, float | None]] = {}
    for base in ("host-gw", "vxlan"):
        for ebpf in ("ebpf-native", "ebpf-tunnel"):
            b, e = medians[base], medians[ebpf]
            r: dict[str, float | None] = {
                "throughput": e["gbit_s"] / b["gbit_s"],
                "latency p50 (lower is better)": e["p50_us"] / b["p50_us"],
                "matrix pairs/s": e["matrix_pairs_s"] / b["matrix_pairs_s"],
            }
            if "svc_p50_us" in b and "svc_p50_us" in e:
                r["service RR p50 (lower is better)"] = e["svc_p50_us"] / b["svc_p50_us"]
                r["service overhead (lower is better)"] = (
                    e["svc_overhead_us"] / b["svc_overhead_us"] if b["svc_overhead_us"] > 0 else None)
            ratios[f"{ebpf} vs {base}"] = r
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (the tests run this)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "dataplanes.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds namespaces: run it as root (sudo)")
    rounds, seconds, requests = (1, 1, 2000) if args.quick else (3, 5, 20000)
    samples: dict[str, list[dict[str, float]]] = {p: [] for p in PLANES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for plane in PLANES:
                print(f"round {r + 1}/{rounds}: {plane} …", file=sys.stderr)
                sample = pair_lab(plane, seconds, requests, Path(tmp))
                if plane in SERVICE_PLANES:
                    sample.update(service_lab(plane, requests, Path(tmp), service_first=r % 2 == 0))
                sample["matrix_pairs_s"] = matrix(plane, Path(tmp))
                samples[plane].append(sample)
    medians = {p: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for p, runs in samples.items()}
    ratios = compare(medians)
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    Path(args.out).write_text(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
                                          "rounds": rounds, "iperf3_seconds": seconds, "requests": requests,
                                          "service": SERVICE_NOTE, "medians": medians, "samples": samples,
                                          "ratios": ratios}, indent=2))
    print(machine)
    print(f"{'data plane':<12} {'TCP Gbit/s':>10} {'RR p50 µs':>10} {'RR p99 µs':>10} {'matrix pairs/s':>15}")
    for plane, m in medians.items():
        print(f"{plane:<12} {m['gbit_s']:>10.2f} {m['p50_us']:>10.1f} {m['p99_us']:>10.1f} {m['matrix_pairs_s']:>15.0f}")
    print(f"Service RR, pod on node1 to ClusterIP:{SERVICE_PORT} (endpoint on node2) and to the pod IP:{TARGET_PORT}, same lab:")
    print(f"{'data plane':<12} {'svc p50 µs':>10} {'svc p99 µs':>10} {'direct p50':>10} {'direct p99':>10} {'svc overhead µs':>15}")
    for plane, m in medians.items():
        if "svc_p50_us" in m:
            print(f"{plane:<12} {m['svc_p50_us']:>10.1f} {m['svc_p99_us']:>10.1f} {m['direct_p50_us']:>10.1f} "
                  f"{m['direct_p99_us']:>10.1f} {m['svc_overhead_us']:>15.1f}")
    for pair, figures in ratios.items():
        print(f"{pair}: " + ", ".join(f"{k} {v:.2f}x" if v is not None else f"{k} n/a (the base's is not above 0)"
                                      for k, v in figures.items()))


if __name__ == "__main__":
    main()
