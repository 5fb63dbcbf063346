"""The executor's table: every kind of step a plan can hold has its handler (a kind without one
would fail only when a lab first used it, as root, half way through `up`)."""

from __future__ import annotations

from typing import get_args

from cni_lab.executor.handlers import HANDLERS
from cni_lab.steps import Step


def test_every_kind_of_step_has_a_handler() -> None:
    assert set(HANDLERS) == set(get_args(Step))
