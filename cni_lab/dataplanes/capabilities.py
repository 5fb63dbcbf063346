"""What a data plane does, declared as one frozen value: the rest of the code asks this value and
never compares a data plane's name (containerlab's core never compares a node kind's name;
netlab declares what each device can do as data).

Every data plane answers `capabilities(scenario)`. Most answers are its own whatever the
scenario; `cni` answers after its `cni.routing`, `ebpf` after its `ebpf.routing` and `bgp` after
its `calico:` pool modes and backend. The lab is
resolved with its data plane's answers (catalog.resolve) and carries them (`Lab.capabilities`,
recorded with the lab); ipam and the lab are handed the value, so they import no data plane:
a data plane's module sits above the lab it wires.

Pure: no kernel, no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cni_lab.model import Scenario

Ipam = Literal[
    "host-local",  # a node's pod CIDR sized by networking.nodeCIDRMaskSize(IPv6); its first address is the
                   # gateway's (cni0's, or cilium_host's router IP), pods from .2 (the CNI host-local plugin)
    "calico-ipam",  # a block per node sized by networking.blockSize (IPv6: /122); no gateway address in
                    # it, pods from its first host (Calico IPAM)
]
PodLink = Literal[
    "cni0",  # ports of the node's bridge: pods of one node meet at L2
    "routed",  # each pod a /32 (/128) routed down its veth (Calico's cali*)
    "bpf-redirect",  # tc programs on each lxc* device redirect to the other pod's (Cilium)
]
PodGateway = Literal[
    "cni0",  # the bridge's address, the pod CIDR's first (IPv6 too)
    "proxy-arp",  # Calico's 169.254.1.1 (IPv6: the cali veth's link-local address), answered by the node
    "cilium_host",  # the router IP on cilium_host, answered by cil_from_container
]
PolicyEnforcement = Literal[
    "node-nftables",  # rulesets/netpol.py: per pod in the node's forward hook (Felix's way)
    "cilium-bpf",  # each endpoint's policy map, by identity, in the data plane's programs: EnforcesPolicy
]
ServiceBalancing = Literal[
    "kube-proxy-nftables",  # rulesets/kubeproxy.py: kube-proxy's nftables mode on every node
    "cilium-bpf",  # the data plane's own programs and maps (Cilium's kube-proxy replacement): BalancesServices
]
# Where Cilium's BPF load balancer has a pod that reached itself through its Service see itself
# come from (--ipv4-service-loopback-address; kube-proxy masquerades it to the node instead)
CILIUM_LB_LOOPBACK = "169.254.42.1"
MasqueradeStyle = Literal[
    "flannel",  # rulesets/masquerade.py: flannel --ip-masq
    "calico",  # rulesets/masquerade.py: Calico's natOutgoing
    "cilium-bpf",  # the data plane's own programs (Cilium's bpf.masquerade): nothing in netfilter
]
Daemon = Literal["bird"]  # BIRD in every node's namespace, as calico-node runs it


@dataclass(frozen=True)
class Refused:
    """Something the data plane does not do (yet): the words that say so and what to use
    instead, as they follow the scenario file's name in the error ("s.yaml: <reason>")."""

    reason: str


@dataclass(frozen=True)
class Tunnel:
    """Pod packets between nodes travel encapsulated between node IPs (VXLAN: flannel's UDP 8472,
    Calico's 4789; IPIP: Calico's tunl0), so nodes need only reach each other's IPs: it works
    across routed segments too."""

    device: str  # the node's tunnel device: flannel.1 or vxlan.calico (a VTEP with an address), cilium_vxlan
                 # (flow-based), tunl0 (IPIP)
    overhead: int = 50  # VXLAN: outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14; IPIP: the outer IPv4 header, 20
    overhead6: int = 70  # over IPv6, whose header is 40

    def mtu(self, underlay_mtu: int, ipv6: bool) -> int:
        """What a pod's packet may be inside the tunnel: a pod's one MTU fits the larger overhead
        of its lab's families."""
        return underlay_mtu - (self.overhead6 if ipv6 else self.overhead)


@dataclass(frozen=True)
class Capabilities:
    """One data plane's answers, in one scenario. A field that may be `Refused` says how the data
    plane does it, or why it does not."""

    # addresses
    ipam: Ipam
    ipv6: Refused | None  # None: IPv6 as well as IPv4 (IPv6-only and dual-stack labs)
    # one node's pods
    pods_meet: PodLink
    pod_gateway: PodGateway
    sets_hairpin: bool  # the plan turns hairpin on for pods' cni0 ports where there are Services (a pod
                        # reaching itself through its Service); the CNI bridge plugin does it itself
    # between nodes
    tunnel: Tunnel | None
    needs_router: bool  # a router namespace even on one segment (the fabric's; Calico's proxy ARP answers
                        # only when the node has a route to 169.254.1.1, its default route: calico#3270)
    fabric_routes_pods: bool  # the network (the router) routes pod CIDRs: the outside reaches pods
    daemons: tuple[Daemon, ...]  # what runs in every node's namespace
    # the node's packet path
    loads_bpf: bool  # tc BPF programs and pinned maps in every node (what `trace` and `fault bpf-detach` read)
    bypasses_forward_hook: bool  # pod packets are redirected past the node's netfilter forward hook
    runs_cni_plugins: bool  # the lab is the container runtime: plugins' results recorded, `check` runs CNI CHECK
    # Kubernetes on top
    policy: PolicyEnforcement | Refused
    services: ServiceBalancing | Refused
    masquerade: MasqueradeStyle | Refused  # what masquerades pods' traffic to the outside

    @property
    def families(self) -> tuple[int, ...]:
        """The address families it carries."""
        return (4,) if self.ipv6 is not None else (4, 6)


@runtime_checkable
class Declares(Protocol):
    """A data plane, as far as what it does is concerned."""

    def capabilities(self, scenario: Scenario) -> Capabilities:
        """What the data plane does in this scenario."""
