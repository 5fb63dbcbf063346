"""Services as kube-proxy's nftables mode makes them (pkg/proxy/nftables in kubernetes, stable
since 1.33): in every node's namespace, `table ip kube-proxy`, where a ClusterIP and port lead
through a map to the Service's chain, which picks one endpoint at random (`numgen random`) and
jumps to the endpoint's chain, which DNATs to the pod. Pure: the lab in, a ruleset per node out.

    table ip kube-proxy {
      map service-ips { type ipv4_addr . inet_proto . inet_service : verdict ;
                        elements = { 10.96.0.2 . tcp . 80 : goto service-XXXXXXXX-default/web/tcp/ } }
      chain services { ip daddr . meta l4proto . th dport vmap @service-ips }
      chain nat-prerouting  { type nat hook prerouting priority dstnat; jump services }
      chain nat-output      { type nat hook output priority -100; jump services }
      chain nat-postrouting { type nat hook postrouting priority srcnat; jump masquerading }
      chain masquerading { meta mark & 0x00004000 == 0 return; meta mark set meta mark ^ 0x4000;
                           masquerade fully-random }
      chain mark-for-masquerade { meta mark set meta mark | 0x4000 }
      chain service-XXXXXXXX-default/web/tcp/ {
        ip daddr 10.96.0.2 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
        numgen random mod 2 vmap { 0 : goto endpoint-AAAAAAAA-..., 1 : goto endpoint-BBBBBBBB-... } }
      chain endpoint-AAAAAAAA-default/web/tcp/__10.244.0.2/8080 {
        ip saddr 10.244.0.2 jump mark-for-masquerade      # hairpin: a pod reaching itself
        meta l4proto tcp dnat to 10.244.0.2:8080 }
    }

ClusterIPs are handed out in order from the Service CIDR's .2 (kube-apiserver picks at random;
.1 is the `kubernetes` Service's, kept). Endpoints are the pods the selector picks in the
Service's namespace, IPv4 only so far.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address

from cni_lab import nft
from cni_lab.errors import LabError
from cni_lab.ipam import Lab, Pod
from cni_lab.model import ServicePort, ServiceSpec
from cni_lab.policy import Selector

TABLE = "kube-proxy"
MASQ_MARK = 0x4000


@dataclass(frozen=True)
class Service:
    spec: ServiceSpec
    cluster_ip: IPv4Address
    endpoints: tuple[Pod, ...]

    @property
    def qualified(self) -> str:
        return f"{self.spec.namespace}/{self.spec.name}"


def resolve(lab: Lab, gone: frozenset[str] = frozenset()) -> list[Service]:
    """Every Service with its ClusterIP and endpoints (pods in `gone`, by id, are not endpoints:
    the EndpointSlice controller drops a pod that is not ready); LabError where the lab cannot
    have them."""
    specs = lab.scenario.services
    if not specs:
        return []
    src, cidr = lab.scenario.source, lab.scenario.service_cidr
    problems = []
    if lab.scenario.cluster_cidr.version != 4 or lab.dual_stack:
        problems.append(f"{src}: services: IPv4-only labs for now")
    for net, what in [(lab.scenario.cluster_cidr, "the cluster CIDR"), *((s.cidr, "the underlay") for s in lab.segments)]:
        if net.version == 4 and cidr.overlaps(net):  # type: ignore[arg-type]
            problems.append(f"{src}: networking.serviceCIDR: {cidr} overlaps {what} {net}")
    if lab.dataplane == "ebpf":
        problems.append(f"{src}: services: dataplane ebpf does not load-balance Services yet (its programs bypass "
                        "the node's NAT hooks, where kube-proxy's rules are)")
    if len(specs) > cidr.num_addresses - 3:
        problems.append(f"{src}: networking.serviceCIDR: {cidr} has no room for {len(specs)} Services")
    if problems:
        raise LabError(*problems)
    out = []
    for i, spec in enumerate(specs):
        selector = Selector(match_labels=spec.selector)  # a Service's selector: equality on every label
        selected = tuple(p for p in lab.pods if p.namespace == spec.namespace and p.id not in gone
                         and selector.matches(p.labels))
        out.append(Service(spec, cidr.network_address + 2 + i, selected))  # type: ignore[arg-type]
    return out


def _hash(text: str) -> str:
    """kube-proxy's chain name prefix: base32 of a SHA-256, 8 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:8]


def service_chain(svc: Service, port: ServicePort) -> str:
    name = f"{svc.qualified}/{port.protocol.lower()}/"
    return f"service-{_hash(name)}-{name}"


def endpoint_chain(svc: Service, port: ServicePort, pod: Pod) -> str:
    name = f"{svc.qualified}/{port.protocol.lower()}/__{pod.ip}/{port.target_port}"
    return f"endpoint-{_hash(name)}-{name}"


def ruleset(lab: Lab, services: list[Service]) -> str:
    """The same table on every node (kube-proxy runs on each): replaced as a whole."""
    cluster = lab.scenario.cluster_cidr
    elements = []
    chains: dict[str, list[str]] = {}
    for svc in services:
        for port in svc.spec.ports:
            chain = service_chain(svc, port)
            proto = port.protocol.lower()
            elements.append(f"{svc.cluster_ip} . {proto} . {port.port} : goto {chain}")
            body = [f"ip daddr {svc.cluster_ip} {proto} dport {port.port} ip saddr != {cluster} jump mark-for-masquerade"]
            if svc.endpoints:
                targets = ", ".join(f"{i} : goto {endpoint_chain(svc, port, p)}" for i, p in enumerate(svc.endpoints))
                body.append(f"numgen random mod {len(svc.endpoints)} vmap {{ {targets} }}")
            else:
                body.append(f'reject comment "{svc.qualified} has no endpoints"')
            chains[chain] = body
            for p in svc.endpoints:
                chains[endpoint_chain(svc, port, p)] = [
                    f"ip saddr {p.ip} jump mark-for-masquerade",  # hairpin
                    f"meta l4proto {proto} dnat to {p.ip}:{port.target_port}",
                ]
    lines = [*nft.replace("ip", TABLE), f"table ip {TABLE} {{"]
    lines += ["  map service-ips {", "    type ipv4_addr . inet_proto . inet_service : verdict;"]
    if elements:
        lines.append("    elements = { " + ", ".join(elements) + " }")
    lines += ["  }",
              "  chain services {", "    ip daddr . meta l4proto . th dport vmap @service-ips", "  }",
              "  chain nat-prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
              "    jump services", "  }",
              "  chain nat-output {", "    type nat hook output priority -100; policy accept;", "    jump services", "  }",
              "  chain nat-postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
              "    jump masquerading", "  }",
              "  chain masquerading {", f"    meta mark & {MASQ_MARK:#010x} == 0 return",
              f"    meta mark set meta mark ^ {MASQ_MARK:#x}", "    masquerade fully-random", "  }",
              "  chain mark-for-masquerade {", f"    meta mark set meta mark | {MASQ_MARK:#x}", "  }"]
    lines += nft.chains(chains)
    lines.append("}")
    return "\n".join(lines) + "\n"
