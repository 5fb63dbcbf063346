"""The command line: parse, call, render. Nothing here builds or probes anything itself.

One module per family of commands; importing them registers their commands on the group.
"""

from cni_lab.cli import lab, lesson, machine, pictures, proof  # noqa: F401  (registers the commands)
from cni_lab.cli.app import cli, main

__all__ = ["cli", "main"]
