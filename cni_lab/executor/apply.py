"""Apply a plan to the kernel as a transaction, and apply a running lab's plan again.

Every object a plan makes lives inside a namespace the plan created, so undoing is removing
those namespaces (the kernel deletes their links, veth peers included, with them). Steps accept
"already exists" after checking the object is the right kind, so applying twice is safe.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Collection, Iterator

from cni_lab import privileges
from cni_lab.errors import LabError
from cni_lab.executor.handlers import apply_step
from cni_lab.kernel import netns
from cni_lab.kernel.session import NamespaceMaker, Session
from cni_lab.plan import Plan
from cni_lab.steps import (
    AddAddress,
    AddFdb,
    AddNeighbour,
    AddBlackhole,
    AddRoute,
    CniAdd,
    CreateNetns,
    LinkUp,
    SetSysctl,
    StartBird,
    StartDnsmasq,
    Step,
    WaitBgp,
    WriteFile,
)

# Session and apply_step are this module's too: a caller applying a few steps of its own (the
# policy steps of a running lab) opens a Session and applies each, as `apply` does.
__all__ = ["Session", "apply", "apply_step", "converge_bgp", "early_sysctls", "reapply", "shielded"]


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
            if not isinstance(step, (StartBird, WaitBgp, CniAdd, WriteFile, StartDnsmasq)):
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


BATCHED = (LinkUp, AddAddress, AddRoute, AddBlackhole, AddNeighbour, AddFdb)  # answered by an acknowledgement alone
EXISTING_IS_FINE = (AddAddress, AddRoute, AddBlackhole)  # applying a plan twice meets them again


class Batches:
    """Steps that need only the kernel's acknowledgement, queued per namespace and sent together
    (one sendmsg for a pod's address, link and route). Any other step flushes the queues first,
    so the kernel sees the plan's order; each answer is matched to its step, and the first error
    in the plan's order is raised against that step, as if the steps had gone one by one."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.queued: dict[str, list[tuple[int, Step]]] = {}

    def add(self, number: int, step: Step) -> None:
        ns = step.netns
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
    """The one line `up` says when a step fails: the step as a command (the first of a step that
    is several, BpfServices' map entries), the kernel's answer."""
    first, *more = step.describe().splitlines()
    command = first + (f"  (… and {len(more)} more in this step)" if more else "")
    return LabError(f"{command}: {e.strerror or e}{_hint(e)}")


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
