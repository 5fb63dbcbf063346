"""`doctor`: can this machine run cni-lab, and what to do when it cannot. Each check is a value
(name, ok, what was found, the fix); kernel features are tried in a namespace of its own, made
and removed on the spot, never in the machine's own namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from cni_lab import lifecycle, names, state
from cni_lab.kernel import bpf, neighbours, netns
from cni_lab.privileges import CAPABILITIES, container_fix, has_caps, in_container

PROBE_NS = f"{names.PREFIX}doctor.probe"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""
    required: bool = True  # False: only some data planes or tools need it


def _tool(name: str, program: str, package: str, why: str, required: bool = False) -> Check:
    path = shutil.which(program) if "/" not in program else (program if os.access(program, os.X_OK) else None)
    return Check(name, path is not None, path or "not installed", f"sudo apt-get install {package} ({why})", required)


def run() -> list[Check]:
    checks: list[Check] = []
    container = in_container()
    root = os.geteuid() == 0
    caps = {c: has_caps(num) for c, num in CAPABILITIES.items()}
    flag = f" ({container}: run it with {container_fix(container)})" if container else ""
    checks.append(Check("root", root, "uid 0" if root else f"uid {os.geteuid()}", "run it with sudo"))
    for cap, ok in caps.items():
        checks.append(Check(cap, ok, "present" if ok else "missing", f"grant {cap}{flag or ' (run it as root)'}"))
    if root and caps["CAP_NET_ADMIN"] and caps["CAP_SYS_ADMIN"]:
        checks += _kernel_features(flag)
    checks += [
        _tool("iproute2", "ip", "iproute2", "cni-lab exec, trace", required=True),
        _tool("BIRD", "bird", "bird2", "dataplane bgp"),
        _tool("birdc", "birdc", "bird2", "dataplane bgp"),
        _tool("CNI plugins", "/usr/lib/cni/bridge", "containernetworking-plugins", "dataplane cni"),
        _tool("tcpdump", "tcpdump", "tcpdump", "watching packets in a lab"),
        _tool("Graphviz", "dot", "graphviz", "cni-lab graph -o lab.png"),
        _tool("nftables", "nft", "nftables", "NAT experiments, fault forward-drop"),
        _tool("clang", "clang", "clang llvm", "dataplane ebpf compiles its programs"),
        _tool("bpftool", "bpftool", "bpftool", "dataplane ebpf loads and pins its programs"),
        Check("libbpf headers", os.path.exists(bpf.HEADERS), bpf.HEADERS if os.path.exists(bpf.HEADERS) else "missing",
              "sudo apt-get install libbpf-dev (dataplane ebpf)", False),
        Check("kernel: IPv6", os.path.isdir("/proc/sys/net/ipv6"), "present" if os.path.isdir("/proc/sys/net/ipv6")
              else "disabled (ipv6.disable=1?)", "boot without ipv6.disable=1 (dual-stack and IPv6-only labs)", False),
        Check("kernel: BTF", os.path.exists(bpf.BTF_VMLINUX), bpf.BTF_VMLINUX if os.path.exists(bpf.BTF_VMLINUX)
              else "missing", "a kernel built with CONFIG_DEBUG_INFO_BTF (bpftool and the verifier's messages use it)", False),
    ]
    if root:
        problem = bpf.can_load()
        checks.append(Check("kernel: BPF programs", problem is None, problem or "a tc program loaded and dropped",
                            f"dataplane ebpf needs the bpf syscall{flag or ' (run it as root)'}", False))
        mounted = bpf.is_bpffs(names.BPF_FS)
        checks.append(Check("bpffs", True, f"mounted at {names.BPF_FS}" if mounted else
                            f"not mounted at {names.BPF_FS}: `up` of an ebpf lab mounts it", "", False))
    cap3, used = neighbours.ARP.cap(), neighbours.ARP.entries()
    if cap3 is None:  # a container's own namespace: the kernel shows the limits to the host's only
        seen = f"gc_thresh3 not visible here (assumed the kernel's {neighbours.ARP.default_cap}), {used} entries in use"
    else:
        seen = f"gc_thresh3={cap3}, {used} entries in use"
    checks.append(Check("neighbour table", cap3 is None or used < cap3 // 2, seen,
                        "check probes in batches within half the table's free room; a table this full leaves it little: "
                        "find what fills it (ip -s neigh in each namespace)", False))
    leftovers = sorted({names.lab_of_netns(n) or n for n in netns.listing() if n.startswith(names.PREFIX)}
                       - set(lifecycle.running()) - {"doctor"})
    stale = [n for n in state.names() if not any(names.lab_of_netns(x) == n for x in netns.listing())]
    left = leftovers + [f"{n} (state only)" for n in stale]
    checks.append(Check("leftover lab objects", not left, ", ".join(left) or "none",
                        "sudo cni-lab down --all", False))
    return checks


def _kernel_features(flag: str) -> list[Check]:
    out: list[Check] = []
    try:
        netns.create(PROBE_NS)
    except OSError as e:
        reason = "read-only" if e.errno == 30 else (e.strerror or str(e))
        return [Check("network namespaces", False, f"/run/netns: {reason}",
                      f"/run/netns must be writable and mountable{flag or ''}")]
    out.append(Check("network namespaces", True, "created and removed one"))
    try:
        try:
            netns.write_sysctl(PROBE_NS, "net/ipv4/ip_forward", "1")
            out.append(Check("/proc/sys writable", True, "ip_forward set in a lab namespace"))
        except OSError as e:
            out.append(Check("/proc/sys writable", False, e.strerror or str(e),
                             f"/proc/sys is read-only{flag or ' (mounted read-only)'}"))
        from cni_lab.kernel.rtnl import Rtnl  # pyroute2: see kernel/__init__.py

        rtnl = Rtnl(PROBE_NS)
        try:
            for kind, add in (
                ("veth", lambda: rtnl.add_veth("dr0", "dr1", os.open(netns.netns_path(PROBE_NS), os.O_RDONLY), mtu=1500)),
                ("bridge", lambda: rtnl.add_link("drbr", "bridge")),
                ("vxlan", lambda: rtnl.add_link("drvx", "vxlan", data=[("IFLA_VXLAN_ID", 42), ("IFLA_VXLAN_PORT", 8472)])),
                ("ipip", lambda: rtnl.add_link("drip", "ipip")),
            ):
                try:
                    add()
                    out.append(Check(f"kernel: {kind}", True, "works"))
                except OSError as e:
                    out.append(Check(f"kernel: {kind}", False, e.strerror or str(e),
                                     f"sudo modprobe {kind}" + (" (Calico's ipipMode: tunl0)" if kind == "ipip" else ""),
                                     kind not in ("vxlan", "ipip")))
        finally:
            rtnl.close()
        nft = subprocess.run(["ip", "netns", "exec", PROBE_NS, "nft", "add", "table", "ip", "doctor"],
                             capture_output=True, text=True) if shutil.which("nft") else None
        if nft is not None:
            out.append(Check("kernel: nftables", nft.returncode == 0, "works" if nft.returncode == 0 else nft.stderr.strip(),
                             "sudo modprobe nf_tables", False))
        out.append(_flow_sources())
    finally:
        netns.remove(PROBE_NS)
    return out


def _flow_sources() -> Check:
    """What `observe` reads: an nflog group and conntrack events, bound in the probe namespace."""
    from cni_lab.kernel import flowsources

    try:
        flowsources.Reader([PROBE_NS]).close()
    except OSError as e:
        return Check("kernel: nflog, conntrack events", False, e.strerror or str(e),
                     "sudo modprobe nfnetlink_log nf_conntrack_netlink (observe reads its flows there)", False)
    return Check("kernel: nflog, conntrack events", True, "an nflog group and ctnetlink events bound")
