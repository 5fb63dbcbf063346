"""Scenario files → a validated, typed description of the lab.

Pure: no kernel, no subprocess, no terminal. Every problem found is collected and reported at
once, each naming the file and the key (rule 6 of the house style).

    scenario.py            the typed values (Scenario, NodeSpec, ...) and the defaults; data-plane names
    loader.py              load_file / load_text / load_document: the sections, in order
    problems.py            the problems found so far, unknown keys, names
    labels.py              label keys and values as Kubernetes validates them (policy/'s too)
    cidrs.py               CIDRs of Kubernetes' legacy fields (ipBlock): read leniently, with its warnings
    networking.py          networking: CIDRs, underlay segments, MTUs; outside
    namespaces.py          namespaces, and labels wherever a scenario gives them
    nodes.py               nodes and their pods
    container_ports.py     a pod's container ports; port names (IANA_SVC_NAME) wherever a name stands for a port
    service_specs.py       services
    service_files.py       Services from a file (`service apply`): scenario entries or kind: Service manifests
    policy_sources.py      policies (inline or files; policy/reading.py reads the objects)
    probe_ports.py         probe.ports, and check --port
    expectations.py        expect
    dataplane_sections.py  dataplane, cni, ebpf, calico

Import from here: `from cni_lab.model import Scenario, load_document`.
"""

from cni_lab.model.cidrs import cidr_warnings, parse_cidr_sloppy
from cni_lab.model.container_ports import CONTAINER_PORT_KEYS, is_port_number, port_name_refusal
from cni_lab.model.dataplane_sections import CILIUM_VALUES
from cni_lab.model.expectations import EXPECT_KEYS
from cni_lab.model.labels import LABEL_KEY, LABEL_VALUE, is_dns_subdomain, is_label_key, is_label_value
from cni_lab.model.loader import LAB_NAME, TOP_KEYS, load_document, load_file, load_policy_file, load_probe_ports, load_text
from cni_lab.model.namespaces import NAMESPACE_NAME
from cni_lab.model.networking import MAX_NODE_MASK_DIFF, NETWORKING_KEYS, SEGMENT_NAME, Net
from cni_lab.model.nodes import MAX_BRIDGE_PORTS, MAX_NODES, NODE_KEYS, NODE_NAME, POD_KEYS, POD_NAME, RESERVED_NODE_NAMES
from cni_lab.model.policy_sources import read_policies
from cni_lab.model.probe_ports import PROBE_KEYS, PROBE_PORT
from cni_lab.model.problems import Problems, hint, read_name
from cni_lab.model.scenario import (
    CALICO_BACKENDS, CALICO_KEYS, CALICO_MODES, CNI_KEYS, CNI_ROUTING, DATAPLANE_SECTIONS, DATAPLANES, DEFAULT_AS, DEFAULT_BLOCK_SIZE, DEFAULT_BLOCK_SIZE6,
    DEFAULT_CLUSTER_CIDR, DEFAULT_CNI_PATH, DEFAULT_CNI_ROUTING, DEFAULT_DATAPLANE, DEFAULT_EBPF_ROUTING, DEFAULT_MTU,
    DEFAULT_NAMESPACE, DEFAULT_NODE_MASK, DEFAULT_NODE_MASK6, DEFAULT_OUTSIDE_IP, DEFAULT_SEGMENT, DEFAULT_SERVICE_CIDR,
    DEFAULT_UNDERLAY, DEFAULT_UNDERLAY6, EBPF_KEYS, EBPF_ROUTING, NAMESPACE_LABEL, NODE_PORT_RANGE, OUTSIDE_NETWORK, RULES,
    VERDICTS, CalicoSpec, CniSpec, ContainerPort, Expectation, Labels, NamespaceSpec, NodeSpec, PodSpec, PolicySource, ProbePort, Scenario, Segment,
    ServicePort, ServiceSpec, find_port, plugin_types)
from cni_lab.model.scenario import (DEFAULT_CLUSTER_DOMAIN, DNS_CLUSTER_IP_INDEX, DNS_LABELS, DNS_NAMESPACE, DNS_POD,
                                    DNS_SERVICE, DnsSpec)
from cni_lab.model.dns_section import DNS_KEYS, DNS_PORTS, is_cluster_dns
from cni_lab.model.service_specs import SERVICE_KEYS, SERVICE_PORT_KEYS, SERVICE_TYPES
from cni_lab.model.service_files import load_service_file, read_service_documents, read_service_values

__all__ = [
    "cidr_warnings", "parse_cidr_sloppy", "EXPECT_KEYS", "LABEL_KEY", "LABEL_VALUE", "is_dns_subdomain",
    "is_label_key", "is_label_value", "LAB_NAME", "TOP_KEYS", "load_document", "load_file",
    "load_policy_file", "load_probe_ports", "load_text", "NAMESPACE_NAME", "MAX_NODE_MASK_DIFF",
    "NETWORKING_KEYS", "SEGMENT_NAME", "Net", "MAX_BRIDGE_PORTS", "MAX_NODES", "NODE_KEYS", "NODE_NAME",
    "POD_KEYS", "POD_NAME", "RESERVED_NODE_NAMES", "PROBE_KEYS", "PROBE_PORT", "CNI_KEYS", "CNI_ROUTING",
    "DATAPLANE_SECTIONS", "DATAPLANES", "DEFAULT_AS", "DEFAULT_BLOCK_SIZE", "DEFAULT_BLOCK_SIZE6",
    "DEFAULT_CLUSTER_CIDR", "DEFAULT_CNI_PATH", "DEFAULT_CNI_ROUTING", "DEFAULT_DATAPLANE",
    "DEFAULT_EBPF_ROUTING", "DEFAULT_MTU", "DEFAULT_NAMESPACE", "DEFAULT_NODE_MASK", "DEFAULT_NODE_MASK6",
    "DEFAULT_OUTSIDE_IP", "DEFAULT_SEGMENT", "DEFAULT_SERVICE_CIDR", "DEFAULT_UNDERLAY", "DEFAULT_UNDERLAY6",
    "EBPF_KEYS", "EBPF_ROUTING", "NAMESPACE_LABEL", "NODE_PORT_RANGE", "OUTSIDE_NETWORK", "RULES", "VERDICTS",
    "CniSpec", "Expectation", "Labels", "NamespaceSpec", "NodeSpec", "PodSpec", "PolicySource", "ProbePort",
    "Scenario", "Segment", "ServicePort", "ServiceSpec", "plugin_types", "SERVICE_KEYS", "SERVICE_PORT_KEYS",
    "SERVICE_TYPES", "CILIUM_VALUES", "CONTAINER_PORT_KEYS", "is_port_number", "port_name_refusal", "ContainerPort",
    "find_port", "CALICO_BACKENDS", "CALICO_KEYS", "CALICO_MODES", "CalicoSpec",
    "Problems", "hint", "read_name", "read_policies",  # for other inputs read as the model reads its own (exercises)
    "DEFAULT_CLUSTER_DOMAIN", "DNS_CLUSTER_IP_INDEX", "DNS_LABELS", "DNS_NAMESPACE", "DNS_POD", "DNS_SERVICE",
    "DnsSpec", "DNS_KEYS", "DNS_PORTS", "is_cluster_dns",
    "load_service_file", "read_service_documents", "read_service_values",  # `service apply` and an exercise's `service:` step
]
