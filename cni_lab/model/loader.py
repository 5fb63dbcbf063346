"""A scenario file, text or parsed document → a Scenario, or one LabError listing every problem.

The sections are read in the order below, which is the order their problems are reported in;
each section's reader is a module of this package. Two inputs from elsewhere are read by the
same readers: `check --port` (as `probe.ports`) and `policy apply`'s file (as `policies`).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Iterable

import yaml

from cni_lab.errors import LabError
from cni_lab.model.dns_section import read_dns, with_cluster_dns
from cni_lab.model.dataplane_sections import read_calico, read_cni, read_dataplane, read_ebpf
from cni_lab.model.expectations import read_expectations
from cni_lab.model.namespaces import read_namespaces
from cni_lab.model.networking import (NETWORKING_KEYS, check_families, read_cluster, read_integer, read_mtu,
                                      read_network, read_outside, read_prefix, read_prefix6, read_segments)
from cni_lab.model.nodes import check_unique_pods, read_nodes
from cni_lab.model.policy_sources import read_policies
from cni_lab.model.probe_ports import read_probe
from cni_lab.model.problems import Problems, read_name
from cni_lab.model.scenario import (DATAPLANE_SECTIONS, DEFAULT_AS, DEFAULT_BLOCK_SIZE, DEFAULT_CLUSTER_CIDR,
                                    DEFAULT_MTU, DEFAULT_NODE_MASK, DEFAULT_SERVICE_CIDR, DEFAULT_UNDERLAY,
                                    DEFAULT_UNDERLAY6, PolicySource, ProbePort, Scenario)
from cni_lab.model.service_specs import read_services

# A lab's name becomes part of namespace and interface names (names.py): 12 leaves room for the rest.
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}\Z")
TOP_KEYS = ("name", "description", "dataplane", "networking", "nodes", "allowOverlap", "expect", *DATAPLANE_SECTIONS,
            "namespaces", "probe", "policies", "outside", "services", "dns")


def load_file(path: str | Path, name_override: str | None = None) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabError(f"{path}: cannot read scenario: {getattr(e, 'strerror', None) or e}") from None
    return load_text(text, str(path), name_override)


def load_text(text: str, source: str, name_override: str | None = None) -> Scenario:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise LabError(f"{source}: not valid YAML{where}: {problem}") from None
    return load_document(document, source, name_override)


def load_document(document: Any, source: str, name_override: str | None = None) -> Scenario:
    """Check a parsed document and return the Scenario, or raise LabError listing every problem."""
    p = Problems(source)
    if not isinstance(document, dict):
        raise LabError(f"{source}: a scenario is a mapping with keys {', '.join(TOP_KEYS)}")
    if name_override is not None:
        document = {**document, "name": name_override}
    p.unknown_keys(document, TOP_KEYS, "")

    name = read_name(p, document.get("name"), "name", LAB_NAME, "1-12 of [a-z0-9-], starting with a letter")
    dataplane = read_dataplane(p, document)

    networking = document.get("networking") or {}
    if not isinstance(networking, dict):
        p.add("networking", "must be a mapping")
        networking = {}
    p.unknown_keys(networking, NETWORKING_KEYS, "networking.")
    cluster4, cluster6 = read_cluster(p, networking.get("clusterCIDR", DEFAULT_CLUSTER_CIDR))
    # an IPv6-only lab: IPv6 is its one family, in the fields of the first
    cluster: IPv4Network | IPv6Network | None = cluster4 if cluster4 is not None else cluster6
    if cluster4 is None:
        cluster6 = None
    segments = read_segments(p, networking.get("underlay", str(DEFAULT_UNDERLAY if cluster4 is not None or cluster is None
                                                               else DEFAULT_UNDERLAY6)))
    check_families(p, cluster, cluster6, segments)
    underlay_mtu = read_mtu(p, networking.get("underlayMTU", DEFAULT_MTU), "networking.underlayMTU")
    pod_mtu = read_mtu(p, networking["podMTU"], "networking.podMTU") if networking.get("podMTU") is not None else None
    as_number = read_integer(p, networking, "asNumber", DEFAULT_AS, 1, 4294967295, "an AS number")
    block_size = read_prefix(p, networking, "blockSize", DEFAULT_BLOCK_SIZE, 16, cluster4, "a block prefix length")
    mask = read_prefix(p, networking, "nodeCIDRMaskSize", DEFAULT_NODE_MASK, 8, cluster4, "a prefix length")
    mask6 = read_prefix6(p, networking, cluster6 if cluster4 is not None else cluster if isinstance(cluster, IPv6Network) else None)

    namespaces = read_namespaces(p, document.get("namespaces"))
    namespace_names = {n.name for n in namespaces}
    nodes = read_nodes(p, document.get("nodes"), namespace_names)
    check_unique_pods(p, nodes)
    probe_ports = read_probe(p, document.get("probe"))
    outside_ip = read_outside(p, document.get("outside"), "outside" in document)
    services = read_services(p, document.get("services"), namespace_names)
    service_cidr = read_network(p, networking.get("serviceCIDR", str(DEFAULT_SERVICE_CIDR)), "networking.serviceCIDR") \
        or DEFAULT_SERVICE_CIDR
    masquerade = networking.get("masquerade", outside_ip is not None)
    if not isinstance(masquerade, bool):
        p.add("networking.masquerade", f"{masquerade!r} is not true or false")
        masquerade = False
    policies = read_policies(p, document.get("policies"), source)
    allow_overlap = document.get("allowOverlap", False)
    if not isinstance(allow_overlap, bool):
        p.add("allowOverlap", f"{allow_overlap!r} is not true or false")
        allow_overlap = False
    description = document.get("description", "")
    if not isinstance(description, str):
        p.add("description", "must be text")
        description = ""
    expect = read_expectations(p, document.get("expect", "full"))
    cni, document = read_cni(p, document, source)
    ebpf_routing = read_ebpf(p, document.get("ebpf"))
    calico = read_calico(p, document.get("calico"), dataplane)
    dns = read_dns(p, document.get("dns"))
    p.raise_if_any()
    assert name is not None and cluster is not None
    scenario = Scenario(
        name=name,
        dataplane=dataplane,
        cluster_cidr=cluster,
        node_cidr_mask_size=mask,
        segments=segments,
        nodes=nodes,
        underlay_mtu=underlay_mtu,
        pod_mtu=pod_mtu,
        block_size=block_size,
        as_number=as_number,
        cni=cni,
        ebpf_routing=ebpf_routing,
        calico=calico,
        cluster_cidr6=cluster6,
        namespaces=namespaces,
        probe_ports=probe_ports,
        outside_ip=outside_ip,
        services=services,
        service_cidr=service_cidr,
        masquerade=masquerade,
        dns=dns,
        policies=policies,
        node_cidr_mask_size6=mask6,
        allow_overlap=allow_overlap,
        expect=expect,
        description=description,
        source=source,
        document=document,
    )
    scenario = with_cluster_dns(p, scenario)  # its pod and Service, where it has Services
    p.raise_if_any()
    return scenario


def load_probe_ports(ports: Iterable[str], source: str) -> tuple[ProbePort, ...]:
    """Ports given elsewhere (`check --port tcp/80`), read as `probe.ports` is; LabError naming
    `source` and each bad entry."""
    p = Problems(source)
    read = read_probe(p, {"ports": list(ports)})
    p.raise_if_any()
    return read


def load_policy_file(path: str) -> tuple[PolicySource, ...]:
    """The NetworkPolicy objects of one file (`policy apply`), read as a scenario's `policies`
    entry is; LabError naming `path`."""
    p = Problems(path)
    sources = read_policies(p, [str(Path(path).resolve())], path)
    p.raise_if_any()
    return sources
