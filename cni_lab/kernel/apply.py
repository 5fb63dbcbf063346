"""Apply a plan to the kernel as a transaction, and take it down again.

Every object a plan makes lives inside a namespace the plan created, so undoing is removing
those namespaces (the kernel deletes their links, veth peers included, with them). Steps accept
"already exists" after checking the object is the right kind, so applying twice is safe.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, Iterator

from cni_lab import privileges
from cni_lab.errors import LabError
from cni_lab.kernel import cni_runtime, daemons, netns
from cni_lab.plan import Plan
from cni_lab.steps import (
    AddAddress,
    AddBridge,
    AddFdb,
    AddFlowVxlan,
    AddNeighbour,
    AddRoute,
    AddVeth,
    AddVxlan,
    AttachBpf,
    BpfEndpoint,
    BpfNodeConfig,
    BpfTunnel,
    CniAdd,
    CreateNetns,
    LinkUp,
    LoadBpf,
    LoadNftables,
    SetHairpin,
    SetSysctl,
    StartBird,
    Step,
    WaitBgp,
    WriteFile,
)

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
    """One netlink socket per namespace, opened once and reused for every step in it, and the
    interface indexes learned on the way. `files` is the lab's state folder (WriteFile, daemons);
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


def _add_link(session: Session, ns: str, ifname: str, kind: str, add: Callable[[Rtnl], None]) -> bool:
    """Create a link; False when one of that name and kind was already there."""
    try:
        add(session.rtnl(ns))
        return True
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
        from cni_lab.kernel import readback  # a repeated apply alone meets a link that exists

        existing = next((lk.kind for lk in readback.read(ns, []).links if lk.name == ifname), None)
        if existing != kind:
            raise LabError(f"{ns}: {ifname} exists but is a {existing or 'plain'} link, not a {kind}") from None
        return False


def _exists_ok(call: Callable[[], None]) -> None:
    try:
        call()
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise


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
        _add_link(session, step.netns, step.ifname, "bridge", lambda r: r.add_link(step.ifname, "bridge", mtu=step.mtu))
    elif isinstance(step, AddVeth):
        master = session.index(step.netns, step.master) if step.master else None
        fd = os.open(netns.netns_path(step.peer_netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            created = _add_link(session, step.netns, step.ifname, "veth", lambda r: r.add_veth(
                step.ifname, step.peer_ifname, fd, mtu=step.mtu, master=master, up=step.up, mac=step.mac))
        finally:
            os.close(fd)
        if not created and (master is not None or step.up):  # a repeated apply: make it so anyway
            session.rtnl(step.netns).set_link(session.index(step.netns, step.ifname), up=step.up or None, master=master)
    elif isinstance(step, LinkUp):
        master = session.index(step.netns, step.master) if step.master else None
        session.rtnl(step.netns).set_link(session.index(step.netns, step.ifname), up=True, master=master,
                                          noarp=not step.arp)
    elif isinstance(step, AddAddress):
        index = session.index(step.netns, step.ifname)
        _exists_ok(lambda: session.rtnl(step.netns).add_address(index, step.address.ip, step.address.network.prefixlen))
    elif isinstance(step, AddRoute):
        oif = session.index(step.netns, step.dev)
        _exists_ok(lambda: session.rtnl(step.netns).add_route(step.dst, oif, gateway=step.via, onlink=step.onlink,
                                                             scope_link=step.scope_link, src=step.src, mtu=step.mtu))
    elif isinstance(step, AddVxlan):
        link = session.index(step.netns, step.dev)
        _add_link(session, step.netns, step.ifname, "vxlan", lambda r: r.add_vxlan(
            step.ifname, mtu=step.mtu, vni=step.vni, local=step.local, port=step.port, learning=step.learning,
            link=link, address=step.mac))
    elif isinstance(step, AddNeighbour):
        session.rtnl(step.netns).replace_neighbour(session.index(step.netns, step.ifname), step.ip, step.mac)
    elif isinstance(step, AddFdb):
        session.rtnl(step.netns).replace_neighbour(session.index(step.netns, step.ifname), step.dst, step.mac,
                                                   bridge=True)
    elif isinstance(step, WriteFile):
        target = _folder(session, step.path)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        target.write_text(step.content)
    elif isinstance(step, StartBird):
        daemons.start_bird(step.netns, _folder(session, step.folder))
    elif isinstance(step, WaitBgp):
        daemons.wait_bgp(step.netns, step.node, _folder(session, step.folder), step.peers, step.learned)
    elif isinstance(step, CniAdd):
        _cni_add(session, step)
    elif isinstance(step, AddFlowVxlan):
        data = [("IFLA_VXLAN_COLLECT_METADATA", 1), ("IFLA_VXLAN_PORT", step.port), ("IFLA_VXLAN_LEARNING", 0)]
        _add_link(session, step.netns, step.ifname, "vxlan", lambda r: r.add_link(step.ifname, "vxlan", mtu=step.mtu,
                                                                                   data=data))
    elif isinstance(step, (LoadBpf, AttachBpf, BpfNodeConfig, BpfEndpoint, BpfTunnel)):
        _bpf_step(session, step)
    elif isinstance(step, SetHairpin):
        ipr = netns.open_ipr(step.netns)
        try:
            ipr.brport("set", index=session.index(step.netns, step.ifname), mode=1)
        finally:
            ipr.close()
    elif isinstance(step, LoadNftables):
        from cni_lab.kernel import edit

        edit.nft_apply(step.netns, step.ruleset)
    else:  # pragma: no cover - a new step type without a handler is a bug
        raise TypeError(f"no kernel handler for {step!r}")


def _bpf_step(session: Session, step: LoadBpf | AttachBpf | BpfNodeConfig | BpfEndpoint | BpfTunnel) -> None:
    from cni_lab.dataplanes import ebpf  # the program names a node's object holds
    from cni_lab.kernel import bpf  # ebpf labs alone

    if isinstance(step, LoadBpf):
        if bpf.load(step.source, step.pin, ebpf.PROGRAMS):
            session.pinned.append(step.pin)
    elif isinstance(step, AttachBpf):
        rtnl, index = session.rtnl(step.netns), session.index(step.netns, step.ifname)
        _exists_ok(lambda: rtnl.add_clsact(index))
        fd = bpf.open_pinned(f"{step.pin}/{step.program}")
        try:
            rtnl.replace_bpf_filter(index, step.direction, fd, step.program)
        finally:
            os.close(fd)
    elif isinstance(step, BpfNodeConfig):
        vxlan = session.index(step.netns, step.vxlan) if step.vxlan else 0
        value = bpf.NODE_CONFIG.pack(session.index(step.netns, step.uplink), vxlan, step.router_ip.packed, step.vni,
                                     int(step.vxlan is not None))
        bpf.update(f"{step.pin}/node_config", bpf.ZERO, value)
    elif isinstance(step, BpfEndpoint):
        pod_mac = session.rtnl(step.pod_netns).link_mac(step.pod_ifname)
        lxc_mac = session.rtnl(step.netns).link_mac(step.lxc)
        value = bpf.ENDPOINT_INFO.pack(session.index(step.netns, step.lxc), bpf.mac_bytes(pod_mac), bpf.mac_bytes(lxc_mac))
        bpf.update(f"{step.pin}/cilium_lxc", bpf.ENDPOINT_KEY.pack(step.ip.packed), value)
    else:
        key = bpf.TUNNEL_KEY.pack(step.cidr.prefixlen, step.cidr.network_address.packed)
        bpf.update(f"{step.pin}/cilium_tunnel_map", key, bpf.TUNNEL_VALUE.pack(step.node_ip.packed))


def _cni_add(session: Session, step: CniAdd) -> None:
    assert session.files is not None
    conflist = json.loads(_folder(session, step.conflist).read_text())
    pod = step.pod_netns.split(".", 1)[1].replace(".", "/")
    result = cni_runtime.add(step.netns, step.pod_netns, step.container_id, step.ifname, step.cni_path, conflist,
                     session.files, pod)
    cni_runtime.record(_folder(session, step.result), step.netns, step.pod_netns, step.container_id, step.ifname,
               step.cni_path, step.conflist, result)
    got = [ip.get("address", "").split("/")[0] for ip in result.get("ips", [])]
    if step.expect_ip6 is not None and str(step.expect_ip6) not in got:
        raise LabError(f"CNI ADD for pod {pod}: the plugins gave {', '.join(got) or 'no address'}, but the lab "
                       f"expects {step.expect_ip6} too (a dual-stack lab: host-local needs a range per family)")
    if step.expect_ip is not None and str(step.expect_ip) not in got:
        raise LabError(
            f"CNI ADD for pod {pod}: the plugins gave {', '.join(got) or 'no address'}, but the lab expects "
            f"{step.expect_ip} (cni-lab follows host-local's order over the pod CIDR: first pod .2; "
            "options such as rangeStart are not supported)"
        )


def _hint(e: OSError) -> str:
    """What a failure caused by the environment usually means, and the way out."""
    container = privileges.in_container()
    fix = f"run the container with {privileges.container_fix(container)}" if container else "run it as root"
    if e.errno == 30:  # EROFS
        return f" (/run/netns or /proc/sys is read-only here: {fix})"
    if e.errno in (1, 13):  # EPERM, EACCES
        return f" (not permitted: {fix})"
    if e.errno == 2 and "/proc/sys/" in str(e.filename or ""):  # ENOENT: a sysctl this kernel lacks
        return " (this kernel has no such setting: `sudo cni-lab doctor` says what it lacks)"
    if e.errno == 95:  # EOPNOTSUPP
        return " (this kernel lacks the feature: `sudo cni-lab doctor` says which)"
    return ""


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


def reapply(plan: Plan, files: Path) -> None:
    """Apply a running lab's plan again (every step accepts what exists): puts back what the kernel
    dropped with a link that went down. Daemons, CNI ADD and files are not repeated."""
    with Session(files) as session:
        for step in plan.steps:
            if not isinstance(step, (StartBird, WaitBgp, CniAdd, WriteFile)):
                apply_step(session, step)


def converge_bgp(plan: Plan, files: Path, restart: Collection[str] = ()) -> None:
    """Start BIRD again in the node namespaces `restart` (where it died), then wait until every
    node's sessions are Established and its peers' blocks are in the kernel."""
    with Session(files) as session:
        for step in plan.steps:
            if isinstance(step, StartBird) and step.netns in restart:
                apply_step(session, step)
        for step in plan.steps:
            if isinstance(step, WaitBgp):
                apply_step(session, step)


def early_sysctls(plan: Plan) -> dict[str, list[tuple[str, str]]]:
    """The sysctls of each namespace that hold for the namespace as a whole (net/ipv4/ip_forward,
    conf/all, conf/default), which the namespace maker can write as soon as it is in there: no
    link of the namespace has to exist first, nor a module such as br_netfilter be loaded."""
    out: dict[str, list[tuple[str, str]]] = {}
    for step in plan.steps:
        if isinstance(step, SetSysctl) and _namespace_wide(step.key):
            out.setdefault(step.netns, []).append((step.key, step.value))
    return out


def _namespace_wide(key: str) -> bool:
    parts = key.split("/")
    if parts[:1] != ["net"] or parts[1:2] not in (["ipv4"], ["ipv6"]):
        return False
    if "conf" in parts or "neigh" in parts:
        return len(parts) > 3 and parts[3] in ("all", "default")
    return True


BATCHED = (LinkUp, AddAddress, AddRoute, AddNeighbour, AddFdb)  # answered by an acknowledgement alone
EXISTING_IS_FINE = (AddAddress, AddRoute)  # applying a plan twice meets them again


class Batches:
    """Steps that need only the kernel's acknowledgement, queued per namespace and sent together
    (one sendmsg for a pod's address, link and route). Any other step flushes the queues first,
    so the kernel sees the plan's order; each answer is matched to its step, and the first error
    in the plan's order is raised against that step, as if the steps had gone one by one."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.queued: dict[str, list[tuple[int, Step]]] = {}

    def add(self, number: int, step: Step) -> None:
        ns = step.netns  # type: ignore[attr-defined]
        if ns not in self.queued:
            self.session.rtnl(ns).batch()
            self.queued[ns] = []
        self.queued[ns].append((number, step))
        apply_step(self.session, step)  # encodes its request into the namespace's queue

    def flush(self) -> None:
        failures: list[tuple[int, Step, OSError]] = []
        queued, self.queued = self.queued, {}
        for ns, steps in queued.items():
            for (number, step), answer in zip(steps, self.session.rtnl(ns).flush()):
                if answer is not None and not (answer.errno == errno.EEXIST and isinstance(step, EXISTING_IS_FINE)):
                    failures.append((number, step, answer))
        if failures:
            _, step, error = min(failures, key=lambda f: f[0])
            raise StepFailed(step, error)


def _failed(step: Step, e: OSError) -> LabError:
    """The one line `up` says when a step fails: the step as a command, the kernel's answer."""
    return LabError(f"{step.describe()}: {e.strerror or e}{_hint(e)}")


class StepFailed(Exception):
    """A step's request failed in a batch (raised at the flush, carrying its step)."""

    def __init__(self, step: Step, error: OSError) -> None:
        super().__init__(step, error)
        self.step, self.error = step, error


def apply(plan: Plan, files: Path | None = None, progress: Callable[[int, int], None] | None = None) -> None:
    """Apply every step; on any failure or interruption remove what this call created, then re-raise.
    Files go under `files` (the lab's state folder), which the caller removes on failure."""
    total = len(plan.steps)
    # A pause after each step, for tests that interrupt `up` at chosen points (and for watching
    # a lab being built step by step): CNI_LAB_STEP_DELAY=0.05 cni-lab up ...
    delay = float(os.environ.get("CNI_LAB_STEP_DELAY", "0") or 0)
    maker = NamespaceMaker([s.netns for s in plan.steps if isinstance(s, CreateNetns)], early_sysctls(plan))
    with Session(files, maker.sockets) as session:
        batches = Batches(session)
        try:
            maker.start()
            for i, step in enumerate(plan.steps, 1):
                try:
                    if isinstance(step, BATCHED) and not delay:
                        batches.add(i, step)
                    else:
                        batches.flush()
                        if isinstance(step, CreateNetns):
                            maker.wait(step.netns)
                        elif isinstance(step, SetSysctl) and maker.wrote(step.netns, step.key):
                            pass
                        else:
                            apply_step(session, step)
                except OSError as e:
                    raise _failed(step, e) from e
                except StepFailed as failed:
                    raise _failed(failed.step, failed.error) from failed.error
                if progress is not None:
                    progress(i, total)
                if delay:
                    time.sleep(delay)
            try:
                batches.flush()
            except StepFailed as failed:
                raise _failed(failed.step, failed.error) from failed.error
        except BaseException:
            with shielded():
                maker.stop()
                session.close()
                for ns in reversed(maker.created):
                    netns.remove(ns)
                if session.pinned:
                    from cni_lab.kernel import bpf

                    for pin in session.pinned:
                        bpf.remove_pins(pin)
            raise
        finally:
            maker.stop()
            from cni_lab.kernel.rtnl import ENCODER

            ENCODER.save()  # the kinds of message this run encoded, for the next run


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


REMOVERS = 4  # threads unmounting namespaces at once (bench/: 1000 pods, 0.30 s alone, 0.21 s with 4)


def remove_namespaces(names: list[str]) -> list[str]:
    """Kill every process living in these namespaces, then remove them. Returns what was removed.

    An unmount is quick, but once the first namespaces are gone the kernel starts freeing them
    (its netns cleanup work, holding locks for long stretches) and an unmount now and then waits
    behind it for tens of milliseconds; a few threads keep unmounting meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    for pid in netns.pids_in(names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    removed = []
    # pods first, underlay last: the reverse of creation order keeps each step's peer alive
    for depth in sorted({n.count(".") for n in names}, reverse=True):
        group = sorted(n for n in names if n.count(".") == depth)
        if len(group) < 2 * REMOVERS:
            removed += [n for n in group if netns.remove(n)]
            continue
        with ThreadPoolExecutor(REMOVERS, thread_name_prefix="cni-lab-remove") as pool:
            removed += [n for n, gone in zip(group, pool.map(netns.remove, group)) if gone]
    return removed
