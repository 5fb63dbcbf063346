"""One way for the unit tests to make a lab: a scenario document built from keywords, loaded and
resolved through the same public entry points `up` uses (`model.load_document`, then
`catalog.resolve`). Pure: no root, no kernel.

    make_lab([{"name": "n1", "pods": ["web"]}], dataplane="bgp")   # the resolved Lab
    scenario_doc(nodes, services=[...])                             # the document alone
    lab_of(doc)                                                     # a document written out in full

A key left at None is left out of the document, so the loader's defaults apply exactly as they do
to a scenario file that does not name it.
"""

from __future__ import annotations

from typing import Any

from cni_lab import catalog, model
from cni_lab.cluster import Lab

SOURCE = "s.yaml"  # the file name the loader's one-line errors start with
TWO_NODES: list[dict[str, Any]] = [{"name": "node1", "pods": 1}, {"name": "node2", "pods": 1}]


def scenario_doc(nodes: list[Any] | None = None, *, name: str = "lab", dataplane: str | None = None,
                 networking: dict[str, Any] | None = None, namespaces: dict[str, Any] | None = None,
                 services: list[dict[str, Any]] | None = None, policies: list[dict[str, Any]] | None = None,
                 **keys: Any) -> dict[str, Any]:
    """A scenario document as a YAML file would hold it; `keys` are other top-level keys in the
    file's spelling (`outside`, `probe`, `expect`, `allowOverlap`, `ebpf`)."""
    doc: dict[str, Any] = {"name": name}
    given = {"dataplane": dataplane, "networking": networking, "namespaces": namespaces,
             "nodes": nodes if nodes is not None else [dict(n) for n in TWO_NODES],
             "services": services, "policies": policies, **keys}
    doc.update({k: v for k, v in given.items() if v is not None})
    return doc


def lab_of(doc: dict[str, Any], source: str = SOURCE) -> Lab:
    """A whole document in, the resolved lab out (LabError for a document the loader refuses)."""
    return catalog.resolve(model.load_document(doc, source))


def make_lab(nodes: list[Any] | None = None, *, source: str = SOURCE, **keys: Any) -> Lab:
    """The resolved lab of `scenario_doc(nodes, **keys)`."""
    return lab_of(scenario_doc(nodes, **keys), source)


def pod(name: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod entry of a node's `pods` list, with its namespace and labels when given."""
    entry: dict[str, Any] = {"name": name}
    if namespace is not None:
        entry["namespace"] = namespace
    if labels is not None:
        entry["labels"] = labels
    return entry


def network_policy(name: str, spec: dict[str, Any], namespace: str = "x") -> dict[str, Any]:
    """A NetworkPolicy object as `kubectl get -o yaml` shows it (the lab's `policies` entries)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
