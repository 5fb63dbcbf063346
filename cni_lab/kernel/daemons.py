"""Daemons the lab runs inside node namespaces (BIRD), and asking them how they are.

Each daemon's files live in a folder of the lab's state; its pid file is how `status` finds it,
and `down` kills whatever runs in the lab's namespaces, so no daemon outlives the lab.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cni_lab.errors import LabError
from cni_lab.kernel import readback

BGP_TIMEOUT = 30.0


def require(programs: tuple[tuple[str, str], ...], dataplane: str) -> None:
    absent = [prog for prog, _ in programs if shutil.which(prog) is None]
    if absent:
        packages = sorted({pkg for prog, pkg in programs if prog in absent})
        raise LabError(f"dataplane {dataplane} needs {' and '.join(absent)}, not installed here: "
                       f"run `sudo apt-get install {' '.join(packages)}` (or `sudo ./scripts/setup.sh`)")


def start_daemon(name: str, netns: str, argv: list[str], pidfile: Path, cwd: Path | None = None) -> int:
    """Start a program that daemonizes in `netns` (BIRD, dnsmasq): its pid comes from its pid file."""
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], cwd=cwd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise LabError(f"{name} in {netns} did not start: {(done.stderr or done.stdout).strip()}")
    for _ in range(100):
        pid = read_pid(pidfile)
        if pid is not None:
            return pid
        time.sleep(0.01)
    raise LabError(f"{name} in {netns} started but wrote no pid file ({pidfile})")


def start_bird(netns: str, folder: Path) -> int:
    """Start BIRD in `netns`, its files in `folder`."""
    pidfile = folder / "bird.pid"
    pidfile.unlink(missing_ok=True)
    return start_daemon("bird", netns, ["bird", "-c", "bird.conf", "-s", "bird.ctl", "-P", "bird.pid"], pidfile,
                        cwd=folder)


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None, netns: str | None = None) -> bool:
    """The process runs (not a zombie) and, when asked, in that namespace."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ", 1)[1].startswith("Z"):
                return False
        if netns is not None:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
    except (OSError, IndexError):
        return False
    return True


@dataclass(frozen=True)
class Session:
    name: str
    proto: str
    state: str  # up / down / start
    since: str
    info: str  # "Established", "Active", "Connect" ...


def protocols(socket: Path) -> list[Session]:
    """`birdc show protocols`, parsed."""
    done = subprocess.run(["birdc", "-s", str(socket), "show", "protocols"], capture_output=True, text=True, timeout=5)
    if done.returncode != 0:
        raise LabError(f"birdc -s {socket}: {(done.stdout + done.stderr).strip() or 'no answer'}")
    out = []
    for line in done.stdout.splitlines():
        m = re.match(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+(?: \S+)?)\s*(.*)$", line)
        if m and m.group(1) not in ("Name", "BIRD") and not line.startswith("BIRD"):
            out.append(Session(m.group(1), m.group(2), m.group(4), m.group(5), m.group(6).strip()))
    return out


def resync_bird(socket: Path) -> None:
    """`birdc restart all`: BIRD drops and relearns its sessions, and exports its routes to the
    kernel again (after a fault took one out). A BIRD that does not answer is left as it is."""
    subprocess.run(["birdc", "-s", str(socket), "restart", "all"], capture_output=True, timeout=10)


def wait_bgp(netns: str, node: str, folder: Path, peers: tuple[str, ...], learned: tuple[object, ...],
             timeout: float = BGP_TIMEOUT) -> None:
    """Until every session is Established and every remote block is a `proto bird` route here."""
    deadline = time.monotonic() + timeout
    sessions: list[Session] = []
    missing: list[str] = [str(c) for c in learned]
    while time.monotonic() < deadline:
        try:
            sessions = protocols(folder / "bird.ctl")
        except LabError:
            sessions = []
        established = {s.name for s in sessions if s.proto == "BGP" and s.info.startswith("Established")}
        view = readback.read(netns, [])
        routes = {r.dst for r in [*view.routes, *view.routes6] if r.proto == "bird"}
        missing = [str(c) for c in learned if str(c) not in routes]
        if set(peers) <= established and not missing:
            return
        time.sleep(0.05)
    by_name = {s.name: s for s in sessions}
    stuck = [p for p in peers if not (by_name.get(p) and by_name[p].info.startswith("Established"))]
    if stuck:
        s = by_name.get(stuck[0])
        state = f"{s.state} {s.info}".strip() if s else "no such protocol (is bird running?)"
        raise LabError(f"BGP did not converge in {timeout:.0f}s: {node}'s session {stuck[0]} is {state} "
                       f"(log: {folder / 'bird.log'})")
    raise LabError(f"BGP did not converge in {timeout:.0f}s: {node} has not learned {', '.join(missing)}")
