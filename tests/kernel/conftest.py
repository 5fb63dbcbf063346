"""Kernel-test fixtures: build a lab from a scenario dict under a unique name, always tear it down."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from cni_lab import catalog, lifecycle, model
from cni_lab.cluster import Lab

_counter = itertools.count()


@pytest.fixture
def make_lab(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """make_lab(document) → a running Lab under a name unique to this test; removed afterwards."""
    made: list[str] = []

    def make(document: dict[str, Any], up: bool = True) -> Lab:
        name = f"t{os.getpid() % 1000}-{next(_counter)}"
        lab = catalog.resolve(model.load_document({**document, "name": name}, f"<{request.node.name}>"))
        made.append(name)
        if up:
            lifecycle.up(lab)
        return lab

    try:
        yield make
    finally:
        for name in made:
            lifecycle.down(name)


@pytest.fixture
def trusted_dir() -> Iterator[Path]:
    """A folder only root can write (what `up` requires of files that name CNI plugins), removed after."""
    folder = Path(f"/run/cnilab-test-{os.getpid()}")
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
