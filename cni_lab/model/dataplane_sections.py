"""`dataplane:` and the sections only one data plane reads: `cni:` (the reference plugins, how
the nodes are joined) and `ebpf:` (Cilium's routing mode). Their names and defaults are in the
marked block at the top of scenario.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cni_lab.model.problems import Problems, hint
from cni_lab.model.scenario import (CNI_KEYS, CNI_ROUTING, DATAPLANES, DEFAULT_CNI_PATH, DEFAULT_CNI_ROUTING,
                                    DEFAULT_DATAPLANE, DEFAULT_EBPF_ROUTING, EBPF_KEYS, EBPF_ROUTING, CniSpec,
                                    plugin_types)


def read_dataplane(problems: Problems, document: dict[str, Any]) -> Any:
    """The data plane's name (checked; what the file says, so the loader can stop on a bad one)."""
    dataplane = document.get("dataplane", DEFAULT_DATAPLANE)
    if dataplane not in DATAPLANES:
        problems.add("dataplane", f"{dataplane!r} is not one of {', '.join(DATAPLANES)}{hint(dataplane, DATAPLANES)}")
    return dataplane


def read_cni(problems: Problems, document: dict[str, Any], source: str) -> tuple[CniSpec, dict[str, Any]]:
    """The `cni` section. A conflist given as a path (relative to the scenario file) is read
    and put into the document, so the recorded lab never depends on the file again."""
    raw = document.get("cni")
    if raw is None:
        return CniSpec(), document
    if not isinstance(raw, dict):
        problems.add("cni", "must be a mapping with keys " + ", ".join(CNI_KEYS))
        return CniSpec(), document
    problems.unknown_keys(raw, CNI_KEYS, "cni.")
    routing = raw.get("routing", DEFAULT_CNI_ROUTING)
    if routing not in CNI_ROUTING:
        problems.add("cni.routing", f"{routing!r} is not one of {', '.join(CNI_ROUTING)}{hint(routing, CNI_ROUTING)}")
    cni_path = raw.get("cniPath", DEFAULT_CNI_PATH)
    if not isinstance(cni_path, str) or not cni_path.startswith("/"):
        problems.add("cni.cniPath", f"{cni_path!r} is not an absolute folder")
        cni_path = DEFAULT_CNI_PATH
    conflist = raw.get("conflist")
    conflist_file = None
    if isinstance(conflist, str):
        path = Path(conflist) if Path(conflist).is_absolute() else Path(source).parent / conflist
        conflist_file = str(path)
        try:
            conflist = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            problems.add("cni.conflist", f"cannot read {path} as JSON: {getattr(e, 'strerror', None) or e}")
            conflist = None
        document = {**document, "cni": {**raw, "conflist": conflist}}
    if conflist is not None:
        plugins = conflist.get("plugins") if isinstance(conflist, dict) else None
        if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins):
            problems.add("cni.conflist", "a network configuration list needs \"plugins\": a list of objects with a \"type\"")
            conflist = None
        elif any("/" in t for t in plugin_types(conflist)):
            problems.add("cni.conflist", "a plugin type is a file name in cniPath, not a path")
            conflist = None
    return CniSpec(routing=str(routing), cni_path=cni_path, conflist=conflist, conflist_file=conflist_file), document


def read_ebpf(problems: Problems, raw: Any) -> str:
    """The `ebpf` section: how nodes reach each other's pods (Cilium's routingMode)."""
    if raw is None:
        return DEFAULT_EBPF_ROUTING
    if not isinstance(raw, dict):
        problems.add("ebpf", "must be a mapping with keys " + ", ".join(EBPF_KEYS))
        return DEFAULT_EBPF_ROUTING
    problems.unknown_keys(raw, EBPF_KEYS, "ebpf.")
    routing = raw.get("routing", DEFAULT_EBPF_ROUTING)
    if routing not in EBPF_ROUTING:
        problems.add("ebpf.routing", f"{routing!r} is not one of {', '.join(EBPF_ROUTING)}{hint(routing, EBPF_ROUTING)}")
        return DEFAULT_EBPF_ROUTING
    return str(routing)
