"""Generated NetworkPolicy cases held against a running lab (`cni-lab conformance`): which cases
a run draws, whether the lab is the e2e model they are written for, and every cell where the
network differs from the reference. Pure: values in, values out. The applying is lifecycle's (the
steps `policy apply` loads), the probing probe/cases.py's, the rendering report/conformance_view.py's.

A cell is one probe of one ordered pair: `ICMP` is check's pair probe (an ICMP echo and a UDP
datagram to port 31999, between every two endpoints, nodes included, judged as `check` judges a
policy lab's pair: the pod's own node gets in, other nodes through ipBlocks, from the address
their kernel picks); `TCP/80` and the like are the case's ports, between every two pods. A cell
agrees when the network reached it without NAT where the reference allows it, and nothing came
back where it denies it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from cni_lab import policy

from cni_lab.policy import cases as policy_cases
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.model import PolicySource
from cni_lab.policy.cases import Case
from cni_lab.probe.pairs import BLOCKED, Expected, endpoints, rule_of

DEFAULT_COUNT = 100
DEFAULT_SEED = 0
ICMP = "ICMP"
NAME = re.compile(r"case-(\d+)-(\d+)")
Key = tuple[str, str, str]  # (probe, source id, destination id): ("TCP/80", "node1/x/a", "node2/y/b")


def probe_label(protocol: str, port: int | None) -> str:
    """A case's probe as cells name it: ICMP, TCP/80."""
    return ICMP if protocol == ICMP else f"{protocol}/{port}"


def parse_name(name: str) -> tuple[int, int]:
    """case-<seed>-<number> → (seed, number)."""
    found = NAME.fullmatch(name.strip())
    if found is None:
        raise LabError(f"--case {name!r}: a case is named case-<seed>-<number>, as a run prints it (case-0-0042)")
    return int(found[1]), int(found[2])


@dataclass(frozen=True)
class Selection:
    """The cases of a run: `count` from `seed`, or the cases named (each names its seed)."""

    seed: int = DEFAULT_SEED
    count: int = DEFAULT_COUNT
    names: tuple[str, ...] = ()

    @staticmethod
    def of(count: int | None, seed: int | None, names: Sequence[str] = ()) -> Selection:
        """From the command line's --cases, --seed and --case (None: not given)."""
        if names:
            if count is not None or seed is not None:
                raise LabError("--case names its seed and number (case-<seed>-<number>): leave out --cases and --seed")
            found = [parse_name(n) for n in names]
            unique = tuple(dict.fromkeys(f"case-{s}-{i:04d}" for s, i in found))
            return Selection(seed=found[0][0], count=len(unique), names=unique)
        if count is not None and count < 1:
            raise LabError(f"--cases {count}: a run needs at least one case")
        if seed is not None and seed < 0:
            raise LabError(f"--seed {seed}: seeds are 0 or more")
        return Selection(DEFAULT_SEED if seed is None else seed, DEFAULT_COUNT if count is None else count)

    def describe(self) -> str:
        if self.names:
            return "case " + ", ".join(self.names) if len(self.names) < 4 else f"{len(self.names)} named cases"
        last = f"case-{self.seed}-{self.count - 1:04d}"
        return f"seed {self.seed}: {self.count} cases, case-{self.seed}-0000" + (f" … {last}" if self.count > 1 else "")


def select(selection: Selection, ips: Mapping[str, str] | None = None) -> list[Case]:
    """The cases themselves, their ipBlocks drawn around `ips` (x/a → the lab's address of x/a)."""
    if selection.names:
        return [policy_cases.case(*parse_name(n), ips) for n in selection.names]
    return policy_cases.cases(selection.seed, selection.count, ips)


def model_problem(lab: Lab) -> str | None:
    """Why the generated cases cannot run on `lab` (None: they can). They are written for the e2e
    suite's model: namespaces x, y, z labelled ns=<name>, pods a, b, c in each labelled pod=<name>,
    each with an IPv4 address (the ipBlocks are drawn around them)."""
    lacks: list[str] = []
    spaces = {ns.name: dict(ns.labels) for ns in lab.scenario.namespaces}
    pods = {p.qualified: p for p in lab.pods}
    for ns in policy_cases.NAMESPACES:
        if ns not in spaces:
            lacks.append(f"namespace {ns}")
        elif any(spaces[ns].get(k) != v for k, v in policy_cases.NAMESPACE_LABELS[ns].items()):
            lacks.append(f"the label ns={ns} on namespace {ns}")
        for name in policy_cases.PODS:
            pod = pods.get(f"{ns}/{name}")
            if pod is None:
                lacks.append(f"pod {ns}/{name}")
            elif any(dict(pod.labels).get(k) != v for k, v in policy_cases.POD_LABELS[name].items()):
                lacks.append(f"the label pod={name} on pod {ns}/{name}")
    if lab.families[0] != 4:
        lacks.append("IPv4 addresses (it is IPv6-only)")
    if not lacks:
        return None
    shown = ", ".join(lacks[:5]) + (f" and {len(lacks) - 5} more" if len(lacks) > 5 else "")
    return (f"lab {lab.name} is not the model the generated cases are written for: they need namespaces x, y, z "
            f"labelled ns=<name>, each with pods a, b, c labelled pod=<name>, over IPv4 (the e2e suite's; "
            f"scenarios/netpol.yaml is it: `sudo cni-lab up netpol`); this lab lacks {shown}")


def with_case(lab: Lab, case: Case) -> Lab:
    """The lab with the case's policies instead of its own (what `policy apply` makes of a lab)."""
    sources = tuple(PolicySource(f"{case.name}: policies[{i}]", dict(doc)) for i, doc in enumerate(case.policies))
    return dataclasses.replace(lab, scenario=dataclasses.replace(lab.scenario, policies=sources))


# -- the reference against what the network did ------------------------------------------------

@dataclass(frozen=True)
class Cell:
    probe: str  # ICMP (check's pair probe), TCP/80 ...
    src: str  # endpoint id: node1/x/a, or node1
    dst: str
    allowed: bool  # what the reference says
    observed: str  # the network's verdict: ok | nat | wrong-peer | timeout | unreachable
    agrees: bool

    @property
    def key(self) -> Key:
        return (self.probe, self.src, self.dst)


def judge(lab: Lab, observed: Mapping[Key, str], node_sources: Mapping[tuple[str, str], str] | None = None) -> list[Cell]:
    """Every observed cell against the reference. `lab` carries the case's policies;
    `node_sources`: (node, destination) → the source address its kernel picks (what an ipBlock
    sees of a node), as `check` reads them."""
    expected = Expected(lab, node_sources)
    by_id = {ep.id: ep for ep in endpoints(lab)}
    workloads = {w.id: w for w in lab.workloads}
    evaluator = lab.evaluator if lab.policies else None
    cells = []
    for (probe, src, dst), verdict in observed.items():
        if probe == ICMP:
            a, b = by_id[src], by_id[dst]
            want = expected(a, b, rule_of(a, b))
            allowed, agrees = "ok" in want, verdict in want
        else:
            protocol, _, port = probe.partition("/")
            allowed = evaluator is None or evaluator.allowed(workloads[src], workloads[dst], protocol, int(port))
            agrees = verdict == "ok" if allowed else verdict in BLOCKED
        cells.append(Cell(probe, src, dst, allowed, verdict, agrees))
    return cells


def suspects(cells: Sequence[Cell]) -> list[Key]:
    """Cells the reference allows that got no answer within the fast run's short wait: probed
    again with check's own waits before they count (a reached cell never is: a packet that got
    through did)."""
    return [c.key for c in cells if c.allowed and c.observed in BLOCKED]


@dataclass(frozen=True)
class CaseVerdict:
    case: Case
    compared: int  # cells
    differing: tuple[Cell, ...]
    grids: tuple[tuple[str, str], ...] = ()  # (probe, the e2e grid with `!`) where pods differ
    reprobed: int = 0  # cells probed again with check's waits
    apply_s: float = 0.0  # the case's policies rendered, loaded on every node, conntrack emptied
    probe_s: float = 0.0
    judge_s: float = 0.0  # the reference's answers

    @property
    def passed(self) -> bool:
        return not self.differing


def case_verdict(lab: Lab, case: Case, cells: Sequence[Cell], reprobed: int = 0, apply_s: float = 0.0,
                 probe_s: float = 0.0, judge_s: float = 0.0) -> CaseVerdict:
    """A case's verdict: its differing cells, and the e2e suite's grid of each probe whose pod
    pairs differ (policy.truth_table: rows from, columns to, `.` allowed, `X` denied, `!` where
    the network did the opposite)."""
    differing = tuple(c for c in cells if not c.agrees)
    return CaseVerdict(case, len(cells), differing, grids(lab, cells) if differing else (), reprobed, apply_s,
                       probe_s, judge_s)


def grids(lab: Lab, cells: Sequence[Cell]) -> tuple[tuple[str, str], ...]:
    workloads = lab.workloads
    pods = {w.id for w in workloads}
    out = []
    for probe in dict.fromkeys(c.probe for c in cells):
        mine = [c for c in cells if c.probe == probe and c.src in pods and c.dst in pods]
        if all(c.agrees for c in mine):
            continue
        protocol, _, port = probe.partition("/")
        # truth_table marks `!` where the observation is not the reference's answer
        observed = {(c.src, c.dst): c.allowed == c.agrees for c in mine}
        out.append((probe, policy.truth_table(lab.evaluator, workloads, protocol, int(port) if port else None, observed)))
    return tuple(out)


@dataclass(frozen=True)
class Run:
    lab: str
    dataplane: str
    selection: Selection
    verdicts: tuple[CaseVerdict, ...]
    duration: float  # seconds, the whole run (the lab's own policies put back included)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)  # endpoint id → x/a, node1
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def failed(self) -> list[CaseVerdict]:
        return [v for v in self.verdicts if not v.passed]

    @property
    def probes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(probe_label(p, n) for v in self.verdicts for p, n in v.case.probes))

    @property
    def cells(self) -> int:
        return sum(v.compared for v in self.verdicts)

    @property
    def cases_per_minute(self) -> float:
        return 60 * len(self.verdicts) / self.duration if self.duration > 0 else 0.0

    def mean(self, phase: str) -> float:
        """Mean seconds per case of a phase: apply, probe, judge."""
        return sum(getattr(v, f"{phase}_s") for v in self.verdicts) / len(self.verdicts) if self.verdicts else 0.0

    @property
    def reprobed(self) -> int:
        return sum(v.reprobed for v in self.verdicts)

    def label(self, endpoint: str) -> str:
        return self.labels.get(endpoint, endpoint)

    def rerun(self, case: Case) -> str:
        return f"sudo cni-lab conformance {self.lab} --case {case.name}"


def labels(lab: Lab) -> dict[str, str]:
    """Endpoint ids as the e2e suite writes pods (x/a); nodes by name."""
    return {p.id: p.qualified for p in lab.pods} | {n.name: n.name for n in lab.nodes}
