"""An exercise file → a validated Exercise, or one LabError with a line per problem (pure).

    name: hostgw-route           # also the lab's name: 1-12 of [a-z0-9-], starting with a letter
    title: Pods on node1 cannot reach node2's pods   # the symptom, in one line (`exercise list`)
    level: beginner              # beginner | intermediate | advanced
    dataplane: host-gw           # optional: must be the scenario's (list shows the scenario's)
    scenario: two-nodes          # a shipped scenario's name, a file (relative to this one), or a mapping
    break:                       # what `exercise start` does to the running lab, in order
      - run: {node: node1, command: "ip route del 10.244.1.0/24"}   # sh -c, in a node's or pod's namespace
                                 # ($LAB: the lab's name, $LAB_STATE: its state folder)
      - fault: route-del node1 node2                                # a `cni-lab fault`, not recorded
      - policy: policies/deny.yaml                                   # NetworkPolicies applied (file or inline)
      - service: files/web-typo.yaml                                 # Services applied (file or inline), as
                                                                     # `cni-lab service apply` applies them
    task: ...                    # what the learner is told: the symptom, never the cause
    hints: [...]                 # each more direct than the last
    solution: [...]              # shell commands, runnable as written from the repository's root
    wrong_fixes: [[...], ...]    # plausible fixes that must still fail grading (a kernel test applies each)
    grade: [...]                 # assertions (assertions.py), all must hold
    lesson: ...                  # optional: what was wrong and why, shown once it is fixed

Nothing here runs anything: `exercise validate` and `exercise list` need no root.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cni_lab import catalog, fault_kinds, model, plan, service_changes
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.exercise.assertions import Assertion, read as read_assertions
from cni_lab.model import Problems, hint, read_name, read_policies

KEYS = ("name", "title", "level", "dataplane", "scenario", "break", "task", "hints", "solution", "wrong_fixes",
        "grade", "lesson")
REQUIRED = ("name", "title", "level", "scenario", "break", "task", "hints", "solution", "grade")
LEVELS = ("beginner", "intermediate", "advanced")
STEP_KINDS = ("run", "fault", "policy", "service")
RUN_KEYS = ("node", "command")


@dataclass(frozen=True)
class Step:
    """One thing `exercise start` does to break the lab."""

    kind: str  # run | fault | policy | service
    target: str = ""  # run: node or node/pod whose namespace runs the command
    command: str = ""  # run: a shell command; fault: "route-del node1 node2"
    policies: tuple[model.PolicySource, ...] = ()
    services: tuple[model.ServiceSpec, ...] = ()
    where: str = ""  # service: the file (or the exercise) its Services come from, for their problems

    def describe(self) -> str:
        if self.kind == "run":
            return f"in {self.target}: {self.command}"
        if self.kind == "fault":
            return f"fault {self.command}"
        if self.kind == "service":
            return f"service apply ({', '.join(f'{s.namespace}/{s.name}' for s in self.services)})"
        return f"policy apply ({len(self.policies)} NetworkPolicies)"


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    level: str
    source: str  # the exercise file
    lab: Lab  # the scenario, resolved under the exercise's name
    breaks: tuple[Step, ...]
    task: str
    hints: tuple[str, ...]
    solution: tuple[str, ...]
    wrong_fixes: tuple[tuple[str, ...], ...]
    grade: tuple[Assertion, ...]
    lesson: str = ""
    shipped: bool = False  # one of cni-lab's own (trusted as its code is)
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def dataplane(self) -> str:
        return self.lab.dataplane


def load_file(path: str | Path, shipped: bool = False) -> Exercise:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabError(f"{path}: cannot read exercise: {getattr(e, 'strerror', None) or e}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise LabError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or 'not valid YAML'}") from None
    return load_document(document, str(path), shipped)


def _text(p: Problems, document: dict[str, Any], key: str) -> str:
    value = document.get(key, "")
    if not isinstance(value, str) or (key in REQUIRED and not value.strip()):
        p.add(key, "missing" if value in ("", None) else "must be text")
        return ""
    return value.strip()


def _texts(p: Problems, value: Any, key: str, required: bool = True) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value) or not all(isinstance(v, str) and v.strip() for v in value):
        p.add(key, "must be a non-empty list of text" if required else "must be a list of text")
        return ()
    return tuple(v.strip() for v in value)


def _scenario(p: Problems, value: Any, source: str, name: str | None) -> Lab | None:
    """The scenario: a shipped one's name, a file beside the exercise, or a mapping; resolved
    (and planned: what a data plane rules out) under the exercise's name."""
    where = Path(source).parent
    try:
        if isinstance(value, dict):
            scenario = model.load_document({"name": name or "x", **value}, f"{source}: scenario", name_override=name)
        elif isinstance(value, str) and value:
            path = catalog.scenario_path(value)
            if not path.exists() and not path.is_absolute():
                path = where / value
            scenario = model.load_file(path, name_override=name)
        else:
            p.add("scenario", "a shipped scenario's name, a file, or a scenario mapping")
            return None
        lab = catalog.resolve(scenario)
        plan.build(lab)
        return lab
    except LabError as e:
        for problem in e.problems:
            p.add("scenario", problem)
        return None


def _target(p: Problems, lab: Lab | None, target: Any, key: str, pods: bool = True) -> str:
    """A node (or node/pod) of the lab, as `cni-lab exec` names it."""
    if not isinstance(target, str) or not target:
        p.add(key, "must name a node" + (" or a pod (node1/web)" if pods else ""))
        return ""
    if lab is None:
        return target
    node, _, pod = target.partition("/")
    known = {n.name: {q.name for q in n.pods} for n in lab.nodes}
    if node not in known:
        p.add(key, f"the scenario has no node {node!r}{hint(node, tuple(known))} (nodes: {', '.join(known)})")
    elif pod and (not pods or pod.replace("/", ".") not in known[node]):
        p.add(key, f"node {node} has no pod {pod!r} (pods: {', '.join(sorted(known[node])) or 'none'})"
              if pods else "must name a node, not a pod")
    return target


def _fault(p: Problems, lab: Lab | None, value: Any, key: str) -> str:
    words = value.split() if isinstance(value, str) else []
    if not words or words[0] not in fault_kinds.KINDS:
        kind = words[0] if words else value
        p.add(key, f"unknown fault kind {kind!r}{hint(kind, fault_kinds.KINDS)}; known: {', '.join(fault_kinds.KINDS)}")
        return ""
    wanted = fault_kinds.ARGUMENTS[words[0]]
    if len(words) - 1 != len(wanted):
        p.add(key, f"usage: {fault_kinds.usage(words[0])}")
        return ""
    for arg, shape in zip(words[1:], wanted):
        if shape == "pod" and "/" not in arg:
            p.add(key, f"{arg!r} must name a pod (NODE/POD)")
        elif not (shape == "node-or-router" and arg == "router"):
            _target(p, lab, arg, key, pods=shape == "pod")
    return " ".join(words)


def _steps(p: Problems, value: Any, lab: Lab | None, source: str) -> tuple[Step, ...]:
    if not isinstance(value, list) or not value:
        p.add("break", "must be a non-empty list of steps (run:, fault:, policy: or service:)")
        return ()
    steps = []
    for i, raw in enumerate(value):
        at = f"break[{i}]"
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in STEP_KINDS:
            p.add(at, f"a step is one of {', '.join(k + ':' for k in STEP_KINDS)}")
            continue
        kind, body = next(iter(raw.items()))
        if kind == "run":
            if not isinstance(body, dict):
                p.add(f"{at}.run", "must be a mapping {node: NODE or NODE/POD, command: TEXT}")
                continue
            p.unknown_keys(body, RUN_KEYS, f"{at}.run.")
            command = body.get("command")
            if not isinstance(command, str) or not command.strip():
                p.add(f"{at}.run.command", "missing: the shell command to run in the node's namespace")
            steps.append(Step("run", _target(p, lab, body.get("node"), f"{at}.run.node"), str(command or "").strip()))
        elif kind == "fault":
            steps.append(Step("fault", command=_fault(p, lab, body, f"{at}.fault")))
        elif kind == "service":
            # as `service apply` reads a file (relative to the exercise), against the lab's namespaces
            spaces = {ns.name for ns in lab.scenario.namespaces} if lab is not None else {model.DEFAULT_NAMESPACE}
            steps.append(Step("service", services=model.read_service_values(p, body, source, spaces, f"{at}.service"),
                              where=f"{source}: {at}.service"))
        else:
            entries = body if isinstance(body, list) else [body]
            # a file is read relative to the exercise, as a scenario's policies are to the scenario
            steps.append(Step("policy", policies=read_policies(p, entries, source)))
    return tuple(steps)


def _check_policies(p: Problems, lab: Lab | None, steps: tuple[Step, ...]) -> None:
    """A policy step's objects, read as the API server reads them (what `policy apply` refuses)."""
    added = tuple(s for step in steps if step.kind == "policy" for s in step.policies)
    if lab is None or not added:
        return
    try:
        dataclasses.replace(lab, scenario=dataclasses.replace(lab.scenario, policies=lab.scenario.policies + added)).policies
    except LabError as e:
        for problem in e.problems:
            p.add("break", problem)


def _with_services(p: Problems, lab: Lab | None, steps: tuple[Step, ...]) -> Lab | None:
    """The lab once its `service:` steps are applied, as `service apply` would change it (what it
    refuses, said here), for the assertions to name the Services it has then."""
    if lab is None:
        return None
    for step in (s for s in steps if s.kind == "service"):
        if not lab.scenario.services:
            p.add("break", "a service: step needs a scenario with Services (`service apply` refuses a lab built "
                  "without them)")
            return lab
        try:
            after = dataclasses.replace(lab, scenario=dataclasses.replace(
                lab.scenario, services=service_changes.applied(lab, step.services, step.where)))
            plan.service_steps(after, after.services)  # every Service resolved, as `up` resolves them
        except LabError as e:  # each line names the exercise's step already (step.where) or the scenario
            p.lines += [line if line.startswith(step.where) else f"{step.where}: {line}" for line in e.problems]
            return lab
        lab = after
    return lab


def load_document(document: Any, source: str, shipped: bool = False) -> Exercise:
    """Check a parsed exercise and return it, or raise LabError listing every problem."""
    p = Problems(source)
    if not isinstance(document, dict):
        raise LabError(f"{source}: an exercise is a mapping with keys {', '.join(KEYS)}")
    p.unknown_keys(document, KEYS, "")
    for key in REQUIRED:
        if key not in document:
            p.add(key, "missing")
    name = read_name(p, document.get("name"), "name", model.LAB_NAME,
                     "1-12 of [a-z0-9-], starting with a letter (it is also the lab's name)") if "name" in document else None
    level = document.get("level")
    if "level" in document and level not in LEVELS:
        p.add("level", f"{level!r} is not a level{hint(level, LEVELS)}; use {', '.join(LEVELS)}")
    lab = _scenario(p, document.get("scenario"), source, name) if "scenario" in document else None
    if "dataplane" in document and lab is not None and document["dataplane"] != lab.dataplane:
        p.add("dataplane", f"{document['dataplane']!r}, but the scenario's data plane is {lab.dataplane}")
    breaks = _steps(p, document.get("break"), lab, source) if "break" in document else ()
    _check_policies(p, lab, breaks)
    wrong = document.get("wrong_fixes") or []
    if not isinstance(wrong, list):
        p.add("wrong_fixes", "must be a list of fixes, each a list of shell commands")
        wrong = []
    wrong_fixes = tuple(_texts(p, w, f"wrong_fixes[{i}]") for i, w in enumerate(wrong))
    grade = read_assertions(p, document.get("grade"), _with_services(p, lab, breaks)) if "grade" in document else ()
    exercise = Exercise(
        name=name or "", title=_text(p, document, "title"), level=str(level), source=source, lab=lab,  # type: ignore[arg-type]
        breaks=breaks, task=_text(p, document, "task"), hints=_texts(p, document.get("hints"), "hints"),
        solution=_texts(p, document.get("solution"), "solution"), wrong_fixes=wrong_fixes, grade=grade,
        lesson=_text(p, document, "lesson"), shipped=shipped, document=document)
    p.raise_if_any()
    return exercise
