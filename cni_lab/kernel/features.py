"""What this kernel can make, asked of it in a scratch namespace of the lab's prefix (so the leak
sweep knows it): `up` refuses a scenario that needs what is missing in one line, `doctor` lists it,
and the tests skip with the same words."""

from __future__ import annotations

from cni_lab import names
from cni_lab.kernel import netns
from cni_lab.kernel.rtnl import Rtnl


def ipip_missing() -> str | None:
    """Why this kernel cannot make Calico's tunl0 (no ipip module), or None: an ipip link made and
    removed (module autoloading included, as `up` would meet it)."""
    name = f"{names.PREFIX}features.ipip"
    netns.create(name)
    try:
        rtnl = Rtnl(name)
        try:
            rtnl.add_link("drip", "ipip")
        except OSError as e:
            return f"this kernel makes no ipip device ({e.strerror or e}): Calico's ipipMode needs tunl0; use vxlanMode"
        finally:
            rtnl.close()
    finally:
        netns.remove(name)
    return None
