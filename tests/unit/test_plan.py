"""The plan is a value: golden files per shipped scenario, and the pure layers stay pure."""

from __future__ import annotations

import ast
import os
import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from cni_lab import catalog, plan

from labs import lab_of, make_lab

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "scenarios").glob("*.yaml") if not p.name.startswith("scale-"))  # big labs: no golden
GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_plan_matches_golden(path: Path) -> None:
    text = "\n".join(plan.build(catalog.load(str(path))).describe()) + "\n"
    golden = GOLDEN / f"{path.stem}.plan"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden plan for {path.name}: run UPDATE_GOLDEN=1 pytest tests/unit"
    assert text == golden.read_text()


def test_interface_names_fit_ifnamsiz() -> None:
    lab = make_lab([{"name": "abcdefghij", "pods": ["a" * 32]}], name="abcdefghijkl")
    for step in plan.build(lab).steps:
        for attr in ("ifname", "peer_ifname", "dev", "master"):
            value = getattr(step, attr, None)
            assert value is None or len(value) <= 15, step


PURE = ["model", "ipam.py", "cluster.py", "dns_records.py", "dns_message.py", "plan.py", "steps.py", "names.py", "codec.py", "policy",
        "conformance.py", "rulesets", "report/topology.py", "dataplanes", "probe/pairs.py",
        "probe/budget.py", "fault_kinds.py", "exercise/spec.py", "exercise/assertions.py", "service_changes.py"]
# what a pure module may import from cni_lab: other pure modules, and the one error type
PURE_MODULES = {"cni_lab.errors", "cni_lab.model", "cni_lab.ipam", "cni_lab.cluster", "cni_lab.dns_records", "cni_lab.dns_message", "cni_lab.plan", "cni_lab.steps", "cni_lab.names",
                "cni_lab.policy", "cni_lab.conformance", "cni_lab.rulesets",
                "cni_lab.dataplanes", "cni_lab.probe.pairs", "cni_lab.probe.budget", "cni_lab.codec",
                "cni_lab.catalog", "cni_lab.fault_kinds", "cni_lab.exercise.assertions", "cni_lab.service_changes"}


@pytest.mark.parametrize("module", PURE)
def test_pure_layers_do_not_touch_the_kernel_or_terminal(module: str) -> None:
    base = ROOT / "cni_lab" / module
    for path in [base] if base.is_file() else sorted(base.glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):  # `from cni_lab import lifecycle` imports cni_lab.lifecycle
                modules |= {f"{n.module}.{a.name}" for a in n.names} if n.module == "cni_lab" else {n.module or ""}
        assert not {m.split(".")[0] for m in modules} & {"pyroute2", "subprocess", "rich", "socket"}, path
        ours = {m for m in modules if m.split(".")[0] == "cni_lab"}
        impure = {m for m in ours if m not in PURE_MODULES and not m.startswith(("cni_lab.model.", "cni_lab.policy.", "cni_lab.dataplanes.", "cni_lab.rulesets."))}
        assert not impure, f"{path.relative_to(ROOT)} imports {sorted(impure)}, which may touch the kernel"


def test_data_planes_refuse_what_cannot_work() -> None:
    from cni_lab.errors import LabError

    racks = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}
    doc = {"name": "lab", "dataplane": "host-gw", "networking": racks,
           "nodes": [{"name": "a", "segment": "rack1"}, {"name": "b", "segment": "rack2"}]}
    with pytest.raises(LabError, match="host-gw needs every node on one L2 segment, but a .* cannot use b's 192.168.2.2"):
        plan.build(lab_of(doc))
    overlap = {"name": "lab", "dataplane": "fabric", "allowOverlap": True,
               "nodes": [{"name": "a", "podCIDR": "10.244.0.0/24"}, {"name": "b", "podCIDR": "10.244.0.0/24"}]}
    with pytest.raises(LabError, match="fabric routes each pod CIDR to one node"):
        plan.build(lab_of(overlap))


def test_vxlan_plan_has_flannels_three_entries_per_remote_node() -> None:
    steps = plan.build(catalog.load("vxlan")).describe()
    node1 = [s for s in steps if "cnilab-vxlan.node1 " in s or "cnilab-vxlan.node1 " in s + " "]
    assert any("link add flannel.1" in s and "type vxlan id 1 local 192.168.1.2 dev eth0 dstport 8472 nolearning" in s
               and "mtu 1450" in s for s in node1)
    assert any(s.endswith("route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink") for s in node1)
    assert any("neigh add 10.244.2.0 lladdr 0a:" in s and s.endswith("nud permanent") for s in node1)
    assert any("fdb add 0a:" in s and s.endswith("dst 192.168.1.4 self permanent") for s in node1)


def test_bgp_plan_routes_pods_like_calico_and_configures_bird() -> None:
    from cni_lab.dataplanes import bgp

    lab = catalog.load("bgp")
    steps = plan.build(lab).describe()
    assert not any("cni0" in s for s in steps)
    assert any(s.endswith("route add 169.254.1.1 dev eth0 scope link") for s in steps)
    assert any(s.endswith("route add default via 169.254.1.1 dev eth0") for s in steps)
    assert any("proxy_arp=1" in s for s in steps)
    assert [str(n.pod_cidr) for n in lab.nodes] == ["10.244.0.0/26", "10.244.0.64/26", "10.244.0.128/26"]
    conf = bgp.bird_conf(lab, lab.nodes[0])
    assert "route 10.244.0.0/26 blackhole;" in conf
    assert "source address 192.168.1.2;" in conf and "local as 64512;" in conf
    assert "neighbor 192.168.1.3 as 64512;" in conf and "neighbor 192.168.1.4 as 64512;" in conf
    assert "neighbor 192.168.1.2" not in conf


@pytest.mark.skipif(__import__("shutil").which("bird") is None, reason="bird2 is not installed (setup.sh installs it)")
def test_generated_bird_config_parses(tmp_path: Path) -> None:
    import subprocess

    from cni_lab.dataplanes import bgp

    lab = catalog.load("bgp")
    for node in lab.nodes:
        conf = tmp_path / f"{node.name}.conf"
        conf.write_text(bgp.bird_conf(lab, node))
        done = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_ebpf_plan_is_cilium_shaped() -> None:
    from cni_lab.errors import LabError
    from cni_lab.steps import AddRoute, AttachBpf, BpfEndpoint, BpfIpcache, LoadBpf

    def build(routing: str, **extra: Any) -> plan.Plan:
        doc = {"name": "lab", "dataplane": "ebpf", "ebpf": {"routing": routing},
               "nodes": [{"name": "n1", "pods": ["web", "db"]}, {"name": "n2", "pods": ["api"]}], **extra}
        return plan.build(lab_of(doc))

    tunnel = build("tunnel")
    attached = {(s.netns.split(".")[-1], s.ifname[:3], s.direction, s.program) for s in tunnel.steps
                if isinstance(s, AttachBpf)}
    assert attached == {("n1", "eth", "ingress", "cil_from_netdev"), ("n1", "cil", "egress", "cil_from_host"),
                        ("n1", "cil", "ingress", "cil_from_overlay"), ("n1", "lxc", "ingress", "cil_from_container"),
                        ("n2", "eth", "ingress", "cil_from_netdev"), ("n2", "cil", "egress", "cil_from_host"),
                        ("n2", "cil", "ingress", "cil_from_overlay"), ("n2", "lxc", "ingress", "cil_from_container")}
    assert [s.pin for s in tunnel.steps if isinstance(s, LoadBpf)] == ["/sys/fs/bpf/cnilab-lab/n1",
                                                                       "/sys/fs/bpf/cnilab-lab/n2"]
    # each node's endpoints map gets exactly its own pods; its ipcache every node address (its own:
    # host 1; another's eth0 and router IP each its own identity from the remote-node scope, 2<<24 | n,
    # as Cilium's policy-cidr-match-mode: nodes gives them), every pod (its identity: one per label
    # set, from 256) and, behind the tunnel, the other node's router IP, pods and pod CIDR (world 2, as
    # Cilium puts pod CIDRs in the ipcache since PR #38839)
    endpoints = {(s.netns, str(s.ip)) for s in tunnel.steps if isinstance(s, BpfEndpoint)}
    assert endpoints == {("cnilab-lab.n1", "10.244.0.2"), ("cnilab-lab.n1", "10.244.0.3"), ("cnilab-lab.n2", "10.244.1.2")}
    ipcache = {(str(s.prefix), s.identity, str(s.tunnel_endpoint or "")) for s in tunnel.steps
               if isinstance(s, BpfIpcache) and s.netns == "cnilab-lab.n1"}
    remote = 2 << 24
    assert ipcache == {("192.168.1.2/32", 1, ""), ("192.168.1.3/32", remote | 3, ""), ("10.244.0.1/32", 1, ""),
                       ("10.244.0.2/32", 256, ""), ("10.244.0.3/32", 256, ""), ("10.244.1.0/24", 2, "192.168.1.3"),
                       ("10.244.1.1/32", remote | 4, "192.168.1.3"), ("10.244.1.2/32", 256, "192.168.1.3")}
    text = "\n".join(tunnel.describe())
    assert "ip -n cnilab-lab.n1 route add 10.244.1.0/24 via 10.244.0.1 dev cilium_host src 10.244.0.1 mtu 1450" in text
    assert "ip -n cnilab-lab.n1.web route add default via 10.244.0.1 dev eth0 mtu 1450" in text
    assert "type vxlan external dstport 8472" in text
    native = build("native")
    assert not [s for s in native.steps if isinstance(s, BpfIpcache) and s.tunnel_endpoint is not None]
    assert len([s for s in native.steps if isinstance(s, BpfIpcache)]) == 2 * (2 + 2 + 3)  # node IPs, router IPs, pods
    assert AddRoute("cnilab-lab.n1", IPv4Network("10.244.1.0/24"), "eth0",
                    via=IPv4Address("192.168.1.3")) in native.steps
    assert "mtu" not in "\n".join(s.describe() for s in native.steps if isinstance(s, AddRoute))
    racks = {"underlay": {"segments": {"rack1": "192.168.1.0/24", "rack2": "192.168.2.0/24"}}}
    nodes = [{"name": "a", "segment": "rack1"}, {"name": "b", "segment": "rack2"}]
    with pytest.raises(LabError, match="ebpf.routing: native needs every node on one L2 segment.*use ebpf.routing: tunnel"):
        build("native", networking=racks, nodes=nodes)
    build("tunnel", networking=racks, nodes=nodes)


def test_ebpf_services_are_cilium_maps_per_node_and_no_kube_proxy() -> None:
    from cni_lab.steps import BpfNodeConfig, BpfServices, LoadNftables

    doc = {"name": "lab", "dataplane": "ebpf", "outside": {}, "dns": False,  # these Services' numbering alone
           "nodes": [{"name": "n1", "pods": [{"name": "web", "labels": {"app": "web"}}, "c"]},
                     {"name": "n2", "pods": [{"name": "web2", "labels": {"app": "web"}}]}],
           "services": [{"name": "web", "type": "NodePort", "selector": {"app": "web"},
                         "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]},
                        {"name": "loc", "type": "NodePort", "externalTrafficPolicy": "Local", "pods": ["n2/web2"],
                         "ports": [{"port": 81, "targetPort": 8080, "protocol": "UDP"}]}]}
    built = plan.build(lab_of(doc))
    assert not [s for s in built.steps if isinstance(s, LoadNftables)]  # neither kube-proxy nor nft masquerade
    config = {s.netns: (str(s.node_ip), s.masquerade, str(s.native_cidr)) for s in built.steps if isinstance(s, BpfNodeConfig)}
    assert config == {"cnilab-lab.n1": ("192.168.1.2", True, "10.244.0.0/16"),
                      "cnilab-lab.n2": ("192.168.1.3", True, "10.244.0.0/16")}
    maps = {s.netns: s for s in built.steps if isinstance(s, BpfServices)}
    backends = {(b.id, str(b.address), b.port, b.protocol, b.pod) for b in maps["cnilab-lab.n1"].backends}
    assert backends == {(1, "10.244.0.2", 8080, "TCP", "n1/web"), (2, "10.244.1.2", 8080, "TCP", "n2/web2"),
                        (3, "10.244.1.2", 8080, "UDP", "n2/web2")}
    n1 = [(f.kind, str(f.address), f.port, f.protocol, f.rev_nat_index, f.flags, f.backend_ids)
          for f in maps["cnilab-lab.n1"].frontends]
    # ClusterIPs (non-routable, flags 0) on every node; NodePorts on the node's own address:
    # SVC_FLAG_NODEPORT|ROUTABLE, and for Local EXT_LOCAL_SCOPE with the node's own backends only
    assert n1 == [("ClusterIP", "10.96.0.2", 80, "TCP", 1, 0, (1, 2)), ("ClusterIP", "10.96.0.3", 81, "UDP", 2, 0, (3,)),
                  ("NodePort", "192.168.1.2", 30080, "TCP", 3, 0x42, (1, 2)),
                  ("NodePort", "192.168.1.2", 30000, "UDP", 4, 0x46, ())]
    n2 = [(str(f.address), f.rev_nat_index, f.backend_ids) for f in maps["cnilab-lab.n2"].frontends if f.kind == "NodePort"]
    assert n2 == [("192.168.1.3", 5, (1, 2)), ("192.168.1.3", 6, (3,))]


def test_the_c_structs_match_what_the_kernel_layer_packs() -> None:
    """ebpf.c's map structs, as clang lays them out (BTF), against kernel/bpf.py's struct formats."""
    import shutil
    import subprocess

    if not (shutil.which("clang") and shutil.which("bpftool")):
        pytest.skip("clang and bpftool are not installed (setup.sh installs them)")
    from cni_lab.kernel import bpf

    obj = bpf.compiled("ebpf.c") if os.geteuid() == 0 else None
    if obj is None:
        pytest.skip("compiling into /var/cache/cni-lab needs root")
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(obj)], capture_output=True, text=True, check=True).stdout
    sizes = dict(re.findall(r"STRUCT '(\w+)' size=(\d+)", dump))
    assert int(sizes["endpoint_key"]) == bpf.ENDPOINT_KEY.size
    assert int(sizes["endpoint_info"]) == bpf.ENDPOINT_INFO.size
    assert int(sizes["node_config"]) == bpf.NODE_CONFIG.size
    # Cilium's structs, as bpf/lib/common.h, lb.h, eps.h, nat.h and conntrack.h lay them out
    expected = {"ipcache_key": 24, "remote_endpoint_info": 24, "lb4_key": 12, "lb4_service": 12, "lb4_backend": 12,
                "lb4_reverse_nat": 6, "ipv4_ct_tuple": 14, "ct_entry": 56, "ipv4_nat_entry": 40}
    assert {k: int(sizes[k]) for k in expected} == expected
    packed = {"ipcache_key": bpf.IPCACHE_KEY, "remote_endpoint_info": bpf.REMOTE_ENDPOINT_INFO, "lb4_key": bpf.LB4_KEY,
              "lb4_service": bpf.LB4_SERVICE, "lb4_backend": bpf.LB4_BACKEND, "lb4_reverse_nat": bpf.LB4_REVERSE_NAT,
              "ipv4_ct_tuple": bpf.CT_TUPLE, "ct_entry": bpf.CT_ENTRY, "ipv4_nat_entry": bpf.NAT_ENTRY}
    assert {k: f.size for k, f in packed.items()} == expected
    source = (ROOT / "cni_lab" / "dataplanes" / "ebpf_lib" / "common.h").read_text()
    enum = re.search(r"enum \{(.*?)METRIC_MAX", source, re.S)
    assert enum and len(re.findall(r"\bMETRIC_\w+", enum.group(1))) == len(bpf.METRICS)
