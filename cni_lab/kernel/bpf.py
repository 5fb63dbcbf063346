"""BPF for the `ebpf` data plane: the one place that compiles, loads, pins, attaches and reads
programs and maps.

- compile: clang -O2 -g -target bpf, once per source version (the C file, its ebpf_lib/ headers,
  and clang's version), cached in
  /var/cache/cni-lab/bpf/; `up` reuses the object.
- load and pin: bpftool (libbpf) loads every program of the object with fresh maps and pins them
  in the node's folder of bpffs, /sys/fs/bpf/cnilab-<lab>/<node>/. bpffs is mounted there first
  if nothing is (as the Cilium agent does).
- attach: a clsact qdisc and a direct-action bpf filter, sent over netlink (pyroute2's tcmsg
  encodes them) with the pinned program's fd, the same messages `tc filter add ... bpf da` sends.
- maps: the bpf(2) syscall on the pinned maps (update, lookup, iterate).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import platform
import shutil
import socket
import struct
import subprocess
import sysconfig
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from cni_lab import names
from cni_lab.errors import LabError

if TYPE_CHECKING:
    from cni_lab.kernel.rtnl import Rtnl

CACHE = Path("/var/cache/cni-lab/bpf")
SOURCES = Path(__file__).resolve().parent.parent / "dataplanes"
LIB = "ebpf_lib"  # the headers ebpf.c includes (Cilium's bpf/lib, much reduced): part of its version
BPF_FS_MAGIC = 0xCAFE4A11
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351, "armv7l": 386}
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_PROG_LOAD = 5
BPF_MAP_CREATE = 0
BPF_OBJ_PIN, BPF_OBJ_GET = 6, 7
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_F_NO_PREALLOC = 1
BPF_PROG_TYPE_SCHED_CLS = 3
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"
HEADERS = "/usr/include/bpf/bpf_helpers.h"  # libbpf-dev

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: bytes) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise LabError(f"cni-lab does not know the bpf(2) syscall number on {platform.machine()}")
    buf = ctypes.create_string_buffer(attr, 128)
    ret = _libc.syscall(number, cmd, buf, 128)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


# -- bpffs -------------------------------------------------------------------------------------

def is_bpffs(path: str) -> bool:
    class Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    st = Statfs()
    if _libc.statfs(path.encode(), ctypes.byref(st)) != 0:
        return False
    return (st.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def ensure_bpffs() -> None:
    """bpffs at /sys/fs/bpf, mounted if it is not (systemd mounts it on most machines)."""
    if is_bpffs(names.BPF_FS):
        return
    if _libc.mount(b"bpf", names.BPF_FS.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise LabError(f"cannot mount bpffs at {names.BPF_FS}: {os.strerror(err)} (the ebpf data plane pins its "
                       "programs and maps there; in a container, run it with --privileged)")


def remove_pins(path: str) -> bool:
    """Remove a lab's (or a node's) pinned programs and maps; True when there were any."""
    if not path.startswith(names.BPF_FS + "/" + names.PREFIX) or not os.path.isdir(path):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def pinned_labs() -> list[str]:
    """Labs that have pinned objects (for `down --all` and the leak sweep)."""
    try:
        entries = os.listdir(names.BPF_FS)
    except OSError:
        return []
    return sorted(e[len(names.PREFIX):] for e in entries if e.startswith(names.PREFIX))


def can_load() -> str | None:
    """None when this process may load a tc BPF program here (the bpf syscall, CAP_BPF or
    CAP_SYS_ADMIN, a kernel with BPF), else why not: a two-instruction `return 0` is loaded and
    dropped at once."""
    insns = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])  # r0 = 0; exit
    code = ctypes.create_string_buffer(insns, len(insns))
    licence = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQIIQII16s", BPF_PROG_TYPE_SCHED_CLS, 2, ctypes.addressof(code), ctypes.addressof(licence),
                       0, 0, 0, 0, 0, b"cnilab_probe")
    try:
        os.close(_bpf(BPF_PROG_LOAD, attr))
    except OSError as e:
        hint = {errno.EPERM: "not permitted: needs CAP_BPF/CAP_SYS_ADMIN (a container: --privileged)",
                errno.ENOSYS: "this kernel has no bpf syscall (CONFIG_BPF_SYSCALL)"}.get(e.errno or 0, e.strerror)
        return f"the bpf syscall refused a program: {hint}"
    except LabError as e:
        return str(e)
    return None


def prepare(source: str) -> None:
    """Before `up` builds anything: the object compiles, bpffs is there, programs can be loaded."""
    if not os.path.exists(HEADERS):
        raise LabError(f"dataplane ebpf needs libbpf's headers ({HEADERS}): run `sudo apt-get install libbpf-dev` "
                       "(or `sudo ./scripts/setup.sh`)")
    compiled(source)
    problem = can_load()
    if problem:
        raise LabError(f"dataplane ebpf cannot load BPF programs here: {problem} (`sudo cni-lab doctor` says more)")
    ensure_bpffs()


# -- compile and load --------------------------------------------------------------------------

def _multiarch() -> str:
    return str(sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu")


def compiled(source: str) -> Path:
    """The object of `source` (a C file of cni_lab/dataplanes/), compiled once per version."""
    path = SOURCES / source
    try:
        text = path.read_bytes() + b"".join(h.read_bytes() for h in sorted((SOURCES / LIB).glob("*.h")))
        clang = subprocess.run(["clang", "--version"], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError as e:
        raise LabError(f"cannot compile {source}: {e.filename} not found (sudo ./scripts/setup.sh installs clang)") from None
    except subprocess.CalledProcessError as e:
        raise LabError(f"clang --version failed: {e.stderr.strip()}") from None
    version = hashlib.sha256(text + clang.encode()).hexdigest()[:16]
    obj = CACHE / f"{path.stem}-{version}.o"
    if obj.exists():
        return obj
    CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = obj.with_suffix(f".{os.getpid()}.tmp")
    cmd = ["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{_multiarch()}", f"-I{SOURCES}", "-Wall", "-c", str(path),
           "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip())
        raise LabError(f"clang could not compile {source}: {first} (is libbpf-dev installed? sudo ./scripts/setup.sh)")
    os.replace(tmp, obj)
    for older in CACHE.glob(f"{path.stem}-*.o"):  # objects of earlier versions of the source
        if older != obj:
            older.unlink(missing_ok=True)
    return obj


def load(source: str, pin: str, programs: tuple[str, ...]) -> bool:
    """Load the object's programs with fresh maps, pinned in `pin`; False when they are pinned
    there already (a repeated `up`)."""
    if all(os.path.exists(f"{pin}/{p}") for p in programs):
        return False
    obj = compiled(source)
    ensure_bpffs()
    remove_pins(pin)  # half a load from an interrupted run
    os.makedirs(pin, mode=0o700, exist_ok=True)
    try:
        done = subprocess.run(["bpftool", "prog", "loadall", str(obj), pin, "pinmaps", pin],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LabError("bpftool not found (sudo ./scripts/setup.sh installs it)") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise LabError(f"bpftool could not load {obj.name}: {lines[-1] if lines else done.returncode}"
                       " (`sudo cni-lab doctor` says whether BPF can be loaded here)")
    return True


# -- maps and programs by pin --------------------------------------------------------------------

def open_pinned(path: str) -> int:
    encoded = ctypes.create_string_buffer(path.encode())
    try:
        return _bpf(BPF_OBJ_GET, struct.pack("=QII", ctypes.addressof(encoded), 0, 0))
    except OSError as e:
        raise OSError(e.errno, f"{path}: {e.strerror}") from None


def update(map_path: str, key: bytes, value: bytes) -> None:
    fd = open_pinned(map_path)
    try:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        _bpf(BPF_MAP_UPDATE_ELEM, struct.pack("=I4xQQQ", fd, ctypes.addressof(k), ctypes.addressof(v), 0))
    finally:
        os.close(fd)


def delete(map_path: str, key: bytes) -> bool:
    """Delete one entry; False when there was none."""
    fd = open_pinned(map_path)
    try:
        k = ctypes.create_string_buffer(key, len(key))
        _bpf(BPF_MAP_DELETE_ELEM, struct.pack("=I4xQ", fd, ctypes.addressof(k)))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    finally:
        os.close(fd)
    return True


def entries(map_path: str, key_size: int, value_size: int) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a pinned map."""
    fd = open_pinned(map_path)
    try:
        key = ctypes.create_string_buffer(key_size)
        nxt = ctypes.create_string_buffer(key_size)
        value = ctypes.create_string_buffer(value_size)
        first = True
        while True:
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, struct.pack("=I4xQQ", fd, 0 if first else ctypes.addressof(key),
                                                       ctypes.addressof(nxt)))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            first = False
            ctypes.memmove(key, nxt, key_size)
            try:
                _bpf(BPF_MAP_LOOKUP_ELEM, struct.pack("=I4xQQQ", fd, ctypes.addressof(key), ctypes.addressof(value), 0))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue  # deleted meanwhile
                raise
            yield key.raw, value.raw
    finally:
        os.close(fd)


# -- the maps of ebpf.c, as its structs lay them out (Cilium's, for the maps named after Cilium's) ---

ENDPOINT_KEY = struct.Struct("=16sBBH")  # struct endpoint_key: ip4 or ip6 (network order), family, key, cluster_id
ENDPOINT_INFO = struct.Struct("=I6s6sH2xI")  # struct endpoint_info: ifindex, pod MAC, lxc MAC, lxc_id, sec_id
IPCACHE_KEY = struct.Struct("=IHBB16s")  # struct ipcache_key: prefixlen, cluster_id, pad1, family, ip4 or ip6
REMOTE_ENDPOINT_INFO = struct.Struct("=I16sHBB")  # sec_identity, tunnel_endpoint (v4 + pads, or v6), pad, key, flags
LB4_KEY = struct.Struct("=4s2sHBB2x")  # struct lb4_key: address, dport (network order), backend_slot, proto, scope
LB4_SERVICE = struct.Struct("=IHHBBH")  # struct lb4_service: backend_id, count, rev_nat_index, flags, flags2, qcount
LB4_BACKEND = struct.Struct("=4s2sBBHBB")  # struct lb4_backend: address, port, proto, flags, cluster_id, zone, pad
LB4_REVERSE_NAT = struct.Struct("=4s2s")  # struct lb4_reverse_nat (packed): address, port
REV_NAT_KEY = struct.Struct("=H")
BACKEND_KEY = struct.Struct("=I")
CT_TUPLE = struct.Struct("=4s4s2s2sBB")  # struct ipv4_ct_tuple (packed): daddr, saddr, dport, sport, nexthdr, flags
CT_ENTRY = struct.Struct("=QQQQIHH2sBBIII")  # struct ct_entry: reserved0, backend_id, packets, bytes, lifetime,
#                                              the flag bits, rev_nat_index, nat_port, tx/rx flags seen, src_sec_id, reports
NAT_ENTRY = struct.Struct("=QQQQ4s2s2x")  # struct ipv4_nat_entry: created, needs_ct, pads, to_addr, to_port
NODE_CONFIG = struct.Struct("=II4sII4sI4s4s16s")  # uplink, vxlan ifindexes, router IP, vni, tunnel, node IP,
#                                                masquerade, native-routing CIDR and mask, router IPv6
METRICS = ("local delivery (bpf_redirect_peer)", "fib redirect (bpf_redirect)", "fib redirect (bpf_redirect_neigh)",
           "tunnel (bpf_skb_set_tunnel_key)", "to the node's stack", "ARP replies and neighbour advertisements", "drops",
           "service (lb4 DNAT to a backend)", "reverse NAT (reply from the frontend)", "masquerade (SNAT to the node)",
           "reverse SNAT (reply to a masqueraded client)", "drops: no service backend", "drops: no NAT port left",
           "drops: policy denied", "drops: invalid identity")
ZERO = struct.pack("=I", 0)
IPCACHE = "cilium_ipcache_v2"  # pkg/maps/ipcache: Name (OldName cilium_ipcache)
CT_MAPS = ("cilium_ct4_global", "cilium_ct_any4_global")  # TCP, the rest
ENDPOINT_KEY_IPV4, ENDPOINT_KEY_IPV6 = 1, 2  # endpoint_key.family, ipcache_key.family
IPCACHE_STATIC_PREFIX = 32  # the prefix length counts cluster_id, pad1 and family before the address
FLAG_HAS_TUNNEL_EP, FLAG_IPV6_TUNNEL_EP = 0x02, 0x04  # remote_endpoint_info: flag_skip_tunnel is bit 0
TUPLE_F_OUT, TUPLE_F_IN, TUPLE_F_SERVICE = 0, 1, 4
CT_LB_LOOPBACK, CT_NODE_PORT = 1 << 3, 1 << 5  # ct_entry's flag bits
PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTOCOL_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP"}


def mac_bytes(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _port(number: int) -> bytes:
    return struct.pack(">H", number)


def _number(raw: bytes) -> int:
    return int(struct.unpack(">H", raw)[0])


# -- writing them, as the agent does when an endpoint, node, identity or Service appears -----------

def _key_bytes(address: IPv4Address | IPv6Address) -> tuple[bytes, int]:
    """An address as the maps' unions hold it (IPv4 in the first four bytes) and its family."""
    if address.version == 6:
        return address.packed, ENDPOINT_KEY_IPV6
    return address.packed + bytes(12), ENDPOINT_KEY_IPV4


def _address(raw: bytes, family: int) -> IPv4Address | IPv6Address:
    return IPv6Address(raw) if family == ENDPOINT_KEY_IPV6 else IPv4Address(raw[:4])


def write_node_config(pin: str, uplink: int, vxlan: int, router_ip: IPv4Address | None, vni: int, tunnel: bool,
                      node_ip: IPv4Address | None, masquerade: bool, native: IPv4Network | None,
                      router_ip6: IPv6Address | None) -> None:
    """The node's one node_config entry (interface indexes: `vxlan` 0 in native routing; an
    IPv6-only node has no IPv4 addresses, a node without IPv6 no router IPv6: zeros)."""
    v4 = lambda a: (a or IPv4Address(0)).packed  # noqa: E731
    update(f"{pin}/node_config", ZERO, NODE_CONFIG.pack(uplink, vxlan, v4(router_ip), vni, int(tunnel), v4(node_ip),
                                                         int(masquerade), v4(native.network_address if native else None),
                                                         v4(native.netmask if native else None),
                                                         (router_ip6 or IPv6Address(0)).packed))


def write_endpoint(pin: str, ip: IPv4Address | IPv6Address, lxc_index: int, pod_mac: str, lxc_mac: str, lxc_id: int,
                   identity: int) -> None:
    """A pod's cilium_lxc entry (one per address): its IP → its lxc device's index, its eth0's
    MAC, the lxc's MAC, its endpoint ID and its security identity."""
    update(f"{pin}/cilium_lxc", ENDPOINT_KEY.pack(*_key_bytes(ip), 0, 0),
           ENDPOINT_INFO.pack(lxc_index, mac_bytes(pod_mac), mac_bytes(lxc_mac), lxc_id, identity))


# -- policy maps: one LPM trie per endpoint, pinned as the agent pins it -------------------------------

POLICY_KEY = struct.Struct("=IIBB2s")  # struct policy_key: prefixlen, sec_label, egress bit, protocol, dport
POLICY_ENTRY = struct.Struct("=2sBBII")  # struct policy_entry: proxy_port, deny|lpm_prefix_length<<3, auth, precedence, cookie
POLICY_STATIC_PREFIX = 40  # sec_label and the direction byte, never wildcarded
POLICY_MAP_SIZE = 16384
POLICY_OUTER = "cilium_policy_v2"  # endpoint ID → its map (the lab's one object finds each endpoint's map here)


def policy_map_name(lxc_id: int) -> str:
    """pkg/maps/policymap: cilium_policy_v2_ and the endpoint ID in five digits."""
    return f"{POLICY_OUTER}_{lxc_id:05d}"


def policy_map_path(pin: str, lxc_id: int) -> str:
    return f"{pin}/{policy_map_name(lxc_id)}"


def _create_lpm(name: str, key_size: int, value_size: int, entries_max: int) -> int:
    attr = struct.pack("=IIIIII16s", BPF_MAP_TYPE_LPM_TRIE, key_size, value_size, entries_max, BPF_F_NO_PREALLOC, 0,
                       name.encode()[:15])
    return _bpf(BPF_MAP_CREATE, attr)


def ensure_policy_map(pin: str, lxc_id: int) -> None:
    """The endpoint's policy map, made and pinned if it is not there, and named in the outer map
    under the endpoint ID (what the agent does when an endpoint appears)."""
    path = policy_map_path(pin, lxc_id)
    try:
        fd = open_pinned(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        fd = _create_lpm(POLICY_OUTER, POLICY_KEY.size, POLICY_ENTRY.size, POLICY_MAP_SIZE)
        encoded = ctypes.create_string_buffer(path.encode())
        try:
            _bpf(BPF_OBJ_PIN, struct.pack("=QII", ctypes.addressof(encoded), fd, 0))
        except OSError:
            os.close(fd)
            raise
    try:
        update(f"{pin}/{POLICY_OUTER}", struct.pack("=I", lxc_id), struct.pack("=I", fd))
    finally:
        os.close(fd)


def _policy_key(egress: bool, identity: int, protocol: int, port: int, prefix: int) -> bytes:
    """The LPM key of an entry whose protocol and port are `prefix` bits long (0: any protocol and
    port, 8: the protocol, 24: the protocol and the port); the bits past the prefix are zero."""
    bits = (protocol << 16 | port) & ~((1 << (24 - prefix)) - 1) if prefix < 24 else protocol << 16 | port
    return POLICY_KEY.pack(POLICY_STATIC_PREFIX + prefix, identity, int(egress), bits >> 16, struct.pack(">H", bits & 0xFFFF))


def sync_policy(pin: str, lxc_id: int, wanted: tuple[tuple[bool, int, int, int, int], ...]) -> None:
    """Make the endpoint's policy map hold exactly these allow entries, (egress, identity,
    protocol, port, prefix) each: missing ones written first, then stale ones deleted."""
    ensure_policy_map(pin, lxc_id)
    path = policy_map_path(pin, lxc_id)
    keys = {_policy_key(*e): POLICY_ENTRY.pack(b"\0\0", e[4] << 3, 0, 0, 0) for e in wanted}
    have = dict(entries(path, POLICY_KEY.size, POLICY_ENTRY.size))
    for key, value in keys.items():
        if have.get(key) != value:
            update(path, key, value)
    for key in have:
        if key not in keys:
            delete(path, key)


@dataclass(frozen=True)
class PolicyRow:
    """One entry of an endpoint's policy map, as `cilium bpf policy get` reads it."""

    egress: bool
    identity: int  # 0: any
    protocol: int  # 0: any
    port: int  # 0 when the prefix leaves it out
    prefix: int  # lpm_prefix_length: 0 any, 8 the protocol, 24 protocol and port
    deny: bool


def policy(pin: str, lxc_id: int) -> list[PolicyRow]:
    """An endpoint's policy map."""
    rows = []
    for key, value in entries(policy_map_path(pin, lxc_id), POLICY_KEY.size, POLICY_ENTRY.size):
        prefixlen, identity, direction, protocol, port = POLICY_KEY.unpack(key)
        _, flags, _, _, _ = POLICY_ENTRY.unpack(value)
        rows.append(PolicyRow(bool(direction & 1), identity, protocol, _number(port), prefixlen - POLICY_STATIC_PREFIX,
                              bool(flags & 1)))
    return sorted(rows, key=lambda r: (r.deny is False, r.egress, r.identity, r.protocol, r.port))


# -- events: drops and policy verdicts in the cilium_events ring buffer -------------------------------

EVENTS_SIZE = 256 * 1024  # cilium_events' max_entries (ebpf_lib/events.h)
RINGBUF_BUSY, RINGBUF_DISCARD, RINGBUF_HDR = 1 << 31, 1 << 30, 8
NOTIFY_HDR = struct.Struct("=BBHIIHBB")  # type, subtype, source, hash, len_orig, len_cap, version, ext_version
DROP_NOTIFY = struct.Struct("=III HBbI B3xQ".replace(" ", ""))  # src_label, dst_label, dst_id, line, file, ext_error,
#                                                                  ifindex, flags, ip_trace_id
POLICY_VERDICT = struct.Struct("=IiHBBB3xII")  # remote_label, verdict, dst_port, proto, dir|ipv6|match|audited|l3, auth, cookie, pad
TRACE_NOTIFY = struct.Struct("=IIHBBI4sH10xQ")  # src_label, dst_label, dst_id, reason, flags, ifindex, orig_ip4,
#                                                 its port (the lab's, in orig_pad1), ip_trace_id
CAPTURE_LEN = 64
NOTIFY_DROP, NOTIFY_TRACE, NOTIFY_POLICY_VERDICT = 1, 4, 5
# bpf/lib/notify.h enum trace_point: where a trace was sent from
TRACE_POINTS = ("TO_ENDPOINT", "TO_PROXY", "TO_HOST", "TO_STACK", "TO_OVERLAY", "FROM_ENDPOINT", "FROM_PROXY",
                "FROM_HOST", "FROM_STACK", "FROM_OVERLAY", "FROM_NETWORK", "TO_NETWORK")
DROP_REASONS = {133: "Policy denied", 158: "Service backend not found", 167: "No mapping for NAT masquerade",
                171: "Invalid identity"}


@dataclass(frozen=True)
class Event:
    """A drop or a policy verdict the programs reported, with the packet's addresses and ports."""

    type: str  # drop | policy-verdict | trace
    reason: int  # a drop's reason (133 policy denied ...); a verdict's: 0 allowed, 133 denied
    endpoint: int  # the endpoint ID (source)
    src_identity: int  # drop: the sender's; verdict: the remote end's
    dst_identity: int
    direction: str  # ingress | egress | "" (a drop that is not a policy's)
    protocol: int
    src: str  # address:port from the captured packet
    dst: str
    point: str = ""  # a trace's observation point, Hubble's name (TRACE_POINTS: TO_ENDPOINT for TRACE_TO_LXC ...)
    orig: str = ""  # a trace's address[:port] before the program translated the packet (a frontend, a pod masqueraded)


def _addresses(data: bytes) -> tuple[int, str, str]:
    if len(data) >= 54 and data[12:14] == b"\x86\xdd":  # IPv6 (no extension headers, as the programs read it)
        protocol, src6, dst6 = data[20], str(IPv6Address(data[22:38])), str(IPv6Address(data[38:54]))
        if protocol in (6, 17, 132) and len(data) >= 58:
            sport, dport = struct.unpack_from(">HH", data, 54)
            return protocol, f"[{src6}]:{sport}", f"[{dst6}]:{dport}"
        return protocol, src6, dst6
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return 0, "", ""
    ihl = (data[14] & 0x0F) * 4
    protocol = data[23]
    src, dst = str(IPv4Address(data[26:30])), str(IPv4Address(data[30:34]))
    l4 = 14 + ihl
    if protocol in (6, 17, 132) and len(data) >= l4 + 4:
        sport, dport = struct.unpack_from(">HH", data, l4)
        return protocol, f"{src}:{sport}", f"{dst}:{dport}"
    return protocol, src, dst


def events(pin: str) -> list[Event]:
    """Every event in the node's cilium_events ring buffer now, consumed (a second call sees only
    what came after): the ring's pages mapped as libbpf's ring_buffer__consume maps them."""
    import mmap

    fd = open_pinned(f"{pin}/cilium_events")
    page = mmap.PAGESIZE
    try:
        consumer_page = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        ring = mmap.mmap(fd, page + 2 * EVENTS_SIZE, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    finally:
        os.close(fd)
    out = []
    try:
        consumer = struct.unpack_from("=Q", consumer_page, 0)[0]
        producer = struct.unpack_from("=Q", ring, 0)[0]
        while consumer < producer:
            header, _ = struct.unpack_from("=II", ring, page + (consumer & (EVENTS_SIZE - 1)))
            if header & RINGBUF_BUSY:
                break
            length = header & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
            start = page + (consumer & (EVENTS_SIZE - 1)) + RINGBUF_HDR
            if not header & RINGBUF_DISCARD:
                event = _event(bytes(ring[start:start + length]))
                if event is not None:
                    out.append(event)
            consumer += (length + RINGBUF_HDR + 7) & ~7
        struct.pack_into("=Q", consumer_page, 0, consumer)
    finally:
        consumer_page.close()
        ring.close()
    return out


def _event(record: bytes) -> Event | None:
    kind, subtype, source, _, _, len_cap, _, _ = NOTIFY_HDR.unpack_from(record, 0)
    body = NOTIFY_HDR.size
    if kind == NOTIFY_DROP:
        src, dst, dst_id, *_ = DROP_NOTIFY.unpack_from(record, body)
        data = record[body + DROP_NOTIFY.size:][:len_cap]
        protocol, a, b = _addresses(data)
        return Event("drop", subtype, dst_id, src, dst, "", protocol, a, b)
    if kind == NOTIFY_TRACE:
        src, dst, dst_id, _, _, _, orig, orig_port, _ = TRACE_NOTIFY.unpack_from(record, body)
        data = record[body + TRACE_NOTIFY.size:][:len_cap]
        protocol, a, b = _addresses(data)
        point = TRACE_POINTS[subtype] if subtype < len(TRACE_POINTS) else str(subtype)
        direction = "egress" if point in ("FROM_ENDPOINT", "TO_NETWORK") else "ingress"
        front = str(IPv4Address(orig)) if orig != bytes(4) else ""
        if front and orig_port:
            front += f":{socket.ntohs(orig_port)}"
        return Event("trace", 0, source, src, dst, direction, protocol, a, b, point, front)
    if kind == NOTIFY_POLICY_VERDICT:
        remote, verdict, _, proto, bits, *_ = POLICY_VERDICT.unpack_from(record, body)
        data = record[body + POLICY_VERDICT.size:][:len_cap]
        protocol, a, b = _addresses(data)
        direction = {1: "ingress", 2: "egress"}.get(bits & 3, "")
        return Event("policy-verdict", -verdict, source, remote, 0, direction, protocol or proto, a, b)
    return None


def write_ipcache(pin: str, prefix: IPv4Network | IPv6Network, identity: int,
                  tunnel_endpoint: IPv4Address | IPv6Address | None) -> None:
    """A cilium_ipcache_v2 entry: a prefix → its security identity and, behind a tunnel, the node's IP."""
    flags = 0
    endpoint = bytes(16)
    if tunnel_endpoint is not None:
        endpoint, family = _key_bytes(tunnel_endpoint)
        flags = FLAG_HAS_TUNNEL_EP | (FLAG_IPV6_TUNNEL_EP if family == ENDPOINT_KEY_IPV6 else 0)
    raw, family = _key_bytes(prefix.network_address)
    update(f"{pin}/{IPCACHE}", IPCACHE_KEY.pack(IPCACHE_STATIC_PREFIX + prefix.prefixlen, 0, 0, family, raw),
           REMOTE_ENDPOINT_INFO.pack(identity, endpoint, 0, 0, flags))


def sync_ipcache(pin: str, wanted: tuple[tuple[IPv4Network | IPv6Network, int, IPv4Address | IPv6Address | None], ...]
                 ) -> None:
    """Make the node's ipcache hold exactly these (prefix, identity, tunnel endpoint) entries:
    written, then the others deleted (a policy's ipBlock prefix gone with the policy)."""
    keys = set()
    for prefix, identity, endpoint in wanted:
        write_ipcache(pin, prefix, identity, endpoint)
        raw, family = _key_bytes(prefix.network_address)
        keys.add(IPCACHE_KEY.pack(IPCACHE_STATIC_PREFIX + prefix.prefixlen, 0, 0, family, raw))
    for key, _ in list(entries(f"{pin}/{IPCACHE}", IPCACHE_KEY.size, REMOTE_ENDPOINT_INFO.size)):
        if key not in keys:
            delete(f"{pin}/{IPCACHE}", key)


@dataclass(frozen=True)
class Frontend:
    """One entry of cilium_lb4_services_v2's slot 0 and its slots: a Service address and port, what
    its backends are, and the reverse NAT index its replies are turned back with."""

    address: IPv4Address
    port: int
    protocol: str
    rev_nat_index: int
    flags: int
    backend_ids: tuple[int, ...]


@dataclass(frozen=True)
class Backend:
    id: int
    address: IPv4Address
    port: int
    protocol: str


def _lb_entries(frontends: tuple[Frontend, ...], backends: tuple[Backend, ...]) -> dict[str, dict[bytes, bytes]]:
    services, reverse = {}, {}
    for f in frontends:
        proto = PROTOCOLS[f.protocol]
        key = f.address.packed, _port(f.port)
        services[LB4_KEY.pack(*key, 0, proto, 0)] = LB4_SERVICE.pack(0, len(f.backend_ids), f.rev_nat_index, f.flags, 0, 0)
        for slot, backend_id in enumerate(f.backend_ids, 1):
            services[LB4_KEY.pack(*key, slot, proto, 0)] = LB4_SERVICE.pack(backend_id, 0, f.rev_nat_index, f.flags, 0, 0)
        reverse[REV_NAT_KEY.pack(f.rev_nat_index)] = LB4_REVERSE_NAT.pack(*key)
    backend_map = {BACKEND_KEY.pack(b.id): LB4_BACKEND.pack(b.address.packed, _port(b.port), PROTOCOLS[b.protocol], 0, 0, 0, 0)
                   for b in backends}
    return {"cilium_lb4_services_v2": services, "cilium_lb4_backends_v3": backend_map, "cilium_lb4_reverse_nat": reverse}


def sync_services(pin: str, frontends: tuple[Frontend, ...], backends: tuple[Backend, ...]) -> None:
    """Make the node's Service maps hold exactly these frontends and backends, as the agent syncs
    them: what is missing or different written (backends first, so no slot names a backend that
    is not there yet), then what is no longer wanted deleted (frontends first)."""
    wanted = _lb_entries(frontends, backends)
    sizes = {"cilium_lb4_services_v2": (LB4_KEY.size, LB4_SERVICE.size),
             "cilium_lb4_backends_v3": (BACKEND_KEY.size, LB4_BACKEND.size),
             "cilium_lb4_reverse_nat": (REV_NAT_KEY.size, LB4_REVERSE_NAT.size)}
    for name in ("cilium_lb4_backends_v3", "cilium_lb4_reverse_nat", "cilium_lb4_services_v2"):
        have = dict(entries(f"{pin}/{name}", *sizes[name]))
        for key, value in wanted[name].items():
            if have.get(key) != value:
                update(f"{pin}/{name}", key, value)
    for name in ("cilium_lb4_services_v2", "cilium_lb4_reverse_nat", "cilium_lb4_backends_v3"):
        for key, _ in list(entries(f"{pin}/{name}", *sizes[name])):
            if key not in wanted[name]:
                delete(f"{pin}/{name}", key)


def delete_backend(pin: str, backend_id: int) -> bool:
    """Remove one backend from cilium_lb4_backends_v3 only (the services map keeps its slots)."""
    return delete(f"{pin}/cilium_lb4_backends_v3", BACKEND_KEY.pack(backend_id))


def attach(rtnl: Rtnl, index: int, direction: str, pin: str, program: str) -> None:
    """`tc qdisc add dev X clsact` (one already there is kept) and `tc filter replace dev X
    <direction> ... bpf da pinned <pin>/<program>`."""
    try:
        rtnl.add_clsact(index)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
    fd = open_pinned(f"{pin}/{program}")
    try:
        rtnl.replace_bpf_filter(index, direction, fd, program)
    finally:
        os.close(fd)


def metrics(pin: str) -> dict[str, int]:
    """The node's cilium_metrics: packets per action since its programs were loaded."""
    found = {}
    for key, value in entries(f"{pin}/cilium_metrics", 4, 8):
        (i,), (count,) = struct.unpack("=I", key), struct.unpack("=Q", value)
        if i < len(METRICS):
            found[METRICS[i]] = count
    return found


# -- reading a node's datapath (explain, trace) -----------------------------------------------------

@dataclass(frozen=True)
class Attachment:
    """A program at a tc hook, as `bpftool net` lists it: eth0 clsact/ingress cil_from_netdev."""

    ifname: str
    direction: str
    program: str


@dataclass(frozen=True)
class Endpoint:
    ip: str
    ifindex: int
    mac: str  # the pod's eth0
    node_mac: str  # the lxc device
    lxc_id: int = 0  # the endpoint ID (its policy map's number)
    identity: int = 0  # its security identity


def attached(ns: str) -> list[Attachment]:
    """Every BPF program at a clsact hook of the namespace's devices (read over netlink)."""
    from cni_lab.kernel import netns

    found = []
    ipr = netns.open_ipr(ns)
    try:
        for link in ipr.get_links():
            for direction, parent in (("ingress", 0xFFFFFFF2), ("egress", 0xFFFFFFF3)):
                for f in ipr.get_filters(index=link["index"], parent=parent):
                    options = f.get_attr("TCA_OPTIONS")
                    if f.get_attr("TCA_KIND") == "bpf" and options is not None:
                        found.append(Attachment(link.get_attr("IFLA_IFNAME"), direction,
                                                str(options.get_attr("TCA_BPF_NAME") or "?")))
    finally:
        ipr.close()
    return found


def endpoints(pin: str) -> list[Endpoint]:
    """The node's cilium_lxc map."""
    out = []
    for key, value in entries(f"{pin}/cilium_lxc", ENDPOINT_KEY.size, ENDPOINT_INFO.size):
        (raw, family, _, _), (ifindex, mac, node_mac, lxc_id, identity) = ENDPOINT_KEY.unpack(key), ENDPOINT_INFO.unpack(value)
        out.append(Endpoint(str(_address(raw, family)), ifindex, mac_text(mac), mac_text(node_mac), lxc_id, identity))
    return sorted(out, key=lambda e: (ip_address(e.ip).version, ip_address(e.ip)))


@dataclass(frozen=True)
class IpcacheEntry:
    prefix: str
    identity: int
    tunnel_endpoint: str  # "0.0.0.0" when not behind a tunnel


def ipcache(pin: str) -> list[IpcacheEntry]:
    """The node's cilium_ipcache_v2, as `cilium bpf ipcache list` gives it."""
    out = []
    for key, value in entries(f"{pin}/{IPCACHE}", IPCACHE_KEY.size, REMOTE_ENDPOINT_INFO.size):
        length, _, _, family, raw = IPCACHE_KEY.unpack(key)
        identity, tunnel, _, _, flags = REMOTE_ENDPOINT_INFO.unpack(value)
        endpoint = "0.0.0.0"
        if flags & FLAG_HAS_TUNNEL_EP:
            endpoint = str(_address(tunnel, ENDPOINT_KEY_IPV6 if flags & FLAG_IPV6_TUNNEL_EP else ENDPOINT_KEY_IPV4))
        out.append(IpcacheEntry(f"{_address(raw, family)}/{length - IPCACHE_STATIC_PREFIX}", identity, endpoint))
    return sorted(out, key=lambda e: (ip_network(e.prefix).version, ip_network(e.prefix)))


@dataclass(frozen=True)
class LbEntry:
    """One entry of cilium_lb4_services_v2, its backend resolved (None: the backends map lacks it)."""

    address: str
    port: int
    protocol: str
    slot: int
    count: int
    rev_nat_index: int
    flags: int
    backend_id: int
    backend: tuple[str, int] | None


def lb_services(pin: str) -> list[LbEntry]:
    """The node's Service maps joined, as `cilium bpf lb list` reads them."""
    backends = {BACKEND_KEY.unpack(k)[0]: LB4_BACKEND.unpack(v)
                for k, v in entries(f"{pin}/cilium_lb4_backends_v3", BACKEND_KEY.size, LB4_BACKEND.size)}
    out = []
    for key, value in entries(f"{pin}/cilium_lb4_services_v2", LB4_KEY.size, LB4_SERVICE.size):
        address, dport, slot, proto, _ = LB4_KEY.unpack(key)
        backend_id, count, rev_nat, flags, _, _ = LB4_SERVICE.unpack(value)
        found = backends.get(backend_id) if slot else None
        out.append(LbEntry(str(IPv4Address(address)), _number(dport), PROTOCOL_NAMES.get(proto, str(proto)), slot, count,
                           rev_nat, flags, backend_id,
                           (str(IPv4Address(found[0])), _number(found[1])) if found else None))
    return sorted(out, key=lambda e: (IPv4Address(e.address), e.port, e.protocol, e.slot))


def reverse_nat(pin: str) -> dict[int, tuple[str, int]]:
    """cilium_lb4_reverse_nat: rev_nat_index → the frontend."""
    return {REV_NAT_KEY.unpack(k)[0]: (str(IPv4Address(a)), _number(p))
            for k, v in entries(f"{pin}/cilium_lb4_reverse_nat", REV_NAT_KEY.size, LB4_REVERSE_NAT.size)
            for a, p in [LB4_REVERSE_NAT.unpack(v)]}


@dataclass(frozen=True)
class Tuple:
    protocol: str
    direction: str  # OUT, IN, SVC
    src: str  # address:port as the first packet had it
    dst: str


def _tuple(raw: bytes) -> Tuple:
    daddr, saddr, dport, sport, proto, flags = CT_TUPLE.unpack(raw)
    direction = "SVC" if flags & TUPLE_F_SERVICE else "IN" if flags & TUPLE_F_IN else "OUT"
    return Tuple(PROTOCOL_NAMES.get(proto, str(proto)), direction, f"{IPv4Address(saddr)}:{_number(sport)}",
                 f"{IPv4Address(daddr)}:{_number(dport)}")


@dataclass(frozen=True)
class CtEntry:
    tuple: Tuple
    expires: int  # the entry's lifetime, seconds of the monotonic clock
    packets: int
    bytes: int
    rev_nat_index: int
    backend_id: int
    lb_loopback: bool
    node_port: bool


def conntrack(pin: str) -> list[CtEntry]:
    """The node's cilium_ct4_global and cilium_ct_any4_global, as `cilium bpf ct list global` reads them."""
    out = []
    for key, value in (kv for name in CT_MAPS for kv in entries(f"{pin}/{name}", CT_TUPLE.size, CT_ENTRY.size)):
        _, backend_id, packets, size, lifetime, bits, rev_nat, *_ = CT_ENTRY.unpack(value)
        out.append(CtEntry(_tuple(key), lifetime, packets, size, rev_nat, backend_id, bool(bits & CT_LB_LOOPBACK),
                           bool(bits & CT_NODE_PORT)))
    return sorted(out, key=lambda e: (e.tuple.protocol, e.tuple.src, e.tuple.dst, e.tuple.direction))


@dataclass(frozen=True)
class NatEntry:
    tuple: Tuple
    to: str  # address:port: the new source (OUT), the original destination (IN)
    created: int


def nat(pin: str) -> list[NatEntry]:
    """The node's cilium_snat_v4_external, as `cilium bpf nat list` reads it."""
    out = []
    for key, value in entries(f"{pin}/cilium_snat_v4_external", CT_TUPLE.size, NAT_ENTRY.size):
        created, _, _, _, address, port = NAT_ENTRY.unpack(value)
        out.append(NatEntry(_tuple(key), f"{IPv4Address(address)}:{_number(port)}", created))
    return sorted(out, key=lambda e: (e.tuple.protocol, e.tuple.direction, e.tuple.src, e.tuple.dst))
