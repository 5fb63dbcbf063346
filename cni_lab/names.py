"""How lab objects are named. Every namespace the lab makes starts with `cnilab-<lab>`, so
`down` and the leak sweep find exactly the lab's objects and nothing else on the machine.

Lab, node and pod names use only [a-z0-9-]; the dots below cannot appear in them, so two labs
(or a node and a pod) can never produce the same namespace name.
"""

from __future__ import annotations

import hashlib

PREFIX = "cnilab-"
UNDERLAY_BRIDGE = "br-underlay"  # the LAN switch of the default segment, in the underlay namespace
NODE_UPLINK = "eth0"  # a node's underlay interface, as on a real machine
POD_IFNAME = "eth0"  # CNI_IFNAME the kubelet passes
CNI_BRIDGE = "cni0"  # the bridge plugin's default name, as flannel configures it


def underlay_netns(lab: str) -> str:
    return f"{PREFIX}{lab}.underlay"


def router_netns(lab: str) -> str:
    return f"{PREFIX}{lab}.router"


def outside_netns(lab: str) -> str:
    """The host standing for the internet, behind the router."""
    return f"{PREFIX}{lab}.outside"


OUTSIDE_LINK = "outside"  # the router's leg towards the outside host


def node_netns(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}.{node}"


def pod_netns(lab: str, node: str, pod: str) -> str:
    return f"{PREFIX}{lab}.{node}.{pod}"


def lab_of_netns(netns: str) -> str | None:
    """The lab a namespace belongs to, or None when it is not a cni-lab namespace."""
    if not netns.startswith(PREFIX) or "." not in netns:
        return None
    return netns[len(PREFIX) :].split(".", 1)[0] or None


def underlay_port(node: str) -> str:
    """The underlay bridge's port for a node: `node1-eth0` reads as "the other end of node1's eth0"."""
    return f"{node}-eth0"


def pod_host_veth(lab: str, node: str, pod: str) -> str:
    """Host side of a pod's veth: `veth` + 8 hex characters, like the CNI bridge plugin's
    random names, but derived from the pod's identity so a plan is reproducible."""
    digest = hashlib.sha256(f"{lab}/{node}/{pod}".encode()).hexdigest()
    return f"veth{digest[:8]}"


def segment_bridge(segment: str) -> str:
    """The switch of one underlay segment: `br-underlay` for a plain underlay, `br-rack1` ..."""
    return f"br-{segment}"


def router_port(segment: str) -> str:
    """The underlay bridge's port that is the other end of the router's interface on `segment`."""
    return f"r-{segment}"


FLANNEL_DEVICE = "flannel.1"  # flannel names its VXLAN device flannel.<VNI>
VXLAN_VNI = 1
VXLAN_PORT = 8472  # flannel's default: the Linux kernel's historical VXLAN port, not IANA's 4789


def vtep_mac(lab: str, node: str) -> str:
    """The node's VTEP MAC. flannel picks a random locally administered MAC and publishes it in
    the node's annotations; a hash of the node's identity gives the same kind of MAC, known at plan time."""
    digest = hashlib.sha256(f"vtep/{lab}/{node}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0A, *digest[:5]))


def cali_veth(lab: str, node: str, pod: str) -> str:
    """Calico's host-side veth name: `cali` + 11 hex characters of a hash of the workload's identity."""
    return "cali" + hashlib.sha1(f"{lab}/{node}/{pod}".encode()).hexdigest()[:11]


FLANNEL_DEVICE6 = "flannel-v6.1"  # flannel's IPv6 VXLAN device: flannel-v6.<VNI>


def vtep_mac6(lab: str, node: str) -> str:
    """The MAC of the node's IPv6 VTEP (flannel gives each device a MAC of its own)."""
    return vtep_mac(lab, f"{node}/v6")


# Calico's tunnel devices and Felix's numbers (felix/dataplane/linux/dataplanedefs/dataplane_defs.go,
# felix/config/config_params.go: VXLANVNI 4096, VXLANPort 4789)
CALICO_VXLAN = "vxlan.calico"
CALICO_VXLAN_VNI = 4096
CALICO_VXLAN_PORT = 4789  # IANA's VXLAN port (flannel keeps the kernel's old 8472)
CALICO_IPIP = "tunl0"  # the ipip module's fallback device, which Felix configures
FELIX_PROTO = 80  # dataplanedefs.DefaultRouteProto: Felix's same-subnet, blackhole and IPIP routes


def calico_vtep_mac(node: str) -> str:
    """The MAC of a node's vxlan.calico as Felix derives it when the Node resource gives none
    (felix/calc/vxlan_resolver.go, vtepMACForHost): the byte 'f' (0x66: locally administered,
    unicast) and the first five bytes of the SHA-1 of the node's name."""
    digest = hashlib.sha1(node.encode()).digest()
    return ":".join(f"{b:02x}" for b in (ord("f"), *digest[:5]))


CALICO_HOST_MAC = "ee:ee:ee:ee:ee:ee"  # what Calico gives every cali veth's host end
CALICO_GATEWAY6 = "fe80::ecee:eeff:feee:eeee"  # that MAC's link-local address: a Calico pod's IPv6 next hop
CALICO_GATEWAY = "169.254.1.1"  # the link-local next hop every Calico pod routes through (proxy ARP answers)


CNI_RESULTS = "cni/*/*.json"  # every pod's recorded ADD result, relative to the lab's state folder


def cni_dir(node: str) -> str:
    """A node's CNI files (its network configuration, host-local's dataDir, the pods' ADD results),
    relative to the lab's state folder."""
    return f"cni/{node}"


def cni_result(node: str, pod: str) -> str:
    """Where the runtime records a pod's CNI ADD result (what DEL, CHECK and `explain` read)."""
    return f"{cni_dir(node)}/{pod}.json"


def bird_dir(node: str) -> str:
    """A node's BIRD files (config, control socket, pid file, log), relative to the lab's state folder."""
    return f"bird/{node}"


# -- ebpf: Cilium's names ------------------------------------------------------------------------
CILIUM_HOST = "cilium_host"  # holds the node's router IP; the stack's way to its pods
CILIUM_NET = "cilium_net"  # cilium_host's veth peer
CILIUM_VXLAN = "cilium_vxlan"  # tunnel mode's flow-based VXLAN device
BPF_FS = "/sys/fs/bpf"


def lxc_veth(lab: str, node: str, pod: str) -> str:
    """Cilium's host-side name of a pod's veth: `lxc` + the first 12 hex characters of a SHA-256
    (Cilium hashes the endpoint ID; the lab hashes the pod's identity, so a plan is reproducible)."""
    return "lxc" + hashlib.sha256(f"{lab}/{node}/{pod}".encode()).hexdigest()[:12]


def bpf_dir(lab: str) -> str:
    """Where a lab's BPF programs and maps are pinned: carries the lab's name like its namespaces."""
    return f"{BPF_FS}/{PREFIX}{lab}"


def bpf_node_dir(lab: str, node: str) -> str:
    return f"{bpf_dir(lab)}/{node}"


# -- cluster DNS ---------------------------------------------------------------------------------
DNS_DIR = "dns"  # kube-dns's files (dnsmasq's config, pid file, log), relative to the lab's state folder
NETNS_ETC = "/etc/netns"  # `ip netns exec NS` bind-mounts /etc/netns/NS/<file> over /etc/<file>


def dns_file(lab: str, suffix: str) -> str:
    """One of dnsmasq's files, `dns/names.<lab>.conf` (`.pid`, `.log`): carries the lab's name."""
    return f"{DNS_DIR}/names.{lab}.{suffix}"


def resolv_conf_dir(netns: str) -> str:
    """The folder whose resolv.conf a pod's namespace sees as /etc/resolv.conf (`ip netns exec`'s
    convention); named after the namespace, so it carries the lab's prefix."""
    return f"{NETNS_ETC}/{netns}"
