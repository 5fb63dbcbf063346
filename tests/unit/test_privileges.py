"""Files root would execute must be root's alone (as sudo and ssh require of theirs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cni_lab import catalog, privileges
from cni_lab.dataplanes import get
from cni_lab.errors import LabError


def test_a_file_others_can_change_is_not_trusted(tmp_path: Path) -> None:
    plugin = tmp_path / "bridge"
    plugin.write_text("#!/bin/sh\n")
    os.chmod(plugin, 0o755)
    why = privileges.untrusted(plugin)
    assert why is not None  # under /tmp (writable by others), or owned by a user who is not root
    with pytest.raises(LabError, match=f"refusing to use {plugin} as root \\(cni\\): .*chmod go-w"):
        privileges.require_trusted([str(plugin)], "cni")


@pytest.mark.skipif(not os.path.isdir("/usr/lib/cni") or os.stat("/usr/lib/cni").st_uid != 0,
                    reason="Debian's containernetworking-plugins is not installed")
def test_the_systems_plugins_are_trusted() -> None:
    assert privileges.untrusted("/usr/lib/cni/bridge") is None


def test_a_cni_lab_names_every_plugin_it_runs_and_its_conflist() -> None:
    lab = catalog.load("cni-ptp")
    files = get("cni").runs_as_root(lab)
    assert "/usr/lib/cni/ptp" in files and "/usr/lib/cni/host-local" in files
    conflist = [f for f in files if f.endswith(".conflist")]
    assert conflist and catalog.shipped(conflist[0])  # shipped with cni-lab: trusted like its code
    assert get("host-gw").runs_as_root(catalog.load("two-nodes")) == ()
