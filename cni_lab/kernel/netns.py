"""Entering, making and removing network namespaces as iproute2's `ip netns` does, without forks.

`setns(2)` and `unshare(2)` change only the calling thread, so every namespace switch happens on
a short-lived thread of our own; the main thread never leaves the root namespace (house style
rule 7). A netlink or UDP socket stays bound to the namespace it was opened in, so one socket
per namespace is opened that way and then used from anywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _check(result: int, what: str, path: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def on_thread(fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread and return its result (or raise its exception)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    t = threading.Thread(target=run, name="cni-lab-netns")
    t.start()
    interrupted: BaseException | None = None
    while t.is_alive():
        try:
            t.join()
        except KeyboardInterrupt as e:  # let the thread finish: its outcome must be known
            interrupted = e
    if interrupted is not None:
        raise interrupted
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def _enter(name: str) -> None:
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)
    finally:
        os.close(fd)


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` inside namespace `name` on a thread of its own."""

    def run() -> T:
        _enter(name)
        return fn()

    return on_thread(run)


def visit(names: Sequence[str], fn: Callable[[str], None]) -> None:
    """Run `fn(name)` inside each namespace in turn, all on one thread of our own: one thread
    and one setns(2) per namespace instead of a thread per call (opening a lab's sockets)."""

    def run() -> None:
        for name in names:
            _enter(name)
            fn(name)

    on_thread(run)


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so bind mounts propagate."""
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    run_dir = NETNS_RUN_DIR.encode()
    if _libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None), "mount --bind", NETNS_RUN_DIR)
    _check(_libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None), "mount --make-shared", NETNS_RUN_DIR)


_run_dir_ready = False


def create(name: str) -> bool:
    """Create a named namespace. Returns False when it already exists (and is a namespace)."""
    try:
        return on_thread(lambda: make_here(name))
    except BaseException:
        remove(name)  # unmounts first when the bind mount was made before the interruption
        raise


def make_here(name: str) -> bool:
    """Create namespace `name` and leave the calling thread inside it, or enter it when it is
    there already (False). Only on a thread of our own: the main thread stays in the root
    namespace (house style rule 7)."""
    global _run_dir_ready
    assert threading.current_thread() is not threading.main_thread(), "never moves the main thread"
    if not _run_dir_ready:
        _prepare_run_dir()
        _run_dir_ready = True
    path = netns_path(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        if is_netns(name):
            _enter(name)
            return False
        raise OSError(errno.EEXIST, f"{path} exists but is not a network namespace", path) from None
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare", name)
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(source, path.encode(), b"none", MS_BIND, None), "mount", name)
    except BaseException:
        remove(name)
        raise
    return True


def is_netns(name: str) -> bool:
    """True when /run/netns/<name> is a mounted namespace (not just the empty mount point file)."""
    try:
        return os.stat(netns_path(name)).st_dev != os.stat(NETNS_RUN_DIR).st_dev
    except OSError:
        return False


def inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except OSError:
        return None


def remove(name: str) -> bool:
    """Unmount and remove a named namespace; True when there was one. The kernel frees it
    (and every link in it, veth peers included) once no process holds it."""
    path = netns_path(name)
    if not os.path.exists(path):
        return False
    _libc.umount2(path.encode(), MNT_DETACH)  # may already be unmounted: not an error
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


def listing() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def open_ipr(name: str) -> IPRoute:
    """An IPRoute whose netlink socket lives in namespace `name`."""
    from pyroute2 import IPRoute  # ~0.1 s to import: only commands that read links pay it

    sock = in_netns(name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE))
    return IPRoute(use_socket=sock)


def route_socket() -> socket.socket:
    """A NETLINK_ROUTE socket of the calling thread's namespace (rtnl.Rtnl binds and speaks it)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)


def open_socket(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket of namespace `name` (for probes and responders)."""
    return in_netns(name, lambda: socket.socket(family, kind, proto))


def write_sysctl(name: str, key: str, value: str) -> None:
    """Write /proc/sys/<key> of namespace `name`: /proc/sys/net reflects the opener's namespace."""

    def write() -> None:
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)

    in_netns(name, write)


def read_sysctl(name: str, key: str) -> str:
    def read() -> str:
        with open(f"/proc/sys/{key}") as f:
            return f.read().strip()

    return in_netns(name, read)


def pids_in(names: list[str]) -> dict[int, str]:
    """Processes whose network namespace is one of `names` (matched by inode, never by name)."""
    wanted = {ino: n for n in names if (ino := inode(n)) is not None}
    found: dict[int, str] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            continue
        if ino in wanted:
            found[int(entry)] = wanted[ino]
    return found


REMOVERS = 4  # threads unmounting namespaces at once (bench/: 1000 pods, 0.30 s alone, 0.21 s with 4)


def remove_namespaces(names: list[str]) -> list[str]:
    """Kill every process living in these namespaces, then remove them. Returns what was removed.

    An unmount is quick, but once the first namespaces are gone the kernel starts freeing them
    (its netns cleanup work, holding locks for long stretches) and an unmount now and then waits
    behind it for tens of milliseconds; a few threads keep unmounting meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    for pid in pids_in(names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    removed = []
    # pods first, underlay last: the reverse of creation order keeps each step's peer alive
    for depth in sorted({n.count(".") for n in names}, reverse=True):
        group = sorted(n for n in names if n.count(".") == depth)
        if len(group) < 2 * REMOVERS:
            removed += [n for n in group if remove(n)]
            continue
        with ThreadPoolExecutor(REMOVERS, thread_name_prefix="cni-lab-remove") as pool:
            removed += [n for n, gone in zip(group, pool.map(remove, group)) if gone]
    return removed
