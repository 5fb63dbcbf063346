"""Type hints everywhere, checked (house style rule 10)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "cni_lab", "--ignore-missing-imports", "--no-error-summary"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
