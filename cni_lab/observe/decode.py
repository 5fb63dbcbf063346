"""What the lab's namespaces reported (kernel/flowsources.py: nflog packets, conntrack NEW
events, the ebpf programs' ring buffer) turned into flows: both ends named, a verdict, and for
every DROPPED, ERROR and TRANSLATED flow its cause in words.

    cni-lab forward | input | output   a flow's first packet a node (or the router) let through:
                                       FORWARDED
    cni-lab policy-drop ingress|egress the NetworkPolicy chain's final drop: DROPPED, POLICY_DENIED,
                                       the policies isolating the pod, and why no rule matched
    cni-lab fault forward-drop         the forward-drop fault's table: DROPPED, the fault's words
    cni-lab error                      an ICMP error: ERROR, for the pair of the packet it quotes
                                       (observe/icmp_errors.py says why)
    conntrack NEW with NAT             TRANSLATED: a Service's DNAT (the endpoint chosen), a
                                       masquerade (the address the flow left as)
    BPF drop | policy-verdict          Cilium's drop reason, the program and the policies

A recorded fault on a drop's or an error's way comes first in its cause (lesson/fault_rules.py:
the same rule per kind `check` uses). Pure: values in, values out.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address
from typing import Sequence

from cni_lab import names
from cni_lab.cluster import Lab, Pod
from cni_lab.faults import Fault
from cni_lab.kernel.bpf import DROP_REASONS
from cni_lab.kernel.flowsources import Logged, Raw, Reported, Tracked
from cni_lab.lesson.fault_rules import fault_words, touches_pair
from cni_lab.observe import icmp_errors, packets
from cni_lab.observe.flows import EVENT_DROP, EVENT_POLICY_VERDICT, EVENT_TRACE, HUBBLE_DROPS, Flow, Peer, PolicyRef
from cni_lab.observe.peers import Directory
from cni_lab.probe.pairs import Endpoint
from cni_lab.rulesets import kubeproxy, masquerade, netpol

PREFIX = "cni-lab "
FIRST_PACKETS = ("forward", "input", "output")
POLICY_DROP, FAULT_DROP, ERROR = "policy-drop ", "fault forward-drop", "error"
POLICY_DENIED = 133
FAULT_FORWARD_DROP = "FAULT_FORWARD_DROP"  # ours: Hubble has no fault injection


class Decoder:
    """Flows of one lab, with the faults recorded for it (faults.recorded)."""

    def __init__(self, lab: Lab, faults: Sequence[Fault] = ()) -> None:
        self.lab = lab
        self.faults = tuple(faults)
        self.dir = Directory(lab)

    def flow(self, raw: Raw) -> Flow | None:
        """The flow, or None: a packet that is not IP, a rule that is not the lab's, conntrack
        without NAT (its first packet's log line already shows it)."""
        if isinstance(raw, Logged):
            return self._logged(raw)
        if isinstance(raw, Tracked):
            return self._tracked(raw)
        if isinstance(raw, Reported):
            return self._reported(raw)
        return None

    # -- nflog ----------------------------------------------------------------------------------

    def _logged(self, raw: Logged) -> Flow | None:
        p = packets.parse(raw.packet)
        if p is None or not raw.prefix.startswith(PREFIX):
            return None
        kind = raw.prefix[len(PREFIX):].strip()
        node = self.dir.node_of(raw.netns)
        if kind == ERROR and p.is_icmp_error:
            return self._error(raw, p, node)
        flow = self._packet_flow(raw, p, node, p)
        if kind.startswith(POLICY_DROP):
            return self._policy_drop(flow, p, kind[len(POLICY_DROP):].strip())
        if kind == FAULT_DROP:
            fault = next((f for f in self.faults if f.kind == "forward-drop" and f.netns == raw.netns),
                         Fault("forward-drop", node, raw.netns))
            return replace(flow, verdict="DROPPED", drop_reason_desc=FAULT_FORWARD_DROP, event_type=EVENT_DROP,
                           cause=fault_words(fault))
        if kind in FIRST_PACKETS:
            return flow
        return None

    def _packet_flow(self, raw: Logged, p: packets.Packet, node: str, pair: packets.Packet) -> Flow:
        """A FORWARDED flow of `pair`'s ends (the packet itself, or the one an error quotes)."""
        ported = pair.protocol in packets.PORTED
        reply = (False if "SYN" in pair.tcp_flags and "ACK" not in pair.tcp_flags or pair.is_echo_request
                 else True if pair.echo_id is not None else None)
        return Flow(time=raw.time, verdict="FORWARDED", ip_version=pair.version, protocol=pair.protocol_name,
                    source=self.dir.peer(pair.src, pair.sport if ported else None, node),
                    destination=self.dir.peer(pair.dst, pair.dport if ported else None, node),
                    node=node, event_source="nflog", rule=raw.prefix,
                    point=self.dir.point(node, raw.hook, raw.indev, raw.outdev, p.src, p.dst),
                    direction=self.dir.direction(node, pair.src, pair.dst), is_reply=reply,
                    tcp_flags=pair.tcp_flags, icmp_type=pair.icmp_type, icmp_code=pair.icmp_code,
                    interface=raw.outdev or raw.indev)

    def _policy_drop(self, flow: Flow, p: packets.Packet, direction: str) -> Flow:
        ingress = direction == "ingress"
        pod, other = (flow.destination, flow.source) if ingress else (flow.source, flow.destination)
        refs, words, allowed = self.policy_words(pod, other, "Ingress" if ingress else "Egress", p.protocol_name,
                                                 p.dport, p.version)
        words = self._denied_words(words, allowed, f"{pod.name}'s {direction} chain in table inet {netpol.TABLE}")
        return self._judged(replace(
            flow, verdict="DROPPED", drop_reason=POLICY_DENIED, drop_reason_desc=HUBBLE_DROPS[POLICY_DENIED],
            event_type=EVENT_DROP, event_subtype=POLICY_DENIED, direction="INGRESS" if ingress else "EGRESS",
            point="TO_ENDPOINT" if ingress else "FROM_ENDPOINT",  # the pod's chain, whichever devices it came by
            ingress_denied_by=refs if ingress else (), egress_denied_by=() if ingress else refs, cause=words))

    def policy_words(self, pod: Peer, other: Peer, direction: str, protocol: str, port: int | None,
                     family: int) -> tuple[tuple[PolicyRef, ...], str, bool]:
        """The policies selecting `pod` for `direction`, the evaluator's words for that side of the
        connection (policy/cause.py's Side: which rule lets `other` through, or that none does),
        and whether the evaluator allows it."""
        if pod.kind != "pod":
            return (), f"{pod.describe()} is no pod the lab knows", False
        mine, theirs = self.dir.workload(pod), self.dir.workload(other)
        refs = tuple(PolicyRef(p.name, p.namespace) for p in self.lab.evaluator.selecting(mine, direction))
        icmp = protocol.startswith("ICMP")
        src, dst = (theirs, mine) if direction == "Ingress" else (mine, theirs)
        cause = self.lab.evaluator.explain(src, dst, "ICMP" if icmp else protocol, None if icmp else port, family)
        side = cause.ingress if direction == "Ingress" else cause.egress
        return refs, side.describe(cause.probe), side.allowed

    def _denied_words(self, words: str, allowed: bool, where: str) -> str:
        if allowed:  # the kernel and the reference disagree: say both
            return f"policy: dropped by {where}, yet {words}"
        return f"policy: {words} (dropped by {where})"

    def _error(self, raw: Logged, p: packets.Packet, node: str) -> Flow:
        quoted = p.inner if p.inner is not None else p
        flow = self._packet_flow(raw, p, node, quoted)
        sender = self.dir.peer(p.src, seen_at=node)
        desc, words = icmp_errors.words(p, flow.destination, sender, self._frontend_of(flow.destination))
        return self._judged(replace(flow, verdict="ERROR", drop_reason_desc=desc, drop_reason=icmp_errors.number(desc),
                                    icmp_type=p.icmp_type, icmp_code=p.icmp_code, is_reply=None, cause=words))

    # -- faults ---------------------------------------------------------------------------------

    def _endpoint(self, peer: Peer) -> Endpoint:
        """A flow's end as check's pairs carry it, for the fault rules."""
        kind = peer.kind if peer.kind in ("pod", "node") else "outside"
        pod = self.dir.pods.get(peer.address)
        netns = (names.pod_netns(self.lab.name, pod.node, pod.name) if pod is not None
                 else names.node_netns(self.lab.name, peer.node) if kind == "node" else "")
        return Endpoint(peer.name, kind, peer.node, ip_address(peer.address), netns)

    def _judged(self, flow: Flow) -> Flow:
        """A DROPPED or ERROR flow with the recorded faults on its way named first."""
        src, dst = self._endpoint(flow.source), self._endpoint(flow.destination)
        found = [f for f in self.faults if touches_pair(self.lab, f, src, dst)
                 and not (flow.drop_reason_desc == FAULT_FORWARD_DROP and f.kind == "forward-drop")]
        if not found:
            return flow
        return replace(flow, cause="; ".join(fault_words(f) for f in found) + f"; seen as: {flow.cause}")

    # -- conntrack ------------------------------------------------------------------------------

    def _frontend_of(self, peer: Peer) -> str:
        """`Service default/web 10.96.0.2:80/TCP`, `NodePort default/web 192.168.1.2:30080/TCP`,
        or "" where the address and port are no Service's."""
        service = self.dir.services.get(peer.address)
        if service is not None:
            port = next((sp for sp in service.spec.ports if sp.port == peer.port), None)
            return f"Service {service.qualified} {peer.address}" + (f":{port.port}/{port.protocol}" if port else "")
        if peer.kind == "node" and peer.port is not None:
            for s in self.dir.services.values():
                for sp in s.spec.ports:
                    if sp.node_port == peer.port:
                        return f"NodePort {s.qualified} {peer.address}:{sp.node_port}/{sp.protocol}"
        return ""

    def _masquerader(self, dnat: bool) -> str:
        if dnat:
            return f"kube-proxy's masquerade (table ip {kubeproxy.TABLE}, mark {masquerade.KUBE_MARK_MASQ})"
        style = self.lab.capabilities.masquerade
        if style == "flannel":
            return f"flannel's --ip-masq, table ip {masquerade.FLANNEL_TABLE}"
        if style == "calico":
            return f"Calico's natOutgoing, table ip {masquerade.CALICO_TABLE}"
        if style == "cilium-bpf":
            return "Cilium's BPF masquerade, cilium_snat_v4_external"
        return "a masquerade rule"

    def _tracked(self, t: Tracked) -> Flow | None:
        ported = t.protocol in packets.PORTED
        orig_src, orig_dst = str(ip_address(t.orig_src)), str(ip_address(t.orig_dst))
        reply_src, reply_dst = str(ip_address(t.reply_src)), str(ip_address(t.reply_dst))
        dnat = reply_src != orig_dst or (ported and t.reply_sport != t.orig_dport)
        snat = reply_dst != orig_src or (ported and t.reply_dport != t.orig_sport)
        if not (dnat or snat):
            return None
        node = self.dir.node_of(t.netns)
        src = self.dir.peer(orig_src, t.orig_sport if ported else None, node)
        dst = self.dir.peer(orig_dst, t.orig_dport if ported else None, node)
        parts, translated = [], None
        if dnat:
            translated = self.dir.peer(reply_src, t.reply_sport if ported else None, node)
            front = self._frontend_of(dst) or f"DNAT {dst.describe()}"
            parts.append(f"{front} → endpoint {translated.describe()}")
        if snat:
            masq = self.dir.peer(reply_dst, t.reply_dport if ported else None, node)
            left = masq.address if masq.port is None else masq.describe().rpartition(" ")[2]
            parts.append(f"masquerade at {node}: {orig_src} → {left} ({self._masquerader(dnat)})")
            translated = translated or masq
        version = ip_address(orig_src).version
        return Flow(time=t.time, verdict="TRANSLATED", ip_version=version,
                    protocol=packets.PROTOCOL_NAMES.get(t.protocol, f"IP/{t.protocol}"), source=src, destination=dst,
                    node=node, event_source="conntrack", rule="conntrack new", cause="; ".join(parts),
                    direction=self.dir.direction(node, orig_src, orig_dst), translated=translated,
                    source_xlated=reply_dst if snat else "", is_reply=False)

    # -- BPF ------------------------------------------------------------------------------------

    def _reported(self, r: Reported) -> Flow | None:
        e = r.event
        (src_addr, sport), (dst_addr, dport) = split(e.src), split(e.dst)
        try:
            version = ip_address(src_addr).version
            ip_address(dst_addr)
        except ValueError:
            return None  # not an IP packet the programs captured
        node = self.dir.node_of(r.netns)
        src, dst = self.dir.peer(src_addr, sport, node), self.dir.peer(dst_addr, dport, node)
        pod = self.dir.endpoint_pod(node, e.endpoint) if e.endpoint else None
        direction = e.direction or ("egress" if pod is not None and src_addr in map(str, pod.ips)
                                    else "ingress" if pod is not None else "")
        if e.type == "policy-verdict":  # the remote end's identity
            src, dst = (src, replace(dst, identity=e.src_identity)) if direction == "egress" else (
                replace(src, identity=e.src_identity), dst)
        else:
            src = replace(src, identity=e.src_identity or src.identity)
            dst = replace(dst, identity=e.dst_identity or dst.identity)
        protocol = packets.PROTOCOL_NAMES.get(e.protocol, f"IP/{e.protocol}")
        if e.type == "trace":
            return self._bpf_trace(r, src, dst, node, version, protocol)
        flow = Flow(time=r.time, verdict="FORWARDED", ip_version=version, protocol=protocol, source=src,
                    destination=dst, node=node, event_source="bpf", rule=e.type,
                    point={"egress": "FROM_ENDPOINT", "ingress": "TO_ENDPOINT"}.get(direction, "UNKNOWN_POINT"),
                    direction={"egress": "EGRESS", "ingress": "INGRESS"}.get(direction, "TRAFFIC_DIRECTION_UNKNOWN"))
        denied = e.type == "drop" or e.reason != 0
        if e.type == "policy-verdict" or e.reason == POLICY_DENIED:
            flow = replace(flow, event_type=EVENT_POLICY_VERDICT if e.type == "policy-verdict" else EVENT_DROP,
                           event_subtype=0 if e.type == "policy-verdict" else POLICY_DENIED)
            return self._bpf_policy(flow, pod, direction, e.endpoint, denied)
        return self._bpf_drop(flow, e.reason, node)

    def _bpf_trace(self, r: Reported, src: Peer, dst: Peer, node: str, version: int, protocol: str) -> Flow:
        """A connection's first packet where a program let it out of a pod, into one, out to the
        world SNATed, or in as a NodePort: FORWARDED, or TRANSLATED where it rewrote an address
        (`orig`: the frontend, or the pod before its masquerade)."""
        e = r.event
        egress = e.point in ("FROM_ENDPOINT", "TO_NETWORK")
        flow = Flow(time=r.time, verdict="FORWARDED", ip_version=version, protocol=protocol,
                    source=replace(src, identity=e.src_identity or src.identity),
                    destination=replace(dst, identity=e.dst_identity or dst.identity), node=node,
                    event_source="bpf", rule=f"trace {e.point}", point=e.point,
                    direction="EGRESS" if egress else "INGRESS", event_type=EVENT_TRACE, event_subtype=0)
        if not e.orig:
            return flow
        orig_addr, orig_port = split(e.orig)
        if e.point == "TO_NETWORK":  # masquerade: the packet already left as the node
            pod = self.dir.peer(orig_addr, orig_port, node)
            translated = flow.source
            return replace(flow, verdict="TRANSLATED", source=pod, translated=translated, source_xlated=src.address,
                           cause=f"masquerade at {node}: {pod.address} → {translated.describe().rpartition(' ')[2]} "
                                 f"({self._masquerader(False)})")
        front = self.dir.peer(orig_addr, orig_port, node)
        program = "cil_from_container (lb4_local)" if e.point == "FROM_ENDPOINT" else "cil_from_netdev (nodeport_lb4)"
        words = self._frontend_of(front) or f"DNAT {front.describe()}"
        return replace(flow, verdict="TRANSLATED", destination=front, translated=flow.destination,
                       cause=f"{words} → endpoint {flow.destination.describe()} ({program})")

    def _bpf_policy(self, flow: Flow, pod: Pod | None, direction: str, endpoint: int, denied: bool) -> Flow:
        egress = direction == "egress"
        program = ("cil_from_container's egress policy lookup" if egress
                   else "local_delivery's ingress policy lookup (Cilium's cil_to_container)")
        where = f"{program} in cilium_policy_v2_{endpoint}" + (f" of {pod.id}" if pod is not None else "")
        mine, other = (flow.source, flow.destination) if egress else (flow.destination, flow.source)
        refs, words, allowed = self.policy_words(mine, other, "Egress" if egress else "Ingress", flow.protocol,
                                                 flow.port, flow.ip_version)
        if not denied:
            return replace(flow, cause=f"policy: allowed by {where}: {words}")
        return self._judged(replace(flow, verdict="DROPPED", drop_reason=POLICY_DENIED,
                                    drop_reason_desc=HUBBLE_DROPS[POLICY_DENIED],
                                    cause=self._denied_words(words, allowed, where),
                                    egress_denied_by=refs if egress else (), ingress_denied_by=() if egress else refs))

    def _bpf_drop(self, flow: Flow, reason: int, node: str) -> Flow:
        text = DROP_REASONS.get(reason, f"drop reason {reason}")
        if reason == 158:
            program = ("cil_from_container (lb4_local)" if flow.source.kind == "pod"
                       else "cil_from_netdev (nodeport_lb4)")
            front = self._frontend_of(flow.destination) or flow.destination.describe()
            words = (f"{text}: {program} picked a backend of {front} that {node}'s cilium_lb4_backends_v3 "
                     "does not hold")
        elif reason == 171:
            words = f"{text}: cil_from_overlay read a VNI that is no security identity ({flow.source.identity})"
        elif reason == 167:
            words = f"{text}: a reply to {flow.destination.address} matched no cilium_snat_v4_external entry"
        else:
            words = f"{text} (Cilium drop reason {reason})"
        backends = [f for f in self.faults if f.kind == "bpf-backend-del" and f.target.split(">")[0] == node]
        if reason == 158 and backends:
            words = "; ".join(fault_words(f) for f in backends) + f"; seen as: {words}"
        return self._judged(replace(flow, verdict="DROPPED", drop_reason=reason,
                                    drop_reason_desc=HUBBLE_DROPS.get(reason, "DROP_REASON_UNKNOWN"),
                                    event_type=EVENT_DROP, event_subtype=reason, cause=words))


def split(address: str) -> tuple[str, int | None]:
    """`10.0.0.1:80`, `[fd00::1]:80`, `10.0.0.1` or `fd00::1` as (address, port)."""
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
        return host, int(port) if port.isdigit() else None
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, int(port) if port.isdigit() else None
    return address, None
