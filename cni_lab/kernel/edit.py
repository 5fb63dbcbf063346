"""Small changes to a running lab, for `fault` and `heal`: a link down and up again, a route taken
out and put back exactly as it was read from the kernel. Each is safe to repeat."""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from cni_lab.kernel import readback


@dataclass(frozen=True)
class SavedRoute:
    """A route as it was in the kernel before a fault removed it (what `heal` puts back)."""

    dst: str
    dev: str
    gateway: str | None = None
    onlink: bool = False
    scope_link: bool = False
    proto: str = "boot"
    text: str = ""  # as `ip route` shows it
    src: str | None = None
    mtu: int | None = None

    @staticmethod
    def of(route: readback.Route) -> SavedRoute:
        return SavedRoute(route.dst, route.dev or "", route.gateway, route.onlink, route.scope == "link", route.proto,
                          route.describe(), route.prefsrc, route.mtu)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> SavedRoute:
        return SavedRoute(**{k: data[k] for k in SavedRoute.__dataclass_fields__ if k in data})


def set_link(ns: str, ifname: str, up: bool) -> None:
    from cni_lab.kernel.rtnl import Rtnl  # pyroute2: see kernel/__init__.py

    rtnl = Rtnl(ns)
    try:
        rtnl.set_link(rtnl.index(ifname), up=up)
    finally:
        rtnl.close()


def delete_route(ns: str, route: SavedRoute) -> None:
    from cni_lab.kernel.rtnl import Rtnl

    rtnl = Rtnl(ns)
    try:
        rtnl.delete_route(IPv4Network(route.dst), rtnl.index(route.dev) if route.dev else None)
    finally:
        rtnl.close()


def add_routes(ns: str, ifname: str, routes: list[tuple[IPv4Network | IPv6Network, IPv4Address | IPv6Address | None,
                                                        bool, bool]],
               src: IPv4Address | IPv6Address | None = None, mtu: int | None = None) -> None:
    """(dst, gateway, onlink, scope link) routes via `ifname`; one that is there already (BIRD
    or the kernel put it back) is as good as added."""
    from cni_lab.kernel.rtnl import Rtnl

    rtnl = Rtnl(ns)
    try:
        index = rtnl.index(ifname)
        for dst, gateway, onlink, scope_link in routes:
            try:
                rtnl.add_route(dst, index, gateway=gateway, onlink=onlink, scope_link=scope_link, src=src, mtu=mtu)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise
    finally:
        rtnl.close()


def restore_route(ns: str, route: SavedRoute) -> None:
    gateway = IPv4Address(route.gateway) if route.gateway else None
    add_routes(ns, route.dev, [(IPv4Network(route.dst), gateway, route.onlink, route.scope_link)],
               IPv4Address(route.src) if route.src else None, route.mtu)


def detach_bpf(ns: str, ifname: str, direction: str) -> None:
    """Take the BPF program off a device's tc hook (`tc filter del dev X <direction>`)."""
    from cni_lab.kernel.rtnl import Rtnl

    rtnl = Rtnl(ns)
    try:
        rtnl.delete_bpf_filter(rtnl.index(ifname), direction)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL):
            raise
    finally:
        rtnl.close()


def _nft(ns: str, args: list[str], script: str | None = None) -> str:
    import subprocess

    try:
        done = subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=script, capture_output=True, text=True)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "ip not found (iproute2)") from None
    if done.returncode != 0:
        raise OSError(errno.EINVAL, f"nft in {ns}: {done.stderr.strip()}")
    return done.stdout


def nft_apply(ns: str, script: str) -> None:
    """Load an nftables script inside a lab namespace (never the machine's own)."""
    _nft(ns, ["-f", "-"], script)


def nft_text(ns: str, *command: str) -> str:
    """An nftables listing of a lab namespace, as `nft list` prints it."""
    return _nft(ns, list(command))


def nft_json(ns: str, *command: str) -> Any:
    """An nftables listing of a lab namespace, as nft's JSON."""
    import json

    return json.loads(_nft(ns, ["-j", *command]) or "{}")
