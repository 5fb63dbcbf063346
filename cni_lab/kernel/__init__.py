"""The only side effects: namespaces, netlink, sysctls, processes. Nothing else imports pyroute2.

The ground floor: typed functions of names, addresses and paths. It knows no plan, step or data
plane (executor/ turns steps into these calls; tests/unit/test_imports.py holds it so).

pyroute2 takes ~0.14 s to import as a whole, most of a 100-pod `up`'s own work: its package
`__init__` loads every API it has (IPRoute, NDB, IPDB, conntrack, ...). `up` needs only its message
classes (pyroute2.netlink), so the package is registered here without running that `__init__`,
which runs the first time a name of the package itself is asked for (`from pyroute2 import
IPRoute`, when a view is read). `rtnl` (writing) is imported where a step needs it and `IPRoute`
(reading) where a view is read, so `check`, `status` and `down` never load it (bench/ measures
whole commands; tests/unit/test_imports.py holds both halves of this).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _package_without_init() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the imports that need it fail with their own error
    package = importlib.util.module_from_spec(spec)
    ran = False

    def __getattr__(name: str) -> Any:  # PEP 562: a name the package does not have yet
        nonlocal ran
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # a module of the package (`from pyroute2 import config`)
        if not ran:
            ran = True
            spec.loader.exec_module(package)  # type: ignore[union-attr]
            return getattr(package, name)
        raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")

    setattr(package, "__getattr__", __getattr__)
    sys.modules["pyroute2"] = package


_package_without_init()
