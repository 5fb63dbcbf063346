"""`bgp`: Calico's BGP mode. No bridge: pods are routed. What each node gets, as Calico's CNI
plugin, Felix and BIRD leave it (projectcalico/calico: cni-plugin's network_linux.go, felix,
confd's bird.cfg.template and bird6.cfg.template):

    pod:   eth0 10.244.X.Y/32, `169.254.1.1 dev eth0 scope link`, `default via 169.254.1.1 dev eth0`
    node:  caliXXXXXXXXXXX (the pod's veth peer, MAC ee:ee:ee:ee:ee:ee): no address, proxy_arp on,
           so it answers the pod's ARP for 169.254.1.1; `10.244.X.Y dev caliXXXXXXXXXXX scope link`
    BIRD:  iBGP full mesh (AS 64512), sessions named Mesh_<peer address> as Calico's template
           names them, exporting the node's IPAM block; the static blackhole of the block and every
           learned route go to the kernel as `proto bird`, without a metric, as a Calico node shows
           them: `blackhole 10.244.X.0/26 proto bird`, `10.244.Y.0/26 via <node Y IP> dev eth0 proto bird`

Dual-stack, as Calico does IPv6: /122 blocks, each pod a /128 on eth0 and `default via
fe80::ecee:eeff:feee:eeee dev eth0` (the cali veth's link-local address, from its MAC), the cali
veth with proxy_ndp and forwarding on, `<pod IPv6> dev caliX` on the node; BIRD has an IPv6
channel and a session per peer's IPv6 address (Mesh_fd00_192_168_1__3), and peers learn each
other's /122 blocks. Calico runs two daemons (bird, bird6, BIRD 1.6); BIRD 2 does both in one.

BGP sessions here are direct (one segment). Across routed segments Calico needs IPIP or VXLAN
encapsulation or BGP peering with the fabric; the lab refuses that combination plainly.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

from cni_lab import names
from cni_lab.dataplanes.capabilities import Capabilities
from cni_lab.errors import LabError
from cni_lab.cluster import Lab, Node, Pod
from cni_lab.model import Scenario
from cni_lab.steps import (
    DEFAULT_ROUTE,
    DEFAULT_ROUTE6,
    AddAddress,
    AddRoute,
    AddVeth,
    LinkUp,
    SetSysctl,
    StartBird,
    Step,
    WaitBgp,
    WriteFile,
)

GATEWAY = IPv4Address(names.CALICO_GATEWAY)
GATEWAY6 = IPv6Address(names.CALICO_GATEWAY6)
CAPABILITIES = Capabilities(
    ipam="calico-ipam",
    ipv6=None,
    pods_meet="routed",
    pod_gateway="proxy-arp",
    sets_hairpin=False,  # no bridge
    tunnel=None,
    needs_router=True,  # proxy ARP answers for 169.254.1.1 only with a default route (calico#3270)
    fabric_routes_pods=False,
    daemons=("bird",),
    loads_bpf=False,
    bypasses_forward_hook=False,
    runs_cni_plugins=False,
    policy="node-nftables",
    services="kube-proxy-nftables",
    masquerade="calico",
)


def mesh_name(peer: IPv4Address | IPv6Address) -> str:
    """A mesh session's name, as Calico's template makes it: Mesh_ and the peer's address with
    its dots (IPv6: colons) turned into underscores."""
    return "Mesh_" + str(peer).replace(".", "_").replace(":", "_")


def router_id(lab: Lab, node: Node) -> str:
    """BGP's router ID is a 32-bit number written as an IPv4 address: the node's IPv4 address, or
    on an IPv6-only node one made from its position (Calico: CALICO_ROUTER_ID=hash)."""
    if node.ip.version == 4:
        return str(node.ip)
    return str(IPv4Address((10 << 24) + lab.nodes.index(node) + 1))


def bird_conf(lab: Lab, node: Node) -> str:
    """BIRD 2 configuration after Calico's confd templates (bird.cfg.template, bird6.cfg.template),
    wherever BIRD 2 takes the same words: a static blackhole per block (bird_ipam.cfg), a kernel
    protocol that learns, persists, scans every 2 s, restarts gracefully and merges paths, the
    bgp_template, one Mesh_ session per peer. BIRD 2 has no metric-free export by default: metric 0
    gives routes without one, as Calico's BIRD 1.6 installs them. Timers: connect delay 1 s
    instead of Calico's 2, so a lab converges in about a second."""
    asn = lab.scenario.as_number
    v6_only = node.ip.version == 6
    ip6, block6 = (node.ip, node.pod_cidr) if v6_only else (node.ip6, node.pod_cidr6)
    peers = "\n\n".join(
        f"# For peer {o.name}\nprotocol bgp {mesh_name(o.ip)} from bgp_template {{\n"
        f"  local {node.ip} as {asn};  # the source address of the TCP session\n"
        f"  neighbor {o.ip} as {asn};\n}}"
        for o in lab.nodes if o is not node
    )
    v6 = ""
    if ip6 is not None and block6 is not None:
        peers6 = "\n\n".join(
            f"# For peer {o.name}\nprotocol bgp {mesh_name(o6)} from bgp_template6 {{\n"
            f"  local {ip6} as {asn};\n  neighbor {o6} as {asn};\n}}"
            for o in lab.nodes if o is not node and (o6 := o.ip if v6_only else o.ip6) is not None
        )
        v6 = f"""
# ------------- IPv6 (Calico's bird6.cfg.template) -------------
protocol static blocks6 {{
  ipv6;
  route {block6} blackhole;
}}

protocol kernel kernel6 {{
  learn;
  persist;
  scan time 2;
  ipv6 {{
    import all;
    export where source = RTS_STATIC || source = RTS_BGP;
  }};
  graceful restart;
  merge paths on;
  metric 0;
}}

template bgp bgp_template6 {{
  description "Connection to BGP peer";
  direct;
  graceful restart;
  connect delay time 1;
  connect retry time 5;
  error wait time 5, 30;
  ipv6 {{
    import all;
    export where proto = "blocks6";
    next hop self;
    add paths on;
  }};
}}

{peers6}
"""
    head = f"""# Generated by cni-lab for node {node.name} of lab {lab.name}, after Calico's confd template.
log "bird.log" all;  # BIRD runs in its own folder of the lab's state
router id {router_id(lab, node)};

# Watch interface up/down events.
protocol device {{
  scan time 2;  # Scan interfaces every 2 seconds
}}
"""
    if v6_only:
        return head + v6
    return head + f"""

# The node's IPAM block: a blackhole so traffic to unused addresses of the block stops here.
protocol static blocks {{
  ipv4;
  route {node.pod_cidr} blackhole;
}}

# Configure synchronization between routing tables and kernel.
protocol kernel {{
  learn;             # Learn all alien routes from the kernel
  persist;           # Don't remove routes on bird shutdown
  scan time 2;       # Scan kernel routing table every 2 seconds
  ipv4 {{
    import all;
    export where source = RTS_STATIC || source = RTS_BGP;  # the blackhole and what peers announce
  }};
  graceful restart;  # Turn on graceful restart to reduce potential flaps in routes
  merge paths on;    # Allow export multipath routes (ECMP)
  metric 0;          # no metric on the routes, as a Calico node has them
}}

# Template for all BGP clients
template bgp bgp_template {{
  description "Connection to BGP peer";
  direct;            # peers share the segment (Calico's template says multihop)
  graceful restart;  # See comment in kernel section about graceful restart.
  connect delay time 1;
  connect retry time 5;
  error wait time 5, 30;
  ipv4 {{
    import all;      # Import all routes: the peers are trusted
    export where proto = "blocks";  # Only want to export routes for workloads.
    next hop self;
    add paths on;
  }};
}}

# ------------- Node-to-node mesh -------------
{peers}
{v6}"""


class Bgp:
    name = "bgp"

    def capabilities(self, scenario: Scenario) -> Capabilities:
        return CAPABILITIES

    def needs(self, lab: Lab) -> tuple[tuple[str, str], ...]:
        return (("bird", "bird2"), ("birdc", "bird2"))

    def runs_as_root(self, lab: Lab) -> tuple[str, ...]:
        return ()  # BIRD is the system's own program

    def validate(self, lab: Lab) -> None:
        if len(lab.segments) > 1:
            raise LabError(f"{lab.scenario.source}: dataplane: bgp peers nodes directly on one segment; across "
                           "routed segments Calico needs IPIP/VXLAN encapsulation (use dataplane vxlan)")
        seen: list[Node] = []
        for node in lab.nodes:
            for other in seen:
                if node.pod_cidr.overlaps(other.pod_cidr):
                    raise LabError(f"{lab.scenario.source}: dataplane: bgp announces each block from one node, "
                                   f"but {node.name} and {other.name} share {node.pod_cidr}")
            seen.append(node)

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        return []

    def pod_steps(self, lab: Lab, node: Node, pod: Pod) -> list[Step]:
        node_ns = names.node_netns(lab.name, node.name)
        pod_ns = names.pod_netns(lab.name, node.name, pod.name)
        cali = names.cali_veth(lab.name, node.name, pod.name)
        ip4 = pod.ip if pod.ip.version == 4 else None
        ip6 = pod.ip6 if pod.ip6 is not None else pod.ip if pod.ip.version == 6 else None
        steps: list[Step] = [AddVeth(node_ns, cali, pod_ns, names.POD_IFNAME, lab.pod_mtu, up=True,
                                     mac=names.CALICO_HOST_MAC)]
        if ip4 is not None:
            steps += [
                SetSysctl(node_ns, f"net/ipv4/conf/{cali}/proxy_arp", "1"),
                SetSysctl(node_ns, f"net/ipv4/neigh/{cali}/proxy_delay", "0"),  # answer ARP at once, as Felix sets it
                AddAddress(pod_ns, names.POD_IFNAME, IPv4Interface(f"{ip4}/32")),
            ]
        if ip6 is not None:  # Calico's IPv6: a /128, proxy_ndp and forwarding on the host end
            steps += [
                SetSysctl(node_ns, f"net/ipv6/conf/{cali}/proxy_ndp", "1"),
                SetSysctl(node_ns, f"net/ipv6/conf/{cali}/forwarding", "1"),
                AddAddress(pod_ns, names.POD_IFNAME, IPv6Interface(f"{ip6}/128")),
            ]
        steps.append(LinkUp(pod_ns, names.POD_IFNAME))
        if ip4 is not None:
            steps += [
                AddRoute(pod_ns, IPv4Network(f"{GATEWAY}/32"), names.POD_IFNAME, scope_link=True),
                AddRoute(pod_ns, DEFAULT_ROUTE, names.POD_IFNAME, via=GATEWAY),
                AddRoute(node_ns, IPv4Network(f"{ip4}/32"), cali, scope_link=True),
            ]
        if ip6 is not None:  # via the cali veth's link-local address (its MAC's EUI-64)
            steps += [
                AddRoute(pod_ns, DEFAULT_ROUTE6, names.POD_IFNAME, via=GATEWAY6),
                AddRoute(node_ns, IPv6Network(f"{ip6}/128"), cali),
            ]
        return steps

    def cluster_steps(self, lab: Lab) -> list[Step]:
        steps: list[Step] = []
        for node in lab.nodes:
            ns = names.node_netns(lab.name, node.name)
            folder = names.bird_dir(node.name)
            steps += [
                WriteFile(ns, f"{folder}/bird.conf", bird_conf(lab, node)),
                StartBird(ns, folder),
            ]
        for node in lab.nodes:
            others = [o for o in lab.nodes if o is not node]
            peers = [mesh_name(o.ip) for o in others]
            blocks: list[IPv4Network | IPv6Network] = [o.pod_cidr for o in others]
            if node.ip6 is not None:
                peers += [mesh_name(o.ip6) for o in others if o.ip6 is not None]
                blocks += [o.pod_cidr6 for o in others if o.pod_cidr6 is not None]
            steps.append(WaitBgp(names.node_netns(lab.name, node.name), node.name, names.bird_dir(node.name),
                                 tuple(peers), tuple(blocks)))
        return steps
