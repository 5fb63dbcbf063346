"""The log rules `observe` (and `check`) read flows from: nftables `log group` statements, which
hand the packet to nfnetlink_log in the namespace that logged it (never the machine's syslog:
a log rule without a group would write to the host's kernel log).

    table inet cni-lab-observe {
      chain forward { type filter hook forward priority 100; policy accept;
                      tcp flags & (syn | ack) == syn counter log prefix "cni-lab forward" group 1
                      meta l4proto { udp, sctp } counter log prefix "cni-lab forward" group 1
                      icmp type echo-request log ...; icmp type { destination-unreachable, ... } log prefix "cni-lab error" ... }
      chain input { ... }  chain output { ... }
    }

Stateless on purpose: a rule on `ct state new` would switch conntrack on in a namespace that had
none (a bridge node without policy), and the flow view must not change what it observes. So
each flow's first packet is the one logged (a TCP SYN, an echo request), as Hubble's default
monitor aggregation reports a connection's first packet; a UDP exchange is logged per packet.
Priority 100 comes after the filter priority (0) of the policy tables and kube-proxy's chains:
what reaches these rules was let through; what a policy drops is logged by its own rule
(`policy-drop`, netpol.py). Bridged traffic between pods of one node reaches the forward hook
only where br_netfilter is on (policy labs on cni0); elsewhere it is not seen here.

Loaded when a lab is first observed and left until `down` (a rule nobody listens to costs a
lookup per first packet): `observe` and `check` may run at once without one removing the
other's rules.
"""

from __future__ import annotations

from cni_lab.rulesets import nft

TABLE = "cni-lab-observe"
GROUP = 1  # kernel/flowsources.py binds this group in every lab namespace
PRIORITY = 100
ICMP_ERRORS = "{ destination-unreachable, time-exceeded, parameter-problem }"
ICMPV6_ERRORS = "{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem }"


def log(what: str) -> str:
    """The log statement of a rule whose packets are flows of kind `what`."""
    return f'log prefix "cni-lab {what}" group {GROUP}'


def _first_packets(hook: str) -> list[str]:
    """Each with a counter: what the rules matched, against which a reader's count is held
    (bench/observe.py: flows observed without loss)."""
    return [
        f"tcp flags & (syn | ack) == syn counter {log(hook)}",
        f"meta l4proto {{ udp, sctp }} counter {log(hook)}",
        f"icmp type echo-request counter {log(hook)}",
        f"icmpv6 type echo-request counter {log(hook)}",
        f"icmp type {ICMP_ERRORS} counter {log('error')}",
        f"icmpv6 type {ICMPV6_ERRORS} counter {log('error')}",
    ]


def ruleset() -> str:
    """The same table in every node (and the router): replaced as a whole, so loading it twice
    leaves one copy."""
    out = nft.replace("inet", TABLE) + [f"table inet {TABLE} {{"]
    for hook in ("forward", "input", "output"):
        out.append(f"  chain {hook} {{")
        out.append(f"    type filter hook {hook} priority {PRIORITY}; policy accept;")
        out += [f"    {rule}" for rule in _first_packets(hook)]
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"
