"""The command line: parse, call, render. Nothing here builds or probes anything itself.

One module per family of commands; importing one registers its commands on the group, and the
group imports only the module of the command being run (app.COMMANDS), so `check` never pays
for the modules of `graph` or `demo`.
"""

import gc

# A command allocates many objects and makes few cycles: importing, planning a 1000-pod lab,
# encoding its netlink messages. Python's default (a collection every 700 allocations) spends
# ~10% of a 100-pod `up` in the collector; every 100,000 is plenty (bench/ measures it).
gc.set_threshold(100_000, 50, 100)

from cni_lab.cli.app import cli, main  # noqa: E402  (after the collector is set: imports allocate)

__all__ = ["cli", "main"]
