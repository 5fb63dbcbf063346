"""The `policies` section: NetworkPolicy objects inline, or files of them (multi-document YAML,
relative to the scenario). Only read here; policy/reading.py checks them as the API server would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cni_lab.model.problems import Problems
from cni_lab.model.scenario import PolicySource


def read_policies(problems: Problems, value: Any, source: str) -> tuple[PolicySource, ...]:
    """`source`: the scenario's file, which a relative file name is read beside."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add("policies", "must be a list of NetworkPolicy objects or files")
        return ()
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            out.append(PolicySource(f"{source}: policies[{i}]", item))
            continue
        if not isinstance(item, str):
            problems.add(f"policies[{i}]", f"{item!r} is not a NetworkPolicy object or a file")
            continue
        path = Path(item) if Path(item).is_absolute() else Path(source).parent / item
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            problems.add(f"policies[{i}]", f"cannot read {path}: {getattr(e, 'strerror', None) or e}")
            continue
        for j, doc in enumerate(d for d in documents if d is not None):
            if not isinstance(doc, dict):
                problems.add(f"policies[{i}]", f"{path} document {j}: not a NetworkPolicy object")
                continue
            out.append(PolicySource(f"{path} (document {j})", doc))
    return tuple(out)
