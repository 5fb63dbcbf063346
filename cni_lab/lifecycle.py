"""The lab's life, in order: up (plan, record, apply), status, check, down (and the sweep by
name). Glue between the pure pipeline (model → ipam → plan), the recorded state and the kernel
layer; scenario files are found by catalog.py, what users name by target_netns.py. Returns values;
prints nothing, renders nothing (but the check's record, which is its JSON: record_check).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from cni_lab import catalog, codec, dataplanes, model, names, plan, privileges, state
from cni_lab.errors import LabError
from cni_lab.privileges import require_root
from cni_lab.cluster import Lab
from cni_lab.executor import apply
from cni_lab.kernel import cni_runtime, daemons, neighbours, netns, transports
from cni_lab.steps import LoadBpf, LoadNftables, Step

if TYPE_CHECKING:  # the prober is loaded by `check` and `conformance` alone (bench/ measures whole commands)
    from concurrent.futures import ThreadPoolExecutor

    from cni_lab import conformance
    from cni_lab.policy.cases import Case
    from cni_lab.probe.cases import CaseProber
    from cni_lab.probe.matrix import CheckResult

def from_state(st: state.LabState) -> Lab:
    """The lab as `up` built it: its record, not what today's code would make of the scenario."""
    if st.lab is not None:
        try:
            return codec.load(Lab, st.lab)
        except (KeyError, TypeError, ValueError):
            pass  # a record from another version of cni-lab: resolve the scenario again
    return catalog.resolve(model.load_document(st.document, st.source))


@dataclass(frozen=True)
class UpResult:
    lab: Lab
    created: bool  # False when the same lab was already up (a no-op)
    replaced_stale: bool = False
    healed: tuple[str, ...] = ()  # daemons that had died and were started again


def up(lab: Lab, progress: Callable[[int, int], None] | None = None) -> UpResult:
    require_root("up")
    transports.require(lab.scenario.protocol_uses(), lab.scenario.source)  # SCTP: a kernel without it, one line
    built = plan.build(lab)
    dataplane = dataplanes.get(lab.dataplane)
    daemons.require(dataplane.needs(lab), lab.dataplane)
    if lab.dns_service is not None:
        from cni_lab.kernel import dns

        dns.require(lab.scenario.source)
    if lab.capabilities.tunnel is not None and lab.capabilities.tunnel.device == names.CALICO_IPIP:
        from cni_lab.kernel import features

        if (missing := features.ipip_missing()) is not None:
            raise LabError(f"{lab.scenario.source}: {missing}")
    for source in sorted({s.source for s in built.steps if isinstance(s, LoadBpf)}):
        from cni_lab.kernel import bpf  # ebpf labs alone

        bpf.prepare(source)  # compiled (or cached), bpffs mounted, the kernel takes programs
    # a scenario that names plugins is code run as root: only files root alone can change; the
    # files shipped with cni-lab are as trusted as its own code
    privileges.require_trusted([f for f in dataplane.runs_as_root(lab) if not catalog.shipped(f)], lab.dataplane)
    digest = state.LabState.digest_of(lab.scenario.document)
    with state.locked(lab.name):
        current = state.read(lab.name)
        stale = False
        if current is not None:
            if current.status == "up" and all(netns.is_netns(n) for n in current.namespaces):
                if current.digest == digest:
                    healed = _heal(lab)
                    return UpResult(lab=lab, created=False, healed=healed)
                raise LabError(
                    f"lab {lab.name} already runs from {current.source} with a different scenario: "
                    f"run `cni-lab down {lab.name}` first, or `cni-lab up --name OTHER` to run both"
                )
            # Left by a killed `up` or damaged by hand: we hold the lock, so nobody builds it now.
            _teardown(lab.name, current)
            stale = True
        elif any(names.lab_of_netns(n) == lab.name for n in netns.listing()):
            _teardown(lab.name, None)
            stale = True
        if stale:
            state.clear(lab.name)  # its daemons' files, CNI records, faults: all of the old lab
        record = state.LabState(
            name=lab.name,
            status="building",
            source=lab.scenario.source,
            document=lab.scenario.document,
            digest=digest,
            namespaces=list(built.namespaces),
            lab=codec.encode(lab),
        )
        state.write(record)  # first, so a SIGKILL'd `up` still leaves a record `down` can follow
        try:
            apply.apply(built, state.lab_dir(lab.name), progress)
        except BaseException:
            # apply removed what it made; sweep by name too, so nothing an interruption caught
            # half-made survives (every namespace of this lab is ours: stale ones went above)
            _teardown(lab.name, record)
            with apply.shielded():
                state.remove(lab.name)
            raise
        record.status = "up"
        state.write(record)
    return UpResult(lab=lab, created=True, replaced_stale=stale)


def daemon_status(lab: Lab) -> dict[str, tuple[int | None, bool]]:
    """node → (BIRD's pid, running in the node's namespace), for labs that run BIRD."""
    if "bird" not in lab.capabilities.daemons:
        return {}
    out = {}
    for node in lab.nodes:
        pid = daemons.read_pid(state.lab_dir(lab.name) / names.bird_dir(node.name) / "bird.pid")
        out[node.name] = (pid, daemons.alive(pid, names.node_netns(lab.name, node.name)))
    return out


def _heal(lab: Lab) -> tuple[str, ...]:
    """Start again the daemons of a running lab that died, and wait until BGP has converged."""
    dead = [node for node, (_, running) in daemon_status(lab).items() if not running]
    if not dead:
        return ()
    apply.converge_bgp(plan.build(lab), state.lab_dir(lab.name), {names.node_netns(lab.name, n) for n in dead})
    return tuple(f"bird on {n}" for n in dead)


def _lab_namespaces(name: str, recorded: state.LabState | None) -> list[str]:
    found = {n for n in netns.listing() if names.lab_of_netns(n) == name}
    if recorded is not None:
        found |= {n for n in recorded.namespaces if os.path.exists(netns.netns_path(n))}
    return sorted(found)


def _teardown(name: str, recorded: state.LabState | None) -> list[str]:
    with apply.shielded():
        # As a runtime does when a pod goes: CNI DEL for every pod the plugins wired (their IPAM
        # reservations are released), then the namespaces. Failures do not stop the teardown.
        cni_runtime.delete_recorded(state.lab_dir(name))
        namespaces = _lab_namespaces(name, recorded)
        if neighbours.raised(state.lab_dir(name)):
            # the cap goes back below once the lab's entries are gone: let them go now
            neighbours.release_neighbours(namespaces, (names.POD_IFNAME, names.NODE_UPLINK, names.CNI_BRIDGE))
        removed = netns.remove_namespaces(namespaces)  # kube-dns's dnsmasq with the DNS pod's
        from cni_lab.kernel import bpf, dns

        removed += dns.remove_resolv_confs(name)  # /etc/netns/<each pod's namespace>/

        if bpf.remove_pins(names.bpf_dir(name)):  # the ebpf data plane's programs and maps
            removed.append(names.bpf_dir(name))
        neighbours.restore(state.lab_dir(name), _other_labs(name))  # what `check --neighbour-cap` raised
        return removed


def _other_labs(name: str) -> list[Path]:
    return [state.lab_dir(n) for n in state.names() if n != name]


def down(name: str) -> list[str]:
    """Remove one lab: what its record names, then anything else carrying its name."""
    require_root("down")
    with state.locked(name):
        try:
            recorded = state.read(name)
        except LabError:
            recorded = None  # a corrupted record: the sweep by name still finds everything
        removed = _teardown(name, recorded)
        state.remove(name)
    return removed


def down_all() -> dict[str, list[str]]:
    """Every lab on the machine, recorded or only found by its namespaces' names."""
    require_root("down")
    labs = set(state.names()) | {lab for n in netns.listing() if (lab := names.lab_of_netns(n))}
    from cni_lab.kernel import bpf

    labs |= set(bpf.pinned_labs())
    return {lab: down(lab) for lab in sorted(labs) if model.LAB_NAME.match(lab)}


def running() -> list[str]:
    return [n for n in state.names() if state.read(n) is not None]


def pick(name: str | None) -> str:
    """The lab a command means: the one named, or the only one running."""
    labs = running()
    if name is not None and name not in labs:
        # the scenario's file name, when it runs under a shorter lab name (two-racks-vxlan.yaml
        # is lab two-racks-vx: lab names stop at 12 characters)
        by_file = [lab for lab in labs if (st := state.read(lab)) is not None and Path(st.source).stem == name]
        if len(by_file) == 1:
            return by_file[0]
    if name is not None:
        if name not in labs:
            hint = f" (running: {', '.join(labs)})" if labs else " (no lab is running: start one with `sudo cni-lab up SCENARIO`)"
            raise LabError(f"no lab named {name!r}{hint}")
        return name
    if not labs:
        raise LabError("no lab is running: start one with `sudo cni-lab up SCENARIO`")
    if len(labs) > 1:
        raise LabError(f"{len(labs)} labs are running ({', '.join(labs)}): name one")
    return labs[0]


def running_lab(name: str | None) -> tuple[Lab, state.LabState]:
    lab_name = pick(name)
    st = state.read(lab_name)
    if st is None:  # pragma: no cover - removed between pick and read
        raise LabError(f"lab {lab_name} just went away")
    return from_state(st), st


def status(name: str | None) -> state.Status:
    require_root("status")
    lab, st = running_lab(name)
    from cni_lab import faults

    return state.Status(lab=lab, status=st.status, present={n: netns.is_netns(n) for n in st.namespaces},
                        daemons=daemon_status(lab), faults=[f.describe() for f in faults.recorded(lab.name)],
                        dns=dns_status(lab))


def dns_status(lab: Lab) -> tuple[str, int | None, bool] | None:
    """kube-dns's dnsmasq: (the DNS pod, its pid, running in that pod's namespace), or None where
    the lab has no cluster DNS."""
    from cni_lab.dns_records import dns_pod

    pod = dns_pod(lab) if lab.dns_service is not None else None
    if pod is None:
        return None
    from cni_lab.kernel import dns as dns_server

    pidfile = state.lab_dir(lab.name) / names.dns_file(lab.name, "pid")
    pid = dns_server.running(pidfile, names.pod_netns(lab.name, pod.node, pod.name))
    return pod.id, pid if pid is not None else daemons.read_pid(pidfile), pid is not None


def check(name: str | None, progress: Callable[[int, int], None] | None = None, mtu: bool = False,
          neighbour_cap: int | None = None, notice: Callable[[str], None] | None = None,
          ports: tuple[str, ...] | None = None, observe: bool | None = None) -> CheckResult:
    """Probe every pair of a running lab (holding its lock, so it is not torn down meanwhile).
    `neighbour_cap` raises the host's neighbour table limits; `down` puts them back (neighbours.py).
    `observe`: read the lab's flow sources while probing (observing.py), for the causes and `report`;
    None: where the lab has at most OBSERVE_ENDPOINTS pods and nodes (a larger matrix's flows are
    millions, too many to read)."""
    require_root("check")
    privileges.require_raw_sockets("check")
    lab_name = pick(name)
    with state.locked(lab_name):
        lab, _ = running_lab(lab_name)
        folder = state.lab_dir(lab_name)
        if neighbour_cap is not None:
            neighbours.raise_cap(folder, neighbour_cap, _other_labs(lab_name))
        if ports is not None:  # `check --port` instead of the scenario's probe.ports
            lab = dataclasses.replace(lab, scenario=dataclasses.replace(
                lab.scenario, probe_ports=model.load_probe_ports(ports, "--port")))
        transports.require(lab.scenario.protocol_uses(), lab.scenario.source)  # what check dials, the kernel opens
        from cni_lab.probe import matrix

        if observe is None:
            observe = len(lab.pods) + len(lab.nodes) <= OBSERVE_ENDPOINTS
        if observe:
            result = _observed_run(lab, lambda: matrix.run(lab, progress=progress, mtu=mtu, notice=notice))
        else:
            result = matrix.run(lab, progress=progress, mtu=mtu, notice=notice)
        if lab.capabilities.runs_cni_plugins:
            # as a runtime may: ask every plugin to CHECK what it set up for each pod
            problems = [p for record in sorted(folder.glob(names.CNI_RESULTS)) for p in cni_runtime.check(record, folder)]
            result = dataclasses.replace(result, cni_problems=tuple(problems))
        from cni_lab import faults

        readings = faults.readings(lab)
        if readings:
            result = dataclasses.replace(result, faults=tuple(readings))
        from cni_lab.lesson import causes  # traces the failing pairs: the kernel read while the lab is locked

        return causes.attach_observed(causes.attach(result))


OBSERVE_ENDPOINTS = 200  # check observes labs up to this size unless told (--observe / --no-observe)
FLOW_CAP = 20_000  # flows check decodes and keeps of one run (a 1000-pod matrix sends millions)


def _observed_run(lab: Lab, run: Callable[[], CheckResult]) -> CheckResult:
    """`run` (the matrix) with the lab's flow sources read meanwhile (observing.Recording), and
    what they saw decoded into the result's flows."""
    from cni_lab import faults, observing
    from cni_lab.observe.decode import Decoder

    with observing.Recording(lab) as recording:
        result = run()
    if recording.busy:
        return dataclasses.replace(result, flows_note="another observer (`cni-lab observe`) held the lab's flow "
                                                      "sources: check recorded no flows")
    decoder = Decoder(lab, faults.recorded(lab.name))
    raw = recording.raw(FLOW_CAP)
    flows = [f for r in raw if (f := decoder.flow(r)) is not None]
    note = ""
    if len(raw) >= FLOW_CAP or recording.drained:
        note = f"flows: the first {len(raw)} packets and events read were decoded; more were not kept"
    return dataclasses.replace(result, flows=tuple(flows), flows_note=note)


def record_check(result: CheckResult) -> str:
    """Keep a check's result for `report`, and return it as written. The record is the check's
    JSON document (schema cni-lab/check/v1: what `check --json` prints and `report` reads back),
    so it is rendered here, once, by its one writer in report/; the caller prints this text for
    --json rather than render a 10,000-pair matrix twice."""
    from cni_lab.report import json_junit  # only `check` and `run` record; other commands skip it

    document = json_junit.dumps(json_junit.check_json(result))
    state.save_last_check(result.lab.name, document)
    return document


def last_check(name: str) -> dict[str, object] | None:
    return state.load_last_check(name)


def set_policies(name: str | None, change: Callable[[Lab], tuple[model.PolicySource, ...]]) -> tuple[Lab, Lab]:
    """Change a running lab's NetworkPolicies without rebuilding it: every node's table is made
    anew from the changed set (each `nft -f` one transaction) and the record follows, so `check`
    proves the new truth table. Returns the lab before and after."""
    require_root("policy")
    lab_name = pick(name)
    with state.locked(lab_name):
        before, st = running_lab(lab_name)
        after = dataclasses.replace(before, scenario=dataclasses.replace(before.scenario, policies=change(before)))
        after.policies  # noqa: B018 - checked as the API server would, before any node is touched
        steps = plan.policy_steps(after)  # the same steps `up` ends with
        with apply.Session(state.lab_dir(lab_name)) as session:
            for step in steps:
                apply.apply_step(session, step)
        state.write(dataclasses.replace(st, lab=codec.encode(after)))
    return before, after


def set_services(name: str | None, change: Callable[[Lab], tuple[model.ServiceSpec, ...]]) -> tuple[Lab, Lab]:
    """Change a running lab's Services without rebuilding it (`service apply`, `delete`): `change`
    gives the new list (service_changes.py keeps every existing ClusterIP and nodePort), which is
    checked whole before any node is touched; then every node's Service steps are made anew
    (kube-proxy's table, one `nft -f` each, or the BPF Service maps synced), kube-dns's records
    rewritten and dnsmasq restarted, a recorded `pod-down`'s pod left out of every endpoint list
    (faults.endpoint_steps), and the record follows, so `check`, `status`, `explain` and `graph`
    see the new Services. Returns the lab before and after."""
    require_root("service")
    lab_name = pick(name)
    with state.locked(lab_name):
        before, st = running_lab(lab_name)
        if not st.document.get("services"):  # `up` made no kube-proxy table, no DNS pod: nothing to follow
            raise LabError(f"lab {before.name} was built without Services: add one to the scenario and `up` again")
        after = dataclasses.replace(before, scenario=dataclasses.replace(before.scenario, services=change(before)))
        transports.require(after.scenario.protocol_uses(), after.scenario.source)  # an SCTP port: a kernel without it
        from cni_lab import faults

        steps = faults.endpoint_steps(after)  # every Service resolved and checked here, as `up` checks them
        with apply.Session(state.lab_dir(lab_name)) as session:
            for step in steps:
                apply.apply_step(session, step)
        state.write(dataclasses.replace(st, lab=codec.encode(after)))
    return before, after


def run_cases(name: str | None, selection: conformance.Selection,
              progress: Callable[[int, int, str, int], None] | None = None) -> conformance.Run:
    """Generated NetworkPolicy cases on a running lab of the e2e model, one after another, live:
    each case's policies replace the lab's on every node (the steps `policy apply` loads), its
    probes run (conformance.judge holds every cell against the reference), and at the end the
    lab's own policies are put back, whatever ends the run. The record never changes, and the lab
    stays locked meanwhile. `progress(done, total, current case, cases that differ)`."""
    from concurrent.futures import ThreadPoolExecutor

    from cni_lab import conformance

    require_root("conformance")
    privileges.require_raw_sockets("conformance")
    lab_name = pick(name)
    with state.locked(lab_name):
        lab, _ = running_lab(lab_name)
        problem = conformance.model_problem(lab)
        if problem:
            raise LabError(problem)
        cases = conformance.select(selection, {p.qualified: str(p.ip) for p in lab.pods})
        own = plan.policy_steps(lab)  # what is put back; refused here, unchanged, where policies cannot be enforced
        from cni_lab.probe.cases import CaseProber  # the prober: this command and check alone

        verdicts: list[conformance.CaseVerdict] = []
        started = time.monotonic()
        notes: list[str] = []
        changed = False
        try:
            # one thread per node: each table is its own `nft -f` (a process and a transaction)
            with ThreadPoolExecutor(len(lab.nodes), thread_name_prefix="cni-lab-nft") as loaders, \
                    CaseProber(lab) as prober:
                for done, case in enumerate(cases):
                    if progress is not None:
                        progress(done, len(cases), case.name, sum(not v.passed for v in verdicts))
                    changed = True
                    verdicts.append(_run_case(lab, case, prober, loaders))
                notes = prober.notes
        finally:  # a case's tables never outlive the run: the pool above has waited for its loads
            if changed:
                with apply.shielded():
                    _load_policy_steps(own, None)
        if progress is not None:
            progress(len(cases), len(cases), "", sum(not v.passed for v in verdicts))
        return conformance.Run(lab.name, lab.dataplane, selection, tuple(verdicts), time.monotonic() - started,
                               conformance.labels(lab), tuple(notes))


def _run_case(lab: Lab, case: Case, prober: CaseProber, loaders: ThreadPoolExecutor) -> conformance.CaseVerdict:
    """One case: its policies rendered and loaded on every node and the nodes' conntrack emptied
    (apply), its cells probed (probe) and held against the reference (judge); cells allowed but
    unanswered are probed again with check's waits (counted as probe time), then judged again."""
    from cni_lab import conformance

    started = time.monotonic()
    case_lab = conformance.with_case(lab, case)
    _load_policy_steps(plan.policy_steps(case_lab), loaders)
    prober.forget()
    apply_s = time.monotonic() - started
    started = time.monotonic()
    seen = prober.observe(case.probes)
    probe_s = time.monotonic() - started
    started = time.monotonic()
    cells = conformance.judge(case_lab, seen, prober.node_sources)
    judge_s = time.monotonic() - started
    again = conformance.suspects(cells)
    if again:
        started = time.monotonic()
        seen |= prober.again(again)
        probe_s += time.monotonic() - started
        started = time.monotonic()
        cells = conformance.judge(case_lab, seen, prober.node_sources)
        judge_s += time.monotonic() - started
    return conformance.case_verdict(case_lab, case, cells, len(again), apply_s, probe_s, judge_s)


def _load_policy_steps(steps: Sequence[Step], loaders: ThreadPoolExecutor | None) -> None:
    """A lab's policy steps (plan.policy_steps): the sysctls, then every node's table, side by
    side on `loaders` (one after another without). Every load has ended when this returns or raises."""
    from concurrent.futures import wait

    def one(session: apply.Session, step: Step) -> None:
        try:
            apply.apply_step(session, step)
        except OSError as e:
            raise LabError(f"{step.describe()}: {e.strerror or e}") from None

    with apply.Session() as session:
        for step in steps:
            if not isinstance(step, LoadNftables) or loaders is None:
                one(session, step)
        if loaders is None:
            return
        loads = [loaders.submit(one, session, step) for step in steps if isinstance(step, LoadNftables)]
        wait(loads)
        for load in loads:
            load.result()
