"""A flow: one packet (or one connection's translation) the lab saw, named and judged, and its
JSON in the shape `hubble observe -o json` prints (a GetFlowsResponse: `{"flow": {...},
"node_name": ..., "time": ...}`, protojson with the proto's own field names).

Hubble's names, from cilium/cilium api/v1/flow/flow.proto (read at AritraDey-Dev/cilium
e750186a, a fork at a 2025 main): Flow's `time`, `verdict` (FORWARDED, DROPPED, ERROR,
TRANSLATED), `drop_reason` (the deprecated number) and `drop_reason_desc` (enum DropReason:
POLICY_DENIED = 133, SERVICE_BACKEND_NOT_FOUND = 158, NO_MAPPING_FOR_NAT_MASQUERADE = 167,
INVALID_IDENTITY = 171, TTL_EXCEEDED = 196), `IP {source, source_xlated, destination, ipVersion}`,
`l4 {TCP {source_port, destination_port, flags {SYN ...}} | UDP | SCTP | ICMPv4 {type, code} |
ICMPv6}`, `source`/`destination` Endpoint {ID, identity, namespace, labels, pod_name, workloads},
`destination_service {name, namespace}`, `node_name`, `traffic_direction` (INGRESS, EGRESS,
TRAFFIC_DIRECTION_UNKNOWN), `trace_observation_point` (enum TraceObservationPoint), `is_reply`,
`event_type {type, sub_type}` (Cilium's monitor message types: 1 drop, 4 trace, 5 policy
verdict), `interface {name}`, `Summary`, and `ingress_denied_by`/`egress_denied_by` (Policy
{name, namespace, kind}).

Where the lab differs, and why:
  - ERROR flows carry a `drop_reason_desc` too (Hubble sets it on DROPPED only): the kernel's
    ICMP errors have no DropReason, so the lab names them itself: NO_ROUTE, NO_NEIGHBOUR,
    MTU_EXCEEDED, PORT_UNREACHABLE, PROTOCOL_UNREACHABLE, REJECTED_BY_RULE, PARAMETER_PROBLEM,
    DESTINATION_UNREACHABLE (ours); TTL_EXCEEDED is Hubble's own. A drop by the forward-drop
    fault is FAULT_FORWARD_DROP (ours). Ours carry no number (`drop_reason` 0).
  - NetworkPolicy drops seen by nftables are POLICY_DENIED, as Cilium's are.
  - `identity` and `ID` are set in ebpf labs only: other data planes have no security identities.
  - Extras, not Hubble's: `cause` (why, in words: never empty for DROPPED, ERROR, TRANSLATED),
    `translated` (the endpoint a Service chose, or the address a masquerade gave), `cni_lab`
    (what read the flow: nflog | conntrack | bpf, the rule's prefix or event, the ends' names,
    kinds and nodes, the protocol as the lab names it).
  - `from_json` reads a flow back (`check` records what it observed, `observe --last-check`
    shows it): everything a Flow holds is in its JSON, so the two are exact inverses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any, Mapping

from cni_lab.errors import LabError

VERDICTS = ("FORWARDED", "DROPPED", "TRANSLATED", "ERROR")
DIRECTIONS = ("INGRESS", "EGRESS", "TRAFFIC_DIRECTION_UNKNOWN")
POINTS = ("UNKNOWN_POINT", "TO_HOST", "TO_STACK", "TO_OVERLAY", "TO_ENDPOINT", "FROM_ENDPOINT", "FROM_HOST",
          "FROM_STACK", "FROM_OVERLAY", "FROM_NETWORK", "TO_NETWORK")
KINDS = ("pod", "node", "outside", "service", "router", "world")
SOURCES = ("nflog", "conntrack", "bpf")
# Hubble's DropReason names of the drops the lab's programs report (bpf.DROP_REASONS' numbers)
HUBBLE_DROPS = {133: "POLICY_DENIED", 158: "SERVICE_BACKEND_NOT_FOUND", 167: "NO_MAPPING_FOR_NAT_MASQUERADE",
                171: "INVALID_IDENTITY", 196: "TTL_EXCEEDED"}
# Cilium's monitor message types (pkg/monitor/api: MessageTypeDrop, Trace, PolicyVerdict)
EVENT_DROP, EVENT_TRACE, EVENT_POLICY_VERDICT = 1, 4, 5


@dataclass(frozen=True)
class Peer:
    """One end of a flow, named: a pod, a node, the outside host, a Service's frontend, the
    fabric's router, or the world (an address the lab does not know)."""

    kind: str  # KINDS
    name: str  # node1/web (node1/x/a in namespace x), node1, outside, service default/web, router, world
    address: str
    port: int | None = None
    namespace: str = ""  # a pod's or a Service's
    pod_name: str = ""  # a pod's metadata.name; a Service's name
    node: str = ""  # a pod's node, a node itself
    labels: tuple[str, ...] = ()  # Cilium's way: k8s:app=web, reserved:host
    identity: int | None = None  # ebpf labs: the security identity
    endpoint_id: int | None = None  # ebpf labs: a pod's endpoint ID on its node

    @property
    def qualified(self) -> str:
        """namespace/name for a pod or a Service, else the name."""
        return f"{self.namespace}/{self.pod_name}" if self.namespace else self.name

    def describe(self) -> str:
        """`node1/web 10.244.0.2:80`, the address bracketed when IPv6 has a port."""
        where = self.address if self.port is None else (
            f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}")
        return where if self.kind == "world" else f"{self.name} {where}"


@dataclass(frozen=True)
class PolicyRef:
    """A policy that denied a flow (Hubble's Policy message)."""

    name: str
    namespace: str
    kind: str = "NetworkPolicy"


@dataclass(frozen=True)
class Flow:
    time: float  # seconds since the epoch
    verdict: str  # VERDICTS
    ip_version: int  # 4 | 6
    protocol: str  # TCP | UDP | SCTP | ICMPv4 | ICMPv6 | IP/<number>
    source: Peer
    destination: Peer
    node: str  # where it was observed: a node's name, or "router"
    event_source: str  # SOURCES: what read it
    rule: str  # the log rule's prefix, "conntrack new", or the BPF event kind
    cause: str = ""
    point: str = "UNKNOWN_POINT"  # POINTS
    direction: str = "TRAFFIC_DIRECTION_UNKNOWN"  # DIRECTIONS, relative to the observing node's pod
    translated: Peer | None = None  # TRANSLATED: the endpoint a Service's DNAT chose, else the masquerade's address
    source_xlated: str = ""  # SNAT: the address the source left as (Hubble's IP.source_xlated)
    drop_reason: int = 0  # Hubble's number, where it has one
    drop_reason_desc: str = ""  # Hubble's DropReason name, or the lab's (see the module's docstring)
    ingress_denied_by: tuple[PolicyRef, ...] = ()
    egress_denied_by: tuple[PolicyRef, ...] = ()
    is_reply: bool | None = None
    tcp_flags: tuple[str, ...] = ()
    icmp_type: int | None = None
    icmp_code: int | None = None
    event_type: int = EVENT_TRACE
    event_subtype: int = 0
    interface: str = ""  # the device it was seen on (nflog's outdev, else indev)

    @property
    def port(self) -> int | None:
        return self.destination.port

    def summary(self) -> str:
        """Hubble's Summary: `TCP Flags: SYN`, `UDP`, `ICMPv4 EchoRequest`."""
        if self.protocol == "TCP":
            return "TCP Flags: " + ", ".join(self.tcp_flags) if self.tcp_flags else "TCP"
        icmp = "ICMPv6" if self.ip_version == 6 else "ICMPv4"
        if self.verdict == "ERROR" and self.icmp_type is not None:  # an error about a packet of self.protocol
            name = _ICMP_NAMES.get((icmp, self.icmp_type), f"type {self.icmp_type}")
            return f"{icmp} {name} (code {self.icmp_code}) for {self.protocol}"
        if self.protocol == icmp and self.icmp_type is not None:
            name = _ICMP_NAMES.get((icmp, self.icmp_type), f"type {self.icmp_type} code {self.icmp_code}")
            return f"{icmp} {name}"
        return self.protocol


_ICMP_NAMES = {("ICMPv4", 8): "EchoRequest", ("ICMPv4", 0): "EchoReply", ("ICMPv4", 3): "DestinationUnreachable",
               ("ICMPv4", 11): "TimeExceeded", ("ICMPv6", 128): "EchoRequest", ("ICMPv6", 129): "EchoReply",
               ("ICMPv6", 1): "DestinationUnreachable", ("ICMPv6", 2): "PacketTooBig", ("ICMPv6", 3): "TimeExceeded"}


def rfc3339(t: float) -> str:
    """2024-05-01T12:00:00.123456789Z: UTC, nanoseconds, as protojson writes a Timestamp."""
    seconds = math.floor(t)  # apart, as a float holds an epoch's seconds to about 0.2 µs
    rest = round((t - seconds) * 1_000_000_000)
    if rest == 1_000_000_000:
        seconds, rest = seconds + 1, 0
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


def _endpoint(p: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.endpoint_id is not None:
        out["ID"] = p.endpoint_id
    if p.identity is not None:
        out["identity"] = p.identity
    if p.kind == "pod":
        out["namespace"] = p.namespace
        out["pod_name"] = p.pod_name
    if p.labels:
        out["labels"] = list(p.labels)
    return out


def _l4(f: Flow) -> dict[str, Any]:
    if f.protocol in ("TCP", "UDP", "SCTP") and f.source.port is not None and f.destination.port is not None:
        ports: dict[str, Any] = {"source_port": f.source.port, "destination_port": f.destination.port}
        if f.protocol == "TCP" and f.tcp_flags:
            ports["flags"] = {flag: True for flag in f.tcp_flags}
        return {f.protocol: ports}
    if f.icmp_type is not None:  # an echo, or the error an ERROR flow reports
        return {"ICMPv6" if f.ip_version == 6 else "ICMPv4": {"type": f.icmp_type, "code": f.icmp_code or 0}}
    return {}


def _policies(refs: tuple[PolicyRef, ...]) -> list[dict[str, str]]:
    return [{"name": r.name, "namespace": r.namespace, "kind": r.kind} for r in refs]


def to_json(f: Flow) -> dict[str, Any]:
    """The flow as one line of `hubble observe -o json` (docs/flow.schema.json)."""
    time = rfc3339(f.time)
    ip: dict[str, Any] = {"source": f.source.address, "destination": f.destination.address,
                          "ipVersion": "IPv6" if f.ip_version == 6 else "IPv4"}
    if f.source_xlated:
        ip["source_xlated"] = f.source_xlated
    flow: dict[str, Any] = {
        "time": time, "verdict": f.verdict, "IP": ip, "l4": _l4(f),
        "source": _endpoint(f.source), "destination": _endpoint(f.destination),
        "Type": "L3_L4", "node_name": f.node,
        "event_type": {"type": f.event_type, **({"sub_type": f.event_subtype} if f.event_subtype else {})},
        "traffic_direction": f.direction, "trace_observation_point": f.point,
        "Summary": f.summary(), "cause": f.cause,
        "cni_lab": {"source": f.event_source, "rule": f.rule, "protocol": f.protocol, "source_name": f.source.name,
                    "source_kind": f.source.kind, "destination_name": f.destination.name,
                    "destination_kind": f.destination.kind,
                    **({"source_node": f.source.node} if f.source.node else {}),
                    **({"destination_node": f.destination.node} if f.destination.node else {}),
                    **({"icmp_error": {"type": f.icmp_type, "code": f.icmp_code or 0}}
                       if f.verdict == "ERROR" and f.icmp_type is not None else {})},
    }
    if f.drop_reason_desc:
        flow["drop_reason"] = f.drop_reason
        flow["drop_reason_desc"] = f.drop_reason_desc
    if f.destination.kind == "service":
        flow["destination_service"] = {"name": f.destination.pod_name, "namespace": f.destination.namespace}
    if f.is_reply is not None:
        flow["is_reply"] = f.is_reply
    if f.interface:
        flow["interface"] = {"name": f.interface}
    if f.ingress_denied_by:
        flow["ingress_denied_by"] = _policies(f.ingress_denied_by)
    if f.egress_denied_by:
        flow["egress_denied_by"] = _policies(f.egress_denied_by)
    if f.translated is not None:
        t = f.translated
        flow["translated"] = {"kind": t.kind, "name": t.name, "address": t.address,
                              **({"port": t.port} if t.port is not None else {}),
                              **({"namespace": t.namespace, "pod_name": t.pod_name} if t.namespace else {}),
                              **({"node": t.node} if t.node else {}), **_endpoint_ids(t)}
    return {"flow": flow, "node_name": f.node, "time": time}


def _endpoint_ids(p: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {"labels": list(p.labels)} if p.labels else {}
    if p.identity is not None:
        out["identity"] = p.identity
    if p.endpoint_id is not None:
        out["ID"] = p.endpoint_id
    return out


_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z$")


def epoch(text: str) -> float:
    """The inverse of `rfc3339`: the float nearest the nanoseconds written (so a time read back
    is the float that was written, a float holding an epoch's seconds to about 0.2 µs)."""
    m = _TIME.match(text)
    if m is None:
        raise ValueError(f"time {text!r} is not RFC 3339 UTC")
    seconds = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return float(int(seconds) + Fraction(int((m.group(2) or "0").ljust(9, "0")), 1_000_000_000))


def _peer(end: dict[str, Any], extra: dict[str, Any], side: str, address: str, port: int | None,
          service: dict[str, Any] | None) -> Peer:
    namespace, pod_name = end.get("namespace", ""), end.get("pod_name", "")
    if service is not None:  # a Service's frontend: Hubble names it in destination_service
        namespace, pod_name = service["namespace"], service["name"]
    return Peer(kind=extra[f"{side}_kind"], name=extra[f"{side}_name"], address=address, port=port,
                namespace=namespace, pod_name=pod_name, node=extra.get(f"{side}_node", ""),
                labels=tuple(end.get("labels", ())), identity=end.get("identity"), endpoint_id=end.get("ID"))


def _translated(t: dict[str, Any]) -> Peer:
    return Peer(kind=t["kind"], name=t["name"], address=t["address"], port=t.get("port"),
                namespace=t.get("namespace", ""), pod_name=t.get("pod_name", ""), node=t.get("node", ""),
                labels=tuple(t.get("labels", ())), identity=t.get("identity"), endpoint_id=t.get("ID"))


def from_json(doc: dict[str, Any]) -> Flow:
    """A flow back from its JSON (`to_json`'s, or just its `flow` object): `from_json(to_json(f)) == f`.
    A document cni-lab did not write is a one-line LabError."""
    try:
        return _read(doc.get("flow", doc))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LabError(f"a recorded flow is not one cni-lab wrote ({type(e).__name__}: {e})") from None


def recorded(check: Mapping[str, object]) -> list[Flow]:
    """The flows a `check` document recorded while it probed (its `flows`, oldest first)."""
    found = check.get("flows", [])
    if not isinstance(found, list):
        raise LabError("the last check's `flows` is not a list: not a document cni-lab wrote")
    return [from_json(f) for f in found]


def _read(flow: dict[str, Any]) -> Flow:
    extra, ip, l4 = flow["cni_lab"], flow["IP"], flow["l4"]
    ports: dict[str, Any] = next((l4[p] for p in ("TCP", "UDP", "SCTP") if p in l4), {})
    icmp: dict[str, Any] = extra.get("icmp_error") or next((l4[p] for p in ("ICMPv4", "ICMPv6") if p in l4), {})
    service = flow.get("destination_service")
    return Flow(
        time=epoch(flow["time"]), verdict=flow["verdict"], ip_version=6 if ip["ipVersion"] == "IPv6" else 4,
        protocol=extra["protocol"],
        source=_peer(flow["source"], extra, "source", ip["source"], ports.get("source_port"), None),
        destination=_peer(flow["destination"], extra, "destination", ip["destination"], ports.get("destination_port"),
                          service),
        node=flow["node_name"], event_source=extra["source"], rule=extra["rule"], cause=flow["cause"],
        point=flow["trace_observation_point"], direction=flow["traffic_direction"],
        translated=_translated(flow["translated"]) if "translated" in flow else None,
        source_xlated=ip.get("source_xlated", ""), drop_reason=flow.get("drop_reason", 0),
        drop_reason_desc=flow.get("drop_reason_desc", ""),
        ingress_denied_by=tuple(PolicyRef(**r) for r in flow.get("ingress_denied_by", ())),
        egress_denied_by=tuple(PolicyRef(**r) for r in flow.get("egress_denied_by", ())),
        is_reply=flow.get("is_reply"), tcp_flags=tuple(ports.get("flags", {})),
        icmp_type=icmp.get("type"), icmp_code=icmp.get("code"),
        event_type=flow["event_type"]["type"], event_subtype=flow["event_type"].get("sub_type", 0),
        interface=flow.get("interface", {}).get("name", ""))
