"""Who is who in a lab, for observe: every address named (pods by their IPs, nodes by their
underlay, gateway and overlay addresses, the fabric's router by its legs, Services by their
ClusterIPs, the outside host), every namespace to the node it is, every device to what it leads
to (a pod, the overlay, the network). Worked out once per lab; pure."""

from __future__ import annotations

import functools
from dataclasses import replace
from ipaddress import ip_address

from cni_lab import names, plan
from cni_lab.cluster import Lab, Node, Pod, Service
from cni_lab.dataplanes import ebpf, ebpf_policy
from cni_lab.errors import LabError
from cni_lab.observe.flows import Peer
from cni_lab.policy import Workload

OVERLAY_DEVICES = (names.FLANNEL_DEVICE, names.FLANNEL_DEVICE6, "vxlan.calico", "vxlan-v6.calico", names.CILIUM_VXLAN)


@functools.lru_cache(maxsize=1 << 16)
def normal(address: str) -> str:
    """An address as `ipaddress` writes it (IPv6 compressed), or as given when it is none
    (remembered: a lab's addresses repeat in every flow)."""
    try:
        return str(ip_address(address))
    except ValueError:
        return address


class Directory:
    """The lab's names for addresses, namespaces and devices."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.bpf = lab.capabilities.loads_bpf
        self.identities = ebpf_policy.identities(lab) if self.bpf else {}
        self.peers: dict[str, Peer] = {}
        self._peers: dict[tuple[str, int | None, str], Peer] = {}  # peer()'s answers
        self.pods: dict[str, Pod] = {}  # address → pod
        self.services: dict[str, Service] = {}  # ClusterIP → Service
        for node in lab.nodes:
            for a in (node.pod_cidr.network_address, node.gateway, *(() if node.pod_cidr6 is None else
                      (node.pod_cidr6.network_address, node.gateway6)), *node.ips):
                if a is not None:
                    self.peers[str(a)] = Peer("node", node.name, str(a), node=node.name)
        if lab.has_router:
            for segment in lab.segments:
                for net in (segment.cidr, segment.cidr6):
                    if net is not None:
                        a = str(net.network_address + 1)
                        self.peers[a] = Peer("router", "router", a)
            if lab.scenario.outside_ip is not None:
                a = str(plan.OUTSIDE_NETWORK.network_address + 1)
                self.peers[a] = Peer("router", "router", a)
        if lab.scenario.outside_ip is not None:
            a = str(lab.scenario.outside_ip)
            self.peers[a] = Peer("outside", "outside", a, labels=("reserved:world",))
        for node in lab.nodes:  # after the nodes: Calico IPAM gives pods a block's first host
            for i, pod in enumerate(node.pods, 1):
                for a in pod.ips:
                    self.pods[str(a)] = pod
                    self.peers[str(a)] = self._pod_peer(pod, str(a), i)
        try:
            services = lab.services
        except LabError:  # a lab whose Services cannot be built has none to name
            services = ()
        for s in services:
            self.services[str(s.cluster_ip)] = s
            self.peers[str(s.cluster_ip)] = Peer("service", f"service {s.qualified}", str(s.cluster_ip),
                                                 namespace=s.spec.namespace, pod_name=s.spec.name)
        self.netns = {names.node_netns(lab.name, n.name): n.name for n in lab.nodes}
        self.netns[names.router_netns(lab.name)] = "router"
        self.pod_devices: dict[tuple[str, str], Pod] = {}  # (node, host-side device) → pod
        for node in lab.nodes:
            for pod in node.pods:
                for host_side in (names.pod_host_veth, names.cali_veth, names.lxc_veth):  # whichever the plane made
                    dev = host_side(lab.name, node.name, pod.name)
                    self.pod_devices[(node.name, dev)] = pod

    def _pod_peer(self, pod: Pod, address: str, endpoint: int) -> Peer:
        labels = (*sorted(f"k8s:{k}={v}" for k, v in pod.labels), f"k8s:io.kubernetes.pod.namespace={pod.namespace}")
        return Peer("pod", pod.id, address, namespace=pod.namespace, pod_name=pod.pod_name, node=pod.node,
                    labels=labels, identity=self.identities.get(pod.id), endpoint_id=endpoint if self.bpf else None)

    def peer(self, address: str, port: int | None = None, seen_at: str = "") -> Peer:
        """The address named; a node is reserved:host where it is the observing node (`seen_at`).
        Remembered: the same few ends make every flow (bench/observe.py)."""
        key = (address, port, seen_at)
        found = self._peers.get(key)
        if found is None:
            if len(self._peers) > 1 << 16:
                self._peers.clear()
            found = self._peers[key] = self._peer(address, port, seen_at)
        return found

    def _peer(self, address: str, port: int | None, seen_at: str) -> Peer:
        address = normal(address)
        known = self.peers.get(address)
        if known is None:
            known = Peer("world", "world", address, labels=("reserved:world",), identity=2 if self.bpf else None)
        elif known.kind == "node":
            host = known.node == seen_at
            known = replace(known, labels=("reserved:host",) if host else ("reserved:remote-node",),
                            identity=(1 if host else 6) if self.bpf else None)
        return known if port is None else replace(known, port=port)

    def node_of(self, netns: str) -> str:
        """The node a lab namespace is, "router", or the namespace's own name."""
        return self.netns.get(netns, netns)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.lab.nodes if n.name == name), None)

    def local_pod(self, node: str, address: str) -> Pod | None:
        pod = self.pods.get(normal(address))
        return pod if pod is not None and pod.node == node else None

    def endpoint_pod(self, node: str, endpoint: int) -> Pod | None:
        """The pod an ebpf endpoint ID is on `node` (dataplanes/ebpf.endpoint_id)."""
        n = self.node(node)
        return next((p for p in n.pods if ebpf.endpoint_id(n, p) == endpoint), None) if n is not None else None

    def workload(self, peer: Peer) -> Workload:
        """The end as policies see it: a pod's workload, else a party without namespace (ipBlock only)."""
        if peer.kind == "pod":
            return next(w for w in self.lab.workloads if w.id == peer.name)
        return Workload(peer.name if peer.kind != "world" else peer.address, "", (), (ip_address(peer.address),))

    def point(self, node: str, hook: str, indev: str, outdev: str, src: str, dst: str) -> str:
        """Hubble's TraceObservationPoint for a packet a hook saw on `node`."""
        if hook == "input":
            return "TO_HOST"
        if hook == "output":
            return "FROM_HOST"
        if self._leads_to_pod(node, indev, src):
            return "FROM_ENDPOINT"
        if self._leads_to_pod(node, outdev, dst):
            return "TO_ENDPOINT"
        for dev, there in ((indev, "FROM_OVERLAY"), (outdev, "TO_OVERLAY")):
            if dev in OVERLAY_DEVICES:
                return there
        return "TO_NETWORK" if outdev else "FROM_NETWORK" if indev else "UNKNOWN_POINT"

    def _leads_to_pod(self, node: str, dev: str, address: str) -> bool:
        if (node, dev) in self.pod_devices:
            return True
        return dev == names.CNI_BRIDGE and self.local_pod(node, address) is not None

    def direction(self, node: str, src: str, dst: str) -> str:
        """EGRESS from a pod of the observing node, INGRESS into one, else unknown."""
        if self.local_pod(node, src) is not None:
            return "EGRESS"
        if self.local_pod(node, dst) is not None:
            return "INGRESS"
        return "TRAFFIC_DIRECTION_UNKNOWN"
