"""The `namespaces` section, and labels wherever the scenario gives them (a namespace's, a pod's,
a Service's selector)."""

from __future__ import annotations

import re
from typing import Any

from cni_lab.model.labels import is_label_key, is_label_value
from cni_lab.model.problems import Problems
from cni_lab.model.scenario import DEFAULT_NAMESPACE, NAMESPACE_LABEL, Labels, NamespaceSpec

NAMESPACE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?\Z")  # a DNS label, shortened to fit netns names


def read_labels(problems: Problems, value: Any, key: str) -> Labels:
    """Labels as Kubernetes takes them; a YAML number stands for its text (`version: 2`)."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        problems.add(key, "must be a mapping of label keys to values")
        return ()
    out = []
    for k, v in value.items():
        if not is_label_key(k):
            problems.add(f"{key}.{k}", f"{k!r} is not a valid label key")
        elif not isinstance(v, (str, int, float)) or isinstance(v, bool) or not is_label_value(str(v)):
            problems.add(f"{key}.{k}", f"{v!r} is not a valid label value (up to 63 of [A-Za-z0-9-_.])")
        else:
            out.append((k, str(v)))
    return tuple(sorted(out))


def read_namespaces(problems: Problems, value: Any) -> tuple[NamespaceSpec, ...]:
    """`namespaces: {x: {labels: {team: red}}, y: {}}`; `default` always exists. Each gets
    kubernetes.io/metadata.name=<name>, as Kubernetes adds it."""
    raw: dict[Any, Any] = {}
    if value is not None and not isinstance(value, dict):
        problems.add("namespaces", "must map namespace names to {labels: {...}}")
    elif value is not None:
        raw = value
    out: dict[str, Labels] = {DEFAULT_NAMESPACE: ((NAMESPACE_LABEL, DEFAULT_NAMESPACE),)}
    for name, spec in raw.items():
        key = f"namespaces.{name}"
        if not isinstance(name, str) or not NAMESPACE_NAME.match(name):
            problems.add(key, f"{name!r} is not a valid namespace name: 1-32 of [a-z0-9-]")
            continue
        spec = spec or {}
        if not isinstance(spec, dict):
            problems.add(key, "must be a mapping with keys labels")
            continue
        problems.unknown_keys(spec, ("labels",), f"{key}.")
        labels = dict(read_labels(problems, spec.get("labels"), f"{key}.labels"))
        labels[NAMESPACE_LABEL] = name
        out[name] = tuple(sorted(labels.items()))
    return tuple(NamespaceSpec(name, labels) for name, labels in out.items())
