"""What every section reader shares: the list of problems found so far, and the checks of
unknown keys and names. Problems are values, raised together at the end (rule 6)."""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Iterator

from cni_lab.errors import LabError


class Problems:
    """Every problem of one input (a scenario, a policy file, `check --port`), one line each:
    `<source>: <key>: <message>`."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        # one line per problem, whatever the document holds: control characters are shown escaped
        line = f"{self.source}: {key}: {message}"
        self.lines.append("".join(c if c.isprintable() else repr(c)[1:-1] for c in line))

    def raise_if_any(self) -> None:
        if self.lines:
            raise LabError(*self.lines)

    def unknown_keys(self, mapping: dict[Any, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.add(f"{prefix}{key}", f"unknown key{hint(key, allowed)}; known keys: {', '.join(allowed)}")

    def mappings(self, items: Iterable[Any], key: str, allowed: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The mappings of a list (`services`, a Service's `ports`, `expect`), each with its key
        (`services[0]`) and its keys checked; any other entry is a problem, found in its turn."""
        for i, raw in enumerate(items):
            at = f"{key}[{i}]"
            if not isinstance(raw, dict):
                self.add(at, "must be a mapping with keys " + ", ".join(allowed))
                continue
            self.unknown_keys(raw, allowed, f"{at}.")
            yield at, raw


def hint(value: object, choices: tuple[str, ...]) -> str:
    """` (did you mean 'host-gw'?)` for a near miss, else nothing."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def read_name(problems: Problems, value: Any, key: str, pattern: re.Pattern[str], rule: str) -> str | None:
    """A lab's or a node's name: it becomes part of namespace and interface names."""
    if not isinstance(value, str) or not pattern.match(value):
        shown = "missing" if value is None else f"{value!r} is not a valid name"
        problems.add(key, f"{shown}: use {rule}")
        return None
    return value
