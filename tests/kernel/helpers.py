"""Helpers for kernel tests: run commands in lab namespaces, snapshot the root namespace."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from cni_lab import target_netns
from cni_lab.cluster import Lab


def run_in(netns: str, *command: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, *command], capture_output=True, text=True, check=check)


def pings(netns: str, ip: object) -> bool:
    return run_in(netns, "ping", "-c1", "-W1", str(ip)).returncode == 0


def root_snapshot() -> dict[str, Any]:
    """The root namespace's links, addresses, routes, rules and net.* sysctls."""

    def ip_json(*args: str) -> Any:
        raw = json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout or "[]")
        for entry in raw:  # counters and timers change by themselves
            for volatile in ("stats64", "stats", "operstate", "flags", "linkmode", "preferred_life_time", "valid_life_time"):
                entry.pop(volatile, None)
            for info in entry.get("addr_info", []):
                info.pop("preferred_life_time", None)
                info.pop("valid_life_time", None)
        return raw

    sysctls = {}
    for path in sorted(Path("/proc/sys/net/ipv4").rglob("*")) + sorted(Path("/proc/sys/net/core").rglob("*")):
        if path.is_file() and os.access(path, os.R_OK) and "neigh" not in path.parts[-2:]:
            try:
                sysctls[str(path)] = path.read_text()
            except OSError:
                pass
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return {
        "nftables": nft,
        "links": ip_json("link"),
        "addrs": ip_json("addr"),
        "routes": ip_json("route", "show", "table", "all"),
        "rules": ip_json("rule"),
        "sysctls": sysctls,
    }


def two_nodes(dataplane: str = "host-gw", **extra: Any) -> dict[str, Any]:
    return {
        "dataplane": dataplane,
        "nodes": [{"name": "node1", "pods": ["web", "db"]}, {"name": "node2", "pods": ["api"]}],
        **extra,
    }


def scenario_document(path: str) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def ns_of(lab: Lab, target: str) -> str:
    return target_netns.target_netns(lab, target)


def node_addresses(lab: Lab, node: str) -> set[str]:
    """Every address a node's namespace holds (`ip -o addr`): what its kernel may pick as a source."""
    from cni_lab import names

    shown = run_in(names.node_netns(lab.name, node), "ip", "-o", "addr", "show", check=True).stdout
    return {line.split()[3].split("/")[0] for line in shown.splitlines()}


def seen_as_sender(lab: Lab, results: Any) -> bool:
    """The receiver saw each sender as itself: a pod's own address; a node's, one of its own (a
    node sends unbound, its kernel picks the source: cni0's, flannel.1's, cilium_host's ...)."""
    owned: dict[str, set[str]] = {}
    for r in results:
        if r.pair.src.kind == "node":
            if r.pair.src.node not in owned:
                owned[r.pair.src.node] = node_addresses(lab, r.pair.src.node)
            if r.observed not in owned[r.pair.src.node]:
                return False
        elif r.observed != str(r.pair.src.ip):
            return False
    return True

