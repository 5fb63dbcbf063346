"""bench/dataplanes.py's pure parts: the Service lab it builds (read by the model as `up` reads it)
and the arithmetic of its Service figures. The benchmark itself needs root and runs by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cni_lab import catalog
from cni_lab.report import json_junit

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_dataplanes", ROOT / "bench" / "dataplanes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("plane", ["host-gw", "ebpf-tunnel", "ebpf-native"])
def test_the_service_lab_has_a_cluster_ip_over_one_endpoint_on_the_other_node(tmp_path: Path, plane: str) -> None:
    dp = bench()
    assert plane in dp.SERVICE_PLANES
    scenario = tmp_path / "lab.yaml"
    scenario.write_text(dp.service_scenario("bds-test", plane))
    lab = catalog.load(str(scenario))
    assert lab.dataplane == ("ebpf" if plane.startswith("ebpf") else plane)
    if plane.startswith("ebpf"):
        assert lab.scenario.ebpf_routing == plane.removeprefix("ebpf-")
    [service] = lab.services
    assert service.spec.type == "ClusterIP" and [(p.port, p.target_port, p.protocol) for p in service.spec.ports] == [
        (80, 8080, "TCP")]
    assert [p.id for p in service.endpoints] == ["node2/web"]
    # what `up --json` prints is lab_json with a status; its addresses are the planned ones
    assert dp.service_targets(json_junit.lab_json(lab)) == {
        "client": "cnilab-bds-test.node1.client", "server": "cnilab-bds-test.node2.web",
        "cluster_ip": "10.96.0.2", "pod_ip": "10.244.1.2"}


def test_a_service_whose_endpoint_is_not_node2_web_stops_the_benchmark(tmp_path: Path) -> None:
    dp = bench()
    scenario = tmp_path / "lab.yaml"
    scenario.write_text(dp.service_scenario("bds-test", "host-gw"))
    document = json_junit.lab_json(catalog.load(str(scenario)))
    services: Any = document["services"]
    services[0]["ports"][0]["endpoints"] = ["10.244.0.2:8080"]
    with pytest.raises(SystemExit, match="not node2/web's 10.244.1.2:8080"):
        dp.service_targets(document)


def test_the_overhead_is_the_service_median_less_the_direct_one() -> None:
    figures = bench().service_figures({"p50_us": 80.0, "p99_us": 120.0}, {"p50_us": 65.0, "p99_us": 90.0})
    assert figures == {"svc_p50_us": 80.0, "svc_p99_us": 120.0, "direct_p50_us": 65.0, "direct_p99_us": 90.0,
                       "svc_overhead_us": 15.0}


def medians(overhead_host_gw: float) -> dict[str, dict[str, float]]:
    plain = {"gbit_s": 10.0, "p50_us": 60.0, "p99_us": 90.0, "matrix_pairs_s": 1000.0}
    return {
        "host-gw": {**plain, "svc_p50_us": 80.0, "svc_overhead_us": overhead_host_gw},
        "vxlan": plain,
        "ebpf-tunnel": {**plain, "gbit_s": 5.0, "svc_p50_us": 60.0, "svc_overhead_us": 4.0},
        "ebpf-native": {**plain, "p50_us": 30.0, "svc_p50_us": 40.0, "svc_overhead_us": 2.0},
    }


def test_the_service_ratios_are_ebpf_over_host_gw_only() -> None:
    ratios = bench().compare(medians(overhead_host_gw=20.0))
    assert ratios["ebpf-native vs host-gw"] == {
        "throughput": 1.0, "latency p50 (lower is better)": 0.5, "matrix pairs/s": 1.0,
        "service RR p50 (lower is better)": 0.5, "service overhead (lower is better)": 0.1}
    assert ratios["ebpf-tunnel vs host-gw"]["service RR p50 (lower is better)"] == 0.75
    assert ratios["ebpf-tunnel vs host-gw"]["service overhead (lower is better)"] == 0.2
    assert ratios["ebpf-tunnel vs vxlan"] == {"throughput": 0.5, "latency p50 (lower is better)": 1.0,
                                              "matrix pairs/s": 1.0}  # vxlan has no Service lab


def test_no_overhead_ratio_over_a_base_that_is_not_above_zero() -> None:
    for nothing in (0.0, -1.5):  # within the noise: nothing to divide by
        ratios = bench().compare(medians(overhead_host_gw=nothing))
        assert ratios["ebpf-native vs host-gw"]["service overhead (lower is better)"] is None
        assert ratios["ebpf-native vs host-gw"]["service RR p50 (lower is better)"] == 0.5
