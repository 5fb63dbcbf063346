"""Which pairs the matrix probes, their rules and their expectations (pure)."""

from __future__ import annotations

from cni_lab import catalog, cluster, model
from cni_lab.probe import pairs

from labs import lab_of


def lab(doc: dict) -> cluster.Lab:  # type: ignore[type-arg]
    return lab_of({"name": "lab", **doc})


def test_every_ordered_pair_once_with_its_rule() -> None:
    ps = pairs.all_pairs(catalog.load("two-nodes"))
    assert len(ps) == 5 * 4
    assert len({(p.src.id, p.dst.id) for p in ps}) == 20
    rules = {(p.src.id, p.dst.id): p.rule for p in ps}
    assert rules[("node1/web", "node1/db")] == "pod-pod-same-node"
    assert rules[("node1/web", "node2/api")] == "pod-pod-cross-node"
    assert rules[("node1", "node2/api")] == "node-pod"
    assert rules[("node2/api", "node1")] == "pod-node"
    assert rules[("node1", "node2")] == "node-node"


def test_first_matching_expectation_decides_and_the_rest_must_be_ok() -> None:
    the_lab = lab({
        "nodes": [{"name": "a", "pods": 2}, {"name": "b", "pods": 1}],
        "expect": [
            {"from": "a/pod-1", "to": "b/*", "verdict": "nat"},
            {"from": "a/*", "to": "b/*", "verdict": "fail"},
            {"rule": "node-node", "verdict": ["ok", "timeout"]},
        ],
    })
    got = {(p.src.id, p.dst.id): p.expected for p in pairs.all_pairs(the_lab)}
    assert got[("a/pod-1", "b/pod-1")] == {"nat"}
    assert got[("a/pod-2", "b/pod-1")] == set(model.VERDICTS) - {"ok"}
    assert got[("a", "b")] == {"ok", "timeout"}
    assert got[("b/pod-1", "a/pod-1")] == {"ok"}


def test_neighbour_estimate_grows_with_pods_per_node() -> None:
    small = lab({"nodes": [{"name": "a", "pods": 2}, {"name": "b", "pods": 2}]})
    big = lab({"nodes": [{"name": "a", "pods": 40}, {"name": "b", "pods": 40}]})
    assert pairs.neighbours_needed(small) == 2 * (4 + 2 + 1)
    assert pairs.neighbours_needed(big) > 1024


def test_too_low_a_file_limit_is_a_clear_error(monkeypatch: object) -> None:
    import resource

    import pytest

    from cni_lab.errors import LabError
    from cni_lab.probe import engine

    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, 1024))  # type: ignore[attr-defined]
    with pytest.raises(LabError, match=r"needs about 4264 open files, but this shell allows 1024 .*ulimit -n 4264"):
        engine._raise_fd_limit(4200)
    engine._raise_fd_limit(100)  # enough already: nothing to do


def test_an_echos_id_carries_the_job_under_the_runs_salt() -> None:
    """Each run offsets its ICMP ids by a salt of its own (conntrack keys an echo by its id: a run
    must not meet the last run's entries); the job still reads back from an ICMP error's quote."""
    import struct

    from cni_lab.probe import engine

    for job in (0, 1, 65535, 65536, 3 << 16 | 7, (1 << 32) - 1):
        for salt in (0, 1, 0xFFFF, 0x8001):
            ident, seq = struct.unpack_from("!HH", engine._echo(job, b"tokn", 0.0, 4, salt), 4)
            assert engine._job_of(ident, seq, salt) == job
    same_job = {struct.unpack_from("!H", engine._echo(5, b"tokn", 0.0, 4, salt), 4)[0] for salt in (0, 1, 2)}
    assert len(same_job) == 3  # three runs, three ids for one pair
