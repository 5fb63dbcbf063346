"""Pods of several Kubernetes namespaces in one lab: built, probed and named on the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Callable

import pytest

from cni_lab import target_netns
from cni_lab.cluster import Lab
from cni_lab.probe import matrix

MakeLab = Callable[..., Lab]
CLI = [sys.executable, "-m", "cni_lab"]


def document(dataplane: str) -> dict[str, Any]:
    return {"dataplane": dataplane, "namespaces": {"x": {"labels": {"team": "red"}}, "y": {}},
            "nodes": [{"name": "node1", "pods": ["web", {"name": "a", "namespace": "x", "labels": {"pod": "a"}},
                                                 {"name": "a", "namespace": "y", "labels": {"pod": "a"}}]},
                      {"name": "node2", "pods": [{"name": "b", "namespace": "x", "labels": {"pod": "b"}}]}]}


@pytest.mark.parametrize("dataplane", ["host-gw", "cni", "bgp"])
def test_pods_of_several_namespaces_pass_the_matrix(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(document(dataplane))
    result = matrix.run(lab)
    assert result.passed and {e.id for e in result.endpoints} >= {"node1/x/a", "node1/y/a", "node2/x/b", "node1/web"}
    # x/a and y/a on one node: different network namespaces, different addresses
    assert target_netns.target_netns(lab, "node1/x/a") != target_netns.target_netns(lab, "node1/y/a")
    assert target_netns.target_netns(lab, "x/b") == target_netns.target_netns(lab, "node2/x/b")
    done = subprocess.run([*CLI, "exec", lab.name, "x/b", "--", "ip", "-4", "-br", "addr", "show", "eth0"],
                          capture_output=True, text=True)
    b = next(p for p in lab.pods if p.id == "node2/x/b")
    assert done.returncode == 0 and f"{b.ip}/" in done.stdout
    status = json.loads(subprocess.run([*CLI, "status", lab.name, "--json"], capture_output=True, text=True).stdout)
    pods = {p["id"]: p for n in status["nodes"] for p in n["pods"]}
    assert pods["node1/x/a"]["namespace"] == "x" and pods["node1/x/a"]["name"] == "a"
    assert pods["node1/x/a"]["labels"] == {"pod": "a"} and status["namespaces"]["x"]["team"] == "red"


def test_the_e2e_suites_model_builds(tmp_path: Any) -> None:
    from cni_lab import catalog, lifecycle

    lab = catalog.load("netpol", "tnetpol")
    lifecycle.up(lab)
    try:
        result = matrix.run(lab)
        assert result.passed and len(result) == 12 * 11  # 9 pods and 3 nodes
    finally:
        lifecycle.down("tnetpol")
