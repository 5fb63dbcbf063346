"""Where scenarios come from (a file path, or the name of one shipped with cni-lab) and the lab each
resolves to, with its data plane's answers (no root needed)."""

from __future__ import annotations

from pathlib import Path

from cni_lab import cluster, dataplanes, model
from cni_lab.model import Scenario
from cni_lab.errors import LabError
from cni_lab.cluster import Lab


def _builtin_scenarios() -> Path:
    """Where the shipped scenarios are: inside the installed package (cni_lab/scenarios/), or
    scenarios/ at the top of a checkout (an editable install maps the one to the other)."""
    here = Path(__file__).resolve().parent
    installed = here / "scenarios"
    return installed if any(installed.glob("*.yaml")) else here.parent / "scenarios"


BUILTIN_SCENARIOS = _builtin_scenarios()


def builtin_scenarios() -> list[tuple[str, str, str]]:
    """(name, data plane, description) of every shipped scenario."""
    out = []
    for path in sorted(BUILTIN_SCENARIOS.glob("*.yaml")):
        try:
            s = model.load_file(path)
            out.append((path.stem, s.dataplane, s.description))
        except LabError as e:
            out.append((path.stem, "?", e.problems[0]))
    return out


def scenario_path(arg: str) -> Path:
    """A scenario argument: a file path, or the name of a scenario shipped in scenarios/."""
    path = Path(arg)
    if path.exists() or "/" in arg or arg.endswith((".yaml", ".yml")):
        return path
    builtin = BUILTIN_SCENARIOS / f"{arg}.yaml"
    return builtin if builtin.exists() else path


def resolve(scenario: Scenario) -> Lab:
    """A scenario → its lab: every address decided, with what its data plane does in it."""
    return cluster.resolve(scenario, dataplanes.get(scenario.dataplane).capabilities(scenario))


def load(arg: str, name: str | None = None) -> Lab:
    """Scenario file → validated, addressed lab (no root needed)."""
    return resolve(model.load_file(scenario_path(arg), name_override=name))


def shipped(path: str) -> bool:
    """Whether a file is one of the scenarios (or configuration lists) shipped with cni-lab."""
    return Path(path).resolve().parent == BUILTIN_SCENARIOS.resolve()
