"""The `probe` section: the ports `check` probes besides ICMP (`probe: {ports: [tcp/80, udp/81, sctp/82]}`),
and `check --port`, which is read by the same rule."""

from __future__ import annotations

import re
from typing import Any

from cni_lab.model.problems import Problems
from cni_lab.model.scenario import ProbePort

PROBE_KEYS = ("ports",)
PROBE_PORT = re.compile(r"^(tcp|udp|sctp)/([0-9]{1,5})\Z")  # SCTP: refused at up/check where the kernel has none
CHECK_OWN_PORT = 31999  # the UDP port every endpoint's responder listens on (probe/engine.py's PROBE_PORT)


def parse_probe_port(text: object) -> ProbePort | None:
    """`tcp/80` (any case) as a ProbePort; None for anything else, and for check's own port."""
    m = PROBE_PORT.match(str(text).lower())
    if not m or not 1 <= int(m.group(2)) <= 65535 or int(m.group(2)) == CHECK_OWN_PORT:
        return None
    return ProbePort(m.group(1).upper(), int(m.group(2)))


def read_probe(problems: Problems, value: Any) -> tuple[ProbePort, ...]:
    """The section; a port given twice (`tcp/80`, `TCP/080`) is probed once."""
    raw = value or {}
    if not isinstance(raw, dict):
        problems.add("probe", "must be a mapping with keys " + ", ".join(PROBE_KEYS))
        return ()
    problems.unknown_keys(raw, PROBE_KEYS, "probe.")
    ports = raw.get("ports") or []
    if not isinstance(ports, list):
        problems.add("probe.ports", "must be a list such as [tcp/80, udp/81]")
        return ()
    out = []
    for i, p in enumerate(ports):
        port = parse_probe_port(p)
        if port is None:
            problems.add(f"probe.ports[{i}]", f"{p!r} is not tcp/PORT, udp/PORT or sctp/PORT (1-65535; 31999 is check's own)")
            continue
        out.append(port)
    return tuple(dict.fromkeys(out))
