"""The neighbour budget: every pair probed exactly once, in batches whose entries fit."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from cni_lab.probe.budget import Budget, Costs, schedule
from cni_lab.probe.pairs import AllPairs
from cni_lab.probe.pairs import Endpoint


def lab(pods_per_node: list[int]) -> list[Endpoint]:
    out = []
    for n, pods in enumerate(pods_per_node):
        node = f"node{n}"
        out.append(Endpoint(node, "node", node, IPv4Address("192.168.1.2"), f"ns.{node}"))
        out += [Endpoint(f"{node}/p{p}", "pod", node, IPv4Address("10.244.0.2"), f"ns.{node}.p{p}") for p in range(pods)]
    return out


def entries(eps: list[Endpoint], pairs: list[tuple[int, int]], router: bool) -> set[tuple[str, str]]:
    """Brute force: the (namespace, neighbour) entries a bridged lab makes for these pairs."""
    made: set[tuple[str, str]] = set()
    for s, d in pairs:
        a, b = eps[s], eps[d]
        for x in (a, b):
            if x.kind == "pod":
                made |= {(x.id, "gateway"), (x.node, x.id)}
        if a.kind == b.kind == "pod" and a.node == b.node:
            made |= {(a.id, b.id), (b.id, a.id)}
        if a.node != b.node:  # nodes of one segment talk directly; with a router, through it too
            made |= {(a.node, b.node), (b.node, a.node)}
            if router:
                made |= {(a.node, "router"), ("router", a.node), (b.node, "router"), ("router", b.node)}
    return made


SHAPES = [([20] * 50, 511, False), ([3, 40, 0, 7], 200, False), ([300, 300], 511, False), ([500], 511, False),
          ([5] * 12, 120, True), ([2, 2], 30, False), ([4] * 6, 2, False)]


@pytest.mark.parametrize("pods,budget,router", SHAPES)
def test_every_pair_once_in_batches_that_fit(pods: list[int], budget: int, router: bool) -> None:
    eps = lab(pods)
    jobs = AllPairs(len(eps))
    batches = schedule(eps, Costs(router), budget, ["ns.router"] if router else [])
    seen = [j for b in batches for j in b.jobs]
    assert len(seen) == len(jobs) == len(set(seen))
    node_ns = {e.node: e.netns for e in eps if e.kind == "node"}
    for b in batches:
        if len(eps) > 300 and b is not batches[0] and b is not batches[-1]:
            continue  # the big shapes: the first and last batch stand for the rest (speed)
        pairs = [jobs[j] for j in b.jobs]
        assert len(entries(eps, pairs, router)) <= b.cost  # the estimate errs high
        assert b.cost <= max(budget, Costs(router).local(2) + Costs(router).underlay(2))
        touched = {eps[i].netns for p in pairs for i in p} | {node_ns[eps[i].node] for p in pairs for i in p}
        assert touched <= set(b.namespaces)  # what is flushed after it
        assert not router or "ns.router" in b.namespaces


def test_a_lab_that_fits_is_one_batch_and_a_bigger_one_is_not_cut_finer_than_needed() -> None:
    eps = lab([20] * 50)  # scale-1000
    batches = schedule(eps, Costs(False), 511)
    assert 50 <= len(batches) <= 130  # one node's own pairs per batch, then nodes five by five
    assert len(schedule(lab([2, 2]), Costs(False), 511)) == 1


def test_the_budget_leaves_the_host_half_the_room() -> None:
    assert Budget(1024, 2).entries == 511
    assert Budget(1024, 900).entries == 62  # a busy table: half of what is left
    assert Budget(1024, 1100).entries == 0
    assert Budget(65536, 0).entries == 32768  # never past half the cap
    assert Budget(1024, 2).bound == 514 and Budget(1024, 600).bound == 1112
