"""Egress masquerade: traffic leaving the cluster takes the node's address, as real nodes do it.
Pure: the lab in, one nftables table per node out, in the shape the CNI it imitates leaves.

- flannel (`--ip-masq`), where the data plane masquerades as flannel does (host-gw, vxlan,
  bridge, fabric, cni: Capabilities.masquerade): flannel's nftables mode, table `ip flannel-ipv4`
  with chains `postrtg` and `forward`, rule for rule as flannel's own e2e suite expects them
  (pkg/trafficmngr/nftables): what stays inside the cluster CIDR returns unchanged, what leaves
  it (multicast aside) is masqueraded, fully random.
- Calico (`natOutgoing: true` on the pool), where it masquerades as Calico does (bgp): sets of
  the IPAM pools and one rule,
  `ip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools masquerade fully-random`
  (Felix's cali-nat-outgoing; the base chain's name here is the lab's).

One rule more than either: the underlay's networks return before any masquerade, as
ip-masq-agent's nonMasqueradeCIDRs keep them. flannel and Calico as they are would masquerade
what a pod sends to another node's address (it is outside the cluster CIDR); the Kubernetes
model the lab proves has pods reach nodes without NAT, so the lab keeps that traffic unchanged.
"""

from __future__ import annotations

import re

from cni_lab.rulesets import nft
from cni_lab.errors import LabError
from cni_lab.cluster import Lab, Node
from cni_lab.dataplanes.capabilities import Refused

FLANNEL_TABLE = "flannel-ipv4"
CALICO_TABLE = "calico"
KUBE_MARK_MASQ = "0x00004000"  # kube-proxy's mark: traffic it already masquerades, flannel leaves alone
MULTICAST = "224.0.0.0/4"


def underlay_returns(lab: Lab) -> list[str]:
    """The lab's own addition: nodes are reached without NAT (see above)."""
    return [f'    ip daddr {s.cidr} return comment "cni-lab: nodes keep seeing pod addresses"' for s in lab.segments]


def flannel(lab: Lab, node: Node) -> str:
    cluster, pods = lab.scenario.cluster_cidr, node.pod_cidr
    return "\n".join([
        *nft.replace("ip", FLANNEL_TABLE),
        f"table ip {FLANNEL_TABLE} {{",
        "  chain postrtg {",
        '    comment "chain to manage traffic masquerading by flannel"',
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta mark {KUBE_MARK_MASQ} return",
        *underlay_returns(lab),
        f"    ip saddr {pods} ip daddr {cluster} return",
        f"    ip saddr {cluster} ip daddr {pods} return",
        f"    ip saddr != {pods} ip daddr {cluster} return",
        f"    ip saddr {cluster} ip daddr != {MULTICAST} masquerade fully-random",
        f"    ip saddr != {cluster} ip daddr {cluster} masquerade fully-random",
        "  }",
        "  chain forward {",
        '    comment "chain to accept flannel traffic"',
        "    type filter hook forward priority filter; policy accept;",
        f"    ip saddr {cluster} accept",
        f"    ip daddr {cluster} accept",
        "  }",
        "}",
    ]) + "\n"


def calico(lab: Lab, node: Node) -> str:
    pool = lab.scenario.cluster_cidr
    return "\n".join([
        *nft.replace("ip", CALICO_TABLE),
        f"table ip {CALICO_TABLE} {{",
        "  set cali40masq-ipam-pools {",
        "    type ipv4_addr; flags interval;",
        f"    elements = {{ {pool} }}",
        "  }",
        "  set cali40all-ipam-pools {",
        "    type ipv4_addr; flags interval;",
        f"    elements = {{ {pool} }}",
        "  }",
        "  chain nat-postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        "    jump cali-nat-outgoing",
        "  }",
        "  chain cali-nat-outgoing {",
        *underlay_returns(lab),
        "    ip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools masquerade fully-random",
        "  }",
        "}",
    ]) + "\n"


def rules(lab: Lab, node: Node) -> tuple[str, str]:
    """(table, ruleset) of the node's masquerade."""
    style = lab.capabilities.masquerade
    if isinstance(style, Refused):
        raise LabError(f"{lab.scenario.source}: {style.reason}")
    if style == "cilium-bpf":
        raise LabError(f"dataplane {lab.dataplane} masquerades in its BPF programs, not in nftables")
    if lab.scenario.cluster_cidr.version != 4 or lab.dual_stack:
        raise LabError(f"{lab.scenario.source}: outside: IPv4-only labs for now")
    if style == "calico":
        return CALICO_TABLE, calico(lab, node)
    return FLANNEL_TABLE, flannel(lab, node)


def meaning(lab: Lab, node: Node, rule: str) -> str:
    """One masquerade rule, as nft lists it, in the lesson's words."""
    networks = {str(node.pod_cidr): f"this node's pods ({node.pod_cidr})",
                str(lab.scenario.cluster_cidr): f"a pod ({lab.scenario.cluster_cidr})",
                MULTICAST: "multicast", "@cali40masq-ipam-pools": "a natOutgoing pool",
                "@cali40all-ipam-pools": "any IP pool",
                **{str(s.cidr): f"the nodes' network ({s.cidr})" for s in lab.segments}}
    if rule.startswith("jump "):
        return f"every packet leaving the node goes through {rule.split()[1]}"
    if rule.startswith(f"meta mark {KUBE_MARK_MASQ}") or rule.startswith("meta mark 0x4000"):
        return "marked by kube-proxy: its own masquerade handles it"
    parts = {}
    for side in ("saddr", "daddr"):
        m = re.search(rf"ip {side} (!= )?(\S+)", rule)
        if m:
            what = networks.get(m[2], m[2])
            parts[side] = f"anything but {what}" if m[1] else what
    action = ("unchanged" if " return" in rule else "leaves with the node's address (masqueraded)"
              if "masquerade" in rule else "forwarded" if rule.endswith("accept") else rule.split()[-1])
    src, dst = parts.get("saddr", "anywhere"), parts.get("daddr", "anywhere")
    return f"from {src} to {dst}: {action}"
