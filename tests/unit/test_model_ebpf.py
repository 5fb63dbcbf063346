"""The `ebpf:` section in Cilium's Helm names: routing (or routingMode) chooses; every other key
takes the one value the lab runs, and any other value Cilium knows is one line naming the key
path and what the lab does instead (exit 2 from the command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cni_lab.cli import cli
from cni_lab.errors import LabError
from cni_lab.model import CILIUM_VALUES

from labs import lab_of, scenario_doc

# Cilium as the lab runs it, every key written out (README: "Cilium as the lab runs it")
AS_THE_LAB_RUNS_IT: dict[str, Any] = {
    "routingMode": "tunnel",
    "kubeProxyReplacement": True,
    "bpf": {"masquerade": True},
    "socketLB": {"enabled": False, "hostNamespaceOnly": True},
    "loadBalancer": {"algorithm": "random", "mode": "snat", "acceleration": "disabled"},
    "healthChecking": False,
    "nodePort": {"enabled": True},
}


def problems_of(ebpf: Any) -> list[str]:
    with pytest.raises(LabError) as e:
        lab_of(scenario_doc(dataplane="ebpf", ebpf=ebpf))
    assert all("\n" not in p for p in e.value.problems)
    return list(e.value.problems)


@pytest.mark.parametrize(("ebpf", "routing"), [
    (None, "tunnel"),
    ({}, "tunnel"),
    ({"routing": "native"}, "native"),
    ({"routingMode": "native"}, "native"),  # Cilium's Helm name
    ({"routingMode": "tunnel"}, "tunnel"),
    (AS_THE_LAB_RUNS_IT, "tunnel"),
    ({**AS_THE_LAB_RUNS_IT, "routingMode": "native"}, "native"),
    ({"kubeProxyReplacement": "true"}, "tunnel"),  # a string in Cilium's values.yaml and agent
    ({"socketLB": {"enabled": False}}, "tunnel"),
    ({"socketLB": {"hostNamespaceOnly": True}}, "tunnel"),
    ({"bpf": {}, "socketLB": None}, "tunnel"),
])
def test_accepted(ebpf: Any, routing: str) -> None:
    lab = lab_of(scenario_doc(dataplane="ebpf", ebpf=ebpf))
    assert lab.scenario.ebpf_routing == routing


def test_the_readmes_cilium_values_are_taken() -> None:
    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### Cilium as the lab runs it")[1].split("```yaml\n")[1].split("```")[0]
    ebpf = yaml.safe_load(block)["ebpf"]
    assert set(ebpf) == set(AS_THE_LAB_RUNS_IT)  # every key the section documents
    assert lab_of(scenario_doc(dataplane="ebpf", ebpf=ebpf)).scenario.ebpf_routing == "tunnel"


def test_the_helm_values_store_nothing_but_routing() -> None:
    # each takes one value: a lab that writes them all is the lab that writes none
    written = lab_of(scenario_doc(dataplane="ebpf", ebpf=AS_THE_LAB_RUNS_IT)).scenario
    assert written == lab_of(scenario_doc(dataplane="ebpf")).scenario


@pytest.mark.parametrize(("ebpf", "line"), [
    ({"routing": "tunnel", "routingMode": "tunnel"},
     "ebpf.routingMode: give routing or routingMode (Cilium's Helm name for it), not both"),
    ({"routingMode": "direct"}, "ebpf.routingMode: 'direct' is not one of tunnel, native"),
    ({"kubeProxyReplacement": False},
     "ebpf.kubeProxyReplacement: false: the lab's ebpf is kube-proxy-free (its programs balance Services), and BPF "
     "host routing needs kube-proxy replacement; for kube-proxy use another data plane"),
    ({"kubeProxyReplacement": "false"}, "ebpf.kubeProxyReplacement: false: the lab's ebpf is kube-proxy-free"),
    ({"kubeProxyReplacement": "strict"}, "ebpf.kubeProxyReplacement: 'strict' is not true or false"),
    ({"bpf": {"masquerade": False}},
     "ebpf.bpf.masquerade: false: BPF host routing needs bpf.masquerade (iptables masquerade would take pods' "
     "packets through the node's stack); for no masquerade at all set networking.masquerade: false"),
    ({"bpf": {"masquerade": 1}}, "ebpf.bpf.masquerade: 1 is not true or false"),
    ({"bpf": {"masqerade": True}}, "ebpf.bpf.masqerade: unknown key (did you mean 'masquerade'?); known keys: masquerade"),
    ({"bpf": True}, "ebpf.bpf: must be a mapping with keys masquerade"),
    ({"socketLB": {"enabled": True}}, "ebpf.socketLB.enabled: true: the lab has no socket LB (cgroup connect hooks): "
     "it balances per packet in the tc programs"),
    ({"socketLB": {"hostNamespaceOnly": False}},
     "ebpf.socketLB.hostNamespaceOnly: false: that gives pods socket LB, which the lab does not have"),
    ({"loadBalancer": {"algorithm": "maglev"}},
     "ebpf.loadBalancer.algorithm: maglev: the lab picks a backend slot at random (lb4_select_backend_id_random)"),
    ({"loadBalancer": {"algorithm": "randm"}},
     "ebpf.loadBalancer.algorithm: 'randm' is not one of random, maglev (did you mean 'random'?)"),
    ({"loadBalancer": {"mode": "dsr"}}, "ebpf.loadBalancer.mode: dsr: the lab has SNAT mode only"),
    ({"loadBalancer": {"mode": "hybrid"}},
     "ebpf.loadBalancer.mode: hybrid: DSR for TCP, SNAT for UDP: the lab has SNAT mode only"),
    ({"loadBalancer": {"acceleration": "native"}},
     "ebpf.loadBalancer.acceleration: native: the lab has no XDP program: NodePorts are balanced at eth0's tc ingress"),
    ({"loadBalancer": {"acceleration": "best-effort"}}, "ebpf.loadBalancer.acceleration: best-effort: the lab has no XDP"),
    ({"loadBalancer": {"sessionAffinity": True}}, "ebpf.loadBalancer.sessionAffinity: unknown key"),
    ({"healthChecking": True}, "ebpf.healthChecking: true: the lab runs no cilium-health endpoints"),
    ({"nodePort": {"enabled": False}}, "ebpf.nodePort.enabled: false: kube-proxy replacement includes NodePorts"),
    ({"nodePort": {"enabled": "yes"}}, "ebpf.nodePort.enabled: 'yes' is not true or false"),
])
def test_refused_in_one_line_naming_the_key_path(ebpf: Any, line: str) -> None:
    found = problems_of(ebpf)
    assert any(p.startswith(f"s.yaml: {line}") for p in found), found


def test_every_refusal_at_once() -> None:
    found = problems_of({"kubeProxyReplacement": False, "bpf": {"masquerade": False},
                         "loadBalancer": {"algorithm": "maglev", "mode": "dsr", "acceleration": "native"},
                         "healthChecking": True, "routingMode": "native", "routing": "native"})
    assert len(found) == 7, found


def test_every_value_cilium_takes_is_accepted_or_refused() -> None:
    # the table is the whole story: each key's accepted value, each refused one with its reason
    for path, (accepted, refused) in CILIUM_VALUES.items():
        for value in (accepted, *refused):
            section, _, key = path.rpartition(".")
            ebpf = {section: {key: value}} if section else {key: value}
            if value == accepted:
                lab_of(scenario_doc(dataplane="ebpf", ebpf=ebpf))
            else:
                assert any(p.startswith(f"s.yaml: ebpf.{path}: ") for p in problems_of(ebpf))


def test_plan_exits_2_with_the_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "maglev.yaml"
    bad.write_text("name: x\ndataplane: ebpf\nebpf:\n  loadBalancer: {algorithm: maglev}\nnodes: [{name: node1}]\n")
    result = CliRunner().invoke(cli, ["plan", str(bad)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"{bad}: ebpf.loadBalancer.algorithm: maglev: the lab picks a backend slot at random" in lines[0]
