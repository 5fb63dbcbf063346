"""Kernel-test fixtures: build a lab from a scenario dict under a unique name, always tear it down."""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Iterator

import pytest

from cni_lab import ipam, lifecycle, model
from cni_lab.ipam import Lab

_counter = itertools.count()


@pytest.fixture
def make_lab(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """make_lab(document) → a running Lab under a name unique to this test; removed afterwards."""
    made: list[str] = []

    def make(document: dict[str, Any], up: bool = True) -> Lab:
        name = f"t{os.getpid() % 1000}-{next(_counter)}"
        lab = ipam.resolve(model.load_document({**document, "name": name}, f"<{request.node.name}>"))
        made.append(name)
        if up:
            lifecycle.up(lab)
        return lab

    try:
        yield make
    finally:
        for name in made:
            lifecycle.down(name)
