"""Apply a plan to the kernel as a transaction, and take it down again.

Every object a plan makes lives inside a namespace the plan created, so undoing is removing
those namespaces (the kernel deletes their links, veth peers included, with them). Steps accept
"already exists" after checking the object is the right kind, so applying twice is safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cni_lab.errors import LabError
from cni_lab.kernel import cni, daemons, netns
from cni_lab.plan import (
    AddAddress,
    AddBridge,
    AddFdb,
    AddNeighbour,
    AddRoute,
    AddVeth,
    AddVxlan,
    CniAdd,
    CreateNetns,
    LinkUp,
    Plan,
    SetSysctl,
    StartBird,
    Step,
    WaitBgp,
    WriteFile,
)

EEXIST = 17
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7


class Session:
    """One netlink socket per namespace, opened once and reused for every step in it.
    `files` is the lab's state folder, where WriteFile steps write."""

    def __init__(self, files: Path | None = None) -> None:
        self._ipr: dict[str, IPRoute] = {}
        self.files = files

    def ipr(self, ns: str) -> IPRoute:
        if ns not in self._ipr:
            self._ipr[ns] = netns.open_ipr(ns)
        return self._ipr[ns]

    def index(self, ns: str, ifname: str) -> int:
        found = self.ipr(ns).link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"no interface {ifname} in namespace {ns}")
        return int(found[0])

    def forget(self, ns: str) -> None:
        ipr = self._ipr.pop(ns, None)
        if ipr is not None:
            ipr.close()

    def close(self) -> None:
        for ns in list(self._ipr):
            self.forget(ns)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _link_kind(session: Session, ns: str, ifname: str) -> str | None:
    for link in session.ipr(ns).get_links(session.index(ns, ifname)):
        info = link.get("IFLA_LINKINFO")
        return info.get("IFLA_INFO_KIND") if info else None
    return None


def _add_link(session: Session, ns: str, ifname: str, kind: str, **attrs: object) -> None:
    try:
        session.ipr(ns).link("add", ifname=ifname, kind=kind, **attrs)
    except NetlinkError as e:
        if e.code != EEXIST:
            raise
        existing = _link_kind(session, ns, ifname)
        if existing != kind:
            raise LabError(f"{ns}: {ifname} exists but is a {existing or 'plain'} link, not a {kind}") from None


def _folder(session: Session, relative: str) -> Path:
    """A path inside the lab's state folder; nothing a plan says may point outside it."""
    if session.files is None:
        raise LabError(f"{relative}: no state folder to write to")
    target = (session.files / relative).resolve()
    if session.files.resolve() not in target.parents and target != session.files.resolve():
        raise LabError(f"{relative}: outside the lab's state folder")
    return target


def apply_step(session: Session, step: Step) -> None:
    if isinstance(step, CreateNetns):
        netns.create(step.netns)
    elif isinstance(step, SetSysctl):
        netns.write_sysctl(step.netns, step.key, step.value)
    elif isinstance(step, AddBridge):
        _add_link(session, step.netns, step.ifname, "bridge", mtu=step.mtu)
    elif isinstance(step, AddVeth):
        fd = os.open(netns.netns_path(step.peer_netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            peer = {"ifname": step.peer_ifname, "net_ns_fd": fd, "mtu": step.mtu}
            _add_link(session, step.netns, step.ifname, "veth", mtu=step.mtu, peer=peer)
        finally:
            os.close(fd)
    elif isinstance(step, LinkUp):
        attrs: dict[str, object] = {"state": "up"}
        if step.master:
            attrs["master"] = session.index(step.netns, step.master)
        session.ipr(step.netns).link("set", index=session.index(step.netns, step.ifname), **attrs)
    elif isinstance(step, AddAddress):
        try:
            session.ipr(step.netns).addr(
                "add",
                index=session.index(step.netns, step.ifname),
                address=str(step.address.ip),
                prefixlen=step.address.network.prefixlen,
            )
        except NetlinkError as e:
            if e.code != EEXIST:
                raise
    elif isinstance(step, AddRoute):
        # proto boot, as `ip route add` and flannel (netlink without a protocol) leave it
        route: dict[str, object] = {"dst": str(step.dst), "oif": session.index(step.netns, step.dev), "proto": 3}
        if step.via is not None:
            route["gateway"] = str(step.via)
        if step.scope_link:
            route["scope"] = 253
        if step.onlink:
            route["flags"] = RTNH_F_ONLINK
        try:
            session.ipr(step.netns).route("add", **route)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise
    elif isinstance(step, AddVxlan):
        _add_link(
            session, step.netns, step.ifname, "vxlan",
            vxlan_id=step.vni, vxlan_local=str(step.local), vxlan_port=step.port,
            vxlan_learning=int(step.learning), vxlan_link=session.index(step.netns, step.dev),
            address=step.mac, mtu=step.mtu,
        )
    elif isinstance(step, AddNeighbour):
        # "replace": the same entry again is not an error, like flannel's NeighSet
        session.ipr(step.netns).neigh("replace", dst=str(step.ip), lladdr=step.mac,
                                      ifindex=session.index(step.netns, step.ifname), state=NUD_PERMANENT)
    elif isinstance(step, AddFdb):
        session.ipr(step.netns).neigh("replace", family=AF_BRIDGE, lladdr=step.mac, dst=str(step.dst),
                                      ifindex=session.index(step.netns, step.ifname), state=NUD_PERMANENT,
                                      flags=NTF_SELF)
    elif isinstance(step, WriteFile):
        target = _folder(session, step.path)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        target.write_text(step.content)
    elif isinstance(step, StartBird):
        daemons.start_bird(step.netns, _folder(session, step.folder))
    elif isinstance(step, WaitBgp):
        daemons.wait_bgp(step.netns, step.node, _folder(session, step.folder), step.peers, step.learned)
    elif isinstance(step, CniAdd):
        assert session.files is not None
        conflist = json.loads(_folder(session, step.conflist).read_text())
        pod = step.pod_netns.split(".", 1)[1].replace(".", "/")
        result = cni.add(step.netns, step.pod_netns, step.container_id, step.ifname, step.cni_path, conflist,
                         session.files, pod)
        cni.record(_folder(session, step.result), step.netns, step.pod_netns, step.container_id, step.ifname,
                   step.cni_path, step.conflist, result)
        got = [ip.get("address", "").split("/")[0] for ip in result.get("ips", [])]
        if step.expect_ip is not None and str(step.expect_ip) not in got:
            raise LabError(
                f"CNI ADD for pod {pod}: the plugins gave {', '.join(got) or 'no address'}, but the lab expects "
                f"{step.expect_ip} (cni-lab follows host-local's order over the pod CIDR: first pod .2; "
                "options such as rangeStart are not supported)"
            )
    else:  # pragma: no cover - a new step type without a handler is a bug
        raise TypeError(f"no kernel handler for {step!r}")


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold off Ctrl-C and SIGTERM while cleaning up, so a second signal cannot leave half a lab."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda n, f: pending.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if pending:
        raise KeyboardInterrupt


def apply(plan: Plan, files: Path | None = None, progress: Callable[[int, int], None] | None = None) -> None:
    """Apply every step; on any failure or interruption remove what this call created, then re-raise.
    Files go under `files` (the lab's state folder), which the caller removes on failure."""
    created: list[str] = []
    total = len(plan.steps)
    with Session(files) as session:
        try:
            for i, step in enumerate(plan.steps, 1):
                if isinstance(step, CreateNetns):
                    if netns.create(step.netns):
                        created.append(step.netns)
                else:
                    try:
                        apply_step(session, step)
                    except (NetlinkError, OSError) as e:
                        reason = getattr(e, "strerror", None) or (e.args[1] if len(e.args) > 1 else str(e))
                        raise LabError(f"{step.describe()}: {reason}") from e
                if progress is not None:
                    progress(i, total)
        except BaseException:
            session.close()
            with shielded():
                for ns in reversed(created):
                    netns.remove(ns)
            raise


def remove_namespaces(names: list[str]) -> list[str]:
    """Kill every process living in these namespaces, then remove them. Returns what was removed."""
    for pid in netns.pids_in(names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # pods first, underlay last: the reverse of creation order keeps each step's peer alive
    return [n for n in sorted(names, key=lambda n: (-n.count("."), n)) if netns.remove(n)]
