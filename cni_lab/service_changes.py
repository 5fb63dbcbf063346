"""Services changed on a running lab (`service apply`, `service delete`), as the API server
changes them: the lab in, its new `services` list out, every problem at once (LabError).

Why every Service is pinned first: ipam allocates by position. ClusterIPs go in the list's order
from the Service CIDR's .2 (a given one is kept and skipped), NodePorts not given take the lowest
free port in the list's order. Resolving a changed list as it stands would renumber every Service
after one deleted or retyped, under clients that hold its old address. So each Service the lab
has is written back with what it was given, its ClusterIP as `clusterIP` and every nodePort,
which ipam keeps as if the scenario had given them; only a new Service is allocated: the next
free ClusterIP and the lowest free nodePorts, after the existing ones. A new Service goes to the
end of the list (so the ebpf data plane numbers the others' frontends as before), a replaced one
keeps its place.

A replaced Service is an update of the same object: its ClusterIP is kept (the API server's
`spec.clusterIP: field is immutable`: a file that gives another one, or `None` for a Service that
has an address, is refused), and a port without a nodePort keeps the one its namesake had
(kube-apiserver's patchAllocatedValues maps nodePorts by port name), unless the file gives that
number to another of its ports.

Pure: no kernel, no files.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from cni_lab import ipam
from cni_lab.cluster import HeadlessService, Lab, Service
from cni_lab.errors import LabError
from cni_lab.model import DNS_NAMESPACE, DNS_SERVICE, ServiceSpec, is_cluster_dns

AnyService = Service | HeadlessService
KUBE_DNS = f"{DNS_NAMESPACE}/{DNS_SERVICE}"


def qualified(spec: ServiceSpec) -> str:
    return f"{spec.namespace}/{spec.name}"


def pinned(svc: AnyService) -> ServiceSpec:
    """The Service's spec with what it was allocated written in (its spec already carries the
    nodePorts ipam gave: cluster.resolve keeps ipam.node_ports' result)."""
    return dataclasses.replace(svc.spec, cluster_ip=svc.cluster_ip) if isinstance(svc, Service) else svc.spec


def applied(lab: Lab, new: Sequence[ServiceSpec], source: str) -> tuple[ServiceSpec, ...]:
    """The lab's Services with `new` (read from `source`, in its order) added, or replacing those
    of the same namespace/name."""
    current = lab.all_services
    out = [pinned(s) for s in current]
    place = {s.qualified: i for i, s in enumerate(current)}
    problems: list[str] = []
    mine: dict[str, int] = {}  # namespace/name → its index in the file
    for i, spec in enumerate(new):
        at, key = f"{source}: services[{i}]", qualified(spec)
        mine[key] = i
        if is_cluster_dns(spec) and lab.dns_service is not None:
            problems.append(f"{at}: {KUBE_DNS} is the lab's cluster DNS (every pod's resolv.conf names its "
                            "ClusterIP): it is not replaced; give the Service another name")
            continue
        if key not in place:
            out.append(spec)
            continue
        old = current[place[key]]
        refusal = _immutable(old, spec)
        if refusal:
            problems.append(f"{at}.clusterIP: {refusal}")
            continue
        out[place[key]] = _carried(old, spec)
    problems += _taken(lab, out, mine, source)
    if problems:
        raise LabError(*problems)
    return tuple(out)


def deleted(lab: Lab, name: str) -> tuple[ServiceSpec, ...]:
    """The lab's Services without `name` (namespace/name)."""
    if name == KUBE_DNS and lab.dns_service is not None:
        raise LabError(f"{KUBE_DNS} is the lab's cluster DNS (every pod's resolv.conf names its ClusterIP): "
                       "it is not deleted; `dns: false` in the scenario builds a lab without it")
    if all(s.qualified != name for s in lab.all_services):
        raise LabError(f"lab {lab.name} has no Service {name} "
                       f"(Services: {', '.join(s.qualified for s in lab.all_services) or 'none'})")
    return tuple(pinned(s) for s in lab.all_services if s.qualified != name)


def _immutable(old: AnyService, spec: ServiceSpec) -> str:
    """Why the update would change a ClusterIP ("" where it does not)."""
    had = "None (headless)" if isinstance(old, HeadlessService) else str(old.cluster_ip)
    if isinstance(old, HeadlessService):
        changed = spec.cluster_ip is not None
    else:
        changed = spec.headless or (spec.cluster_ip is not None and spec.cluster_ip != old.cluster_ip)
    if not changed:
        return ""
    wants = "None" if spec.headless else str(spec.cluster_ip)
    return (f"{wants}: field is immutable ({old.qualified} has {had}), as the API server says: "
            f"`cni-lab service delete` it first, then apply")


def _carried(old: AnyService, spec: ServiceSpec) -> ServiceSpec:
    """The update with what the old Service was allocated: its ClusterIP (or headlessness) and,
    by port name, its nodePorts where the file gives none."""
    if isinstance(old, HeadlessService):
        spec = dataclasses.replace(spec, headless=True, cluster_ip=None)
    else:
        spec = dataclasses.replace(spec, cluster_ip=old.cluster_ip)
    if not spec.node_port:
        return spec
    had = {p.name: p.node_port for p in old.spec.ports if p.node_port is not None}
    given = {p.node_port for p in spec.ports if p.node_port is not None}
    ports = tuple(dataclasses.replace(p, node_port=had[p.name])
                  if p.node_port is None and p.name in had and had[p.name] not in given else p for p in spec.ports)
    return dataclasses.replace(spec, ports=ports)


def _taken(lab: Lab, specs: list[ServiceSpec], mine: dict[str, int], source: str) -> list[str]:
    """A ClusterIP or nodePort the file gives that another Service of the lab holds, or a ClusterIP
    outside the Service CIDR: said with the file's own index (ipam would name the lab's list)."""
    problems = []
    cidr = lab.scenario.service_cidr
    for spec in specs:
        i = mine.get(qualified(spec))
        if i is None:
            continue
        others = [s for s in specs if qualified(s) != qualified(spec)]
        at = f"{source}: services[{i}]"
        if spec.cluster_ip is not None:
            holder = next((qualified(s) for s in others if s.cluster_ip == spec.cluster_ip), None)
            if not ipam.in_service_range(cidr, spec.cluster_ip):
                problems.append(f"{at}.clusterIP: {spec.cluster_ip} is not in the range {cidr} "
                                "(.1 is the `kubernetes` Service's)")
            elif holder is not None:
                problems.append(f"{at}.clusterIP: {spec.cluster_ip}: provided IP is already allocated (to {holder})")
        for j, port in enumerate(spec.ports):
            if port.node_port is None:
                continue
            holder = next((qualified(s) for s in others for p in s.ports
                           if (p.protocol, p.node_port) == (port.protocol, port.node_port)), None)
            if holder is not None:
                problems.append(f"{at}.ports[{j}].nodePort: {port.node_port}/{port.protocol}: provided port is "
                                f"already allocated (to {holder})")
    return problems
