"""The model is used through its package's names: code and tests outside cni_lab/model/ import
from `cni_lab.model` and touch nothing private, so its sections can be rearranged freely."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "cni_lab" / "model"


def outside_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("cni_lab.model."):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            elif node.module == "cni_lab.model":
                found += [f"line {node.lineno}: imports {a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "model" \
                and node.attr.startswith("_"):
            found.append(f"line {node.lineno}: model.{node.attr}")
    return found


def test_nothing_outside_the_model_uses_its_private_parts_or_its_modules() -> None:
    files = [p for folder in ("cni_lab", "tests", "bench") for p in (ROOT / folder).rglob("*.py") if MODEL not in p.parents]
    offenders = {str(p.relative_to(ROOT)): uses for p in files if (uses := outside_uses(p))}
    assert not offenders


def test_the_finder_finds_them(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from cni_lab import model\nfrom cni_lab.model.nodes import read_nodes\nmodel._Checker('x')\n")
    assert outside_uses(sample) == ["line 2: from cni_lab.model.nodes import ...", "line 3: model._Checker"]
