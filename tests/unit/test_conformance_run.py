"""`cni-lab conformance`, the parts that need no kernel: which cases a run draws, which labs it
refuses, every cell held against the reference, the renderings, the command's errors and exit
codes, and that the lab's own policies are put back whatever ends a run."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from rich.console import Console

from cni_lab import catalog, conformance, lifecycle, plan

from cni_lab.policy import cases as policy_cases
from cni_lab.cli import cli
from cni_lab.cluster import Lab
from cni_lab.conformance import Cell, Selection
from cni_lab.errors import LabError
from cni_lab.kernel import conntrack
from cni_lab.report import conformance_view
from cni_lab.steps import LoadNftables, SetSysctl, Step

from labs import make_lab, network_policy as np, pod

LAB = catalog.load("netpol")
DENY_INGRESS_X = np("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})


def ips(lab: Lab = LAB) -> dict[str, str]:
    return {p.qualified: str(p.ip) for p in lab.pods}


def reference(lab: Lab, case: policy_cases.Case) -> dict[conformance.Key, str]:
    """What a network that enforces the reference would show: every cell as the reference says."""
    from cni_lab.probe import pairs

    case_lab = conformance.with_case(lab, case)
    expected = pairs.Expected(case_lab)
    eps = pairs.endpoints(case_lab)
    seen = {("ICMP", s.id, d.id): "ok" if "ok" in expected(s, d, pairs.rule_of(s, d)) else "timeout"
            for s in eps for d in eps if s is not d}
    workloads = {w.id: w for w in case_lab.workloads}
    for protocol, port in case.probes[1:]:
        for s in workloads.values():
            for d in workloads.values():
                if s is not d:
                    allowed = case_lab.evaluator.allowed(s, d, protocol, port)
                    seen[(f"{protocol}/{port}", s.id, d.id)] = "ok" if allowed else "timeout"
    return seen


def one_case(*documents: dict[str, Any], name: str = "case-0-0000") -> policy_cases.Case:
    return policy_cases.Case(name, tuple(documents), policy_cases.PROBES)


# -- which cases -----------------------------------------------------------------------------------

def test_a_run_draws_a_hundred_cases_from_seed_0_unless_told_otherwise() -> None:
    assert Selection.of(None, None) == Selection(0, 100)
    assert Selection.of(7, 3) == Selection(3, 7)
    chosen = conformance.select(Selection.of(3, 9), ips())
    assert [c.name for c in chosen] == ["case-9-0000", "case-9-0001", "case-9-0002"]
    assert chosen == policy_cases.cases(9, 3, ips())


def test_a_case_named_is_the_case_its_run_drew() -> None:
    selection = Selection.of(None, None, ["case-9-0002", "case-4-17", "case-9-0002"])
    assert selection.names == ("case-9-0002", "case-4-0017")  # once each, named as a run prints them
    named = conformance.select(selection, ips())
    assert named[0] == policy_cases.cases(9, 3, ips())[2]
    assert named[1] == policy_cases.cases(4, 18, ips())[17]
    assert named[1].name == "case-4-0017"


@pytest.mark.parametrize("count, seed, names, says", [
    (None, None, ["case-x-1"], "--case 'case-x-1': a case is named case-<seed>-<number>"),
    (None, None, ["42"], "a case is named case-<seed>-<number>, as a run prints it (case-0-0042)"),
    (5, None, ["case-0-0001"], "--case names its seed and number (case-<seed>-<number>): leave out --cases and --seed"),
    (None, 1, ["case-0-0001"], "leave out --cases and --seed"),
    (0, None, [], "--cases 0: a run needs at least one case"),
    (None, -1, [], "--seed -1: seeds are 0 or more"),
])
def test_selections_that_cannot_be_run_are_refused_in_one_line(count: int | None, seed: int | None,
                                                               names: list[str], says: str) -> None:
    with pytest.raises(LabError) as e:
        Selection.of(count, seed, names)
    assert says in str(e.value) and len(e.value.problems) == 1


# -- which labs --------------------------------------------------------------------------------------

def test_the_shipped_netpol_lab_is_the_model_and_its_addresses_are_the_generators() -> None:
    assert conformance.model_problem(LAB) is None
    assert ips() == policy_cases.DEFAULT_IPS


def test_another_lab_is_refused_in_one_line_that_says_what_it_needs() -> None:
    lab = catalog.load("two-nodes")
    problem = conformance.model_problem(lab)
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"lab {lab.name} is not the model the generated cases are written for")
    assert "namespaces x, y, z labelled ns=<name>, each with pods a, b, c labelled pod=<name>" in problem
    assert "scenarios/netpol.yaml is it" in problem and "lacks namespace x, pod x/a, pod x/b" in problem


def test_a_missing_label_is_named() -> None:
    spaces = policy_cases.NAMESPACES
    nodes = [{"name": f"node{i + 1}", "pods": [pod(p, n, {"pod": p} if (n, p) != ("y", "b") else {"app": p})
                                               for n in spaces]} for i, p in enumerate(policy_cases.PODS)]
    lab = make_lab(nodes, name="np", namespaces={"x": {"labels": {"ns": "x"}}, "y": {"labels": {"ns": "y"}}, "z": {}})
    problem = conformance.model_problem(lab)
    assert problem is not None and problem.endswith("lacks the label pod=b on pod y/b, the label ns=z on namespace z")


def test_a_case_replaces_the_labs_policies_and_leaves_the_lab_as_it_was() -> None:
    case = one_case(DENY_INGRESS_X)
    case_lab = conformance.with_case(LAB, case)
    assert [p.qualified for p in case_lab.policies] == ["x/deny-ingress"] and LAB.policies == ()
    steps = plan.policy_steps(case_lab)  # what `policy apply` loads
    tables = [s.ruleset for s in steps if isinstance(s, LoadNftables)]
    assert len(tables) == 3 and "to-wl-x/c" in tables[-1]


# -- the reference against the network -----------------------------------------------------------------

def test_a_network_that_does_what_the_reference_says_agrees_in_every_cell() -> None:
    for case in conformance.select(Selection.of(25, 28), ips()):
        case_lab = conformance.with_case(LAB, case)
        cells = conformance.judge(case_lab, reference(LAB, case))
        verdict = conformance.case_verdict(case_lab, case, cells)
        assert verdict.passed and verdict.compared == 12 * 11 + 9 * 8 * 4 and verdict.grids == ()


def test_a_cell_that_differs_is_named_and_marked_in_its_probes_grid() -> None:
    case = one_case(DENY_INGRESS_X)
    case_lab = conformance.with_case(LAB, case)
    seen = reference(LAB, case)
    assert seen[("TCP/80", "node2/y/b", "node1/x/a")] == "timeout"
    seen[("TCP/80", "node2/y/b", "node1/x/a")] = "ok"  # let through: the network did not enforce it
    seen[("UDP/81", "node1/x/a", "node2/x/b")] = "ok"  # x/a → x/b: denied, and not to be changed
    verdict = conformance.case_verdict(case_lab, case, conformance.judge(case_lab, seen))
    assert [(c.probe, c.src, c.dst, c.allowed, c.observed) for c in verdict.differing] == [
        ("TCP/80", "node2/y/b", "node1/x/a", False, "ok"), ("UDP/81", "node1/x/a", "node2/x/b", False, "ok")]
    grids = dict(verdict.grids)
    assert list(grids) == ["TCP/80", "UDP/81"]  # only the probes that differ
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in grids["TCP/80"].splitlines()}
    assert rows["-"] == ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    assert rows["y/b"] == ["!", "X", "X", ".", ".", ".", ".", ".", "."]
    assert rows["x/a"] == [".", "X", "X", ".", ".", ".", ".", ".", "."]


def test_the_pods_own_node_gets_in_and_other_nodes_do_not() -> None:
    case = one_case(DENY_INGRESS_X)
    case_lab = conformance.with_case(LAB, case)
    cells = {c.key: c for c in conformance.judge(case_lab, {("ICMP", "node1", "node1/x/a"): "ok",
                                                             ("ICMP", "node2", "node1/x/a"): "ok",
                                                             ("ICMP", "node2", "node2/y/b"): "timeout"})}
    assert cells[("ICMP", "node1", "node1/x/a")].agrees  # the pod's own node: always
    assert not cells[("ICMP", "node2", "node1/x/a")].agrees and not cells[("ICMP", "node2", "node1/x/a")].allowed
    assert not cells[("ICMP", "node2", "node2/y/b")].agrees  # y is not isolated: allowed, and lost


@pytest.mark.parametrize("allowed, observed, agrees", [
    (True, "ok", True), (True, "nat", False), (True, "timeout", False), (True, "wrong-peer", False),
    (False, "timeout", True), (False, "unreachable", True), (False, "ok", False), (False, "nat", False),
])
def test_a_port_cell_agrees_when_reached_without_nat_where_allowed_and_unanswered_where_denied(
        allowed: bool, observed: str, agrees: bool) -> None:
    case_lab = conformance.with_case(LAB, one_case(DENY_INGRESS_X))
    # y is not isolated; x denies every ingress
    src, dst = ("node2/y/b", "node3/y/c") if allowed else ("node2/x/b", "node1/x/a")
    (cell,) = conformance.judge(case_lab, {("TCP/81", src, dst): observed})
    assert (cell.allowed, cell.agrees) == (allowed, agrees)


def test_only_allowed_cells_without_an_answer_are_probed_again() -> None:
    cells = [Cell("TCP/80", "a", "b", True, "timeout", False), Cell("TCP/80", "a", "c", True, "unreachable", False),
             Cell("TCP/80", "b", "a", True, "nat", False), Cell("ICMP", "b", "c", False, "ok", False),
             Cell("ICMP", "c", "a", True, "ok", True), Cell("ICMP", "c", "b", False, "timeout", True)]
    assert conformance.suspects(cells) == [("TCP/80", "a", "b"), ("TCP/80", "a", "c")]


# -- a run, rendered -------------------------------------------------------------------------------------

def a_run(differ: bool = True, count: int = 3) -> conformance.Run:
    selection = Selection.of(count, 5)
    verdicts = []
    for i, case in enumerate(conformance.select(selection, ips())):
        case_lab = conformance.with_case(LAB, case)
        seen = reference(LAB, case)
        if differ and i == 1:
            key = next(k for k, v in seen.items() if v == "timeout" and k[0] == "TCP/80")
            seen[key] = "ok"
            seen[("ICMP", "node1", "node1/x/a")] = "nat"
        verdicts.append(conformance.case_verdict(case_lab, case, conformance.judge(case_lab, seen),
                                                 reprobed=1, apply_s=0.02, probe_s=0.27, judge_s=0.003))
    return conformance.Run(LAB.name, LAB.dataplane, selection, tuple(verdicts), 0.9, conformance.labels(LAB))


def text_of(renderable: Any) -> str:
    console = Console(record=True, width=200, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_terminal_names_the_case_draws_its_grid_and_says_how_to_run_it_again() -> None:
    run = a_run()
    text = text_of(conformance_view.terminal_view(run))
    assert "conformance · lab netpol (host-gw) · seed 5: 3 cases, case-5-0000 … case-5-0002" in text
    assert "✗ case-5-0001  2/420 cells differ (ICMP 1, TCP/80 1)" in text
    assert "node1 → x/a ICMP: the reference allows it, the network said nat" in text
    assert "re-run: sudo cni-lab conformance netpol --case case-5-0001" in text
    assert "grids: rows from, columns to, . allowed and X denied as the reference says, ! where" in text
    grid = text.split("\n  TCP/80\n")[1].splitlines()
    assert grid[0].split() == ["-", "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    assert sum(line.count("!") for line in grid[1:10]) == 1
    assert "its policies:" in text and "/p1: {podSelector:" in text
    assert "case-5-0000" not in text.split("FAIL")[0].split("probes:")[1]  # agreeing cases are not listed
    assert "FAIL: 2/3 cases agree with the reference; 1 differ in 2 of 1,260 cells" in text
    assert "3 cases in 0.9 s: 200 cases a minute · per case: apply 20 ms" in text and "probe 270 ms" in text
    assert "3 cells probed again with check's waits" in text


def test_a_run_where_every_case_agrees_says_pass_and_lists_no_case() -> None:
    text = text_of(conformance_view.terminal_view(a_run(differ=False)))
    assert "PASS: 3/3 cases agree with the reference, 1,260 cells" in text and "✗" not in text


def test_past_five_differing_cases_each_gets_one_line() -> None:
    run = a_run(count=2)
    failed = run.verdicts[1]
    many = conformance.Run(run.lab, run.dataplane, run.selection, (failed,) * 7, 1.0, run.labels)
    lines = [line for line in text_of(conformance_view.terminal_view(many)).splitlines() if line.startswith("✗")]
    assert len(lines) == 7 and all("re-run:" not in line for line in lines[:5])
    assert lines[6].endswith("re-run: sudo cni-lab conformance netpol --case case-5-0001")


def test_json_has_every_cases_verdict_and_the_policies_of_those_that_differ() -> None:
    document = json.loads(json.dumps(conformance_view.conformance_json(a_run())))
    assert document["schema"] == "cni-lab/conformance/v1" and document["passed"] is False
    assert (document["seed"], document["cases"], document["casesDiffering"], document["cells"]) == (5, 3, 1, 1260)
    assert document["probes"] == ["ICMP", "TCP/80", "TCP/81", "UDP/80", "UDP/81"]
    assert document["casesPerMinute"] == 200.0 and document["perCaseSeconds"]["probe"] == 0.27
    first, second, _ = document["results"]
    assert first["passed"] and first["differing"] == [] and "policies" not in first and first["tags"]
    assert second["rerun"] == "sudo cni-lab conformance netpol --case case-5-0001"
    assert {"probe": "ICMP", "src": "node1", "dst": "x/a", "srcId": "node1", "dstId": "node1/x/a",
            "expected": "allowed", "observed": "nat"} in second["differing"]
    assert second["policies"][0]["kind"] == "NetworkPolicy" and "TCP/80" in second["grids"]


def test_junit_has_a_test_case_per_generated_case() -> None:
    suite = ET.fromstring(conformance_view.conformance_junit(a_run())).find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("3", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["case-5-0000", "case-5-0001", "case-5-0002"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "2/420 cells differ from the reference"
    assert "re-run: sudo cni-lab conformance netpol --case case-5-0001" in (failure.text or "")
    assert cases[0].find("failure") is None


# -- the command ----------------------------------------------------------------------------------------

def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["conformance", *args])


@pytest.mark.parametrize("args, says", [
    (["--case", "nope"], "error: --case 'nope': a case is named case-<seed>-<number>"),
    (["--case", "case-0-0001", "--seed", "3"], "error: --case names its seed and number"),
    (["--cases", "0"], "error: --cases 0: a run needs at least one case"),
    (["--junit", "/nonexistent-folder/x.xml"], "error: --junit /nonexistent-folder/x.xml: cannot write there"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and result.output.strip().startswith(says)
    assert len(result.output.strip().splitlines()) == 1


def test_not_root_says_how_to_run_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = invoke("netpol")
    assert result.exit_code == 2 and "needs root" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("differ, code", [(False, 0), (True, 1)])
def test_the_exit_code_says_whether_every_case_agreed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      differ: bool, code: int) -> None:
    asked: list[tuple[str | None, Selection]] = []

    def run_cases(name: str | None, selection: Selection, progress: Any = None) -> conformance.Run:
        asked.append((name, selection))
        return a_run(differ)

    monkeypatch.setattr(lifecycle, "run_cases", run_cases)
    junit = tmp_path / "c.xml"
    result = invoke("netpol", "--case", "case-5-1", "--json", "--junit", str(junit))
    assert result.exit_code == code
    assert asked == [("netpol", Selection(5, 1, ("case-5-0001",)))]
    assert json.loads(result.stdout)["passed"] is not differ
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == ("1" if differ else "0")  # type: ignore[union-attr]
    terminal = invoke("netpol")
    assert terminal.exit_code == code and ("FAIL" if differ else "PASS") in terminal.output


# -- the run itself, without a kernel: the lab's own policies come back ----------------------------------

class FakeProber:
    """CaseProber's part that run_cases uses: every cell as the reference says, or a failure."""

    fail_at: int | None = None

    def __init__(self, lab: Lab) -> None:
        self.lab, self.notes, self.cases = lab, ["a note"], 0
        self.node_sources: dict[tuple[str, str], str] = {}

    def __enter__(self) -> FakeProber:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def forget(self) -> None:
        pass

    def observe(self, probes: Any) -> dict[conformance.Key, str]:
        self.cases += 1
        if self.cases == self.fail_at:
            raise RuntimeError("the prober broke")
        return {("ICMP", "node1", "node1/x/a"): "ok"}

    def again(self, keys: Any) -> dict[conformance.Key, str]:
        return {}


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """run_cases with the lab recorded as LAB (with a policy of its own) and every policy load noted."""
    from cni_lab.probe import cases as case_probes

    own = conformance.with_case(LAB, one_case(DENY_INGRESS_X))
    loaded: list[str] = []

    def tables(steps: Any) -> list[str]:
        return [s.ruleset for s in steps if isinstance(s, LoadNftables)]

    def load(steps: Any, loaders: Any) -> None:
        loaded.append("own" if tables(steps) == tables(plan.policy_steps(own)) else "case")

    monkeypatch.setattr(lifecycle, "require_root", lambda command: None)
    monkeypatch.setattr(lifecycle.privileges, "require_raw_sockets", lambda command: None)
    monkeypatch.setattr(lifecycle, "pick", lambda name: "netpol")
    monkeypatch.setattr(lifecycle.state, "locked", lambda name: contextlib.nullcontext())
    monkeypatch.setattr(lifecycle, "running_lab", lambda name: (own, None))
    monkeypatch.setattr(lifecycle, "_load_policy_steps", load)
    monkeypatch.setattr(case_probes, "CaseProber", FakeProber)
    FakeProber.fail_at = None
    yield loaded


def test_each_case_is_loaded_then_the_labs_own_policies_come_back(no_kernel: list[str]) -> None:
    seen: list[tuple[int, int, str, int]] = []
    run = lifecycle.run_cases(None, Selection.of(3, 1), lambda *a: seen.append(a))
    assert no_kernel == ["case", "case", "case", "own"]
    assert [s[:3] for s in seen] == [(0, 3, "case-1-0000"), (1, 3, "case-1-0001"), (2, 3, "case-1-0002"), (3, 3, "")]
    assert len(run.verdicts) == 3 and run.notes == ("a note",) and run.duration > 0


def test_an_error_in_the_middle_of_a_run_still_puts_the_labs_policies_back(no_kernel: list[str]) -> None:
    FakeProber.fail_at = 2
    with pytest.raises(RuntimeError, match="the prober broke"):
        lifecycle.run_cases(None, Selection.of(5, 0))
    assert no_kernel == ["case", "case", "own"]


def test_a_lab_of_another_model_is_refused_before_anything_changes(no_kernel: list[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "running_lab", lambda name: (catalog.load("two-nodes"), None))
    with pytest.raises(LabError, match="is not the model the generated cases are written for"):
        lifecycle.run_cases(None, Selection.of(2, 0))
    assert no_kernel == []


def test_policy_loads_run_side_by_side_and_a_failure_names_its_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cni_lab.executor import apply

    done: list[str] = []

    def apply_step(session: Any, step: Any) -> None:
        if isinstance(step, LoadNftables) and step.netns.endswith("node2"):
            raise OSError(errno.EINVAL, "nft in ns: Error: syntax error")
        done.append(type(step).__name__)

    monkeypatch.setattr(apply, "apply_step", apply_step)
    steps: list[Step] = [SetSysctl("cnilab-t.node1", "net/bridge/bridge-nf-call-iptables", "1"),
             *(LoadNftables(f"cnilab-t.node{i}", "cni-lab-policy", "table inet cni-lab-policy\n") for i in (1, 2, 3))]
    with ThreadPoolExecutor(3) as pool, pytest.raises(LabError) as e:
        lifecycle._load_policy_steps(steps, pool)
    assert done == ["SetSysctl", "LoadNftables", "LoadNftables"]  # the sysctl first, every load ended
    assert str(e.value) == "ip netns exec cnilab-t.node2 nft -f <table inet cni-lab-policy, 0 rules>: nft in ns: Error: syntax error"


# -- the conntrack flush's messages ---------------------------------------------------------------------

def test_the_flush_is_conntrack_Fs_request() -> None:
    request = conntrack.flush_request(7)
    length, kind, flags, sequence, port = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, sequence, port) == (20, 1 << 8 | 2, 1 | 4, 7, 0) == (len(request), 0x102, 5, 7, 0)
    assert request[16:] == bytes([2, 0, 0, 0])  # AF_INET, NFNETLINK_V0, res_id 0: every family flushed


def test_the_kernels_answer_is_read_by_its_sequence_number() -> None:
    def error(sequence: int, code: int) -> bytes:
        return struct.pack("=IHHII", 36, 2, 0, sequence, 0) + struct.pack("=i", code) + bytes(16)

    assert conntrack.answer_error(error(3, 0), 3) == 0
    assert conntrack.answer_error(error(3, -errno.EPERM), 3) == errno.EPERM
    assert conntrack.answer_error(error(2, 0), 3) is None
    assert conntrack.answer_error(error(2, 0) + error(3, -errno.ENOENT), 3) == errno.ENOENT


# -- the prober's bookkeeping -------------------------------------------------------------------------------

def test_cells_probed_again_are_the_ones_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from cni_lab.probe import cases as case_probes
    from cni_lab.probe.ports import PortResult

    prober = case_probes.CaseProber(LAB)
    try:
        asked: list[list[tuple[str, str]]] = []

        def matrix(indexes: Any, settings: Any) -> dict[conformance.Key, str]:
            pairs = [(prober.endpoints[s].id, prober.endpoints[d].id) for s, d in (prober.jobs[j] for j in indexes)]
            asked.append(pairs)
            assert settings.attempts == 3  # check's own waits
            return {("ICMP", s, d): "ok" for s, d in pairs}

        ran: list[Any] = []

        def ports(pods: Any, wanted: Any, timeout: float | None = None) -> list[PortResult]:
            ran.append((wanted, timeout))
            return [PortResult(a, b, p, n, "ok") for a in pods for b in pods if a is not b for p, n in wanted]

        monkeypatch.setattr(prober, "_matrix", matrix)
        monkeypatch.setattr(case_probes.port_probes, "run", ports)
        keys = [("ICMP", "node2", "node1/x/a"), ("TCP/81", "node1/x/a", "node3/z/c"), ("UDP/80", "node2/y/b", "node1/y/a")]
        seen = prober.again(keys)
        assert asked == [[("node2", "node1/x/a")]]
        assert ran == [([("TCP", 81), ("UDP", 80)], None)]  # check's own wait
        assert seen == {k: "ok" for k in keys}  # nothing beyond what was asked
    finally:
        prober.close()
