"""The command line: parse, call, render. Nothing here builds or probes anything itself.

One module per family of commands; importing one registers its commands on the group, and the
group imports only the module of the command being run (app.COMMANDS), so `check` never pays
for the modules of `graph` or `demo`.
"""

from cni_lab.cli.app import cli, main

__all__ = ["cli", "main"]
