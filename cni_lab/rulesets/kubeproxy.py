"""Services as kube-proxy's nftables mode makes them (pkg/proxy/nftables in kubernetes, stable
since 1.33): in every node's namespace, `table ip kube-proxy`, where a ClusterIP and port (or a
NodePort on the node's address) lead through a map to the Service's chain, which picks one
endpoint at random (`numgen random`) and jumps to the endpoint's chain, which DNATs to the pod.
Pure: the lab in, a ruleset per node out.

    table ip kube-proxy {
      set nodeport-ips { type ipv4_addr; elements = { 192.168.1.2 } }     # this node's address
      map service-ips { type ipv4_addr . inet_proto . inet_service : verdict;
                        elements = { 10.96.0.2 . tcp . 80 : goto service-XXXXXXXX-default/web/tcp/ } }
      map service-nodeports { type inet_proto . inet_service : verdict;
                        elements = { tcp . 30000 : goto external-XXXXXXXX-default/web/tcp/ } }
      map no-endpoint-services / no-endpoint-nodeports     # reject (no endpoints), drop (Local, none here)
      chain filter-input / filter-forward / filter-output { priority -110 (dstnat - 10); ct state new jump endpoints-check }
      chain nat-prerouting, nat-output { priority dstnat; jump services }
      chain nat-postrouting { priority srcnat; jump masquerading }
      chain services { ip daddr . meta l4proto . th dport vmap @service-ips
                       ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports }
      chain masquerading { meta mark & 0x00004000 == 0 return; meta mark set meta mark ^ 0x4000;
                           masquerade fully-random }
      chain mark-for-masquerade { meta mark set meta mark | 0x4000 }
      chain service-XXXXXXXX-default/web/tcp/ {
        ip daddr 10.96.0.2 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
        numgen random mod 2 vmap { 0 : goto endpoint-AAAAAAAA-..., 1 : goto endpoint-BBBBBBBB-... } }
      chain external-XXXXXXXX-default/web/tcp/ {          # externalTrafficPolicy: Cluster
        jump mark-for-masquerade; goto service-XXXXXXXX-default/web/tcp/ }
      #   Local: pods and the node itself short-circuit to service-…; the rest `goto local-…` (this
      #   node's endpoints only), or is dropped by no-endpoint-nodeports where there are none
      chain endpoint-AAAAAAAA-default/web/tcp/__10.244.0.2/8080 {
        ip saddr 10.244.0.2 jump mark-for-masquerade      # hairpin: a pod reaching itself
        meta l4proto tcp dnat to 10.244.0.2:8080 }
    }

A chain is named after the Service port (servicePortChainNameBase): `namespace/name/protocol/portName`,
the port's name empty for a one-port Service (`default/web/tcp/`), and an endpoint's chain adds
`__endpointIP/endpointPort`; a multi-port Service names every port, so no two share a chain.
TCP, UDP and SCTP alike: the maps key on `meta l4proto`, the DNAT is `meta l4proto udp dnat to`.
A named targetPort is each endpoint's own number (Service.backends, as the EndpointSlice
controller's FindPort gives it): every endpoint chain DNATs to its pod's number, and a pod that
does not declare the name is no endpoint of that port (no chain; none at all: rejected).

Checked against kubernetes pkg/proxy/nftables/proxier.go: names of the table, sets, maps and
chains, the hash prefix (hashAndTruncate), the mark, priorities, the external-chain rules. Differences: no
firewall-check/LoadBalancer parts, no session affinity, IPv4 only; nodeport-ips holds the node's
primary address (kube-proxy's `--nodeport-addresses primary` default in nftables mode).
ClusterIPs and NodePorts come from ipam, endpoints from the resolved lab (cluster.py).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Callable, Sequence

from cni_lab.rulesets import nft
from cni_lab.cluster import Backend, Lab, Node, Pod, Service
from cni_lab.model import ServicePort

TABLE = "kube-proxy"
MASQ_MARK = 0x4000


def chain_base(name: str) -> str:
    """kube-proxy's hashAndTruncate: the name prefixed with 8 characters of base32 of its SHA-256
    (truncation never happens: our names are far shorter than its 240 characters)."""
    return base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8] + "-" + name


def _port_name(svc: Service, port: ServicePort) -> str:
    """servicePortChainNameBase: `namespace/name/protocol/portName`, the port's name "" when it
    has none (a one-port Service): two ports of a Service never share a chain."""
    return f"{svc.qualified}/{port.protocol.lower()}/{port.name}"


def _chain(prefix: str, svc: Service, port: ServicePort) -> str:
    return f"{prefix}-{chain_base(_port_name(svc, port))}"


def service_chain(svc: Service, port: ServicePort) -> str:
    """The Cluster policy chain: every endpoint."""
    return _chain("service", svc, port)


def local_chain(svc: Service, port: ServicePort) -> str:
    """The Local policy chain: the endpoints on this node."""
    return _chain("local", svc, port)


def external_chain(svc: Service, port: ServicePort) -> str:
    """Where NodePort traffic goes first: masquerade (Cluster) or keep the client (Local)."""
    return _chain("external", svc, port)


def endpoint_chain(svc: Service, port: ServicePort, pod: Pod, number: int | None = None) -> str:
    """servicePortEndpointChainNameBase: `namespace/name/protocol/portName__endpointIP/endpointPort`,
    the endpoint's own port (`number`; by default the targetPort, when it is a number)."""
    return f"endpoint-{chain_base(f'{_port_name(svc, port)}__{pod.ip}/{port.target_port if number is None else number}')}"


def _pick(chain_of: Callable[[Backend], str], backends: Sequence[Backend]) -> str:
    targets = ", ".join(f"{i} : goto {chain_of(b)}" for i, b in enumerate(backends))
    return f"numgen random mod {len(backends)} vmap {{ {targets} }}"


def local_endpoints(svc: Service, port: ServicePort, node: Node) -> tuple[Backend, ...]:
    """The port's endpoints on `node` (externalTrafficPolicy Local)."""
    return tuple(b for b in svc.backends(port) if b.pod.node == node.name)


def ruleset(lab: Lab, services: Sequence[Service], node: Node) -> str:
    """kube-proxy's table on one node (the same on every node but for the node's own address in
    nodeport-ips and which endpoints are local): replaced as a whole."""
    cluster = lab.scenario.cluster_cidr
    maps: dict[str, list[str]] = {"no-endpoint-services": [], "no-endpoint-nodeports": [],
                                  "service-ips": [], "service-nodeports": []}
    chains: dict[str, list[str]] = {}
    for svc in services:
        for port in svc.spec.ports:
            proto, key = port.protocol.lower(), f"{svc.cluster_ip} . {port.protocol.lower()} . {port.port}"
            nodeport = f"{proto} . {port.node_port}"
            backends, local = svc.backends(port), local_endpoints(svc, port, node)  # a named targetPort: per pod
            if not backends:  # nothing to DNAT to: the filter hooks reject new connections
                maps["no-endpoint-services"].append(f"{key} : goto reject-chain")
                if port.node_port:
                    maps["no-endpoint-nodeports"].append(f"{nodeport} : goto reject-chain")
                continue
            cluster_chain = service_chain(svc, port)
            maps["service-ips"].append(f"{key} : goto {cluster_chain}")
            chains[cluster_chain] = [
                f"ip daddr {svc.cluster_ip} {proto} dport {port.port} ip saddr != {cluster} jump mark-for-masquerade",
                _pick(lambda b: endpoint_chain(svc, port, b.pod, b.port), backends)]
            if port.node_port:
                ext = external_chain(svc, port)
                maps["service-nodeports"].append(f"{nodeport} : goto {ext}")
                if svc.spec.external_traffic_policy == "Cluster":
                    chains[ext] = ["jump mark-for-masquerade", f"goto {cluster_chain}"]
                else:
                    chains[ext] = [f'ip saddr {cluster} goto {cluster_chain} comment "short-circuit pod traffic"',
                                   'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
                                   f'fib saddr type local goto {cluster_chain} comment "short-circuit local traffic"']
                    if local:
                        chains[ext].append(f"goto {local_chain(svc, port)}")
                        chains[local_chain(svc, port)] = [_pick(lambda b: endpoint_chain(svc, port, b.pod, b.port), local)]
                    else:  # no endpoint here: what was not short-circuited is dropped
                        maps["no-endpoint-nodeports"].append(f"{nodeport} : drop")
            for p, number in backends:
                chains[endpoint_chain(svc, port, p, number)] = [
                    f"ip saddr {p.ip} jump mark-for-masquerade",  # hairpin
                    f"meta l4proto {proto} dnat to {p.ip}:{number}",  # the endpoint's own number
                ]
    lines = [*nft.replace("ip", TABLE), f"table ip {TABLE} {{", '  comment "rules for kube-proxy"']
    lines += ["  set nodeport-ips {", "    type ipv4_addr", '    comment "IPs that accept NodePort traffic"',
              f"    elements = {{ {node.ip} }}", "  }"]
    for name, elements in maps.items():
        kind = "inet_proto . inet_service" if name.endswith("nodeports") else "ipv4_addr . inet_proto . inet_service"
        lines += [f"  map {name} {{", f"    type {kind} : verdict"]
        if elements:
            lines.append("    elements = { " + ", ".join(elements) + " }")
        lines.append("  }")
    for hook in ("input", "forward", "output"):
        lines += [f"  chain filter-{hook} {{",
                  f"    type filter hook {hook} priority -110; policy accept;",  # dstnat - 10 (nft 1.0 names it on prerouting only)
                  "    ct state new jump endpoints-check", "  }"]
    lines += ["  chain nat-prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
              "    jump services", "  }",
              "  chain nat-output {", "    type nat hook output priority -100; policy accept;", "    jump services", "  }",
              "  chain nat-postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
              "    jump masquerading", "  }"]
    lines += nft.chains({
        "endpoints-check": ["ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
                            "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"],
        "reject-chain": ["reject"],
        "services": ["ip daddr . meta l4proto . th dport vmap @service-ips",
                     "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"],
        "masquerading": [f"meta mark & {MASQ_MARK:#010x} == 0 return",
                         f"meta mark set meta mark ^ {MASQ_MARK:#x}", "masquerade fully-random"],
        "mark-for-masquerade": [f"meta mark set meta mark | {MASQ_MARK:#x}"],
        **chains})
    lines.append("}")
    return "\n".join(lines) + "\n"


def _named(chain: str) -> str:
    """`service-HASH-default/web/tcp/` → `default/web`, `…/tcp/http` → `default/web:http`:
    kube-proxy's ServicePortName.String() (pkg/proxy/types.go)."""
    namespace, name, _, port = chain.split("-", 2)[-1].split("/")[:4]
    return f"{namespace}/{name}" + (f":{port}" if port else "")


def _dnat_targets(chains: dict[str, list[str]], chain: str) -> list[tuple[str, str]]:
    """(address, port) of every endpoint chain a Service chain's numgen vmap leads to."""
    found = []
    for rule in chains.get(chain, []):
        for target in re.findall(r"goto (endpoint-\S+?)(?:,| \})", rule + " }"):
            for line in chains.get(target, []):
                m = re.search(r"dnat to ([\d.]+):(\d+)", line)
                if m:
                    found.append((m[1], m[2]))
    return found


def endpoints(listing: str, service: str) -> list[str]:
    """The endpoints (`address:port`) the table leads a Service's ClusterIPs to, every port of it:
    read from the `service-ips` map and the chains, as `nft list table ip kube-proxy` printed
    them. `service`: namespace/name (a Service without endpoints: none, it is in
    no-endpoint-services)."""
    chains = nft.parse_chains(listing)
    found = []
    for element in nft.parse_elements(listing, "service-ips"):
        m = re.match(r"[\d.]+ \. \w+ \. \d+ : goto (\S+)", element)
        if m and _named(m[1]).partition(":")[0] == service:
            found += [f"{address}:{port}" for address, port in _dnat_targets(chains, m[1])]
    return sorted(set(found))


def describe(lab: Lab, node: Node, listing: str) -> list[str]:
    """kube-proxy's table on a node, as `nft list table ip kube-proxy` printed it, in the
    lesson's words: one line per ClusterIP and NodePort, read from the kernel's maps and chains
    (so a pod taken down is missing from them)."""
    chains = nft.parse_chains(listing)
    who = {str(p.ip): p.id for p in lab.pods}

    def endpoints_of(chain: str) -> str:
        return ", ".join(f"{a}:{p} ({who.get(a, '?')})" for a, p in _dnat_targets(chains, chain)) or "no endpoint"

    words = []
    cluster = lab.scenario.cluster_cidr
    for element in nft.parse_elements(listing, "service-ips"):
        m = re.match(r"([\d.]+) \. (\w+) \. (\d+) : goto (\S+)", element)
        if m:
            picked = endpoints_of(m[4])
            n = picked.count("(")
            words.append(f"ClusterIP {m[1]}:{m[3]}/{m[2]} ({_named(m[4])}) → DNAT to "
                         + (f"one of {picked}, at random (numgen random mod {n})" if n > 1 else picked)
                         + f"; the client's address is kept, except from outside {cluster} or when the client is "
                         "the endpoint itself (hairpin): then masqueraded")
    for element in nft.parse_elements(listing, "no-endpoint-services"):
        m = re.match(r"([\d.]+) \. (\w+) \. (\d+) : (.+)", element)
        if m:
            words.append(f"ClusterIP {m[1]}:{m[3]}/{m[2]} has no endpoints: new connections are rejected "
                         "(no-endpoint-services → reject-chain, in the filter hooks)")
    dropped = {e.split(" : ")[0] for e in nft.parse_elements(listing, "no-endpoint-nodeports")}
    for element in nft.parse_elements(listing, "service-nodeports"):
        m = re.match(r"(\w+) \. (\d+) : goto (\S+)", element)
        if not m:
            continue
        rules = chains.get(m[3], [])
        head = f"NodePort {node.ip}:{m[2]}/{m[1]} ({_named(m[3])})"
        if rules and rules[0] == "jump mark-for-masquerade":
            cluster_chain = rules[-1].split()[-1]
            words.append(f"{head} → masqueraded (the endpoint sees this node), then any endpoint: "
                         f"{endpoints_of(cluster_chain)} (externalTrafficPolicy Cluster)")
        elif f"{m[1]} . {m[2]}" in dropped:
            words.append(f"{head} → dropped here: no endpoint on this node (externalTrafficPolicy Local; "
                         "no-endpoint-nodeports); pods and the node itself still reach the Service")
        else:
            local = next((r.split()[-1] for r in rules if r.startswith("goto local-")), "")
            words.append(f"{head} → only this node's endpoints: {endpoints_of(local)}, the client's address kept "
                         "(externalTrafficPolicy Local)")
    return words
