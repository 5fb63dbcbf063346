"""What `up` built is recorded as it was: every shipped scenario's resolved lab survives JSON."""

from __future__ import annotations

import json

import pytest

from cni_lab import catalog, codec
from cni_lab.cluster import Lab

SHIPPED = [name for name, _, _ in catalog.builtin_scenarios()]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_resolved_lab_round_trips_through_json(name: str) -> None:
    lab = catalog.load(name)
    back = codec.load(Lab, json.loads(json.dumps(codec.encode(lab))))
    assert back == lab
    assert back.scenario.document == lab.scenario.document  # kept, though not compared
    assert back.pods == lab.pods and back.nodes[0].underlay == lab.nodes[0].underlay
