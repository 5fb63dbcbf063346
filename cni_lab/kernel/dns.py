"""The cluster DNS's side effects: dnsmasq in the DNS pod's namespace, and every pod's
resolv.conf where `ip netns exec` looks for it.

dnsmasq (Debian's dnsmasq-base: the program alone, no service unit) reads only the config the lab
wrote (`--conf-file`, which says `no-resolv` and `no-hosts`: nothing from /etc, no upstream), writes
its pid file and log into the lab's state folder and daemonizes once it listens. `ip netns exec NS`
bind-mounts every file of /etc/netns/NS/ over its namesake in /etc, in a mount namespace of its
own: that is how a pod's processes see the resolv.conf kubelet would have written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from cni_lab import names
from cni_lab.errors import LabError
from cni_lab.kernel.daemons import alive, read_pid, start_daemon

PACKAGE = "dnsmasq-base"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def program() -> str | None:
    return shutil.which("dnsmasq", path=SEARCH_PATH)


def require(source: str) -> None:
    if program() is None:
        raise LabError(f"{source}: cluster DNS needs dnsmasq, not installed here: run `sudo apt-get install {PACKAGE}` "
                       "(or `sudo ./scripts/setup.sh`), or set `dns: false`")


def start_dnsmasq(netns: str, conf: Path, pidfile: Path, log: Path) -> int:
    """(Re)start dnsmasq in `netns`: the one the pid file names stops first (its port freed)."""
    stop_dnsmasq(pidfile, netns)
    binary = program()
    if binary is None:
        raise LabError(f"dnsmasq is not installed here: run `sudo apt-get install {PACKAGE}`")
    return start_daemon("dnsmasq", netns, [binary, f"--conf-file={conf}", f"--pid-file={pidfile}",
                                           f"--log-facility={log}"], pidfile)


def stop_dnsmasq(pidfile: Path, netns: str | None = None) -> bool:
    """SIGTERM the dnsmasq the pid file names (only if it is dnsmasq, in `netns` when given), and
    wait until it has gone. False: none ran."""
    pid = read_pid(pidfile)
    if pid is None or not alive(pid, netns) or _command(pid) != "dnsmasq":
        pidfile.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not alive(pid):
            break
        time.sleep(0.005)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True


def running(pidfile: Path, netns: str) -> int | None:
    """The pid of the lab's dnsmasq when it runs in `netns`, else None."""
    pid = read_pid(pidfile)
    return pid if pid is not None and alive(pid, netns) and _command(pid) == "dnsmasq" else None


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def write_resolv_conf(netns: str, content: str) -> None:
    folder = Path(names.resolv_conf_dir(netns))
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = folder / ".resolv.conf.tmp"
    tmp.write_text(content)
    os.chmod(tmp, 0o644)
    tmp.replace(folder / "resolv.conf")


def read_resolv_conf(netns: str) -> str | None:
    try:
        return (Path(names.resolv_conf_dir(netns)) / "resolv.conf").read_text()
    except OSError:
        return None


def remove_resolv_confs(lab: str) -> list[str]:
    """Every /etc/netns/<namespace of the lab>/ folder: its resolv.conf, then the folder (left
    where something else was put in it). Returns the folders removed."""
    root = Path(names.NETNS_ETC)
    removed = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []
    for entry in entries:
        if names.lab_of_netns(entry) != lab:
            continue
        folder = root / entry
        for name in ("resolv.conf", ".resolv.conf.tmp"):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
            removed.append(str(folder))
    return removed


def leftovers() -> list[str]:
    """Every /etc/netns folder of any lab (the leak check's)."""
    try:
        return [f"{names.NETNS_ETC}/{e}" for e in os.listdir(names.NETNS_ETC) if names.lab_of_netns(e)]
    except OSError:
        return []
