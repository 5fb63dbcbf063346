"""Services from outside the scenario (`service apply`, an exercise's `service:` step): a YAML
file (or an inline value) holding one Service or a list of them, each written either as the
scenario's own `services:` entry or as a Kubernetes manifest (`apiVersion: v1`, `kind: Service`),
which is mapped to the same entry and checked by the same reader (service_specs.py).

    - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}   # a scenario entry
    ---
    apiVersion: v1                                                               # a manifest
    kind: Service
    metadata: {name: web, namespace: default}
    spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}

A manifest's metadata.labels and annotations are read and not used (nothing here selects
Services); a spec key the lab does not build (sessionAffinity, loadBalancerIP ...) is refused,
as the scenario refuses it. Problems are named as the scenario's `services:` entries would be
(`services[1].ports[0].port`), in the order the file gives them.

Pure: reads a file, never the kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cni_lab.model.problems import Problems
from cni_lab.model.scenario import ServiceSpec
from cni_lab.model.service_specs import read_services

MANIFEST_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
METADATA_KEYS = ("name", "namespace", "labels", "annotations")
SPEC_KEYS = ("selector", "ports", "type", "externalTrafficPolicy", "clusterIP")


def is_manifest(document: Any) -> bool:
    return isinstance(document, dict) and ("kind" in document or "apiVersion" in document)


def entry_of_manifest(p: Problems, document: dict[str, Any], at: str) -> dict[str, Any] | None:
    """A `kind: Service` manifest → the scenario entry it stands for (None: refused, said in `p`)."""
    p.unknown_keys(document, MANIFEST_KEYS, f"{at}.")
    if document.get("apiVersion") != "v1" or document.get("kind") != "Service":
        p.add(at, f"apiVersion {document.get('apiVersion')!r} kind {document.get('kind')!r}: "
              "only Services (apiVersion: v1, kind: Service) are applied here")
        return None
    meta, spec = document.get("metadata"), document.get("spec")
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        p.add(at, "a Service manifest needs metadata (name, namespace) and spec (selector, ports)")
        return None
    p.unknown_keys(meta, METADATA_KEYS, f"{at}.metadata.")
    p.unknown_keys(spec, SPEC_KEYS, f"{at}.spec.")
    entry = {k: v for k, v in spec.items() if k in SPEC_KEYS}
    entry.update({k: meta[k] for k in ("name", "namespace") if k in meta})
    return entry  # a port's appProtocol and the like: refused by the ports' own check


def read_service_documents(p: Problems, documents: list[Any], namespaces: set[str]) -> tuple[ServiceSpec, ...]:
    """Documents (each a Service, as entry or manifest, or a list of them) → the Services, checked
    together as one `services:` list is (a name or a nodePort given twice is refused)."""
    entries: list[Any] = []
    for document in documents:
        items = document if isinstance(document, list) else [document]
        for item in items:
            at = f"services[{len(entries)}]"
            entries.append(entry_of_manifest(p, item, at) if is_manifest(item) else item)
    # a refused manifest keeps its place, so every index stays the file's: read as an empty entry,
    # whose problems are left out (the manifest's own were said above)
    refused = tuple(f"{p.source}: services[{i}]{end}" for i, e in enumerate(entries) if e is None for end in ".:")
    before = len(p.lines)
    specs = read_services(p, [{} if e is None else e for e in entries], namespaces)
    p.lines[before:] = [line for line in p.lines[before:] if not line.startswith(refused)]
    return specs


def read_service_values(p: Problems, value: Any, source: str, namespaces: set[str], key: str) -> tuple[ServiceSpec, ...]:
    """An exercise's `service:` value: a file (relative to `source`), a Service (entry or
    manifest), or a list of these; its problems named after `key` (`break[0].service: services[1].name`)."""
    documents: list[Any] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            path = Path(item) if Path(item).is_absolute() else Path(source).parent / item
            found = _documents(p, path, key)
            if found is None:
                return ()
            documents += found
        else:
            documents.append(item)
    within = Problems(f"{p.source}: {key}")
    specs = read_service_documents(within, documents, namespaces)
    p.lines += within.lines
    return specs


def _documents(p: Problems, path: Path, key: str) -> list[Any] | None:
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        p.add(key, f"cannot read {path}: {getattr(e, 'strerror', None) or e}")
        return None


def load_service_file(path: str, namespaces: set[str]) -> tuple[ServiceSpec, ...]:
    """The Services of one file (`service apply`), every problem at once, each line naming `path`;
    LabError when there are problems or no Service at all."""
    p = Problems(path)
    documents = _documents(p, Path(path), "file")
    p.raise_if_any()
    specs = read_service_documents(p, documents or [], namespaces)
    if not p.lines and not specs:
        p.add("file", "no Service in it (a `services:` entry, a list of them, or a kind: Service manifest)")
    p.raise_if_any()
    return specs


__all__ = ["MANIFEST_KEYS", "METADATA_KEYS", "SPEC_KEYS", "entry_of_manifest", "is_manifest",
           "load_service_file", "read_service_documents", "read_service_values"]
