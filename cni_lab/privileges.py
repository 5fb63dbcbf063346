"""What this process may do: root, the capabilities that building namespaces needs, and whether
it runs in a container (whose flags are then the fix to suggest). Read from /proc; changes nothing."""

from __future__ import annotations

import os

from cni_lab.errors import LabError

CAP_NET_ADMIN = 12  # links, addresses, routes, neighbours, sysctls of net namespaces
CAP_SYS_ADMIN = 21  # unshare, setns, the bind mounts under /run/netns


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
            "run it with --privileged (or --cap-add NET_ADMIN --cap-add SYS_ADMIN)"
        )
    raise LabError(
        f"cni-lab {command} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to build network namespaces: "
        f"run it as `sudo cni-lab {command} ...`"
    )
