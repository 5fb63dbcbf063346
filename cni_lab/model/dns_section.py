"""The `dns` section, and the cluster DNS a lab with Services gets: the `kube-system/coredns` pod
and the `kube-system/kube-dns` Service in front of it, added to the scenario as kubeadm adds
CoreDNS to a cluster (its deployment's label `k8s-app: kube-dns`, its Service's ports `dns`
53/UDP and `dns-tcp` 53/TCP, the ClusterIP kubelet's clusterDNS names: the Service CIDR's tenth
address). The pod is one more pod of the first node, after the scenario's own, so it takes the
next address its node's IPAM gives (host-local or Calico's block) and every other pod keeps its own.

    dns: false                        # no cluster DNS
    dns: {clusterDomain: cluster.local}  # kubelet's clusterDomain (the default)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cni_lab.model.labels import MAX_DNS_LABEL, is_dns_subdomain
from cni_lab.model.problems import Problems
from cni_lab.model.scenario import (DEFAULT_CLUSTER_DOMAIN, DNS_CLUSTER_IP_INDEX, DNS_LABELS, DNS_NAMESPACE, DNS_POD,
                                    DNS_SERVICE, NAMESPACE_LABEL, DnsSpec, NamespaceSpec, PodSpec,
                                    Scenario, ServicePort, ServiceSpec)

DNS_KEYS = ("clusterDomain",)
# kube-dns's ports as kubeadm's manifest names them (the metrics port 9153 is CoreDNS's own: not served)
DNS_PORTS = (ServicePort(53, 53, "UDP", name="dns"), ServicePort(53, 53, "TCP", name="dns-tcp"))


def read_dns(problems: Problems, value: Any) -> DnsSpec | None:
    """`dns: false`, `dns: true`, or `dns: {clusterDomain: NAME}`; absent: on (where there are Services)."""
    if value is None or value is True:
        return DnsSpec()
    if value is False:
        return None
    if not isinstance(value, dict):
        problems.add("dns", f"{value!r} is not true, false or a mapping with keys {', '.join(DNS_KEYS)}")
        return None
    problems.unknown_keys(value, DNS_KEYS, "dns.")
    domain = value.get("clusterDomain", DEFAULT_CLUSTER_DOMAIN)
    if isinstance(domain, str):
        domain = domain.removesuffix(".")  # kubelet takes `cluster.local.` for `cluster.local`
    if not is_dns_subdomain(domain) or any(len(label) > MAX_DNS_LABEL for label in domain.split(".")):
        problems.add("dns.clusterDomain", f"{domain!r} is not a DNS name (labels of a-z, 0-9 and '-' joined by dots, "
                     "63 characters a label, 253 in all), e.g. cluster.local")
        return None
    return DnsSpec(domain)


def with_cluster_dns(problems: Problems, scenario: Scenario) -> Scenario:
    """The scenario with its cluster DNS (the pod, the Service, namespace kube-system) where it has
    Services and `dns` is on; as it was otherwise (`dns` off: None)."""
    if scenario.dns is None or not scenario.services:
        return dataclasses.replace(scenario, dns=None)
    if not scenario.nodes:
        return scenario
    taken = [f"services[{i}]" for i, s in enumerate(scenario.services) if (s.namespace, s.name) == (DNS_NAMESPACE, DNS_SERVICE)]
    taken += [f"nodes[{i}].pods" for i, n in enumerate(scenario.nodes) for p in n.pod_specs
              if (p.namespace, p.name) == (DNS_NAMESPACE, DNS_POD)]
    cluster_ip = scenario.service_cidr.network_address + DNS_CLUSTER_IP_INDEX
    taken += [f"services[{i}].clusterIP" for i, s in enumerate(scenario.services) if s.cluster_ip == cluster_ip]
    for where in taken:
        problems.add(where, f"{DNS_NAMESPACE}/{DNS_SERVICE}, {DNS_NAMESPACE}/{DNS_POD} and {cluster_ip} are the "
                     "lab's cluster DNS: use another name or address, or `dns: false`")
    if taken:
        return scenario
    if scenario.service_cidr.num_addresses <= DNS_CLUSTER_IP_INDEX + 1:
        problems.add("networking.serviceCIDR", f"{scenario.service_cidr} has no tenth address for kube-dns "
                     "(kubeadm's clusterDNS): use a /27 or larger, or `dns: false`")
        return scenario
    pod = PodSpec(DNS_POD, DNS_NAMESPACE, DNS_LABELS)
    first = scenario.nodes[0]
    # (a node of plain names keeps no pod_specs: spec_of gives the others theirs, as before)
    node = dataclasses.replace(first, pods=(*first.pods, pod.key), pod_specs=(*first.pod_specs, pod))
    namespaces = scenario.namespaces
    if all(ns.name != DNS_NAMESPACE for ns in namespaces):
        namespaces = (*namespaces, NamespaceSpec(DNS_NAMESPACE, ((NAMESPACE_LABEL, DNS_NAMESPACE),)))
    service = ServiceSpec(DNS_SERVICE, DNS_NAMESPACE, DNS_LABELS, DNS_PORTS, cluster_ip=cluster_ip)
    return dataclasses.replace(scenario, nodes=(node, *scenario.nodes[1:]), namespaces=namespaces,
                               services=(*scenario.services, service))


def is_cluster_dns(spec: ServiceSpec) -> bool:
    """The Service the lab added for its cluster DNS (no scenario may define it: refused above)."""
    return (spec.namespace, spec.name) == (DNS_NAMESPACE, DNS_SERVICE)
