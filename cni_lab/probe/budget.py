"""The neighbour budget: the matrix in batches whose neighbour entries fit, so that `check` never
fills the host's shared neighbour table (pure: no sockets, no kernel).

Every namespace's neighbour (ARP, NDP) entries live in one kernel table per family, capped for the
whole machine by the root namespace's `gc_thresh3` (1024 by default). At the cap a new resolution
fails in *every* namespace, the host's own included. `check` takes a budget out of the room the
table has when it starts (`Budget`), cuts the matrix into batches whose entries fit in it
(`schedule`), and `probe/matrix.py` deletes the entries a batch made, in the lab's own namespaces,
before the next batch starts.

What a batch costs is counted from the shapes of the lab, not measured, and errs high:
- each pod in the batch: its gateway's entry in the pod, and its node's entry for the pod (2);
- each pair of pods of one node that talk: each pod's entry for the other (bridged pods reach
  each other directly; routed pods (Calico, ptp) need fewer, never more);
- the underlay: each pair of nodes that talk, an entry at each end; behind a router, the router's
  entry for each node and each node's for the router.

Local blocks (pairs within one node: its pods and the node itself) and remote blocks (pairs
between nodes) are planned apart, because only local pairs cost an entry per *pair*; remote
pairs cost an entry per pod and per node pair, so thousands of them fit in one batch.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from cni_lab.probe.pairs import AllPairs, Endpoint


@dataclass(frozen=True)
class Budget:
    """How many neighbour entries the check may cause at once, out of the table's room."""

    cap: int  # gc_thresh3: the table refuses new entries past it
    at_start: int  # entries in the table (every namespace, the host's own) when the check began
    cap_known: bool = True  # False where the cap cannot be read (a container's own namespace)

    @property
    def entries(self) -> int:
        """At most half the headroom the table had at the start, never past half the cap: the
        host keeps the other half for its own traffic."""
        return max(0, min((self.cap - self.at_start) // 2, self.cap // 2))

    @property
    def bound(self) -> int:
        """What the table should never exceed while the check runs (asserted by the tests)."""
        return max(self.at_start + 512, self.cap // 2)


@dataclass(frozen=True)
class Batch:
    """Pairs to probe together (indexes into the all-pairs order of `probe/pairs.AllPairs`) and
    the namespaces whose neighbour entries they make (what is flushed after them)."""

    jobs: array  # array("I") of pair indexes
    namespaces: tuple[str, ...]
    cost: int  # the estimated neighbour entries

    def __len__(self) -> int:
        return len(self.jobs)


class Costs:
    """The entries a set of endpoints may need, for one lab's shape."""

    def __init__(self, has_router: bool) -> None:
        self.has_router = has_router

    @staticmethod
    def local(pods: int) -> int:
        """Pairs among `pods` pods of one node (and the node): each pod's entries for the others
        and for its gateway, and the node's entry for each pod."""
        return pods * pods + pods

    def remote(self, pods: int, nodes: int) -> int:
        """Pairs between endpoints of `nodes` different nodes with `pods` pods among them."""
        return 2 * pods + self.underlay(nodes)

    def underlay(self, nodes: int) -> int:
        return nodes * (nodes - 1) + (2 * nodes if self.has_router else 0)


@dataclass
class _Unit:
    """Endpoints of one node planned together (a whole node, or a chunk of a very big one)."""

    node: str
    members: list[int]  # endpoint indexes
    pods: int


def _chunks(members: list[int], pods_of: Sequence[bool], size: int) -> list[list[int]]:
    """`members` cut into chunks of at most `size` pods (a node endpoint rides along)."""
    out: list[list[int]] = [[]]
    count = 0
    for i in members:
        if pods_of[i] and count == size:
            out.append([])
            count = 0
        out[-1].append(i)
        count += pods_of[i]
    return out


def _largest(fits: int, cost: Callable[[int], int]) -> int:
    """The largest k >= 1 with cost(k) <= fits (cost increasing)."""
    k = 1
    while cost(k + 1) <= fits:
        k += 1
    return k


def schedule(endpoints: Sequence[Endpoint], costs: Costs, budget: int, infrastructure: Sequence[str] = ()) -> list[Batch]:
    """The whole matrix of `endpoints` as batches that each fit in `budget` entries (a batch of a
    single block may not, when the budget is smaller than the smallest block: it is probed alone).
    `infrastructure`: the lab's namespaces that are not endpoints (routers), flushed after every batch."""
    n = len(endpoints)
    _index = AllPairs(n).index
    is_pod = [ep.kind == "pod" for ep in endpoints]
    node_ns = {ep.node: ep.netns for ep in endpoints if ep.kind == "node"}
    by_node: dict[str, list[int]] = {}
    for i, ep in enumerate(endpoints):
        by_node.setdefault(ep.node, []).append(i)

    blocks: list[tuple[int, list[int], set[str]]] = []  # (cost, jobs, namespaces)

    def namespaces_of(members: Iterable[int]) -> set[str]:
        found = set()
        for i in members:
            found.add(endpoints[i].netns)
            if endpoints[i].node in node_ns:
                found.add(node_ns[endpoints[i].node])
        return found

    # Local blocks: every pair within a node; a node too big for the budget in chunks whose pairs
    # are probed two chunks at a time.
    size = _largest(budget, lambda k: costs.local(2 * k))
    for node, members in by_node.items():
        pods = sum(is_pod[i] for i in members)
        parts = [members] if costs.local(pods) <= budget else _chunks(members, is_pod, size)
        for a, first in enumerate(parts):
            for second in parts[a:]:
                jobs = ([_index(s, d) for s in first for d in first if s != d] if first is second else
                        _between(_index, first, second))
                count = sum(is_pod[i] for i in first) + (0 if first is second else sum(is_pod[i] for i in second))
                blocks.append((costs.local(count), jobs, namespaces_of(first + ([] if first is second else second))))

    # Remote blocks: nodes (or chunks of a huge node) in groups, two groups at a time, such that
    # any two groups together fit: 4·pods + underlay(2·nodes) <= budget for each group.
    unit = max(1, (budget - costs.underlay(2)) // 4)
    units: list[_Unit] = []
    for node, members in by_node.items():
        for part in _chunks(members, is_pod, unit):
            units.append(_Unit(node, part, sum(is_pod[i] for i in part)))
    groups: list[list[_Unit]] = []
    for u in units:
        if groups:
            g = groups[-1]
            if 4 * (sum(x.pods for x in g) + u.pods) + costs.underlay(2 * (len(g) + 1)) <= budget:
                g.append(u)
                continue
        groups.append([u])
    for a, one in enumerate(groups):
        for other in groups[a:]:
            jobs = []
            together = one if one is other else one + other
            for x, ua in enumerate(one):
                for ub in (one[x + 1:] if one is other else other):
                    if ua.node != ub.node:
                        jobs += _between(_index, ua.members, ub.members)
            if jobs:
                cost = costs.remote(sum(u.pods for u in together), len(together))
                blocks.append((cost, jobs, namespaces_of(i for u in together for i in u.members)))

    # Blocks packed into batches while their costs add up to the budget (a sum over-counts
    # what they share: the underlay, the pods' own entries).
    batches: list[Batch] = []
    pending: list[tuple[int, list[int], set[str]]] = []

    def close() -> None:
        if pending:
            jobs = array("I")
            spaces: set[str] = set(infrastructure)
            for _, j, ns in pending:
                jobs.extend(j)
                spaces |= ns
            batches.append(Batch(jobs, tuple(sorted(spaces)), sum(c for c, _, _ in pending)))
            pending.clear()

    for block in blocks:
        if pending and sum(c for c, _, _ in pending) + block[0] > budget:
            close()
        pending.append(block)
    close()
    return batches


def _between(index: Callable[[int, int], int], a: list[int], b: list[int]) -> list[int]:
    """Both directions between two sets of endpoints (`index`: AllPairs.index)."""
    return [index(s, d) for s in a for d in b] + [index(d, s) for s in a for d in b]
