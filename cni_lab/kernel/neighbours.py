"""The kernel's shared neighbour tables: how full they are, emptying the lab's own entries between
the batches of a check (probe/budget.py) and as the lab goes, and the one place cni-lab ever
changes the host: the table's limits, only when a user asks (`check --neighbour-cap N`),
recorded first in the lab's state and put back by `down`.

Every namespace's ARP entries live in one kernel table capped by the root namespace's
`net.ipv4.neigh.default.gc_thresh3` (1024 by default), and past the cap the kernel evicts an
entry for a new one only once it has been stale for 5 seconds (an entry stays reachable for up
to 45 s after use); meanwhile every namespace, the host's own included, is refused new ones.
Deleting an entry (RTM_DELNEIGH) takes it out of the count at once, which is what lets `check`
keep within a budget instead of raising the cap.

The limits stay raised while the lab is up: its entries stay in the table after the check, and a
table holding more entries than its cap refuses new ones, in every namespace of the host, until
they age. `down` puts the limits back once the lab's entries are gone, and only when no other lab
still needs them raised (each raise records the values from before the first one).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cni_lab.errors import LabError
from cni_lab.kernel import netns

KEYS = ("gc_thresh1", "gc_thresh2", "gc_thresh3")
SYSCTL = "/proc/sys/net/ipv4/neigh/default/{}"
STATS = "/proc/net/stat/arp_cache"  # its "entries" column counts the whole table
RECORD = "neighbour-cap.json"


def read() -> dict[str, int]:
    return {k: int(Path(SYSCTL.format(k)).read_text()) for k in KEYS}


def _write(values: dict[str, int]) -> None:
    # raise thresh3 before thresh2 and lower it after, so thresh2 <= thresh3 holds throughout
    order = KEYS[::-1] if values["gc_thresh3"] >= read()["gc_thresh3"] else KEYS
    for key in order:
        Path(SYSCTL.format(key)).write_text(str(values[key]))


def entries() -> int:
    return ARP.entries()


def raise_cap(folder: Path, cap: int, others: Iterable[Path] = ()) -> dict[str, int]:
    """Record the limits from before any lab raised them in `folder` (a lab's state folder;
    `others` are the other labs' folders), then raise them. Returns what was recorded."""
    if ARP.cap() is None:
        raise LabError("--neighbour-cap: the neighbour table's limits are not visible in this network namespace "
                       "(a container's own; the kernel shows them to the host's only): raise "
                       "net.ipv4.neigh.default.gc_thresh3 on the host, or leave it: check keeps within the table anyway")
    record = folder / RECORD
    before = _recorded(record) or next(filter(None, (_recorded(o / RECORD) for o in others)), None) or read()
    if not record.exists():  # a second raise keeps the original values
        record.write_text(json.dumps(before))
    now = read()
    _write({"gc_thresh1": now["gc_thresh1"], "gc_thresh2": max(now["gc_thresh2"], cap // 2),
            "gc_thresh3": max(now["gc_thresh3"], cap)})
    return before


def raised(folder: Path) -> bool:
    """Whether the lab whose state folder this is raised the limits (and `down` puts them back)."""
    return (folder / RECORD).exists()


def _recorded(record: Path) -> dict[str, int] | None:
    try:
        values = {k: int(v) for k, v in json.loads(record.read_text()).items() if k in KEYS}
    except (OSError, ValueError, AttributeError):
        return None
    return values if set(values) == set(KEYS) else None


def restore(folder: Path, others: Iterable[Path] = (), wait: float = 3.0) -> dict[str, int] | None:
    """Put back what `raise_cap` recorded, after the lab's namespaces are gone (`down`). Not while
    another lab's record says it still needs the raise; and not before the table has shrunk below
    the cap being put back (the kernel frees a removed namespace's entries shortly after), for at
    most `wait` seconds."""
    record = folder / RECORD
    before = _recorded(record)
    record.unlink(missing_ok=True)
    if before is None or any((o / RECORD).exists() for o in others):
        return None
    deadline = time.monotonic() + wait
    while entries() > before["gc_thresh3"] and time.monotonic() < deadline:
        time.sleep(0.02)
    _write(before)
    return before


# -- one table per family --------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One of the kernel's neighbour tables (IPv4's ARP, IPv6's NDP): one for every namespace."""

    name: str
    family: int
    sysctl: str  # the folder of its limits, in the root namespace
    stats: str  # /proc/net/stat/<table>: its "entries" column counts the whole table
    default_cap: int = 1024  # gc_thresh3 as the kernel sets it

    def cap(self) -> int | None:
        """gc_thresh3, or None where it cannot be read: the kernel registers the limits for the
        root namespace only, so inside a container's own namespace they are not there."""
        try:
            return int(Path(f"{self.sysctl}/gc_thresh3").read_text())
        except (OSError, ValueError):
            return None

    def entries(self) -> int:
        try:
            return int(Path(self.stats).read_text().splitlines()[1].split()[0], 16)
        except (OSError, IndexError, ValueError):
            return 0


ARP = Table("arp", socket.AF_INET, "/proc/sys/net/ipv4/neigh/default", STATS)
NDP = Table("ndisc", socket.AF_INET6, "/proc/sys/net/ipv6/neigh/default", "/proc/net/stat/ndisc_cache")


class PeakSampler:
    """The most entries a table held while this runs, read every `every` seconds on a thread."""

    def __init__(self, table: Table, every: float = 0.02) -> None:
        self.table, self.every = table, every
        self.peak = table.entries()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cni-lab-neighbours", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.table.entries())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.table.entries())


# -- emptying the lab's own entries ------------------------------------------------------------------

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 1, 4, 0x300
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NDA_DST = 1
HEADER = struct.Struct("=LHHLL")  # nlmsghdr
NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
RTATTR = struct.Struct("=HH")


class Flusher:
    """Deletes the entries that traffic made (not the permanent ones a data plane installed, such
    as flannel's VTEP neighbours) in namespaces of a lab, as `ip neigh flush` does there: the
    kernel takes a deleted entry out of the table's count at once. One NETLINK_ROUTE socket per
    namespace, opened once by one thread."""

    def __init__(self, table: Table, namespaces: Sequence[str]) -> None:
        from pyroute2.netlink.rtnl.ndmsg import ndmsg  # pyroute2: see kernel/__init__.py

        self.table = table
        self.sockets: dict[str, socket.socket] = {}
        opened: list[socket.socket] = []

        def open_here(_: str) -> None:
            opened.append(netns.route_socket())

        try:
            netns.visit(list(namespaces), open_here)
            for sock in opened:
                sock.bind((0, 0))
        except BaseException:
            for sock in opened:
                sock.close()
            raise
        self.sockets = dict(zip(namespaces, opened))
        dump = ndmsg()
        dump["family"] = table.family
        dump["header"]["type"], dump["header"]["flags"] = RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP
        dump.encode()
        self._dump = bytes(dump.data)
        # RTM_DELNEIGH as pyroute2 encodes it, once: each delete fills in its ifindex, address and
        # sequence number (under 1 µs a message instead of ~23 µs; bench/run.py measures both, and a unit
        # test holds the bytes to pyroute2's)
        blank = ndmsg()
        blank["family"], blank["ifindex"] = table.family, 0
        blank["attrs"] = [("NDA_DST", "::" if table.family == socket.AF_INET6 else "0.0.0.0")]
        blank["header"]["type"], blank["header"]["flags"] = RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK
        blank.encode()
        self._delete = bytes(blank.data)
        self.deleted = 0

    def delete_request(self, ifindex: int, dst: bytes, seq: int) -> bytes:
        """The RTM_DELNEIGH of one entry (`dst`: its address, packed)."""
        msg = bytearray(self._delete)
        struct.pack_into("=L", msg, 8, seq)  # nlmsghdr.nlmsg_seq
        struct.pack_into("=i", msg, HEADER.size + 4, ifindex)  # ndmsg.ndm_ifindex
        msg[-len(dst):] = dst  # NDA_DST, the last attribute
        return bytes(msg)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()

    def __enter__(self) -> Flusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, namespaces: Iterable[str]) -> int:
        """Delete the non-permanent entries of these namespaces; returns how many went."""
        chosen = [self.sockets[ns] for ns in namespaces if ns in self.sockets]
        for sock in chosen:  # every dump asked first: the kernel answers them meanwhile
            sock.send(self._dump)
        deleted = 0
        for sock in chosen:
            doomed = self._read_dump(sock)
            if not doomed:
                continue
            requests = [self.delete_request(ifindex, dst, seq) for seq, (ifindex, dst) in enumerate(doomed, 1)]
            sock.send(b"".join(requests))  # netlink takes many requests in one send
            deleted += self._read_acks(sock, len(requests))
        self.deleted += deleted
        return deleted

    def _read_dump(self, sock: socket.socket) -> list[tuple[int, bytes]]:
        found: list[tuple[int, bytes]] = []
        while True:
            data = sock.recv(1 << 16)
            at = 0
            while at + HEADER.size <= len(data):
                length, kind, _, _, _ = HEADER.unpack_from(data, at)
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    return found
                if kind == RTM_NEWNEIGH:
                    family, ifindex, state, _, _ = NDMSG.unpack_from(data, at + HEADER.size)
                    if family == self.table.family and not state & (NUD_PERMANENT | NUD_NOARP):
                        dst = self._attribute(data, at + HEADER.size + NDMSG.size, at + length, NDA_DST)
                        if dst is not None:
                            found.append((ifindex, dst))
                at += (length + 3) & ~3

    @staticmethod
    def _attribute(data: bytes, at: int, end: int, wanted: int) -> bytes | None:
        while at + RTATTR.size <= end:
            length, kind = RTATTR.unpack_from(data, at)
            if length < RTATTR.size:
                return None
            if kind == wanted:
                return data[at + RTATTR.size:at + length]
            at += (length + 3) & ~3
        return None

    @staticmethod
    def _read_acks(sock: socket.socket, count: int) -> int:
        """Read the kernel's answer to each delete; an entry already gone is as good as deleted."""
        done = 0
        answered = 0
        while answered < count:
            data = sock.recv(1 << 16)
            at = 0
            while at + HEADER.size <= len(data):
                length, kind, _, _, _ = HEADER.unpack_from(data, at)
                if kind == NLMSG_ERROR:
                    answered += 1
                    (code,) = struct.unpack_from("=i", data, at + HEADER.size)
                    done += code == 0
                at += (length + 3) & ~3
        return done


def release_neighbours(namespaces: list[str], ifnames: tuple[str, ...]) -> None:
    """Free the ARP entries of a lab about to go, now: the kernel flushes a link's neighbours
    when it goes down, whereas removed namespaces give theirs back only when the kernel gets to
    freeing them, in one batch (~1.4 s for a 1000-pod lab). Best effort: links it cannot find
    or set down are left to that batch."""
    from cni_lab.kernel.rtnl import Rtnl  # pyroute2: see kernel/__init__.py

    sockets: dict[str, socket.socket] = {}

    def open_here(ns: str) -> None:
        sockets[ns] = netns.route_socket()

    with contextlib.suppress(OSError):  # one thread visits them all (a namespace may be gone)
        netns.visit([ns for ns in namespaces if netns.is_netns(ns)], open_here)
    for ns, sock in sockets.items():
        rtnl = Rtnl(ns, sock)
        try:
            for ifname in dict.fromkeys(ifnames):
                with contextlib.suppress(OSError):
                    rtnl.set_link(rtnl.index(ifname), up=False)
        finally:
            rtnl.close()
