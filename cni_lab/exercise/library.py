"""Where exercises come from: the ones shipped with cni-lab (exercises/ at the top of a checkout,
cni_lab/exercises/ in an installed wheel) and a teacher's folder (`--dir`). No root needed."""

from __future__ import annotations

from pathlib import Path

from cni_lab.errors import LabError
from cni_lab.exercise import spec
from cni_lab.exercise.spec import Exercise


def _shipped_folder() -> Path:
    package = Path(__file__).resolve().parent.parent
    installed = package / "exercises"
    return installed if any(installed.glob("*.yaml")) else package.parent / "exercises"


SHIPPED = _shipped_folder()


def shipped(path: str | Path) -> bool:
    """Whether a file is one of cni-lab's own exercises (as trusted as its code)."""
    return Path(path).resolve().parent == SHIPPED.resolve()


def files(folder: str | None = None) -> list[Path]:
    """The shipped exercise files, then the teacher's folder's (its *.yaml, not below)."""
    found = sorted(SHIPPED.glob("*.yaml"))
    if folder is not None:
        where = Path(folder)
        if not where.is_dir():
            raise LabError(f"--dir {folder}: no such folder")
        found += sorted(where.glob("*.yaml"))
    return found


def load(path: str | Path) -> Exercise:
    return spec.load_file(path, shipped=shipped(path))


def load_all(folder: str | None = None) -> list[Exercise]:
    """Every exercise, or one LabError with every problem of every file; a name used twice is one."""
    exercises: list[Exercise] = []
    problems: list[str] = []
    for path in files(folder):
        try:
            exercises.append(load(path))
        except LabError as e:
            problems += e.problems
    seen: dict[str, str] = {}
    for ex in exercises:
        if ex.name in seen:
            problems.append(f"{ex.source}: name: {ex.name!r} is also the name of {seen[ex.name]}")
        seen[ex.name] = ex.source
    if problems:
        raise LabError(*problems)
    return exercises


def find(name: str, folder: str | None = None) -> Exercise:
    """One exercise by name (shipped, or in the teacher's folder)."""
    for path in files(folder):
        if path.stem == name:
            return load(path)
    for ex in load_all(folder):  # a file whose name is not the exercise's
        if ex.name == name:
            return ex
    known = ", ".join(p.stem for p in files(folder))
    raise LabError(f"no exercise named {name!r} (exercises: {known}; a teacher's folder: --dir DIR)")
