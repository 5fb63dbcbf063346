"""Services changed on a running lab, without a kernel: a Service file read as the scenario's
entries or as manifests (every problem one line, naming the file), the new list with every
existing ClusterIP and NodePort kept, and the `service` commands on a lab whose kernel side is
stubbed (nothing applied when the file is bad)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from click.testing import CliRunner
from labs import make_lab, pod

from cni_lab import codec, service_changes, state
from cni_lab.cli import cli
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.model import load_service_file

NODES = [{"name": "node1", "pods": [pod("web1", labels={"app": "web"}), "client"]},
         {"name": "node2", "pods": [pod("web2", labels={"app": "web"}), pod("api", labels={"app": "api"})]}]
WEB = {"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
API = {"name": "api", "selector": {"app": "api"}, "ports": [{"port": 80}]}
MANIFEST = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "default",
                                                                 "labels": {"team": "a"}},
            "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def lab(*services: dict[str, Any], **keys: Any) -> Lab:
    return make_lab(NODES, services=list(services), **keys)


def write(tmp_path: Path, *documents: Any) -> str:
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


def problems(tmp_path: Path, *documents: Any) -> list[str]:
    try:
        load_service_file(write(tmp_path, *documents), {"default"})
    except LabError as e:
        return list(e.problems)
    return []


def ips(the_lab: Lab) -> dict[str, str]:
    return {s.qualified: str(s.cluster_ip) for s in the_lab.services}


def node_ports(the_lab: Lab) -> dict[str, list[int | None]]:
    return {s.qualified: [p.node_port for p in s.spec.ports] for s in the_lab.services}


def changed(the_lab: Lab, services: tuple[Any, ...]) -> Lab:
    """What lifecycle.set_services makes of the new list: the same lab, the scenario's Services replaced."""
    return dataclasses.replace(the_lab, scenario=dataclasses.replace(the_lab.scenario, services=services))


# -- reading a file -------------------------------------------------------------------------------

def test_a_file_holds_an_entry_a_list_or_manifests(tmp_path: Path) -> None:
    one = load_service_file(write(tmp_path, WEB), {"default"})
    assert [(s.name, s.selector, s.ports[0].target_port) for s in one] == [("web", (("app", "web"),), 8080)]
    listed = load_service_file(write(tmp_path, [WEB, API]), {"default"})
    assert [s.name for s in listed] == ["web", "api"]
    manifests = load_service_file(write(tmp_path, WEB, MANIFEST), {"default"})  # two YAML documents
    api = manifests[1]
    assert (api.name, api.namespace, api.selector, api.ports[0].name, api.type) == (
        "api", "default", (("app", "api"),), "http", "ClusterIP")


@pytest.mark.parametrize("documents, line", [
    ([{**WEB, "selector": {"app": "web"}, "sessionAffinity": "ClientIP"}], "services[0].sessionAffinity: unknown key"),
    ([{**MANIFEST, "kind": "Deployment"}], "services[0]: apiVersion 'v1' kind 'Deployment': only Services"),
    ([{**MANIFEST, "spec": {**MANIFEST["spec"], "sessionAffinity": "ClientIP"}}], "services[0].spec.sessionAffinity: unknown key"),
    ([{**MANIFEST, "spec": {"selector": {"app": "api"}, "ports": [{"port": 99999}]}}], "services[0].ports[0]: port 99999"),
    ([{**WEB, "namespace": "nope"}], "services[0].namespace: 'nope' is not a namespace of the lab"),
    ([[WEB, WEB]], "services[1].name: default/web is defined twice"),
    ([{"apiVersion": "v1", "kind": "Service"}], "services[0]: a Service manifest needs metadata"),
    ([], "file: no Service in it"),
])
def test_each_problem_is_one_line_naming_the_file_and_the_entry(tmp_path: Path, documents: list[Any], line: str) -> None:
    found = problems(tmp_path, *documents)
    assert len(found) == 1 and found[0].startswith(f"{tmp_path / 'svc.yaml'}: {line}"), found


def test_a_refused_manifest_keeps_its_place_and_every_problem_is_said(tmp_path: Path) -> None:
    found = problems(tmp_path, {**MANIFEST, "kind": "Pod"}, {**WEB, "ports": [{"port": "x"}]})
    assert len(found) == 2 and "services[0]: apiVersion" in found[0] and "services[1].ports[0]" in found[1]


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LabError) as e:
        load_service_file(str(tmp_path / "missing.yaml"), {"default"})
    assert len(e.value.problems) == 1 and "cannot read" in e.value.problems[0]


# -- the new list: allocation kept ----------------------------------------------------------------

def test_a_new_service_takes_the_next_free_clusterip_and_the_others_keep_theirs() -> None:
    before = lab(WEB)
    assert ips(before) == {"default/web": "10.96.0.2", "kube-system/kube-dns": "10.96.0.10"}
    [api] = load_service_file_of(API)
    after = changed(before, service_changes.applied(before, [api], "f.yaml"))
    assert ips(after) == {"default/web": "10.96.0.2", "kube-system/kube-dns": "10.96.0.10", "default/api": "10.96.0.3"}
    assert [s.qualified for s in after.all_services][-1] == "default/api"  # appended: others keep their place
    assert [p.id for p in next(s for s in after.services if s.spec.name == "api").endpoints] == ["node2/api"]


def load_service_file_of(*entries: dict[str, Any]) -> tuple[Any, ...]:
    from cni_lab.model import Problems
    from cni_lab.model import read_service_documents

    p = Problems("f.yaml")
    specs = read_service_documents(p, list(entries), {"default"})
    p.raise_if_any()
    return specs


def test_deleting_a_service_renumbers_nothing_where_a_fresh_resolve_would() -> None:
    nodeport = [{**WEB, "name": n, "type": "NodePort"} for n in ("a", "b", "c")]
    before = lab(*nodeport)
    assert ips(before)["default/c"] == "10.96.0.4" and node_ports(before)["default/c"] == [30002]
    after = changed(before, service_changes.deleted(before, "default/a"))
    assert ips(after)["default/c"] == "10.96.0.4" and node_ports(after) == {
        "default/b": [30001], "default/c": [30002], "kube-system/kube-dns": [None, None]}
    # the scenario written without `a` would give c .3 and 30001: what pinning prevents
    assert ips(lab(*nodeport[1:]))["default/c"] == "10.96.0.3"
    [d] = load_service_file_of({**WEB, "name": "d", "type": "NodePort"})
    again = changed(after, service_changes.applied(after, [d], "f.yaml"))
    assert ips(again)["default/d"] == "10.96.0.2" and node_ports(again)["default/d"] == [30000]  # the freed ones
    assert ips(again)["default/c"] == "10.96.0.4" and node_ports(again)["default/c"] == [30002]


def test_a_replaced_service_keeps_its_place_clusterip_and_nodeports_by_port_name() -> None:
    web = {**WEB, "type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    before = lab({**API, "type": "NodePort"}, web)
    assert node_ports(before)["default/web"] == [30001]
    [new] = load_service_file_of({**web, "selector": {"app": "api"},
                                  "ports": [{"name": "http", "port": 81}, {"name": "admin", "port": 9000}]})
    after = changed(before, service_changes.applied(before, [new], "f.yaml"))
    assert [s.qualified for s in after.all_services] == [s.qualified for s in before.all_services]
    assert ips(after) == ips(before)
    assert node_ports(after)["default/web"] == [30001, 30002]  # http's kept, admin's the lowest free
    assert [p.id for p in next(s for s in after.services if s.spec.name == "web").endpoints] == ["node2/api"]
    encoded = codec.load(Lab, codec.encode(after))  # what the record keeps, `check` reads back
    assert ips(encoded) == ips(after) and node_ports(encoded) == node_ports(after)


@pytest.mark.parametrize("entry, line", [
    ({**WEB, "clusterIP": "10.96.0.7"}, "f.yaml: services[0].clusterIP: 10.96.0.7: field is immutable (default/web has 10.96.0.2)"),
    ({**WEB, "clusterIP": "None"}, "f.yaml: services[0].clusterIP: None: field is immutable"),
    ({**API, "clusterIP": "10.96.0.2"}, "f.yaml: services[0].clusterIP: 10.96.0.2: provided IP is already allocated (to default/web)"),
    ({**API, "clusterIP": "10.96.0.1"}, "f.yaml: services[0].clusterIP: 10.96.0.1 is not in the range"),
    ({**API, "type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]},
     "f.yaml: services[0].ports[0].nodePort: 30000/TCP: provided port is already allocated (to default/web)"),
    ({"name": "kube-dns", "namespace": "kube-system", "selector": {"app": "x"}, "ports": [{"port": 53}]},
     "f.yaml: services[0]: kube-system/kube-dns is the lab's cluster DNS"),
])
def test_what_the_api_server_refuses_on_an_update_is_refused(entry: dict[str, Any], line: str) -> None:
    before = lab({**WEB, "type": "NodePort"})
    specs = load_service_file_of(entry) if "kube-system" not in str(entry) else _in_kube_system(entry)
    with pytest.raises(LabError) as e:
        service_changes.applied(before, specs, "f.yaml")
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(line), e.value.problems


def _in_kube_system(entry: dict[str, Any]) -> tuple[Any, ...]:
    from cni_lab.model import Problems
    from cni_lab.model import read_service_documents

    return read_service_documents(Problems("f.yaml"), [entry], {"default", "kube-system"})


def test_deleting_names_the_services_and_keeps_kube_dns() -> None:
    before = lab(WEB)
    with pytest.raises(LabError, match=r"has no Service default/nope \(Services: default/web, kube-system/kube-dns\)"):
        service_changes.deleted(before, "default/nope")
    with pytest.raises(LabError, match="kube-system/kube-dns is the lab's cluster DNS"):
        service_changes.deleted(before, "kube-system/kube-dns")
    assert service_changes.deleted(before, "default/web")[0].name == "kube-dns"


def test_a_headless_service_stays_headless_when_replaced() -> None:
    before = lab({**WEB, "clusterIP": "None"})
    [new] = load_service_file_of({**WEB, "ports": [{"port": 81}]})
    after = changed(before, service_changes.applied(before, [new], "f.yaml"))
    assert [s.qualified for s in after.headless_services] == ["default/web"]


# -- the commands, the kernel side stubbed -------------------------------------------------------

@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A lab 'running' as far as lifecycle.set_services can tell: what it applies and records is kept."""
    from cni_lab import faults, lifecycle, privileges
    from cni_lab.executor import apply

    seen: dict[str, Any] = {"lab": lab(WEB), "applied": [], "written": [], "document": {"services": [WEB]}}

    def running_lab(name: str | None) -> tuple[Lab, Any]:
        return seen["lab"], state.LabState(name="lab", status="up", source="s.yaml", document=seen["document"],
                                           digest="x", namespaces=[], lab=None)

    def write(record: state.LabState) -> None:
        seen["written"].append(record)
        seen["lab"] = codec.load(Lab, record.lab)

    monkeypatch.setattr(privileges, "require_root", lambda command: None)
    monkeypatch.setattr(lifecycle, "require_root", lambda command: None)
    monkeypatch.setattr(lifecycle, "pick", lambda name: "lab")
    monkeypatch.setattr(lifecycle, "running_lab", running_lab)
    monkeypatch.setattr(state, "locked", lambda name: contextlib.nullcontext())
    monkeypatch.setattr(state, "write", write)
    monkeypatch.setattr(faults, "recorded", lambda name: [])
    monkeypatch.setattr(apply, "Session", lambda folder: contextlib.nullcontext())
    monkeypatch.setattr(apply, "apply_step", lambda session, step: seen["applied"].append(step))
    yield seen


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_service_apply_applies_every_nodes_steps_and_kube_dns_and_records(running: dict[str, Any], tmp_path: Path) -> None:
    code, output = run("service", "apply", "lab", write(tmp_path, MANIFEST))
    assert code == 0, output
    assert "added default/api ClusterIP 10.96.0.3" in output and "api.default.svc.cluster.local" in output
    kinds = [type(s).__name__ for s in running["applied"]]
    assert kinds == ["LoadNftables", "LoadNftables", "WriteFile", "StartDnsmasq"]
    assert "default/api" in running["applied"][0].ruleset
    assert "host-record=api.default.svc.cluster.local,10.96.0.3" in running["applied"][2].content
    assert ips(running["lab"])["default/api"] == "10.96.0.3"
    code, output = run("service", "list", "lab")
    assert code == 0 and "default/api ClusterIP 10.96.0.3" in output and "node2/api" in output
    code, output = run("service", "delete", "lab", "api")
    assert code == 0 and "default/api deleted" in output and "default/api" not in ips(running["lab"])


def test_a_bad_file_changes_nothing(running: dict[str, Any], tmp_path: Path) -> None:
    code, output = run("service", "apply", "lab", write(tmp_path, {**WEB, "ports": [{"port": 0}]}, {**MANIFEST, "kind": "x"}))
    assert code == 2 and len(output.strip().splitlines()) == 2 and all(line.startswith("error: ") for line in output.splitlines())
    assert running["applied"] == [] and running["written"] == []


def test_a_lab_built_without_services_is_refused(running: dict[str, Any], tmp_path: Path) -> None:
    running["document"] = {}
    code, output = run("service", "apply", "lab", write(tmp_path, WEB))
    assert code == 2 and "was built without Services: add one to the scenario and `up` again" in output
    assert running["applied"] == []
    code, output = run("service", "delete", "lab", "kube-system/kube-dns")
    assert code == 2 and running["applied"] == []
