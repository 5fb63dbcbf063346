"""The kinds of fault `cni-lab fault` injects and what each takes, as values (pure): faults.py
breaks with them, and an exercise file's `fault:` steps are checked against them without a kernel."""

from __future__ import annotations

# kind → its arguments: a node, a node or `router`, or a pod (NODE/POD)
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "link-down": ("node",),
    "route-del": ("node-or-router", "node"),
    "pod-down": ("pod",),
    "forward-drop": ("node",),
    "bpf-detach": ("pod",),
    "bpf-backend-del": ("node", "pod"),
}
KINDS = tuple(ARGUMENTS)


def usage(kind: str) -> str:
    words = {"node": "NODE", "node-or-router": "NODE", "pod": "NODE/POD"}
    return " ".join([kind, *(words[a] for a in ARGUMENTS[kind])])
