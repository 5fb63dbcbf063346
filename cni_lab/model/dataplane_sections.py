"""`dataplane:` and the sections only one data plane reads: `cni:` (the reference plugins, how
the nodes are joined), `ebpf:` (Cilium's routing mode, and the Helm values the lab runs with) and
`calico:` (the IP pool's encapsulation and calico_backend, for `bgp`).
Their names and defaults are in the marked block at the top of scenario.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cni_lab.dataplanes.registry as registry  # the module alone: the package sits above the model
from cni_lab.model.problems import Problems, hint
from cni_lab.model.scenario import (CALICO_BACKENDS, CALICO_KEYS, CALICO_MODES, CNI_KEYS, CNI_ROUTING, DATAPLANES,
                                    DEFAULT_CNI_PATH, DEFAULT_CNI_ROUTING, DEFAULT_DATAPLANE, DEFAULT_EBPF_ROUTING,
                                    EBPF_KEYS, EBPF_ROUTING, CalicoSpec, CniSpec, plugin_types)


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


# Cilium's Helm values as the lab's ebpf runs them (dataplanes/ebpf.py): each key's one value, and for
# each other value Cilium takes, why it is refused (what it needs that the lab leaves out). A key left
# out means that one value; none is stored in the Scenario, as there is nothing to choose.
CILIUM_VALUES: dict[str, tuple[bool | str, dict[bool | str, str]]] = {
    "kubeProxyReplacement": (True, {
        False: "the lab's ebpf is kube-proxy-free (its programs balance Services), and BPF host routing needs "
               "kube-proxy replacement; for kube-proxy use another data plane (host-gw, vxlan, bgp, cni)"}),
    "bpf.masquerade": (True, {
        False: "BPF host routing needs bpf.masquerade (iptables masquerade would take pods' packets through the "
               "node's stack); for no masquerade at all set networking.masquerade: false"}),
    "socketLB.enabled": (False, {
        True: "the lab has no socket LB (cgroup connect hooks): it balances per packet in the tc programs "
              "(cil_from_container, cil_from_netdev), as Cilium does for pods with socketLB.hostNamespaceOnly"}),
    "socketLB.hostNamespaceOnly": (True, {
        False: "that gives pods socket LB, which the lab does not have: it balances pods' packets in the tc "
               "program cil_from_container"}),
    "loadBalancer.algorithm": ("random", {
        "maglev": "the lab picks a backend slot at random (lb4_select_backend_id_random) and builds no Maglev "
                  "lookup table; use random"}),
    "loadBalancer.mode": ("snat", {
        "dsr": "the lab has SNAT mode only: a NodePort's packet for a backend on another node leaves with the "
               "node's address and the reply comes back through it; no direct server return",
        "hybrid": "DSR for TCP, SNAT for UDP: the lab has SNAT mode only (no direct server return)"}),
    "loadBalancer.acceleration": ("disabled", {
        "native": "the lab has no XDP program: NodePorts are balanced at eth0's tc ingress (cil_from_netdev)",
        "best-effort": "the lab has no XDP program: NodePorts are balanced at eth0's tc ingress (cil_from_netdev)"}),
    "healthChecking": (False, {
        True: "the lab runs no cilium-health endpoints or probes between nodes (`cni-lab check` probes every "
              "pair instead); use false"}),
    "nodePort.enabled": (True, {
        False: "kube-proxy replacement includes NodePorts, which the lab balances in cil_from_netdev (a lab "
               "without NodePort Services has none)"}),
}
# kubeProxyReplacement is a string in Cilium's agent and values.yaml ("true"/"false"): both spellings
CILIUM_STRING_BOOLS = ("kubeProxyReplacement",)


def read_ebpf(problems: Problems, raw: Any) -> str:
    """The `ebpf` section: how nodes reach each other's pods (Cilium's routingMode), and the Helm
    values that say the rest of what the lab runs, checked."""
    if raw is None:
        return DEFAULT_EBPF_ROUTING
    if not isinstance(raw, dict):
        problems.add("ebpf", "must be a mapping with keys " + ", ".join(EBPF_KEYS))
        return DEFAULT_EBPF_ROUTING
    problems.unknown_keys(raw, EBPF_KEYS, "ebpf.")
    read_cilium_values(problems, raw)
    if "routing" in raw and "routingMode" in raw:
        problems.add("ebpf.routingMode", "give routing or routingMode (Cilium's Helm name for it), not both")
        return DEFAULT_EBPF_ROUTING
    key = "routingMode" if "routingMode" in raw else "routing"
    routing = raw.get(key, DEFAULT_EBPF_ROUTING)
    if routing not in EBPF_ROUTING:
        problems.add(f"ebpf.{key}", f"{routing!r} is not one of {', '.join(EBPF_ROUTING)}{hint(routing, EBPF_ROUTING)}")
        return DEFAULT_EBPF_ROUTING
    return str(routing)


def read_cilium_values(problems: Problems, raw: dict[str, Any]) -> None:
    """Each Helm value of CILIUM_VALUES the section gives: its own value passes, another is one
    line naming the key path and why."""
    sections: dict[str, tuple[str, ...]] = {}
    for path in CILIUM_VALUES:
        if "." in path:
            section, key = path.split(".")
            sections[section] = (*sections.get(section, ()), key)
    for section, keys in sections.items():
        value = raw.get(section)
        if value is not None and not isinstance(value, dict):
            problems.add(f"ebpf.{section}", "must be a mapping with keys " + ", ".join(keys))
        elif value is not None:
            problems.unknown_keys(value, keys, f"ebpf.{section}.")
    for path, (accepted, refused) in CILIUM_VALUES.items():
        section, _, key = path.rpartition(".")
        mapping = raw.get(section) if section else raw
        if not isinstance(mapping, dict) or mapping.get(key) is None:
            continue
        value = mapping[key]
        if path in CILIUM_STRING_BOOLS and value in ("true", "false"):
            value = value == "true"
        if type(value) is type(accepted) and value == accepted:
            continue
        if type(value) is type(accepted) and value in refused:
            problems.add(f"ebpf.{path}", f"{yaml_word(value)}: {refused[value]}")
        elif isinstance(accepted, bool):
            problems.add(f"ebpf.{path}", f"{value!r} is not true or false")
        else:
            choices = (accepted, *refused)
            problems.add(f"ebpf.{path}", f"{value!r} is not one of {', '.join(map(str, choices))}"
                                         f"{hint(value, tuple(map(str, choices)))}")


def yaml_word(value: bool | str) -> str:
    """A value as the scenario file spells it (true, not Python's True)."""
    return str(value).lower() if isinstance(value, bool) else value


def read_calico(problems: Problems, raw: Any, dataplane: Any) -> CalicoSpec:
    """The `calico` section: the IP pool's vxlanMode and ipipMode (Never, Always, CrossSubnet; at
    most one not Never, as Calico's IPPool validation says) and calico_backend (bird, or vxlan:
    VXLAN without BGP, which needs the pool to encapsulate)."""
    if raw is None:
        return CalicoSpec()
    reader = registry.SECTION_PLANE["calico"]
    if dataplane != reader:
        problems.add("calico", f"only dataplane {reader} reads it (Calico's IP pool and backend); this lab's "
                               f"dataplane is {dataplane}")
        return CalicoSpec()
    if not isinstance(raw, dict):
        problems.add("calico", "must be a mapping with keys " + ", ".join(CALICO_KEYS))
        return CalicoSpec()
    problems.unknown_keys(raw, CALICO_KEYS, "calico.")
    chosen: dict[str, str] = {}
    for key, choices, default in (("vxlanMode", CALICO_MODES, registry.CALICO_DEFAULT_MODE),
                                  ("ipipMode", CALICO_MODES, registry.CALICO_DEFAULT_MODE),
                                  ("backend", CALICO_BACKENDS, registry.CALICO_DEFAULT_BACKEND)):
        value = raw.get(key, default)
        if value not in choices:
            problems.add(f"calico.{key}", f"{value!r} is not one of {', '.join(choices)}{hint(value, choices)}")
            value = default
        chosen[key] = str(value)
    spec = CalicoSpec(vxlan_mode=chosen["vxlanMode"], ipip_mode=chosen["ipipMode"], backend=chosen["backend"])
    if spec.vxlan_mode != "Never" and spec.ipip_mode != "Never":
        problems.add("calico.ipipMode", f"ipipMode and vxlanMode cannot both be enabled (Calico's IPPool "
                                        f"validation): {spec.ipip_mode} and {spec.vxlan_mode}; set one to Never")
    elif not spec.runs_bird and spec.ipip_mode != "Never":
        problems.add("calico.ipipMode", f"{spec.ipip_mode} with backend vxlan: IPIP needs BGP (calico_backend "
                                        "bird); use vxlanMode instead")
    elif not spec.runs_bird and spec.vxlan_mode == "Never":
        problems.add("calico.vxlanMode", "Never with backend vxlan: without BGP the only way to another node's "
                                         "pods is the VXLAN tunnel; use Always or CrossSubnet")
    return spec
