"""Test tiers: tests/unit needs nothing; tests/kernel builds real namespaces and needs root.

The session ends by checking that no lab object is left on the machine (namespaces, state
files, processes), whatever the tests did.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cni_lab import names

ROOT = Path(__file__).resolve().parent.parent


def is_root() -> bool:
    from cni_lab import privileges

    return privileges.can_build()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="kernel test: needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN); CI runs it as root")
    for item in items:
        if "tests/kernel" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.kernel)
            if not is_root():
                item.add_marker(skip)


def lab_objects() -> set[str]:
    from cni_lab import state
    from cni_lab.kernel import bpf, netns

    found = {f"netns {n}" for n in netns.listing() if n.startswith(names.PREFIX)}
    found |= {f"state {n}" for n in state.names()}
    found |= {f"pinned BPF {names.bpf_dir(n)}" for n in bpf.pinned_labs()}
    # daemons (BIRD) run in a folder of the lab's state: any process still there is a leak; dnsmasq
    # (kube-dns) daemonizes into / but names its config and pid file there on its command line
    root = str(state.STATE_ROOT)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
                command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + "/"):
                found.add(f"process {entry} in {cwd}")
            elif command[0].endswith(b"dnsmasq") and any(root.encode() + b"/" in arg for arg in command):
                found.add(f"dnsmasq {entry}: {b' '.join(command).decode(errors='replace')}")
    # every pod's resolv.conf folder, /etc/netns/cnilab-<lab>...
    from cni_lab.kernel import dns

    found |= {f"resolv.conf folder {f}" for f in dns.leftovers()}
    return found


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_suite() -> object:
    before = lab_objects() if is_root() else set()
    yield
    if is_root():
        left = lab_objects() - before
        assert not left, f"the test suite left lab objects behind: {sorted(left)}"
