"""Names in words: a pod's resolv.conf and each step of its resolver (`explain POD`), and a name
followed from its lookup to the connection (`trace POD NAME`)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from cni_lab.lesson.name_lookups import NameTrace, PodNames
from cni_lab.probe.dns_probes import Lookup
from cni_lab.report import trace_view


def steps(found: Lookup) -> list[str]:
    """Each name the resolver asked, with what kube-dns said, in glibc's order."""
    out = []
    for i, (name, code) in enumerate(found.asked, 1):
        meaning = {"NXDOMAIN": "no such name: the next search domain",
                   "NOERROR": f"answered {', '.join(found.addresses)}" if i == len(found.asked) and found.addresses
                   else "the name exists, no address of that type: the next one",
                   "REFUSED": "not the cluster's (no upstream: nothing leaves the machine)",
                   "timeout": "no answer: the search stops here (glibc's TRY_AGAIN)"}.get(code, code)
        out.append(f"  {i}. {name}  → {code}: {meaning}")
    return out


def pod_view(facts: PodNames) -> RenderableType:
    parts: list[RenderableType] = [Text(f"pod {facts.pod}: /etc/resolv.conf (as `ip netns exec` and `cni-lab exec` "
                                        "show it, bind-mounted from /etc/netns/<its namespace>/)", style="bold")]
    parts += [Text(f"  {line}") for line in (facts.resolv_conf or "(none written)\n").splitlines()]
    for name, found in facts.lookups:
        dots = name.count(".")
        parts.append(Text(f"{name}: {dots} dot{'s' if dots != 1 else ''} < ndots 5, so the search list first"
                          if dots < 5 else f"{name}: {dots} dots ≥ ndots 5, so as it is first", style="bold"))
        parts += [Text(line) for line in steps(found)]
    return Group(*parts)


def name_trace_view(t: NameTrace) -> RenderableType:
    parts: list[RenderableType] = [Text(f"{t.src} looks up {t.name} (its resolv.conf: kube-dns)", style="bold")]
    parts += [Text(line) for line in steps(t.lookup)]
    parts.append(Text("the query's way to kube-dns (its dns-tcp port; the UDP one is DNATed alike):", style="bold"))
    parts.append(trace_view.service_view(t.query))
    if not t.address:
        parts.append(Text(f"{t.name}: no address, so no connection", style="red"))
    elif t.connection is not None:
        parts.append(Text(f"then the connection to {t.address}:", style="bold"))
        parts.append(trace_view.service_view(t.connection))
    else:
        parts.append(Text(f"{t.name} is {t.address}: trace it with `cni-lab trace {t.src} {t.address}`", style="cyan"))
    return Group(*parts)
