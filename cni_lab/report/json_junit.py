"""Machine-readable check results: JSON (schema in docs/check.schema.json) and JUnit XML."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.report.terminal import grouped, service_words

if TYPE_CHECKING:  # results are made by `check`; `up --json` needs no prober
    from cni_lab.probe.matrix import CheckResult, FailureCause, PairResult
    from cni_lab.probe.pairs import PairCause
from cni_lab.state import Status

SCHEMA_ID = "cni-lab/check/v1"
PAIRS_IN_FULL = 20_000


def pair_json(r: PairResult) -> dict[str, Any]:
    p = r.pair
    out = {
        "src": p.src.id,
        "dst": p.dst.id,
        "srcIP": p.src.address,
        "dstIP": p.dst.address,
        "rule": p.rule,
        "family": p.src.family,
        "protocol": "ICMP",  # the echo (with the UDP probe to 31999) decides the pair's verdict
        "port": None,
        "verdict": r.verdict,
        "expected": sorted(p.expected),
        "met": r.met,
        "rttMs": None if r.rtt_ms is None else round(r.rtt_ms, 3),
        "observedSource": r.observed,
        "answeredBy": r.answered_by,
        "detail": r.detail,
    }
    if r.explain is not None and (cause := r.cause) is not None:  # a policy lab's pairs only
        out["cause"] = cause.describe()
    if r.failure is not None:  # a pair not as expected: why (lesson/causes.py)
        out["failureCause"] = failure_json(r.failure)
    return out


def failure_json(cause: FailureCause) -> dict[str, Any]:
    out = {"kind": cause.kind, "fault": None if cause.fault is None else cause.fault.to_dict(), "words": cause.words}
    if cause.observed:
        out["observed"] = cause.observed
    return out


def counted(causes: list[FailureCause | None]) -> str:
    """`fault link-down at node2: node2's eth0 is down (4); ...`: what a JUnit failure message ends with."""
    return "; ".join(f"{words} ({n})" for words, n in grouped(causes))


def port_json(result: CheckResult, r: Any) -> dict[str, Any]:
    """A probe of a NetworkPolicy lab's port (probe.ports), in the shape of a pair."""
    expected = result.port_expected(r)
    cause = result.port_cause(r)
    return {
        "src": r.src.id, "dst": r.dst.id, "srcIP": r.src.address, "dstIP": r.dst.address,
        "rule": "pod-pod-same-node" if r.src.node == r.dst.node else "pod-pod-cross-node",
        "family": r.src.family, "protocol": r.protocol, "port": r.port, "verdict": r.verdict,
        "expected": ["ok"] if expected else ["timeout"], "met": (r.verdict == "ok") == expected,
        "rttMs": None, "observedSource": r.observed, "answeredBy": None, "detail": "",
        **({} if cause is None else {"cause": cause.describe()}),
    }


def _because(cause: PairCause | None) -> str:
    """A failure's cause, as JUnit lines end with it: " (x/deny isolates x/a for ingress; ...)"."""
    return "" if cause is None else f" ({cause.describe()})"


def dumps(document: dict[str, Any]) -> str:
    """JSON for people and programs alike: one top-level key per line, and each item of a list
    (a pair of the matrix, an endpoint) on a line of its own. As fast as compact JSON (the C
    encoder writes every line), so a 10,000-pair result prints in milliseconds, not seconds."""
    lines = []
    for key, value in document.items():
        head = f"  {json.dumps(key)}: "
        if isinstance(value, list) and value:
            items = ",\n    ".join(json.dumps(item) for item in value)
            lines.append(f"{head}[\n    {items}\n  ]")
        else:
            lines.append(head + json.dumps(value))
    return "{\n" + ",\n".join(lines) + "\n}" if lines else "{}"


def _services_json(lab: Lab) -> list[dict[str, Any]]:
    try:
        found = lab.services
    except LabError:  # a lab whose Services are refused (`validate --json` says why): shown without them
        return []
    return [{"name": s.spec.name, "namespace": s.spec.namespace, "clusterIP": str(s.cluster_ip), "type": s.spec.type,
             "externalTrafficPolicy": s.spec.external_traffic_policy if s.spec.node_port else None,
             "ports": [{"name": p.name or None, "port": p.port, "targetPort": p.target_port, "protocol": p.protocol,
                        "nodePort": p.node_port,
                        "endpoints": [f"{b.pod.ip}:{b.port}" for b in s.backends(p)]}  # a named targetPort: per pod
                       for p in s.spec.ports],
             "endpoints": [str(p.ip) for p in s.endpoints]} for s in found]


def check_json(result: CheckResult) -> dict[str, Any]:
    """One family's pairs, or both families' in a dual-stack lab: each pair, endpoint and rule
    says its family."""
    lab = result.lab
    families = result.by_family
    full = result.total <= PAIRS_IN_FULL
    pairs = [pair_json(r) for one in families for r in (one.results if full else one.failures)]
    mtu = [m for one in families for m in (one.mtu or ())]
    return {
        "schema": SCHEMA_ID,
        "lab": lab.name,
        "dataplane": lab.dataplane,
        "passed": result.passed,
        "families": [one.family for one in families],
        "durationSeconds": round(sum(one.duration for one in families), 3),
        "endpoints": [
            {"id": e.id, "kind": e.kind, "node": e.node, "ip": str(e.ip), "family": e.family}
            for one in families for e in one.endpoints
        ],
        "rules": [
            {"rule": s.rule, "title": s.title, "family": one.family, "total": s.total, "ok": s.ok, "met": s.met,
             "passed": s.passed}
            for one in families for s in one.summaries()
        ] + ([dns_rule(result)] if result.dns else []),
        # every pair for labs up to PAIRS_IN_FULL; beyond, only those not as expected (see pairsOmitted)
        "pairs": pairs + [port_json(result, r) for r in result.ports],
        "pairsOmitted": 0 if full else result.total - sum(len(one.failures) for one in families),
        "notes": list(result.notes) + [n for one in families[1:] for n in one.notes],
        "cniCheck": list(result.cni_problems),
        "faults": list(result.faults),
        "neighbours": neighbours_json(result),
        "neighboursIPv6": None if result.ipv6 is None else neighbours_json(result.ipv6),
        "services": [{"kind": s.kind, "src": s.src, "service": s.service, "port": s.port, "via": s.via or None,
                      "externalTrafficPolicy": s.policy or None, "tries": s.tries, "ok": s.ok,
                      "problem": s.problem or None, "protocol": s.protocol, "portName": s.port_name or None,
                      "targetPort": s.target_port, "targetPorts": dict(s.targets),
                      "unconfirmed": s.unconfirmed, "busy": list(s.busy),
                      "answers": [{"answeredBy": a.endpoint, "observedSource": a.seen, "reachedPort": a.port}
                                  for a in s.answers],
                      **({"failureCause": failure_json(result.service_causes[i])} if i in result.service_causes else {})}
                     for i, s in enumerate(result.services)],
        "mtu": None if result.mtu is None else [
            {"src": m.src.id, "dst": m.dst.id, "family": m.src.family, "size": m.size, "passed": m.passed,
             "largest": m.largest}
            for m in mtu
        ],
        **flows_json(result),
        **dns_json(result),
    }


DNS_TITLE = "pod → Service by name (cluster DNS)"


def dns_rule(result: CheckResult) -> dict[str, Any]:
    """The rule "dns" as the rules list holds the pair rules: every lookup, those answered with the
    ClusterIP, those as expected (a lookup the policies block: no answer)."""
    found = result.dns
    return {"rule": "dns", "title": DNS_TITLE, "family": 4, "total": len(found),
            "ok": sum(d.lookup.addresses == (d.expected,) for d in found), "met": sum(d.ok for d in found),
            "passed": all(d.ok for d in found)}


def dns_json(result: CheckResult) -> dict[str, Any]:
    """Only where the lab has cluster DNS: the document of a lab without it stays as it was."""
    if not result.dns:
        return {}
    return {"dns": [{"src": d.src, "service": d.service, "name": d.name, "transport": d.transport,
                     "expected": d.expected, "addresses": list(d.lookup.addresses),
                     "asked": [{"name": n, "rcode": code} for n, code in d.lookup.asked],
                     "allowed": d.allowed, "policy": d.policy or None, "reached": d.reached, "ok": d.ok,
                     "problem": d.problem or None} for d in result.dns]}


FLOWS_KEPT = 2000  # flows a check's document keeps (what `report` and `observe --last-check` show)


def flows_json(result: CheckResult) -> dict[str, Any]:
    """What check observed while it probed: the flows (the dropped and errored first, then the
    rest, up to FLOWS_KEPT), as `observe --json` writes them; nothing where check did not observe."""
    if not result.flows and not result.flows_note:
        return {}
    from cni_lab.observe.flows import to_json

    bad = [f for f in result.flows if f.verdict in ("DROPPED", "ERROR")]
    rest = [f for f in result.flows if f.verdict not in ("DROPPED", "ERROR")]
    kept = sorted((bad + rest)[:FLOWS_KEPT], key=lambda f: f.time)
    note = result.flows_note
    if len(result.flows) > FLOWS_KEPT:
        note = (note + "; " if note else "") + f"{FLOWS_KEPT} of {len(result.flows)} flows kept, drops and errors first"
    return {"flows": [to_json(f) for f in kept], "flowsSeen": len(result.flows), "flowsNote": note}


def neighbours_json(result: CheckResult) -> dict[str, Any]:
    use = result.neighbours
    return {"table": use.table, "needed": use.needed, "cap": use.cap, "capKnown": use.cap_known,
            "atStart": use.at_start, "budget": use.budget, "bound": use.bound, "batches": use.batches,
            "peak": use.peak, "deleted": use.deleted, "retried": use.retried}


def _extra_case(suite: Any, classname: str, name: str, message: str, wrong: list[str],
                passed_text: str | None = None) -> None:
    """One more test case in the suite: failed, with `message` and a line per wrong thing, when
    `wrong` has any; else passed (saying `passed_text`, where given)."""
    import xml.etree.ElementTree as ET

    suite.set("tests", str(int(suite.get("tests", "0")) + 1))
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    if wrong:
        suite.set("failures", str(int(suite.get("failures", "0")) + 1))
        ET.SubElement(case, "failure", message=message).text = "\n".join(wrong)
    elif passed_text is not None:
        ET.SubElement(case, "system-out").text = passed_text


def check_junit(result: CheckResult) -> str:
    """One test case per Kubernetes rule (and family, in a dual-stack lab); a failing case lists
    the pairs that broke it."""
    import xml.etree.ElementTree as ET  # JUnit alone needs it

    dual = result.ipv6 is not None
    summaries = [(one, s) for one in result.by_family for s in one.summaries()]
    suite = ET.Element(
        "testsuite",
        name=f"cni-lab {result.lab.name}",
        tests=str(len(summaries)),
        failures=str(sum(not s.passed for _, s in summaries)),
        errors="0",
        time=f"{sum(one.duration for one in result.by_family):.3f}",
    )
    for one, s in summaries:
        title = f"{s.title} (IPv{one.family})" if dual else s.title
        case = ET.SubElement(suite, "testcase", classname=f"cni-lab.{result.lab.name}", name=title, time="0")
        if not s.passed:
            bad = [r for r in one.failures if r.pair.rule == s.rule]
            causes = [r.failure for r in bad]
            message = f"{s.total - s.met}/{s.total} pairs not as expected"
            if any(causes):
                message += f": {counted(causes)}"
            failure = ET.SubElement(case, "failure", message=message)
            failure.text = "\n".join(
                f"{r.pair.src.id} → {r.pair.dst.id}: {r.verdict} (expected {'/'.join(sorted(r.pair.expected))})"
                + (f" {r.detail}" if r.detail else "") + _because(r.cause)
                + (f" — cause: {r.failure.words}" if r.failure is not None else "")
                for r in bad
            )
        else:
            ET.SubElement(case, "system-out").text = f"{s.met}/{s.total} pairs as expected, {s.ok} ok without NAT"
    classname = f"cni-lab.{result.lab.name}"
    if result.mtu is not None:
        lost = [m for one in result.by_family for m in (one.mtu or ()) if not m.passed]
        _extra_case(suite, classname, "MTU", f"{len(lost)} pairs lose {result.lab.pod_mtu}-byte packets",
                    [f"{m.src.id} → {m.dst.id}: largest that passes {m.largest}" for m in lost])
    by_port: dict[str, list[Any]] = {}
    for probe in result.ports:
        by_port.setdefault(f"{probe.protocol}/{probe.port}", []).append(probe)
    for name, probes in by_port.items():  # NetworkPolicy labs: a case per probe port
        wrong = [p for p in probes if p in result.port_failures]
        _extra_case(suite, classname, f"NetworkPolicy {name}", f"{len(wrong)}/{len(probes)} probes not as the policies say",
                    [f"{p.src.id} → {p.dst.id}: {p.verdict}{_because(result.port_cause(p))}" for p in wrong])
    by_service: dict[str, list[Any]] = {}
    for service in result.services:
        by_service.setdefault(service.title, []).append(service)
    standard = service_words(result.lab).standard  # as kube-proxy, or Cilium's replacement of it, does it
    why = {id(s): result.service_causes.get(i) for i, s in enumerate(result.services)}
    for name, probes in by_service.items():  # Services: a case per port dialled (they count in `passed`)
        wrong = [p for p in probes if not p.ok]
        causes = [why[id(p)] for p in wrong]
        _extra_case(suite, classname, name, f"{len(wrong)}/{len(probes)} not {standard}"
                    + (f": {counted(causes)}" if any(causes) else ""),
                    [f"{p.via or p.src}: {p.problem}" + (f" — cause: {c.words}" if (c := why[id(p)]) else "")
                     for p in wrong], f"{len(probes)}/{len(probes)} {standard}")
    if result.dns:  # the rule "dns": a case, failing with each lookup that is not as expected
        wrong = [d for d in result.dns if not d.ok]
        _extra_case(suite, classname, f"dns: {DNS_TITLE}", f"{len(wrong)}/{len(result.dns)} lookups not as expected",
                    [f"{d.src}: {d.name} over {d.transport}: {d.problem}" for d in wrong],
                    f"{len(result.dns)}/{len(result.dns)} lookups as expected")
    if result.lab.capabilities.runs_cni_plugins:  # the runtime's CNI CHECK of every pod counts in `passed` too
        _extra_case(suite, classname, "CNI CHECK", f"{len(result.cni_problems)} CNI CHECK problems",
                    list(result.cni_problems))
    suites = ET.Element("testsuites")
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def lab_json(lab: Lab, st: Status | None = None) -> dict[str, object]:
    """A lab as `status --json` shows it; without a status, as planned (`validate --json`)."""
    status = "planned" if st is None else st.status if st.healthy or st.status != "up" else "degraded"
    present = st.present if st else {}
    return {
        "name": lab.name,
        "dataplane": lab.dataplane,
        "status": status,
        "source": lab.scenario.source,
        "underlay": {seg.name: str(seg.cidr) for seg in lab.segments},
        "podMTU": lab.pod_mtu,
        "clusterCIDR": str(lab.scenario.cluster_cidr),
        "namespaces": {ns.name: dict(ns.labels) for ns in lab.scenario.namespaces},
        "services": _services_json(lab),
        "outside": None if lab.scenario.outside_ip is None else {
            "name": "outside", "netns": names.outside_netns(lab.name), "ip": str(lab.scenario.outside_ip),
            "masquerade": lab.scenario.masquerade},
        # every family, the first first (as kubeadm's networking.podSubnet lists them)
        "clusterCIDRs": [str(c) for c in (lab.scenario.cluster_cidr, lab.scenario.cluster_cidr6) if c is not None],
        "underlays": {seg.name: [str(c) for c in (seg.cidr, seg.cidr6) if c is not None] for seg in lab.segments},
        "warnings": list(lab.all_warnings),
        "daemons": [{"node": n, "name": "bird", "pid": pid, "running": ok} for n, (pid, ok) in (st.daemons if st else {}).items()]
        + ([{"node": st.dns[0].split("/")[0], "pod": st.dns[0], "name": "dnsmasq", "pid": st.dns[1], "running": st.dns[2]}]
           if st and st.dns else []),
        "faults": list(st.faults) if st else [],
        "nodes": [
            {
                "name": node.name,
                "netns": (ns := names.node_netns(lab.name, node.name)),
                "ip": str(node.ip),
                "ips": [str(ip) for ip in node.ips],  # a Node's addresses, first family first
                "segment": node.segment.name,
                "podCIDR": str(node.pod_cidr),
                "podCIDRs": [str(c) for c in node.pod_cidrs],  # spec.podCIDRs
                "gateway": str(node.gateway),
                "present": present.get(ns, False),
                "pods": [
                    {
                        "name": pod.pod_name,
                        "id": pod.id,
                        "netns": (pns := names.pod_netns(lab.name, node.name, pod.name)),
                        "ip": str(pod.ip),
                        "ips": [str(ip) for ip in pod.ips],  # status.podIPs
                        "namespace": pod.namespace,
                        "labels": dict(pod.labels),
                        "present": present.get(pns, False),
                    }
                    for pod in node.pods
                ],
            }
            for node in lab.nodes
        ],
    }
