"""Ports as the API server checks them: a pod's container ports (`ports` on a pod entry, as
validateContainerPorts in kubernetes pkg/apis/core/validation/validation.go takes a container's),
and the port names a NetworkPolicy's port or a Service's targetPort may give instead of a number
(IsValidPortName, apimachinery's pkg/util/validation/validation.go: IANA_SVC_NAME)."""

from __future__ import annotations

import re
from typing import Any

from cni_lab.model.problems import Problems
from cni_lab.model.scenario import ContainerPort

CONTAINER_PORT_KEYS = ("name", "containerPort", "protocol")
PORT_PROTOCOLS = ("SCTP", "TCP", "UDP")  # supportedPortProtocols, listed as NotSupported lists them
MAX_PORT_NAME = 15
_CHARSET = re.compile(r"[-a-z0-9]+")
_LETTER = re.compile(r"[a-z]")


def port_name_problems(name: str) -> list[str]:
    """What IsValidPortName says of a name (nothing: it is one), in its words and order."""
    problems = []
    if len(name) > MAX_PORT_NAME:
        problems.append(f"must be no more than {MAX_PORT_NAME} characters")
    if not _CHARSET.fullmatch(name):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _LETTER.search(name):
        problems.append("must contain at least one letter (a-z)")
    if "--" in name:
        problems.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return problems


def port_name_refusal(value: object) -> str | None:
    """A refusal of `value` as a port name, one line's message; None for a valid name."""
    problems = port_name_problems(value) if isinstance(value, str) else ["must be text"]
    return f"{value!r} is not a valid port name (IANA_SVC_NAME): {'; '.join(problems)}" if problems else None


def is_port_number(value: object) -> bool:
    """IsValidPortNum: 1-65535 (a YAML true is no number)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def read_container_ports(problems: Problems, value: Any, key: str) -> tuple[ContainerPort, ...]:
    """`ports: [{name: http, containerPort: 8080, protocol: TCP}]`: a number is required, the
    protocol defaults to TCP, a name is optional and unique in the pod. Each problem is a line."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add(key, "must be a list of container ports, e.g. [{name: http, containerPort: 8080, protocol: TCP}]")
        return ()
    out = []
    names: set[str] = set()
    for at, raw in problems.mappings(value, key, CONTAINER_PORT_KEYS):
        ok = True
        name = raw.get("name", "")
        if name != "":  # len(port.Name) > 0: a name is checked; none is fine
            refusal = port_name_refusal(name)
            if refusal is not None:
                problems.add(f"{at}.name", refusal)
                ok = False
            elif name in names:
                problems.add(f"{at}.name", f"{name!r} is given twice: a pod's port names are unique "
                             "(the API server's validateContainerPorts)")
                ok = False
            else:
                names.add(name)
        number: Any = raw.get("containerPort")
        if number is None or number == 0:
            problems.add(f"{at}.containerPort", "required")
            ok = False
        elif not is_port_number(number):
            problems.add(f"{at}.containerPort", f"{number!r}: must be between 1 and 65535, inclusive")
            ok = False
        protocol = raw.get("protocol", "TCP")
        if protocol not in PORT_PROTOCOLS:
            problems.add(f"{at}.protocol", f"{protocol!r}: supported values: {', '.join(PORT_PROTOCOLS)}")
            ok = False
        if ok:
            out.append(ContainerPort(int(number), str(protocol), str(name)))
    return tuple(out)
