"""The one user-error type. The CLI maps it to exit code 2 and one line per problem."""

from __future__ import annotations


class LabError(Exception):
    """A problem the user can fix: bad input, missing privilege, a busy lab.

    `problems` holds one line per problem so that validation can report all of them at once.
    """

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems or ("unknown error",)
        super().__init__("; ".join(self.problems))
