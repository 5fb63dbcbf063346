"""`service apply` and `service delete` on a running lab, against the real kernel, on host-gw
(kube-proxy's nftables table) and ebpf (the BPF Service maps): a second Service resolves by name
from the pods at once and `check` proves it; it takes the next free ClusterIP while the first
keeps its ClusterIP and NodePort; a changed selector moves the endpoints (a pod taken down by
`fault pod-down` stays out until `heal`); a deleted Service is NXDOMAIN and gone from every node's
table or maps; a bad file changes nothing. Nothing is rebuilt: the pods' namespaces stay the same."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from helpers import ns_of, run_in

from cni_lab import dns_records, lifecycle, names, state
from cni_lab.cluster import Lab
from cni_lab.dns_message import ResolvConf
from cni_lab.exercise.assertions import Assertion
from cni_lab.exercise.facts import Reader
from cni_lab.kernel import netns
from cni_lab.probe import dns_probes, matrix

MakeLab = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]


def doc(dataplane: str) -> dict[str, Any]:
    """web (NodePort) over web1 and web2; api (to be applied) for the api pod."""
    return {"dataplane": dataplane,
            "nodes": [{"name": "node1", "pods": [{"name": "web1", "labels": {"app": "web"}}, "client"]},
                      {"name": "node2", "pods": [{"name": "web2", "labels": {"app": "web"}},
                                                 {"name": "api", "labels": {"app": "api"}}]}],
            "services": [{"name": "web", "type": "NodePort", "selector": {"app": "web"},
                          "ports": [{"port": 80, "targetPort": 8080}]}]}


def api(selector: dict[str, str]) -> dict[str, Any]:
    """api as `kubectl apply -f` would take it."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "default"},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}}


def dig(lab: Lab, pod: str, name: str) -> tuple[str, list[str]]:
    """dig from inside the pod (its resolv.conf names kube-dns): the status and the addresses."""
    done = run_in(ns_of(lab, pod), "dig", "+time=2", "+tries=1", name)
    status = re.search(r"status: (\w+)", done.stdout)
    short = run_in(ns_of(lab, pod), "dig", "+time=2", "+tries=1", "+short", name).stdout.split("\n")
    return (status.group(1) if status else "no answer"), sorted(line for line in short if line)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cni_lab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def running(name: str) -> Lab:
    return lifecycle.running_lab(name)[0]


def endpoints(lab: Lab, service: str) -> dict[str, list[str]]:
    """node → the endpoints its kernel leads the Service's ClusterIP to (what an exercise's grade reads)."""
    return Reader(lab).read(Assertion("service", {"name": service, "endpoints": 0}))


def at(lab: Lab, *pods: str) -> list[str]:
    return sorted(f"{p.ip}:8080" for p in lab.pods if p.id in pods)


def service_state(lab: Lab) -> dict[str, str]:
    """Every node's kube-proxy table, or its BPF Service maps, as text: what must not change."""
    from cni_lab.kernel import bpf

    out = {}
    for node in lab.nodes:
        if lab.capabilities.services == "kube-proxy-nftables":
            out[node.name] = subprocess.run(["ip", "netns", "exec", names.node_netns(lab.name, node.name), "nft", "list",
                                             "table", "ip", "kube-proxy"], capture_output=True, text=True).stdout
        else:
            out[node.name] = repr(bpf.lb_services(names.bpf_node_dir(lab.name, node.name)))
    return out


@pytest.mark.parametrize("dataplane", ["host-gw", "ebpf"])
def test_services_change_on_a_running_lab(make_lab: MakeLab, dataplane: str) -> None:
    lab = make_lab(doc(dataplane))
    web = next(s for s in lab.services if s.spec.name == "web")
    assert (str(web.cluster_ip), web.spec.ports[0].node_port) == ("10.96.0.2", 30000)
    inode = netns.inode(ns_of(lab, "node2/api"))
    folder = state.lab_dir(lab.name).parent  # root's alone, as the state is
    path = folder / f"{lab.name}-svc.yaml"
    try:
        # a second Service: the next free ClusterIP, by name at once, proved by check
        path.write_text(yaml.safe_dump(api({"app": "api"})))
        done = cli("service", "apply", lab.name, str(path))
        assert done.returncode == 0, done.stderr
        after = running(lab.name)
        added = next(s for s in after.services if s.spec.name == "api")
        kept = next(s for s in after.services if s.spec.name == "web")
        assert str(added.cluster_ip) == "10.96.0.3"
        assert (kept.cluster_ip, kept.spec.ports[0].node_port) == (web.cluster_ip, 30000)
        assert dig(after, "node1/client", "api.default.svc.cluster.local") == ("NOERROR", ["10.96.0.3"])
        client = next(p for p in after.pods if p.id == "node1/client")
        conf = ResolvConf.parse(dns_records.resolv_conf(after, client))
        assert dns_probes.lookup(ns_of(after, "node1/client"), conf, "api", "UDP").addresses == ("10.96.0.3",)
        assert endpoints(after, "default/api") == {n.name: at(after, "node2/api") for n in after.nodes}
        result = matrix.run(after)
        assert result.passed, [(s.src, s.service, s.problem) for s in result.services if not s.ok]
        probed = [s for s in result.services if s.service == "default/api"]
        assert probed and all(s.ok for s in probed) and {a.endpoint for s in probed for a in s.answers} == {"node2/api"}
        assert any(d.service == "default/api" and d.ok for d in result.dns)

        # a changed selector: the endpoints follow; a pod taken down stays out until heal
        assert cli("fault", lab.name, "pod-down", "node2/web2").returncode == 0
        path.write_text(yaml.safe_dump(api({"app": "web"})))
        done = cli("service", "apply", lab.name, str(path))
        assert done.returncode == 0, done.stderr
        after = running(lab.name)
        assert str(next(s for s in after.services if s.spec.name == "api").cluster_ip) == "10.96.0.3"  # an update keeps it
        assert endpoints(after, "default/api") == {n.name: at(after, "node1/web1") for n in after.nodes}
        assert cli("heal", lab.name).returncode == 0
        assert endpoints(after, "default/api") == {n.name: at(after, "node1/web1", "node2/web2") for n in after.nodes}
        result = matrix.run(after)
        assert result.passed
        assert {a.endpoint for s in result.services if s.service == "default/api" for a in s.answers} == {
            "node1/web1", "node2/web2"}

        # a bad file: one line, exit 2, nothing changed (the record, every node's table or maps)
        record, tables = state.read(lab.name), service_state(after)
        path.write_text(yaml.safe_dump({**api({"app": "web"}), "spec": {"selector": {"app": "web"},
                                                                         "ports": [{"port": 80, "nodePort": 30000}]}}))
        done = cli("service", "apply", lab.name, str(path))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "nodePort" in done.stderr
        assert state.read(lab.name) == record and service_state(after) == tables

        # delete: NXDOMAIN, and gone from every node's kube-proxy table or BPF frontends
        done = cli("service", "delete", lab.name, "api")
        assert done.returncode == 0, done.stderr
        after = running(lab.name)
        assert [s.qualified for s in after.all_services] == ["default/web", "kube-system/kube-dns"]
        assert dig(after, "node1/client", "api.default.svc.cluster.local")[0] == "NXDOMAIN"
        assert dig(after, "node1/client", "web.default.svc.cluster.local") == ("NOERROR", ["10.96.0.2"])
        for node, text in service_state(after).items():
            assert "default/api" not in text and "10.96.0.3" not in text, (node, text)
        assert endpoints(after, "default/api") == {n.name: [] for n in after.nodes}
        assert matrix.run(after).passed
        refused = cli("service", "delete", lab.name, "kube-system/kube-dns")
        assert refused.returncode == 2 and "cluster DNS" in refused.stderr
        assert netns.inode(ns_of(lab, "node2/api")) == inode  # the same pod: nothing was rebuilt
    finally:
        path.unlink(missing_ok=True)


def test_a_lab_built_without_services_refuses(make_lab: MakeLab) -> None:
    lab = make_lab({"dataplane": "host-gw", "nodes": [{"name": "node1", "pods": [{"name": "web", "labels": {"app": "web"}}]}]})
    path = state.lab_dir(lab.name).parent / f"{lab.name}-svc.yaml"
    try:
        path.write_text(yaml.safe_dump(api({"app": "web"})))
        done = cli("service", "apply", lab.name, str(path))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"error: lab {lab.name} was built without Services: add one to the "
                                                    "scenario and `up` again"]
    finally:
        path.unlink(missing_ok=True)
