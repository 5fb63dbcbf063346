"""BPF for the `ebpf` data plane: the one place that compiles, loads, pins, attaches and reads
programs and maps.

- compile: clang -O2 -g -target bpf, once per source version (and clang version), cached in
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
import struct
import subprocess
import sysconfig
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from cni_lab import names
from cni_lab.errors import LabError

if TYPE_CHECKING:
    from cni_lab.kernel.rtnl import Rtnl

CACHE = Path("/var/cache/cni-lab/bpf")
SOURCES = Path(__file__).resolve().parent.parent / "dataplanes"
BPF_FS_MAGIC = 0xCAFE4A11
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351, "armv7l": 386}
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_PROG_LOAD = 5
BPF_OBJ_GET = 7
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
        text = path.read_bytes()
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
    cmd = ["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{_multiarch()}", "-Wall", "-c", str(path), "-o", str(tmp)]
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


# -- the maps of ebpf.c, as its structs lay them out ----------------------------------------------

ENDPOINT_KEY = struct.Struct("=4s")  # struct endpoint_key: ip4 (network order)
ENDPOINT_INFO = struct.Struct("=I6s6s")  # struct endpoint_info: ifindex, pod MAC, lxc MAC
TUNNEL_KEY = struct.Struct("=I4s")  # struct tunnel_key (LPM): prefixlen, ip4
TUNNEL_VALUE = struct.Struct("=4s")  # struct tunnel_value: the remote node's IP
NODE_CONFIG = struct.Struct("=II4sII")  # uplink ifindex, vxlan ifindex, router IP, vni, tunnel
METRICS = ("local delivery (bpf_redirect_peer)", "fib redirect (bpf_redirect)", "fib redirect (bpf_redirect_neigh)",
           "tunnel (bpf_skb_set_tunnel_key)", "to the node's stack", "ARP replies", "drops")
ZERO = struct.pack("=I", 0)


def mac_bytes(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


# -- writing them, as the agent does when an endpoint, node or tunnel appears ------------------------

def write_node_config(pin: str, uplink: int, vxlan: int, router_ip: IPv4Address, vni: int, tunnel: bool) -> None:
    """The node's one node_config entry (interface indexes: `vxlan` 0 in native routing)."""
    update(f"{pin}/node_config", ZERO, NODE_CONFIG.pack(uplink, vxlan, router_ip.packed, vni, int(tunnel)))


def write_endpoint(pin: str, ip: IPv4Address, lxc_index: int, pod_mac: str, lxc_mac: str) -> None:
    """A pod's cilium_lxc entry: its IP → its lxc device's index, its eth0's MAC and the lxc's MAC."""
    update(f"{pin}/cilium_lxc", ENDPOINT_KEY.pack(ip.packed),
           ENDPOINT_INFO.pack(lxc_index, mac_bytes(pod_mac), mac_bytes(lxc_mac)))


def write_tunnel(pin: str, cidr: IPv4Network, node_ip: IPv4Address) -> None:
    """A cilium_tunnel_map entry: another node's pod CIDR → that node's IP."""
    update(f"{pin}/cilium_tunnel_map", TUNNEL_KEY.pack(cidr.prefixlen, cidr.network_address.packed),
           TUNNEL_VALUE.pack(node_ip.packed))


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
        (ip,), (ifindex, mac, node_mac) = ENDPOINT_KEY.unpack(key), ENDPOINT_INFO.unpack(value)
        out.append(Endpoint(str(IPv4Address(ip)), ifindex, mac_text(mac), mac_text(node_mac)))
    return sorted(out, key=lambda e: IPv4Address(e.ip))


def tunnels(pin: str) -> list[tuple[str, str]]:
    """The node's cilium_tunnel_map: (pod CIDR, node IP)."""
    out = []
    for key, value in entries(f"{pin}/cilium_tunnel_map", TUNNEL_KEY.size, TUNNEL_VALUE.size):
        (length, ip), (node,) = TUNNEL_KEY.unpack(key), TUNNEL_VALUE.unpack(value)
        out.append((f"{IPv4Address(ip)}/{length}", str(IPv4Address(node))))
    return sorted(out)
