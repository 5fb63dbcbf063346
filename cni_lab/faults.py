"""Fault injection for learners: break one thing in a running lab, watch `check` show exactly
which pairs it breaks and why, then `heal` it.

    link-down NODE           the node's underlay link (eth0) goes down
    route-del NODE OTHER     NODE loses its route to OTHER's pods (NODE may be `router` in a fabric lab)
    pod-down NODE/POD        the pod's eth0 goes down
    forward-drop NODE        an nftables rule in NODE's forward hook drops every forwarded packet
                             from or to the cluster CIDR, and counts them (the bypass lesson:
                             a bridge or host-gw node loses its pods' traffic, an ebpf node does not)
    bpf-detach NODE/POD      (ebpf) cil_from_container comes off the pod's lxc device
    bpf-backend-del NODE NODE/POD
                             (ebpf) the pod's backends leave NODE's cilium_lb4_backends_v3 only: the
                             Service maps still hold their slots, so NODE's program picks them at
                             random and drops what lands there (DROP_NO_SERVICE), as a stale agent
                             sync would leave it; `explain NODE` shows the slot whose backend is missing

Faults are recorded in the lab's state (`faults.json`) and shown by `status`; `heal` undoes them
in reverse order: links up again, deleted routes put back exactly as they were read from the
kernel, and the plan applied again (every step is safe to repeat) so routes the kernel dropped
with a downed link come back. BIRD is asked to resync its routes into the kernel.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any

from cni_lab import names, plan, state
from cni_lab.errors import LabError
from cni_lab.fault_kinds import KINDS
from cni_lab.cluster import Lab
from cni_lab.executor import apply
from cni_lab.kernel import daemons, edit, readback
from cni_lab.kernel.edit import SavedRoute
from cni_lab.rulesets import observe
from cni_lab.steps import BpfServices, Step

RECORD = "faults.json"
FAULT_TABLE = "cni-lab-fault"  # forward-drop's nftables table (inet family), in the node's namespace


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # node, node/pod, or "node>other" for a route
    netns: str
    ifname: str = ""
    route: SavedRoute | None = None  # the deleted route, as read from the kernel

    def describe(self) -> str:
        """The fault in words: what `fault` and `status` say, and what check names as a cause."""
        if self.kind == "link-down":
            return f"link-down at {self.target}: {self.target}'s {self.ifname} is down"
        if self.kind == "route-del":
            holder = self.target.split(">")[0]
            lost = f"`{self.route.text}`" if self.route is not None and self.route.text else "its route to the other node's pods"
            return f"route-del {self.target}: {holder} lost {lost}"
        if self.kind == "pod-down":
            return f"pod-down {self.target}: its {self.ifname} is down"
        if self.kind == "forward-drop":
            return f"forward-drop at {self.target}: nft table inet {FAULT_TABLE} drops the pod traffic it forwards"
        if self.kind == "bpf-detach":
            return f"bpf-detach {self.target}: cil_from_container is off {self.ifname}"
        if self.kind == "bpf-backend-del":
            node, pod = self.target.split(">")
            return f"bpf-backend-del {self.target}: {pod}'s backends are gone from {node}'s cilium_lb4_backends_v3 (its slots stay)"
        return f"{self.kind} {self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "netns": self.netns, "ifname": self.ifname,
                "route": None if self.route is None else self.route.to_dict()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Fault:
        route = data.get("route")
        return Fault(data["kind"], data["target"], data["netns"], data.get("ifname", ""),
                     SavedRoute.from_dict(route) if route else None)


def recorded(lab_name: str) -> list[Fault]:
    try:
        return [Fault.from_dict(f) for f in json.loads((state.lab_dir(lab_name) / RECORD).read_text())]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def _save(lab_name: str, faults: list[Fault]) -> None:
    path = state.lab_dir(lab_name) / RECORD
    if faults:
        path.write_text(json.dumps([f.to_dict() for f in faults], indent=2))
    else:
        path.unlink(missing_ok=True)


def inject(lab: Lab, kind: str, args: tuple[str, ...], record: bool = True) -> Fault:
    """Break one thing. `record=False` leaves no record (an exercise's break: `status` and `check`
    must not tell the learner the cause; `heal` applies the plan again all the same)."""
    if kind == "link-down":
        if len(args) != 1:
            raise LabError("usage: cni-lab fault [LAB] link-down NODE")
        node = lab.node(args[0])
        fault = Fault(kind, node.name, names.node_netns(lab.name, node.name), names.NODE_UPLINK)
        edit.set_link(fault.netns, fault.ifname, up=False)
    elif kind == "pod-down":
        node_name, pod_name = _pod(lab, args, "pod-down")
        fault = Fault(kind, args[0], names.pod_netns(lab.name, node_name, pod_name), names.POD_IFNAME)
        edit.set_link(fault.netns, fault.ifname, up=False)
    elif kind == "route-del":
        fault = _route_del(lab, args)
    elif kind == "forward-drop":
        if len(args) != 1:
            raise LabError("usage: cni-lab fault [LAB] forward-drop NODE")
        node = lab.node(args[0])
        fault = Fault(kind, node.name, names.node_netns(lab.name, node.name))
        edit.nft_apply(fault.netns, forward_drop_rules(lab))
    elif kind == "bpf-detach":
        if not lab.capabilities.loads_bpf:
            raise LabError(f"bpf-detach: lab {lab.name} runs dataplane {lab.dataplane}, which has no BPF programs")
        node_name, pod_name = _pod(lab, args, "bpf-detach")
        lxc = names.lxc_veth(lab.name, node_name, pod_name)
        fault = Fault(kind, args[0], names.node_netns(lab.name, node_name), lxc)
        edit.detach_bpf(fault.netns, lxc, "ingress")
    elif kind == "bpf-backend-del":
        fault = _backend_del(lab, args)
    else:
        raise LabError(f"unknown fault {kind!r}: use one of {', '.join(KINDS)}")
    if record:
        _save(lab.name, [*recorded(lab.name), fault])
    if record and kind == "pod-down" and lab.scenario.services:
        _follow_endpoints(lab)
    return fault


def _pod(lab: Lab, args: tuple[str, ...], kind: str) -> tuple[str, str]:
    if len(args) != 1 or "/" not in args[0]:
        raise LabError(f"usage: cni-lab fault [LAB] {kind} NODE/POD")
    node_name, pod_name = args[0].split("/", 1)
    node = lab.node(node_name)
    found = next((p for p in node.pods if p.name == pod_name or p.id == args[0]), None)  # node1/web, node1/x/a
    if found is None:
        raise LabError(f"node {node_name} of lab {lab.name} has no pod {pod_name!r}")
    return node_name, found.name


def forward_drop_rules(lab: Lab) -> str:
    """forward-drop's table: what a node's firewall would do to traffic it forwards for pods."""
    rules = ""
    for cluster in (lab.scenario.cluster_cidr, lab.scenario.cluster_cidr6):
        if cluster is not None:
            ip = "ip6" if cluster.version == 6 else "ip"
            for field in ("saddr", "daddr"):
                rules += f"    {ip} {field} {cluster} {observe.log('fault forward-drop')} counter drop\n"
    return (
        f"table inet {FAULT_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f"{rules}"
        "  }\n"
        "}\n"
    )


def dropped(netns: str) -> int:
    """Packets forward-drop's rules have counted in a node's namespace."""
    listing = edit.nft_json(netns, "list", "table", "inet", FAULT_TABLE)
    total = 0
    for item in listing.get("nftables", []):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"].get("packets", 0))
    return total


def readings(lab: Lab) -> list[str]:
    """What the recorded faults saw (for `check`): each forward-drop rule's count."""
    lines = []
    for fault in recorded(lab.name):
        if fault.kind != "forward-drop":
            continue
        try:
            count = dropped(fault.netns)
        except OSError as e:
            lines.append(f"forward-drop at {fault.target}: cannot read its counters ({e.strerror})")
            continue
        why = ("the eBPF programs move pod packets around the node's forward hook" if lab.capabilities.bypasses_forward_hook
               else "pod traffic through this node crosses its forward hook")
        lines.append(f"forward-drop at {fault.target}: its rules dropped {count} packets ({why})")
    return lines


def _backend_del(lab: Lab, args: tuple[str, ...]) -> Fault:
    usage = "usage: cni-lab fault [LAB] bpf-backend-del NODE NODE/POD   (NODE's backends map loses the pod)"
    if len(args) != 2 or "/" not in args[1]:
        raise LabError(usage)
    if lab.capabilities.services != "cilium-bpf":
        raise LabError(f"bpf-backend-del: lab {lab.name} runs dataplane {lab.dataplane}, whose Services are not in BPF maps")
    node = lab.node(args[0])
    _pod(lab, args[1:], "bpf-backend-del")
    steps = plan.service_steps(lab, lab.services)
    ids = sorted({b.id for s in steps if isinstance(s, BpfServices) for b in s.backends if b.pod == args[1]})
    if not ids:
        raise LabError(f"bpf-backend-del: {args[1]} is no endpoint of any Service of lab {lab.name}")
    from cni_lab.kernel import bpf  # ebpf labs alone

    pin = names.bpf_node_dir(lab.name, node.name)
    for backend_id in ids:
        bpf.delete_backend(pin, backend_id)
    return Fault("bpf-backend-del", f"{node.name}>{args[1]}", names.node_netns(lab.name, node.name))


def _route_del(lab: Lab, args: tuple[str, ...]) -> Fault:
    if len(args) != 2:
        raise LabError("usage: cni-lab fault [LAB] route-del NODE OTHER   (NODE loses its route to OTHER's pods)")
    holder, other = args
    target = lab.node(other)
    if holder == "router":
        if not lab.has_router:
            raise LabError(f"lab {lab.name} has no router")
        ns = names.router_netns(lab.name)
    else:
        lab.node(holder)
        ns = names.node_netns(lab.name, holder)
    view = readback.read(ns, [])
    route = next((r for r in [*view.routes, *view.routes6]
                  if r.dst != "default" and (dst := ip_network(r.dst)).version == target.pod_cidr.version
                  and dst.overlaps(target.pod_cidr) and r.type == "unicast"), None)  # type: ignore[arg-type]
    if route is None:
        where = " (in a fabric lab the router holds it: route-del router " + other + ")" if lab.capabilities.fabric_routes_pods else ""
        raise LabError(f"{holder} has no route to {other}'s pods ({target.pod_cidr}){where}")
    saved = SavedRoute.of(route)
    edit.delete_route(ns, saved)
    return Fault("route-del", f"{holder}>{other}", ns, saved.dev, saved)


def endpoint_steps(lab: Lab) -> list[Step]:
    """Every node's Service steps (kube-proxy's table, or the BPF Service maps) and kube-dns's
    records, for the lab's Services as they are now: a pod the recorded `pod-down` faults took
    down is no endpoint of any, as the EndpointSlice controller takes a pod that is not ready out.
    What `fault pod-down` and `service apply` (lifecycle.set_services) apply."""
    gone = frozenset(f.target for f in recorded(lab.name) if f.kind == "pod-down")
    steps = plan.service_steps(lab, lab.services_without(gone))
    if lab.dns_service is not None:  # kube-dns's records follow: a headless Service answers without it
        steps += plan.dns_steps(lab, lab.services_without(gone), lab.headless_without(gone))
    return steps


def _follow_endpoints(lab: Lab) -> None:
    """A pod taken down leaves its Services' endpoints: kube-proxy's table (or the BPF Service
    maps) is made again on every node without it. (`heal` applies the plan again, which puts
    every endpoint back.)"""
    steps = endpoint_steps(lab)
    with apply.Session(state.lab_dir(lab.name)) as session:
        for step in steps:
            apply.apply_step(session, step)


def heal(lab: Lab) -> list[Fault]:
    """Undo every recorded fault (newest first), then make the lab what its plan says again."""
    faults = recorded(lab.name)
    for fault in reversed(faults):
        if fault.route is not None:
            edit.restore_route(fault.netns, fault.route)
        elif fault.kind == "forward-drop":
            with contextlib.suppress(OSError):  # gone already (the node was rebuilt)
                edit.nft_apply(fault.netns, f"delete table inet {FAULT_TABLE}\n")
        elif fault.kind in ("bpf-detach", "bpf-backend-del"):
            pass  # the plan applied again below attaches it again, and syncs the Service maps
        else:
            edit.set_link(fault.netns, fault.ifname, up=True)
    _reapply(lab)
    _save(lab.name, [])
    return faults


def _reapply(lab: Lab) -> None:
    """Apply the plan again: creating steps accept what exists; a downed link loses its routes
    in the kernel, and this puts them back. Daemons and CNI ADD are not repeated."""
    built = plan.build(lab)
    folder = state.lab_dir(lab.name)
    apply.reapply(built, folder)
    if lab.dns_service is not None:  # every record back, dnsmasq restarted
        with apply.Session(folder) as session:
            for step in plan.dns_steps(lab, lab.services, lab.headless_services):
                apply.apply_step(session, step)
    if lab.capabilities.runs_cni_plugins:
        _reapply_cni_routes(lab)
    if "bird" in lab.capabilities.daemons:
        for node in lab.nodes:  # BIRD syncs its routes into the kernel again
            daemons.resync_bird(folder / names.bird_dir(node.name) / "bird.ctl")
        apply.converge_bgp(built, folder)


def _reapply_cni_routes(lab: Lab) -> None:
    """The routes the CNI plugins gave each pod (recorded results), put back where missing."""
    for path in sorted(state.lab_dir(lab.name).glob(names.CNI_RESULTS)):
        record = json.loads(path.read_text())
        routes = [(ip_network(r["dst"]), ip_address(r["gw"]) if r.get("gw") else None, False, False)
                  for r in record["result"].get("routes", [])]
        edit.add_routes(record["netns"], record["ifname"], routes)
