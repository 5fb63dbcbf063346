"""Names in the lesson: a pod's resolv.conf and what its resolver asks kube-dns, step by step
(`explain POD`), and a name followed from the lookup to the connection (`trace POD NAME`): the
query to kube-dns through the Service's DNAT (service_trace, over its dns-tcp port: the trace
follows TCP), the answer, then the connection to the address it gave.

Every answer here is asked for real, from inside the pod's namespace, with check's resolver
(probe/dns_probes.py); the resolv.conf is read back from /etc/netns, where `ip netns exec` finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from cni_lab import dns_message, dns_records, names
from cni_lab.cluster import HeadlessService, Lab, Pod, Service
from cni_lab.errors import LabError
from cni_lab.kernel import dns
from cni_lab.lesson import service_trace
from cni_lab.lesson.service_trace import BpfServiceTrace, ServiceTrace
from cni_lab.probe.dns_probes import Lookup, lookup
from cni_lab.target_netns import target_netns


@dataclass(frozen=True)
class PodNames:
    pod: str  # its id
    resolv_conf: str  # as read back ("" where none is written)
    lookups: tuple[tuple[str, Lookup], ...]  # a sample name per Service, as the pod would look it up


def pod_of(lab: Lab, target: str) -> Pod:
    ns = target_netns(lab, target)
    found = next((p for p in lab.pods if names.pod_netns(lab.name, p.node, p.name) == ns), None)
    if found is None:
        raise LabError(f"{target} is no pod of lab {lab.name}")
    return found


def sample_names(lab: Lab, pod: Pod) -> list[str]:
    """What a pod would write for each Service: its short name in its own namespace, else name.namespace."""
    every: list[Service | HeadlessService] = [*lab.services, *lab.headless_services]
    return [s.spec.name if s.spec.namespace == pod.namespace else f"{s.spec.name}.{s.spec.namespace}" for s in every]


def explain_pod(lab: Lab, target: str) -> PodNames:
    pod = pod_of(lab, target)
    if lab.dns_service is None:
        raise LabError(f"lab {lab.name} has no cluster DNS (no Services, or `dns: false`)")
    ns = names.pod_netns(lab.name, pod.node, pod.name)
    text = dns.read_resolv_conf(ns) or ""
    conf = dns_message.ResolvConf.parse(text or dns_records.resolv_conf(lab, pod))
    return PodNames(pod.id, text, tuple((n, lookup(ns, conf, n, "UDP")) for n in sample_names(lab, pod)))


@dataclass(frozen=True)
class NameTrace:
    src: str
    name: str
    lookup: Lookup
    query: ServiceTrace | BpfServiceTrace  # the DNS query's way to kube-dns
    connection: ServiceTrace | BpfServiceTrace | None  # the Service trace to the ClusterIP the name gave, or None (not a ClusterIP)
    address: str  # the first address answered ("" for none)


def is_name(lab: Lab, text: str) -> bool:
    """A DNS name the lab should look up: no address, no node, no pod the CLI knows."""
    try:
        ip_address(text.partition(":")[0])
        return False
    except ValueError:
        pass
    try:
        target_netns(lab, text)
        return False
    except LabError:
        return lab.dns_service is not None


def trace_name(lab: Lab, src: str, name: str) -> NameTrace:
    pod = pod_of(lab, src)
    svc = lab.dns_service
    assert svc is not None
    ns = names.pod_netns(lab.name, pod.node, pod.name)
    conf = dns_message.ResolvConf.parse(dns.read_resolv_conf(ns) or dns_records.resolv_conf(lab, pod))
    found = lookup(ns, conf, name, "UDP")
    tcp = next(p for p in svc.spec.ports if p.protocol == "TCP")
    query = service_trace.trace(lab, src, svc, tcp)
    address = found.addresses[0] if found.addresses else ""
    connection = None
    if address:
        target = service_trace.parse_destination(lab, address)
        if target is not None and target[1].protocol == "TCP":
            connection = service_trace.trace(lab, src, *target)
    return NameTrace(pod.id, name, found, query, connection, address)
