"""The cluster DNS as data: the records kube-dns serves for the lab, the dnsmasq configuration
that serves them, and every pod's resolv.conf as kubelet writes it.

Records follow the Kubernetes DNS specification (kubernetes/dns, docs/specification.md, schema
1.0.1), section by section:

    2.2    dns-version.<zone>                          TXT  "1.0.1"
    2.3.1  <svc>.<ns>.svc.<zone>                       A    <ClusterIP>
    2.3.2  _<port>._<proto>.<svc>.<ns>.svc.<zone>      SRV  10 100 <port> <svc>.<ns>.svc.<zone>  (named ports only)
    2.3.3  <d>.<c>.<b>.<a>.in-addr.arpa                PTR  <svc>.<ns>.svc.<zone>
    2.4.1  <svc>.<ns>.svc.<zone> (headless)            A    <each ready endpoint>; none ready: NXDOMAIN
                                                       AAAA <each one's IPv6 address> (dual-stack)
           <hostname>.<svc>.<ns>.svc.<zone>            A    <endpoint>
    2.4.2  _<port>._<proto>.<svc>.<ns>.svc.<zone>      SRV  10 100 <endpoint port> <hostname>.<svc>.<ns>.svc.<zone>
    2.4.3  <endpoint reversed>.in-addr.arpa            PTR  <hostname>.<svc>.<ns>.svc.<zone>
    2.6    <a>-<b>-<c>-<d>.<ns>.pod.<zone>             A    <a>.<b>.<c>.<d>  (the lab's pods)

A pod's _hostname_ (2.1) is its address with dashes, the identifier CoreDNS gives an endpoint
without a hostname. Priority 10 and weight 100 are the specification's examples (RFC 2782 numbers
it leaves open). Names in the cluster domain that are none of these answer NXDOMAIN.

Pure: text and values only (kernel/dns.py writes and runs them).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Sequence, Union

from cni_lab.cluster import HeadlessService, Lab, Pod, Service

AnyNetwork = Union[IPv4Network, IPv6Network]
SCHEMA_VERSION = "1.0.1"  # the specification's section 1
SRV_PRIORITY, SRV_WEIGHT = 10, 100  # the specification's examples (2.3.2)
LOCAL_TTL = 5  # CoreDNS's kubernetes plugin's default ttl (kubeadm's Corefile says 30); dnsmasq's own is 0
NDOTS = 5  # kubelet's ClusterFirst options (pkg/kubelet/network/dns: ndots:5)
STAND_IN_ZONE = "example.test"  # RFC 2606's reserved name: what a lab with an outside host answers for "the internet"


@dataclass(frozen=True)
class Record:
    """One resource record as a learner reads it: `web.default.svc.cluster.local. A 10.96.0.2`."""

    name: str  # without the final dot
    type: str  # A, SRV, PTR, TXT
    value: str
    section: str  # the specification's section it comes from

    def describe(self) -> str:
        return f"{self.name}. {self.type} {self.value}"


def service_name(lab: Lab, namespace: str, name: str) -> str:
    assert lab.dns is not None
    return f"{name}.{namespace}.svc.{lab.dns.cluster_domain}"


def dashed(ip: IPv4Address | IPv6Address) -> str:
    """10.244.0.2 → 10-244-0-2: a pod record's first label, and an endpoint's hostname."""
    return str(ip).replace(".", "-").replace(":", "-")


def reverse_name(ip: IPv4Address | IPv6Address) -> str:
    return ip.reverse_pointer


def records(lab: Lab, services: Sequence[Service], headless: Sequence[HeadlessService]) -> tuple[Record, ...]:
    """Every record the lab's kube-dns answers with, given the Services as they are now (a pod
    taken down is no endpoint)."""
    return tuple(r for r, _ in _entries(lab, services, headless))


def _entries(lab: Lab, services: Sequence[Service], headless: Sequence[HeadlessService]) -> list[tuple[Record, str]]:
    """Each record with the dnsmasq line that serves it ("" where the line of another serves it
    too: `host-record` makes the A and the PTR of its first name). dnsmasq answers a PTR with the
    first host-record of the address, so headless endpoints come before pod records."""
    assert lab.dns is not None
    zone = lab.dns.cluster_domain
    out = [(Record(f"dns-version.{zone}", "TXT", f'"{SCHEMA_VERSION}"', "2.2"),
            f"txt-record=dns-version.{zone},{SCHEMA_VERSION}")]
    for svc in services:
        name = service_name(lab, svc.spec.namespace, svc.spec.name)
        out += [(Record(name, "A", str(svc.cluster_ip), "2.3.1"), f"host-record={name},{svc.cluster_ip}"),
                (Record(reverse_name(svc.cluster_ip), "PTR", f"{name}.", "2.3.3"), "")]
        out += [_srv(f"_{p.name}._{p.protocol.lower()}.{name}", p.port, name, "2.3.2") for p in svc.spec.ports if p.name]
    for hl in headless:
        name = service_name(lab, hl.spec.namespace, hl.spec.name)
        for pod in hl.endpoints:
            host = f"{dashed(pod.ip)}.{name}"
            out += [(Record(name, "A", str(pod.ip), "2.4.1"), f"host-record={host},{name},{pod.ip}"),
                    (Record(host, "A", str(pod.ip), "2.4.1"), ""),
                    (Record(reverse_name(pod.ip), "PTR", f"{host}.", "2.4.3"), "")]
            if pod.ip6 is not None:  # dual-stack: each address of the endpoint in its family, named by it
                host6 = f"{dashed(pod.ip6)}.{name}"
                out += [(Record(name, "AAAA", str(pod.ip6), "2.4.1"), f"host-record={host6},{name},{pod.ip6}"),
                        (Record(host6, "AAAA", str(pod.ip6), "2.4.1"), ""),
                        (Record(reverse_name(pod.ip6), "PTR", f"{host6}.", "2.4.3"), "")]
        # the endpoint's own port (nothing rewrites a headless Service's traffic), as CoreDNS answers
        out += [_srv(f"_{p.name}._{p.protocol.lower()}.{name}", b.port, f"{dashed(b.pod.ip)}.{name}", "2.4.2")
                for p in hl.spec.ports if p.name for b in hl.backends(p)]
    for pod in lab.pods:
        if pod.ip.version == 4:
            out.append((Record(pod_name(lab, pod), "A", str(pod.ip), "2.6"), f"host-record={pod_name(lab, pod)},{pod.ip}"))
    return out


def _srv(name: str, port: int, target: str, section: str) -> tuple[Record, str]:
    return (Record(name, "SRV", f"{SRV_PRIORITY} {SRV_WEIGHT} {port} {target}.", section),
            f"srv-host={name},{target},{port},{SRV_PRIORITY},{SRV_WEIGHT}")


def pod_name(lab: Lab, pod: Pod) -> str:
    assert lab.dns is not None
    return f"{dashed(pod.ip)}.{pod.namespace}.pod.{lab.dns.cluster_domain}"


def reverse_zones(networks: Sequence[AnyNetwork]) -> list[str]:
    """The in-addr.arpa zones covering these networks (whole octets: 10.96.0.0/12 → 96.10 … 111.10),
    answered from the records alone (NXDOMAIN for the rest), as CoreDNS's `kubernetes … in-addr.arpa`."""
    zones: list[str] = []
    for net in networks:
        if net.version != 4:
            continue
        octets = min(-(-net.prefixlen // 8), 3)
        if octets == 0:
            continue
        for sub in (net.subnets(new_prefix=octets * 8) if net.prefixlen < octets * 8 else [net.supernet(new_prefix=octets * 8)]):
            labels = str(sub.network_address).split(".")[:octets]
            zone = ".".join(reversed(labels)) + ".in-addr.arpa"
            if zone not in zones:
                zones.append(zone)
    return zones


def dnsmasq_conf(lab: Lab, services: Sequence[Service], headless: Sequence[HeadlessService]) -> str:
    """dnsmasq's whole configuration: nothing read from /etc, nothing forwarded (no upstream: no
    name leaves the machine), authoritative for the cluster domain, its reverse zones and, where
    the lab has an outside host, the stand-in zone example.test. The pid file and log are given
    on the command line (they live in the lab's state folder)."""
    assert lab.dns is not None
    server = dns_pod(lab)
    zone = lab.dns.cluster_domain
    reverse = reverse_zones([lab.scenario.service_cidr, lab.scenario.cluster_cidr])
    lines = [
        f"# cni-lab {lab.name}: kube-dns for {zone} (dnsmasq in {server.qualified if server else '-'})",
        "no-resolv", "no-hosts", "no-poll", "bind-interfaces",
        *(f"listen-address={server.ip}" for _ in [server] if server is not None),
        "user=root", "group=root",  # it runs as root in the pod's namespace; its files are in root's folder
        f"local-ttl={LOCAL_TTL}", "log-queries",
        f"local=/{zone}/", *(f"local=/{z}/" for z in reverse),
    ]
    if lab.scenario.outside_ip is not None:
        lines += [f"local=/{STAND_IN_ZONE}/",
                  f"host-record={STAND_IN_ZONE},www.{STAND_IN_ZONE},{lab.scenario.outside_ip}"]
    lines += [line for _, line in _entries(lab, services, headless)]
    return "\n".join(line for line in lines if line) + "\n"


def dns_pod(lab: Lab) -> Pod | None:
    """The pod dnsmasq runs in: kube-dns's endpoint."""
    svc = lab.dns_service
    return svc.endpoints[0] if svc is not None and svc.endpoints else None


def search_path(lab: Lab, namespace: str) -> tuple[str, ...]:
    """kubelet's search list for dnsPolicy ClusterFirst: `<ns>.svc.<zone> svc.<zone> <zone>`."""
    assert lab.dns is not None
    zone = lab.dns.cluster_domain
    return (f"{namespace}.svc.{zone}", f"svc.{zone}", zone)


def resolv_conf(lab: Lab, pod: Pod) -> str:
    """What kubelet writes for a pod with dnsPolicy ClusterFirst (the DNS pod too: the lab's
    nodes have no resolver of their own to give it, so it asks kube-dns like every pod)."""
    svc = lab.dns_service
    assert svc is not None
    return (f"# cni-lab {lab.name}: {pod.qualified}, dnsPolicy ClusterFirst (as kubelet writes it)\n"
            f"search {' '.join(search_path(lab, pod.namespace))}\n"
            f"nameserver {svc.cluster_ip}\n"
            f"options ndots:{NDOTS}\n")
