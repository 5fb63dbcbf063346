"""What this process may do: root, the capabilities that building namespaces needs, and whether
it runs in a container (whose flags are then the fix to suggest). Read from /proc; changes nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from cni_lab.errors import LabError

CAP_NET_ADMIN = 12  # links, addresses, routes, neighbours, sysctls of net namespaces
CAP_NET_RAW = 13  # check's raw ICMP sockets (ping)
CAP_SYS_ADMIN = 21  # unshare, setns, the bind mounts under /run/netns
CAPABILITIES = {"CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_SYS_ADMIN": CAP_SYS_ADMIN, "CAP_NET_RAW": CAP_NET_RAW}
# What a container needs, per runtime: --privileged, or exactly the capabilities and a /proc/sys the
# lab can write in its own namespaces (docker and podman mask it read-only by default).
CONTAINER_FLAGS = {
    "docker": "docker run --privileged (or --cap-add NET_ADMIN --cap-add SYS_ADMIN --cap-add NET_RAW "
              "--security-opt systempaths=unconfined --security-opt apparmor=unconfined)",
    "podman": "podman run --privileged (or --cap-add NET_ADMIN,SYS_ADMIN,NET_RAW --security-opt unmask=ALL)",
}


def has_caps(*caps: int) -> bool:
    """Whether every one of these capabilities is in this process's effective set."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return all(eff >> c & 1 for c in caps)


def in_container() -> str | None:
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    try:
        with open("/proc/1/cgroup") as f:
            text = f.read()
        if "docker" in text or "kubepods" in text or "containerd" in text:
            return "a container"
    except OSError:
        pass
    return None


def container_fix(container: str | None) -> str:
    """The flags that give a container what the lab needs, for its runtime (both when unknown)."""
    if container in CONTAINER_FLAGS:
        return CONTAINER_FLAGS[container]
    return f"{CONTAINER_FLAGS['docker']}; {CONTAINER_FLAGS['podman']}"


def require_raw_sockets(command: str) -> None:
    """check pings from raw ICMP sockets: CAP_NET_RAW (podman leaves it out by default)."""
    if has_caps(CAP_NET_RAW):
        return
    container = in_container()
    fix = f"run the container with {container_fix(container)}" if container else "run it as root"
    raise LabError(f"cni-lab {command} needs CAP_NET_RAW for its ICMP probes, which this process does not have: {fix}")


def can_build() -> bool:
    return os.geteuid() == 0 and has_caps(CAP_NET_ADMIN, CAP_SYS_ADMIN)


def require_root(command: str) -> None:
    """Namespaces need CAP_SYS_ADMIN (mounts, unshare) and CAP_NET_ADMIN (links, routes)."""
    if can_build():
        return
    container = in_container()
    if os.geteuid() == 0 and container:
        missing = [c for c, n in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN)) if not has_caps(n)]
        raise LabError(
            f"cni-lab {command} needs {' and '.join(missing)}, which this container ({container}) does not have: "
            f"run it with {container_fix(container)}"
        )
    raise LabError(
        f"cni-lab {command} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to build network namespaces: "
        f"run it as `sudo cni-lab {command} ...`"
    )


def untrusted(path: str | Path) -> str | None:
    """Why a file root is about to execute (or read as code) could have been changed by someone
    else, or None: it and every folder above it must be owned by root and writable by root alone,
    as sudo and ssh require of theirs."""
    target = Path(os.path.abspath(path))
    for place in [target, *target.parents]:
        try:
            info = os.lstat(place)
        except FileNotFoundError:
            continue  # a missing plugin is reported as missing, with the package to install
        if stat.S_ISLNK(info.st_mode):
            resolved = untrusted(os.path.realpath(place))
            if resolved:
                return resolved
            continue
        if info.st_uid != 0:
            return f"{place} is owned by uid {info.st_uid}, not root"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{place} is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'}"
    return None


def require_trusted(paths: Iterable[str], what: str) -> None:
    """Refuse to go on when a file root would execute, or read to choose what to execute, is not root's alone."""
    for path in paths:
        why = untrusted(path)
        if why:
            raise LabError(f"refusing to use {path} as root ({what}): {why}; keep plugins and the files that name "
                           f"them in a folder only root can write (chown root, chmod go-w), as sudo and ssh require")
