"""The map of cni_lab's imports has no circle: every module can be read knowing only those below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cni_lab"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module → the cni_lab modules it imports anywhere (at the top, in functions, for typing)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_the_import_map_has_no_circle() -> None:
    assert cycles(imports()) == []


def test_no_circle_through_the_data_planes_registry() -> None:
    """The registry names each data plane's module by string and `dataplanes.get` imports it when
    asked (a plugin table, as containerlab's node kinds): count that as an import too, so a lower
    floor that asks for a data plane (and so imports the lab that data plane wires) is a circle."""
    from cni_lab.dataplanes import registry

    graph = imports()
    graph["cni_lab.dataplanes"] |= {target.partition(":")[0] for target in registry.PLANES.values()}
    assert cycles(graph) == []
    graph["cni_lab.ipam"].add("cni_lab.dataplanes")  # what asking for a data plane from ipam would be
    assert cycles(graph)


# kernel/ is the ground floor: side effects as typed functions of primitive values (names,
# addresses, paths). It may import of cni_lab only itself, the one error type and the naming
# rules every floor shares; never the plan, its steps, a data plane, the executor that walks a
# plan (cni_lab/executor/), the prober, the lessons or the renderers.
KERNEL_MAY_IMPORT = ("cni_lab.kernel", "cni_lab.errors", "cni_lab.names")


def up_a_floor(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """kernel module → what it imports of cni_lab from above the ground floor."""
    allowed = lambda m: any(m == a or m.startswith(a + ".") for a in KERNEL_MAY_IMPORT)  # noqa: E731
    found = {m: sorted(n for n in imported if not allowed(n)) for m, imported in graph.items()
             if m == "cni_lab.kernel" or m.startswith("cni_lab.kernel.")}
    return {m: names for m, names in found.items() if names}


def test_kernel_is_the_ground_floor() -> None:
    assert up_a_floor(imports()) == {}


def test_the_floor_check_finds_an_import_up() -> None:
    graph = {"cni_lab.kernel.x": {"cni_lab.kernel.netns", "cni_lab.errors", "cni_lab.steps"}, "cni_lab.plan": {"cni_lab.steps"}}
    assert up_a_floor(graph) == {"cni_lab.kernel.x": ["cni_lab.steps"]}


def test_the_circle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_test_files_have_names_of_their_own() -> None:
    """pytest imports test modules by their base name (no packages here): two files of one name
    in tests/unit and tests/kernel break the collection of the whole suite."""
    from collections import Counter

    tests = Path(__file__).resolve().parents[1]
    names = Counter(p.name for p in tests.rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1]
