"""Data planes: how pods are wired into their node and how nodes reach each other's pods.

Each module describes one real CNI setup in plan steps; none of them talks to the kernel. Each
declares what it does (capabilities.py), which the rest of the code asks instead of its name;
registry.py names them.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from cni_lab.dataplanes import registry
from cni_lab.dataplanes.capabilities import Declares
from cni_lab.errors import LabError

if TYPE_CHECKING:
    from cni_lab.cluster import Lab, Node, Pod, Service
    from cni_lab.steps import Step


@runtime_checkable
class DataPlane(Declares, Protocol):
    name: str

    def needs(self, lab: Lab) -> tuple[tuple[str, str], ...]:
        """(program, Debian package) pairs that must be installed before `up` builds anything."""

    def runs_as_root(self, lab: Lab) -> tuple[str, ...]:
        """Files beyond the system's own programs that `up` executes or reads as code with root's
        rights (CNI plugins and their configuration): each must be root's alone."""

    def validate(self, lab: Lab) -> None:
        """Raise LabError when the lab cannot work with this data plane (checked before `up`)."""

    def node_steps(self, lab: Lab, node: Node) -> list[Step]:
        """What a node needs before its pods are wired (a bridge, a tunnel device)."""

    def pod_steps(self, lab: Lab, node: Node, pod: Pod) -> list[Step]:
        """Wiring one pod into its node (what a CNI plugin's ADD does)."""

    def cluster_steps(self, lab: Lab) -> list[Step]:
        """What makes pods on different nodes reach each other (routes, tunnels)."""


@runtime_checkable
class BalancesServices(Protocol):
    """A data plane that balances Services itself (Capabilities.services "cilium-bpf")."""

    def service_steps(self, lab: Lab, services: Sequence[Service]) -> list[Step]:
        """Every node's share of these Services (the lab's, or fewer while a fault holds endpoints
        back): applying them again makes the nodes hold exactly these."""


@runtime_checkable
class EnforcesPolicy(Protocol):
    """A data plane that enforces NetworkPolicy itself (Capabilities.policy "cilium-bpf")."""

    def policy_steps(self, lab: Lab) -> list[Step]:
        """What every node needs for the lab's policies; applied again on a running lab, they
        make the nodes hold exactly these (raise LabError where they cannot be held)."""


@functools.cache
def get(name: str) -> DataPlane:
    """The data plane called `name` (registry.py; one instance: data planes keep no state), its
    module imported now; LabError for a name the registry does not know."""
    try:
        module, _, cls = registry.PLANES[name].partition(":")
    except KeyError:
        raise LabError(f"unknown data plane {name!r} (known: {', '.join(registry.PLANES)})") from None
    plane = getattr(importlib.import_module(module), cls)()
    if not isinstance(plane, DataPlane):
        raise TypeError(f"{registry.PLANES[name]} is not a data plane")
    return plane
