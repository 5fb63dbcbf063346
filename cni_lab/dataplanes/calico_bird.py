"""The bird.cfg a `bgp` node runs: what confd renders from Calico's templates
(projectcalico/calico node/filesystem/etc/calico/confd/templates: bird.cfg.template,
bird_aggr.cfg.template, bird_ipam.cfg.template, bird6.cfg.template; the statements they take from
confd/pkg/backends/calico/bgp_processor.go), in BIRD 2's words: Debian's bird2 runs it, where
calico-node runs its own fork of BIRD 1.6. tests/unit/test_calico_bird.py holds it line by line
against the text confd writes for the same inputs, and says where and why the two differ.

What the IP pool's mode changes (bgp_processor.go, processIPPool):
    Never        BIRD programs the pool's routes: `if (net ~ POOL) then { accept; }` in the kernel filter
    VXLAN        `if (net ~ POOL) then { reject; } # VXLAN routes are handled by Felix.`
    IPIP         `... { reject; } # Cluster routes are handled by Felix.` (BGPConfiguration.programClusterRoutes
                 defaults to EnabledNoEncapOnly and Felix's to EnabledIPIPOnly: Felix programs IPIP routes)
Whatever the mode, every peer still learns every block over BGP: `calico_export_to_bgp_peers`
accepts the pool, after refusing to pass on to internal peers what Felix programmed on its tunnel
devices (`*.cali`, `*.calico`, `tunl0`).

Pure: text from the lab.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from cni_lab.cluster import Lab, Node

# Calico's templates write these; the lab shortens connect delay (2 s) to 1 s so a lab converges in
# about a second (REFERENCE: a 3-node mesh in 0.95 s)
CONNECT_DELAY = 1
TUNNEL_DEVICES = ("*.cali", "*.calico", "tunl0")  # IBGPExportFilterForTunnelRoutes, Felix programming IPIP
DIRECT_INTERFACES = '-"cali*", -"kube-ipvs*", "*"'  # DirectInterfaces without ignored interfaces
BIRD_INT_MAX = 2147483647  # template.BirdIntMaxValue
NORMAL_PRIORITY = 1024  # BGPConfiguration's IPv4NormalRoutePriority default


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


def passive(node_ip: IPv4Address | IPv6Address, peer_ip: IPv4Address | IPv6Address) -> bool:
    """Which end of a mesh session waits to be called: Calico makes the mesh unidirectional by
    comparing the two addresses as text (`if peerIP > currentNodeIP { peer.Passive = true }`)."""
    return str(peer_ip) > str(node_ip)


def kernel_pool_line(lab: Lab) -> str:
    """The kernel filter's line for the IP pool (processIPPool with forProgrammingKernel)."""
    pool, encap = lab.scenario.cluster_cidr, lab.scenario.calico.encapsulation
    if encap == "vxlan":
        return f"  if (net ~ {pool}) then {{ reject; }} # VXLAN routes are handled by Felix."
    if encap == "ipip":
        return f"  if (net ~ {pool}) then {{ reject; }} # Cluster routes are handled by Felix."
    return f"  if (net ~ {pool}) then {{ accept; }}"


GR_COMMENT = """  graceful restart;  # Turn on graceful restart to reduce potential flaps in
                     # routes when reloading BIRD configuration.  With a full
                     # automatic mesh, there is no way to prevent BGP from
                     # flapping since multiple nodes update their BGP
                     # configuration at the same time, GR is not guaranteed to
                     # work correctly in this scenario."""
DIRECT_COMMENT = """ # Exclude cali* and kube-ipvs* but
                                          # include everything else.  In
                                          # IPVS-mode, kube-proxy creates a
                                          # kube-ipvs0 interface. We exclude
                                          # kube-ipvs0 because this interface
                                          # gets an address for every in use
                                          # cluster IP. We use static routes
                                          # for when we legitimately want to
                                          # export cluster IPs."""
# BIRD 2 puts a protocol's routes through a channel: the options BIRD 1.6 takes in the protocol go
# inside `ipv4 { ... };`, the lines themselves kept as Calico's template writes them
CHANNEL, END = "  ipv4 {  # BIRD 2: the IPv4 channel", "  };"


def bird_aggr(node: Node) -> str:
    """bird_aggr.cfg: the node's block as a static blackhole, and calico_aggr, which exports the
    block and nothing beneath it."""
    block = node.pod_cidr
    return f"""# ------------- bird_aggr.cfg -------------
template static static_template {{
{CHANNEL}
{END}
   # IP blocks for this host.
   route {block} blackhole;
}}

protocol static from static_template {{
}}

# Aggregation of routes on this host; export the block, nothing beneath it.
function calico_aggr ()
{{
      # Block {block} is implicitly confirmed.
      if ( net = {block} ) then {{ accept; }}
      if ( net ~ {block} ) then {{ reject; }}
}}
"""


def bird_ipam(lab: Lab) -> str:
    """bird_ipam.cfg: what goes to the peers (calico_export_to_bgp_peers) and what to the kernel
    (calico_kernel_programming)."""
    pool = lab.scenario.cluster_cidr
    tunnels = " || ".join(f'(ifname ~ "{d}")' for d in TUNNEL_DEVICES)
    return f"""# ------------- bird_ipam.cfg -------------
function reject_local_routes () {{
  # Don't export local routes learned via BPF as they should never leave the node.
  if (defined(ifname)) then {{
     if (ifname ~ "bpf*.cali") then {{
        reject;
     }}
  }}
}}

function calico_export_to_bgp_peers(bool internal_peer) {{
  # filter code terminates when it calls `accept;` or `reject;`,
  if (internal_peer) then {{
    if (defined(ifname)) then {{
      if ({tunnels}) then {{
        reject;
      }}
    }}
  }}
  reject_local_routes();
  apply_communities();
  calico_aggr();
  if (net ~ {pool}) then {{ accept; }}
}}

filter calico_kernel_programming {{
{kernel_pool_line(lab)}
  if (source = RTS_STATIC || source = RTS_BGP) then {{ accept; }}  # not protocol direct's routes
  reject;
}}
"""


def mesh_peer(lab: Lab, node: Node, peer: Node) -> str:
    """One node-to-node mesh session (bgp_processor.go, processMeshPeers): multihop with TTL
    security off, the node's own address as the source, passive where the peer's address sorts
    after the node's, Calico's import and export filters."""
    asn = lab.scenario.as_number
    lines = [f"protocol bgp {mesh_name(peer.ip)} from bgp_template {{",
             f"  neighbor {peer.ip} as {asn};",
             f"  source address {node.ip};  # The local address we use for the TCP connection",
             "  ttl security off;",
             "  multihop;",
             CHANNEL,
             "  import filter {",
             f"    if (defined(bgp_local_pref)&&(bgp_local_pref > {BIRD_INT_MAX - NORMAL_PRIORITY})) then",
             "      preference = 200;",
             "    accept;",
             "  };",
             "  export filter {",
             "    if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {",
             f"      krt_metric = {BIRD_INT_MAX} - bgp_local_pref;",
             "    } else {",
             f"      if (!defined(krt_metric)) then {{ krt_metric = {NORMAL_PRIORITY}; }}",
             f"      bgp_local_pref = {BIRD_INT_MAX} - krt_metric;",
             "    }",
             "    calico_export_to_bgp_peers(true);",
             "    reject;",
             "  };  # Only want to export routes for workloads.",
             END]
    if passive(node.ip, peer.ip):
        lines.append("  passive on;")
    return "\n".join([*lines, "}"])


def bird_cfg_head() -> str:
    """bird.cfg up to its includes: the kernel and direct templates."""
    return f"""template kernel kernel_template {{
  learn;             # Learn all alien routes from the kernel
  persist;           # Don't remove routes on bird shutdown
  scan time 2;       # Scan kernel routing table every 2 seconds
{CHANNEL}
  import all;
{END}
}}

template direct direct_template {{
{CHANNEL}
{END}
  interface {DIRECT_INTERFACES};{DIRECT_COMMENT}
}}
"""


def bird_cfg(lab: Lab, node: Node) -> str:
    """bird.cfg after its includes: kernel, device and direct protocols, the BGP template, the mesh."""
    asn = lab.scenario.as_number
    peers = "\n".join(mesh_peer(lab, node, o) for o in lab.nodes if o is not node)
    return f"""# ------------- bird.cfg -------------
router id {router_id(lab, node)};

# Configure synchronization between routing tables and kernel.
protocol kernel from kernel_template {{
{CHANNEL}
  export filter calico_kernel_programming; # Default is export none
{END}
{GR_COMMENT}
  merge paths on;    # Allow export multipath routes (ECMP)
  metric 0;          # BIRD 2's default is 32: no metric, as the lab's routes have none
}}

# Watch interface up/down events.
protocol device {{
  scan time 2;    # Scan interfaces every 2 seconds
}}

protocol direct from direct_template {{
}}

# Template for all BGP clients
template bgp bgp_template {{
  description "Connection to BGP peer";
  local as {asn};
{CHANNEL}
  gateway recursive; # This should be the default, but just in case.
  add paths on;
{END}
  graceful restart;  # See comment in kernel section about graceful restart.
  connect delay time {CONNECT_DELAY};
  connect retry time 5;
  error wait time 5,30;
}}

# -------------- BGP Filters ------------------
# No v4 BGPFilters configured
# BGP Protocol Configurations
{peers}
"""


def v6_part(lab: Lab, node: Node) -> str:
    """Calico's bird6.cfg.template, for a dual-stack or IPv6-only node: the /122 block, a kernel
    protocol, one Mesh_ session per peer's IPv6 address (BIRD 2 does both families in one daemon)."""
    asn = lab.scenario.as_number
    v6_only = node.ip.version == 6
    ip6, block6 = (node.ip, node.pod_cidr) if v6_only else (node.ip6, node.pod_cidr6)
    if ip6 is None or block6 is None:
        return ""
    peers6 = "\n\n".join(
        f"# For peer {o.name}\nprotocol bgp {mesh_name(o6)} from bgp_template6 {{\n"
        f"  local {ip6} as {asn};\n  neighbor {o6} as {asn};\n}}"
        for o in lab.nodes if o is not node and (o6 := o.ip if v6_only else o.ip6) is not None
    )
    return f"""
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
  connect delay time {CONNECT_DELAY};
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


def bird_conf(lab: Lab, node: Node) -> str:
    """The whole file BIRD reads: bird.cfg with its two includes (bird_aggr.cfg, bird_ipam.cfg)
    put where it includes them, then the IPv6 part."""
    head = f"""# Generated by cni-lab for node {node.name} of lab {lab.name}, after Calico's confd templates.
log "bird.log" all;  # BIRD runs in its own folder of the lab's state

function apply_communities ()
{{
}}
"""
    if node.ip.version == 6:
        return head + f"router id {router_id(lab, node)};\n\nprotocol device {{\n  scan time 2;\n}}\n" + v6_part(lab, node)
    return "\n".join([head, bird_cfg_head(), bird_aggr(node), bird_ipam(lab), bird_cfg(lab, node)]) + v6_part(lab, node)
