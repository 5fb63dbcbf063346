"""The plan is a value: golden files per shipped scenario, and the pure layers stay pure."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from cni_lab import lifecycle, plan

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_plan_matches_golden(path: Path) -> None:
    text = "\n".join(plan.build(lifecycle.load(str(path))).describe()) + "\n"
    golden = GOLDEN / f"{path.stem}.plan"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden plan for {path.name}: run UPDATE_GOLDEN=1 pytest tests/unit"
    assert text == golden.read_text()


def test_interface_names_fit_ifnamsiz() -> None:
    lab = lifecycle.ipam.resolve(lifecycle.model.load_document(
        {"name": "abcdefghijkl", "nodes": [{"name": "abcdefghij", "pods": ["a" * 32]}]}, "s.yaml"))
    for step in plan.build(lab).steps:
        for attr in ("ifname", "peer_ifname", "dev", "master"):
            value = getattr(step, attr, None)
            assert value is None or len(value) <= 15, step


PURE = ["model.py", "ipam.py", "plan.py", "names.py", "dataplanes"]


@pytest.mark.parametrize("module", PURE)
def test_pure_layers_do_not_touch_the_kernel_or_terminal(module: str) -> None:
    base = ROOT / "cni_lab" / module
    for path in [base] if base.is_file() else sorted(base.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"pyroute2", "subprocess", "rich", "socket"}, path
