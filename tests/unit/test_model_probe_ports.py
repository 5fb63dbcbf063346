"""`probe.ports` and `check --port` are read once, by one rule, into typed values that the
probe, the policy truth tables and the lab's record use as they are."""

from __future__ import annotations

import json

import pytest

from cni_lab import catalog, codec, model, policy
from cni_lab.cluster import Lab
from cni_lab.errors import LabError


def probe_ports(ports: object) -> tuple[model.ProbePort, ...]:
    return model.load_document({"name": "lab", "nodes": [{"name": "n1"}], "probe": {"ports": ports}}, "s.yaml").probe_ports


def test_entries_become_protocol_and_port_once_each() -> None:
    assert probe_ports(["tcp/80", "UDP/81", "TCP/080"]) == (model.ProbePort("TCP", 80), model.ProbePort("UDP", 81))


@pytest.mark.parametrize("bad", ["icmp/80", "tcp/0", "tcp/65536", "tcp/31999", "80", "tcp:80"])
def test_the_scenario_and_check_port_refuse_alike(bad: str) -> None:
    rule = f"{bad!r} is not tcp/PORT, udp/PORT or sctp/PORT (1-65535; 31999 is check's own)"
    with pytest.raises(LabError) as scenario:
        probe_ports(["tcp/80", bad])
    with pytest.raises(LabError) as option:
        model.load_probe_ports(["tcp/80", bad], "--port")
    assert scenario.value.problems == (f"s.yaml: probe.ports[1]: {rule}",)
    assert option.value.problems == (f"--port: probe.ports[1]: {rule}",)


def test_check_port_reads_as_probe_ports_does() -> None:
    assert model.load_probe_ports(("udp/53", "tcp/80", "udp/53"), "--port") == probe_ports(["udp/53", "tcp/80"])


def test_a_policy_lab_is_probed_on_icmp_then_each_port() -> None:
    assert policy.probes(probe_ports(["tcp/80", "udp/81"])) == [("ICMP", None), ("TCP", 80), ("UDP", 81)]


def test_the_ports_are_recorded_with_the_lab_and_read_back() -> None:
    lab = catalog.load("netpol")
    assert lab.scenario.probe_ports  # the shipped scenario that probes ports
    back = codec.load(Lab, json.loads(json.dumps(codec.encode(lab))))
    assert back.scenario.probe_ports == lab.scenario.probe_ports
    assert all(isinstance(p, model.ProbePort) for p in back.scenario.probe_ports)
