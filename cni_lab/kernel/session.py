"""What one run of kernel changes keeps per namespace: its netlink socket, opened once and reused,
the interface indexes learned on the way, and the namespaces made ahead on a thread of their own.

Creating is safe to repeat here (house style rule 3): a link that exists is accepted once it is
read back as the right kind, an address or route that exists is as good as added.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from cni_lab.errors import LabError
from cni_lab.kernel import netns

if TYPE_CHECKING:
    from cni_lab.kernel.rtnl import Rtnl

LOOPBACK_INDEX = 1  # the kernel gives every namespace's lo index 1 (LOOPBACK_IFINDEX)


class NamespaceMaker:
    """Creates a plan's namespaces on a thread of its own, ahead of the steps that fill them,
    opening each one's netlink socket from inside while it is there, and writing the sysctls the
    plan sets right after creating it (`sysctls`: namespace -> [(key, value)]; /proc/sys/net is
    the writer's namespace's, so another thread would have to enter it again). Meanwhile the main
    thread works through the other steps (the first of which imports pyroute2): at 100 pods the
    two overlap for about a fifth of `up`. Everything it made is in `created`, in order."""

    def __init__(self, names: list[str], sysctls: dict[str, list[tuple[str, str]]] | None = None) -> None:
        self.names = names
        self.sysctls = sysctls or {}
        self.written: dict[tuple[str, str], BaseException | None] = {}  # (namespace, key) -> its failure
        self.created: list[str] = []
        self.sockets: dict[str, socket.socket] = {}
        self._done: dict[str, BaseException | None] = {}
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="cni-lab-netns-maker")

    def _run(self) -> None:
        for name in self.names:
            with self._cond:
                if self._stop:
                    return
            failure: BaseException | None = None
            try:
                if netns.make_here(name):
                    self.created.append(name)
                self.sockets[name] = netns.route_socket()
                for key, value in self.sysctls.get(name, []):
                    try:
                        with open(f"/proc/sys/{key}", "w") as f:
                            f.write(value)
                        self.written[(name, key)] = None
                    except OSError as e:  # handed to the main thread at that sysctl's step
                        self.written[(name, key)] = e
            except BaseException as e:  # handed to the main thread at this namespace's step
                failure = e
            with self._cond:
                self._done[name] = failure
                self._cond.notify_all()
            if failure is not None:
                return

    def start(self) -> None:
        self._thread.start()

    def wait(self, name: str) -> None:
        """Block until `name` exists (or raise what stopped it from being made)."""
        with self._cond:
            while name not in self._done:
                self._cond.wait()
            failure = self._done[name]
        if failure is not None:
            raise failure

    def wrote(self, ns: str, key: str) -> bool:
        """Whether this thread wrote sysctl `key` of `ns` (raises what writing it raised)."""
        if key not in dict(self.sysctls.get(ns, [])):
            return False
        self.wait(ns)
        failure = self.written.get((ns, key))
        if failure is not None:
            raise failure
        return (ns, key) in self.written

    def stop(self) -> None:
        """Make no more namespaces; once this returns, `created` is final."""
        with self._cond:
            self._stop = True
        if self._thread.is_alive():
            self._thread.join()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


class Session:
    """One netlink socket per namespace, opened once and reused for every change in it, and the
    interface indexes learned on the way. `files` is the lab's state folder (files, daemons);
    `sockets` are netlink sockets already opened inside namespaces (by a NamespaceMaker)."""

    def __init__(self, files: Path | None = None, sockets: dict[str, socket.socket] | None = None) -> None:
        self._rtnl: dict[str, Rtnl] = {}
        self._index: dict[str, dict[str, int]] = {}  # namespace -> interface name -> index
        self._sockets = sockets if sockets is not None else {}
        self.files = files
        self.pinned: list[str] = []  # bpffs folders this session pinned programs in (undone on failure)

    def rtnl(self, ns: str) -> Rtnl:
        if ns not in self._rtnl:
            from cni_lab.kernel.rtnl import Rtnl  # pyroute2: see kernel/__init__.py

            self._rtnl[ns] = Rtnl(ns, self._sockets.pop(ns, None))
        return self._rtnl[ns]

    def index(self, ns: str, ifname: str) -> int:
        if ifname == "lo":
            return LOOPBACK_INDEX
        known = self._index.setdefault(ns, {})
        if ifname not in known:
            try:
                known[ifname] = self.rtnl(ns).index(ifname)
            except OSError:
                raise LabError(f"no interface {ifname} in namespace {ns}") from None
        return known[ifname]

    def forget(self, ns: str) -> None:
        self._index.pop(ns, None)
        rtnl = self._rtnl.pop(ns, None)
        if rtnl is not None:
            rtnl.close()

    def close(self) -> None:
        for ns in list(self._rtnl):
            self.forget(ns)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_link(self, ns: str, ifname: str, kind: str, add: Callable[[Rtnl], None]) -> bool:
        """Create a link; False when one of that name and kind was already there."""
        try:
            add(self.rtnl(ns))
            return True
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            from cni_lab.kernel import readback  # a repeated apply alone meets a link that exists

            existing = next((lk.kind for lk in readback.read(ns, []).links if lk.name == ifname), None)
            if existing != kind:
                raise LabError(f"{ns}: {ifname} exists but is a {existing or 'plain'} link, not a {kind}") from None
            return False

    def add_veth(self, ns: str, ifname: str, peer_netns: str, peer_ifname: str, *, mtu: int, master: int | None,
                 up: bool, mac: str | None) -> None:
        """A veth pair whose peer is made straight in `peer_netns` (the kernel moves it there by fd)."""
        fd = os.open(netns.netns_path(peer_netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            created = self.add_link(ns, ifname, "veth", lambda r: r.add_veth(
                ifname, peer_ifname, fd, mtu=mtu, master=master, up=up, mac=mac))
        finally:
            os.close(fd)
        if not created and (master is not None or up):  # a repeated apply: make it so anyway
            self.rtnl(ns).set_link(self.index(ns, ifname), up=up or None, master=master)

    def set_hairpin(self, ns: str, ifname: str) -> None:
        """`bridge link set dev X hairpin on` (the port sends a frame back where it came from)."""
        ipr = netns.open_ipr(ns)
        try:
            ipr.brport("set", index=self.index(ns, ifname), mode=1)
        finally:
            ipr.close()

    def folder(self, relative: str) -> Path:
        """A path inside the lab's state folder; nothing a plan says may point outside it."""
        if self.files is None:
            raise LabError(f"{relative}: no state folder to write to")
        target = (self.files / relative).resolve()
        if self.files.resolve() not in target.parents and target != self.files.resolve():
            raise LabError(f"{relative}: outside the lab's state folder")
        return target


def exists_ok(call: Callable[[], None]) -> None:
    """Run a creating call; "File exists" is as good as created (applying a plan twice meets it)."""
    try:
        call()
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
