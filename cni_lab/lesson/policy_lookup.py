"""The policy lookups an `ebpf` node's programs make on a packet's way, in words, from its maps as
read from the kernel (ebpf_lib/policy.h, as Cilium's bpf/lib/policy.h):

    egress   cil_from_container, for what a pod of the node sends: the destination's identity
             from the node's cilium_ipcache_v2, looked up in the sender's cilium_policy_v2_<id>
    ingress  local_delivery, for what a pod of the node gets: the sender's identity from the
             node's ipcache (cil_from_container, cil_from_netdev) or from the VNI the sending node
             set from its own ipcache (cil_from_overlay), looked up in the receiver's map

A reply of a connection tracked on the way there passes without a lookup (CT_REPLY). The verdict
is ebpf_policy's lookup (`deciding`, what `allows` decides by) on the rows the kernel holds, so the
words say what the real map holds. Pure: a node's BpfFacts in, words out; lesson/trace.py puts
them on its hops."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Mapping, Sequence

from cni_lab.cluster import Lab
from cni_lab.dataplanes.ebpf import FROM_OVERLAY
from cni_lab.dataplanes.ebpf_policy import (HOST_ID, LPM_FULL_PREFIX_BITS, LPM_PROTO_PREFIX_BITS, PROTOCOL_NUMBERS,
                                            REMOTE_NODE_ID, PolicyEntry, deciding, labels_by_identity, port_proto)
from cni_lab.kernel import bpf
from cni_lab.lesson.explain import BpfFacts

ICMP = PROTOCOL_NUMBERS["ICMP"]
Labels = Mapping[int, Sequence[str]]


@dataclass(frozen=True)
class Judged:
    """The packet a trace judges policy for: its source, protocol and destination port, and the
    labels that name identities. `trace` has no port option, so it judges ICMP (the programs
    look ICMP up without a port): its real probe sends an echo, and a rule that lets ICMP through
    (one without ports: NetworkPolicy names no ICMP) lets the probe's UDP through too."""

    src_ip: IPv4Address | IPv6Address
    labels: Labels = field(default_factory=dict)
    protocol: int = ICMP
    port: int = 0
    reply: bool = False  # the reply of the connection: CT_REPLY, no lookup

    @property
    def what(self) -> str:
        said = looked_up(self.protocol, self.port)
        return f"{said} (trace has no port option)" if self.protocol == ICMP else said


@dataclass(frozen=True)
class Check:
    allowed: bool
    words: str  # the identity looked up and, where allowed, the entry that allows it
    reason: str = ""  # where denied: the missing entry and the drop


def judged(lab: Lab, src_ip: IPv4Address | IPv6Address) -> Judged | None:
    """What a trace from `src_ip` judges: ICMP, in a lab that has policies and whose data plane
    enforces them in its programs (an IPv4 lab: policies on ebpf are refused with IPv6)."""
    if not lab.policies or lab.capabilities.policy != "cilium-bpf" or src_ip.version != 4:
        return None
    return Judged(src_ip, labels_by_identity(lab))


def looked_up(protocol: int, port: int) -> str:
    """What a lookup asks for, as a map entry holding exactly that would print: ICMP, 80/TCP."""
    return port_proto(protocol, port, LPM_PROTO_PREFIX_BITS if protocol == ICMP else LPM_FULL_PREFIX_BITS)


def identity_words(address: IPv4Address | IPv6Address, identity: int, labels: Labels) -> str:
    """`ipcache: 10.244.1.2 → identity 257 (k8s:io.kubernetes.pod.namespace=x, k8s:pod=b)`."""
    shown = ", ".join(sorted(labels.get(identity, ())))
    return f"ipcache: {address} → identity {identity}" + (f" ({shown})" if shown else "")


def verdict(map_name: str, rows: Sequence[bpf.PolicyRow], egress: bool, identity: int, protocol: int,
            port: int) -> tuple[bool, str]:
    """__policy_can_access on an endpoint's map as read: (allowed, the entry that allows it or
    the entry it lacks). The lab writes no deny entries (NetworkPolicy has none): any it found
    are left out."""
    entries = [PolicyEntry(r.egress, r.identity, r.protocol, r.port, r.prefix) for r in rows if not r.deny]
    chosen = deciding(entries, egress, identity, protocol, port)
    direction = "Egress" if egress else "Ingress"
    if chosen is None:
        return False, (f"no entry in {map_name} allows identity {identity} on {looked_up(protocol, port)} ({direction}): "
                       "dropped (DROP_POLICY, counted in cilium_metrics)")
    entry = f"{chosen.identity or 'ANY'} {port_proto(chosen.protocol, chosen.port, chosen.prefix)}"
    return True, f"allowed by {map_name}: Allow {direction} {entry}"


def egress(facts: BpfFacts, dst_ip: IPv4Address | IPv6Address, judged: Judged, pod: str) -> Check | None:
    """cil_from_container's lookup for what a pod of this node sends (None: the sender is no
    endpoint of this node, and the program looks nothing up)."""
    sender = next((e for e in facts.endpoints if e.ip == str(judged.src_ip)), None)
    if sender is None:
        return None
    identity = facts.identity_of(dst_ip)
    return _check(facts, sender, pod, True, identity, identity_words(dst_ip, identity, judged.labels), judged)


def ingress(facts: BpfFacts, receiver: bpf.Endpoint, pod: str, program: str | None, judged: Judged,
            sending_node: tuple[str, BpfFacts] | None) -> Check:
    """local_delivery's lookup for what a pod of this node gets. Out of the tunnel the sender's
    identity is the VNI, which the sending node took from its own ipcache (its own address's
    host identity sent as remote-node, which this node's ipcache then refines)."""
    identity = facts.identity_of(judged.src_ip)
    said = identity_words(judged.src_ip, identity, judged.labels)
    if program == FROM_OVERLAY and sending_node is not None:
        vni = sending_node[1].identity_of(judged.src_ip)
        vni = REMOTE_NODE_ID if vni == HOST_ID else vni  # __encap_with_nodeid4
        if vni != REMOTE_NODE_ID:
            identity = vni
            said = f"VNI {vni}, from {sending_node[0]}'s " + identity_words(judged.src_ip, vni, judged.labels)
    return _check(facts, receiver, pod, False, identity, said, judged)


def _check(facts: BpfFacts, endpoint: bpf.Endpoint, pod: str, egress: bool, identity: int, identity_said: str,
           judged: Judged) -> Check:
    direction = "egress" if egress else "ingress"
    if judged.reply:
        return Check(True, f"{direction}: a reply of a tracked connection (CT_REPLY), no policy lookup")
    head = f"{direction} policy of endpoint {endpoint.lxc_id} ({pod}) for {judged.what}: {identity_said}"
    name = bpf.policy_map_name(endpoint.lxc_id)
    rows = facts.policy.get(endpoint.lxc_id)
    if rows is None:
        return Check(True, f"{head}; no {name} could be read (an endpoint without a policy map passes everything)")
    allowed, said = verdict(name, rows, egress, identity, judged.protocol, judged.port)
    return Check(True, f"{head}, {said}") if allowed else Check(False, head, said)
