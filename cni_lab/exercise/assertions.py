"""What an exercise's `grade` asserts, and whether the kernel's facts meet it (pure).

Each assertion is one kind with a mapping (or, for `check`, the word `pass`):

    check: pass                                          the lab's whole `check` passes
    check: {rule: pod-pod-cross-node, verdict: ok}       every pair of one rule has this verdict
    pair: {from: node1/web, to: node2/api, verdict: ok}  one pair of check's matrix (fail: anything but ok)
    route: {node: node1, to: 10.244.1.0/24, via: 192.168.1.3}   a route of exactly that destination
                                                         (via and dev when given; present: false: none)
    sysctl: {node: node1, key: net/ipv4/ip_forward, value: "1"}
    nft: {node: node1, has: "masquerade"}                text of the node's `nft list ruleset`
    nft: {node: node1, absent: "quick fix"}              (or not in it)
    bgp: {node: node2, established: 2}                   BIRD's BGP sessions in state Established
    link: {node: node1/web, name: eth0, mtu: 1450}       a link of a node or pod: mtu, up
    mtu: {from: node1/web, to: node2/api}                a packet the sender's eth0 MTU in size, DF
                                                         set, gets through (ping -M do)
    fdb: {node: node1, device: flannel.1, neighbour: 10.244.1.0, dst: 192.168.1.3}
                                                         the VTEP MAC that neighbour resolves to is
                                                         sent to exactly that node address
    bpf: {pod: node1/web}                                a BPF program at the tc ingress of the pod's
                                                         lxc device (ebpf)
    lb: {node: node1}                                    every slot of the node's Service map names a
                                                         backend, at the address and port the lab's
                                                         Services give it (ebpf)
    service: {name: default/web, endpoints: 2}           the Service's ClusterIP leads to that many
                                                         endpoint pods on every node (or on `node`):
                                                         kube-proxy's chains, or the BPF Service map

facts.py reads one fact per assertion from the kernel; `judge` here says whether it holds, in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

from cni_lab import model
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.model import Problems, hint

# kind → (keys, required keys)
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "check": (("rule", "verdict"), ("rule",)),
    "pair": (("from", "to", "verdict"), ("from", "to", "verdict")),
    "route": (("node", "to", "via", "dev", "present"), ("node", "to")),
    "sysctl": (("node", "key", "value"), ("node", "key", "value")),
    "nft": (("node", "has", "absent"), ("node",)),
    "bgp": (("node", "established"), ("node", "established")),
    "link": (("node", "name", "mtu", "up"), ("node", "name")),
    "mtu": (("from", "to"), ("from", "to")),
    "fdb": (("node", "device", "neighbour", "dst"), ("node", "device", "neighbour", "dst")),
    "bpf": (("pod",), ("pod",)),
    "lb": (("node",), ("node",)),
    "service": (("name", "endpoints", "node"), ("name", "endpoints")),
}
VERDICTS = (*model.VERDICTS, "fail")  # fail: any verdict but ok


@dataclass(frozen=True)
class Assertion:
    kind: str
    args: dict[str, Any] = field(default_factory=dict, hash=False)
    at: str = ""  # grade[2]: where it is in the file

    def arg(self, key: str, default: Any = None) -> Any:
        return self.args.get(key, default)

    @property
    def node(self) -> str:
        """The node (or node/pod) whose namespace the fact is read in."""
        return str(self.args.get("node") or self.args.get("from") or self.args.get("pod") or "")


@dataclass(frozen=True)
class Outcome:
    assertion: Assertion
    ok: bool
    words: str


@dataclass(frozen=True)
class CheckFacts:
    """What grading needs of a check: its verdict, the pairs' verdicts and rules, in words."""

    passed: bool
    pairs: dict[tuple[str, str], tuple[str, str]]  # (from, to) → (rule, verdict)
    summary: str  # "18/20 pairs as expected; failing: ..."


@dataclass(frozen=True)
class LbSlot:
    frontend: str  # 10.96.0.2:80/TCP
    slot: int
    backend_id: int
    backend: tuple[str, int] | None  # None: the backends map lacks it


def _endpoint(p: Problems, lab: Lab | None, value: Any, at: str, pods_only: bool = False) -> None:
    if not isinstance(value, str) or not value:
        p.add(at, "must name a node or a pod (node1/web)")
        return
    if lab is None:
        return
    ids = {q.id for q in lab.pods} | ({"outside"} if lab.scenario.outside_ip is not None else set())
    if not pods_only:
        ids |= {n.name for n in lab.nodes}
    if value not in ids:
        what = "pod" if pods_only else "node or pod"
        p.add(at, f"the scenario has no {what} {value!r}{hint(value, tuple(sorted(ids)))}")


def _check_value(p: Problems, value: Any, at: str) -> dict[str, Any] | None:
    if value == "pass":
        return {}
    if not isinstance(value, dict):
        p.add(at, "check: pass, or check: {rule: RULE, verdict: VERDICT}")
        return None
    return value


def read(p: Problems, value: Any, lab: Lab | None) -> tuple[Assertion, ...]:
    """The `grade` list, every problem reported to `p` with its place (grade[1].route.via)."""
    if not isinstance(value, list) or not value:
        p.add("grade", "must be a non-empty list of assertions (" + ", ".join(KINDS) + ")")
        return ()
    out = []
    for i, raw in enumerate(value):
        at = f"grade[{i}]"
        if not isinstance(raw, dict) or len(raw) != 1:
            p.add(at, "an assertion is one of " + ", ".join(f"{k}:" for k in KINDS))
            continue
        kind, args = next(iter(raw.items()))
        if kind not in KINDS:
            p.add(at, f"unknown assertion {kind!r}{hint(kind, tuple(KINDS))}; known: {', '.join(KINDS)}")
            continue
        args = _check_value(p, args, f"{at}.check") if kind == "check" else args
        if args is None:
            continue
        if not isinstance(args, dict):
            p.add(f"{at}.{kind}", f"must be a mapping with keys {', '.join(KINDS[kind][0])}")
            continue
        keys, required = KINDS[kind]
        p.unknown_keys(args, keys, f"{at}.{kind}.")
        if kind == "check" and not args:
            out.append(Assertion(kind, {}, at))
            continue
        for key in required:
            if key not in args:
                p.add(f"{at}.{kind}.{key}", "missing")
        if kind == "service" and isinstance(args.get("name"), str) and args["name"] and "/" not in args["name"]:
            args = {**args, "name": f"{model.DEFAULT_NAMESPACE}/{args['name']}"}  # kubectl's default namespace
        _arguments(p, kind, args, lab, f"{at}.{kind}")
        out.append(Assertion(kind, dict(args), at))
    return tuple(out)


def _arguments(p: Problems, kind: str, args: dict[str, Any], lab: Lab | None, at: str) -> None:
    """Each argument's shape, and that the nodes and pods it names are the scenario's."""
    for key in ("node", "from", "to", "pod"):
        if key in args and not (kind == "route" and key == "to"):
            _endpoint(p, lab, args[key], f"{at}.{key}", pods_only=kind in ("mtu", "bpf"))
    if kind in ("route", "sysctl", "nft", "bgp", "fdb", "lb", "service") and isinstance(args.get("node"), str) and "/" in args["node"]:
        p.add(f"{at}.node", "must name a node, not a pod")
    verdict = args.get("verdict", "ok")
    if kind in ("check", "pair") and verdict not in VERDICTS:
        p.add(f"{at}.verdict", f"{verdict!r} is not a verdict; use {', '.join(VERDICTS)}")
    if kind == "check" and args.get("rule") not in model.RULES:
        p.add(f"{at}.rule", f"{args.get('rule')!r} is not a rule{hint(args.get('rule'), model.RULES)}; "
              f"use {', '.join(model.RULES)}")
    for key in ("to", "via", "dst", "neighbour"):
        if key in args and (kind in ("route", "fdb")):
            try:
                ip_network(args[key]) if key == "to" else ip_address(args[key])
            except ValueError:
                p.add(f"{at}.{key}", f"{args[key]!r} is not an {'IP network' if key == 'to' else 'IP address'}")
    if kind == "nft" and len([k for k in ("has", "absent") if isinstance(args.get(k), str) and args[k]]) != 1:
        p.add(at, "give one of has: TEXT or absent: TEXT")
    if kind == "service":
        _service(p, args, lab, at)
    for key in ("mtu", "established", "endpoints"):
        if key in args and not (isinstance(args[key], int) and not isinstance(args[key], bool) and args[key] >= 0):
            p.add(f"{at}.{key}", f"{args[key]!r} is not a number")
    for key in ("up", "present"):
        if key in args and not isinstance(args[key], bool):
            p.add(f"{at}.{key}", f"{args[key]!r} is not true or false")
    if kind == "sysctl" and not (isinstance(args.get("key"), str) and all(part.replace("_", "").replace("-", "").isalnum()
                                                                         for part in args["key"].replace(".", "/").split("/"))):
        p.add(f"{at}.key", f"{args.get('key')!r} is not a sysctl key (net/ipv4/ip_forward)")
    if kind == "sysctl" and "value" in args and not isinstance(args["value"], (str, int)):
        p.add(f"{at}.value", "must be text (quote it: \"1\")")
    if lab is not None and kind in ("bpf", "lb") and not lab.capabilities.loads_bpf:
        p.add(at, f"the scenario's data plane ({lab.dataplane}) loads no BPF programs")
    if lab is not None and kind == "bgp" and "bird" not in lab.capabilities.daemons:
        p.add(at, f"the scenario's data plane ({lab.dataplane}) runs no BGP daemon")


def _service(p: Problems, args: dict[str, Any], lab: Lab | None, at: str) -> None:
    """A Service of the lab (once the exercise's `service:` steps are applied), namespace/name or
    a name of namespace default."""
    name = args.get("name")
    if not isinstance(name, str) or not name:
        p.add(f"{at}.name", "must name a Service (default/web)")
        return
    if lab is None:
        return
    try:
        known = tuple(s.qualified for s in lab.all_services)
    except LabError:
        return  # the Services' own problems are said where they are read
    if args["name"] not in known:
        p.add(f"{at}.name", f"the lab has no Service {args['name']!r}{hint(args['name'], known)} "
              f"(Services: {', '.join(known) or 'none'})")


# -- judging: one pure function per kind, fact in, Outcome out --------------------------------------

def judge(a: Assertion, fact: Any) -> Outcome:
    return _JUDGES[a.kind](a, fact)


def _check(a: Assertion, facts: CheckFacts) -> Outcome:
    if not a.args:
        return Outcome(a, facts.passed, f"the lab's check {'passes' if facts.passed else 'fails'}: {facts.summary}")
    rule, verdict = a.arg("rule"), a.arg("verdict", "ok")
    pairs = {k: v for k, (r, v) in facts.pairs.items() if r == rule}
    wrong = [f"{s} → {d}: {v}" for (s, d), v in pairs.items() if not _verdict_is(v, verdict)]
    ok = bool(pairs) and not wrong
    shown = "; ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
    return Outcome(a, ok, f"{rule}: {len(pairs) - len(wrong)}/{len(pairs)} pairs {verdict}" + (f" ({shown})" if wrong else ""))


def _verdict_is(seen: str, wanted: str) -> bool:
    return seen != "ok" if wanted == "fail" else seen == wanted


def _pair(a: Assertion, facts: CheckFacts) -> Outcome:
    key = (a.arg("from"), a.arg("to"))
    found = facts.pairs.get(key)
    wanted = a.arg("verdict")
    if found is None:
        return Outcome(a, False, f"{key[0]} → {key[1]}: check probed no such pair")
    ok = _verdict_is(found[1], wanted)
    return Outcome(a, ok, f"{key[0]} → {key[1]}: {found[1]}" + ("" if ok else f" (should be {wanted})"))


def _route(a: Assertion, routes: list[tuple[str, str | None, str | None]]) -> Outcome:
    """routes: the node's (dst, gateway, dev)."""
    to, via, dev, present = ip_network(a.arg("to")), a.arg("via"), a.arg("dev"), a.arg("present", True)
    same = [r for r in routes if r[0] != "default" and ip_network(r[0]) == to]
    match = [r for r in same if (via is None or r[1] == str(via)) and (dev is None or r[2] == dev)]
    node = a.arg("node")
    shown = "; ".join(f"{r[0]}" + (f" via {r[1]}" if r[1] else "") + (f" dev {r[2]}" if r[2] else "") for r in same)
    want = f"{to}" + (f" via {via}" if via else "") + (f" dev {dev}" if dev else "")
    if not present:
        return Outcome(a, not same, f"{node} has no route to {to}" if not same else f"{node} still routes {shown}")
    if match:
        return Outcome(a, True, f"{node} routes {want}")
    return Outcome(a, False, f"{node} has no route {want}" + (f" (it has {shown})" if same else ""))


def _sysctl(a: Assertion, value: str | None) -> Outcome:
    key, wanted = str(a.arg("key")).replace(".", "/"), str(a.arg("value"))
    node = a.arg("node")
    if value is None:
        return Outcome(a, False, f"{node} has no sysctl {key}")
    return Outcome(a, value == wanted, f"{node}: {key} = {value}" + ("" if value == wanted else f" (should be {wanted})"))


def _nft(a: Assertion, ruleset: str) -> Outcome:
    node = a.arg("node")
    if a.arg("has"):
        ok = a.arg("has") in ruleset
        return Outcome(a, ok, f"{node}'s nftables {'have' if ok else 'lack'} {a.arg('has')!r}")
    ok = a.arg("absent") not in ruleset
    return Outcome(a, ok, f"{node}'s nftables {'have no' if ok else 'still have'} {a.arg('absent')!r}")


def _bgp(a: Assertion, sessions: dict[str, str]) -> Outcome:
    """sessions: BGP protocol name → BIRD's info column (Established, Active ...)."""
    up = sorted(n for n, info in sessions.items() if info.startswith("Established"))
    wanted = a.arg("established")
    down = ", ".join(f"{n} {info}" for n, info in sorted(sessions.items()) if n not in up)
    return Outcome(a, len(up) >= wanted, f"{a.arg('node')}: {len(up)} of {len(sessions)} BGP sessions Established"
                   + (f" (wanted {wanted}; {down})" if len(up) < wanted else ""))


def _link(a: Assertion, link: tuple[int, bool] | None) -> Outcome:
    """link: (mtu, up), or None when the device is missing."""
    where = f"{a.arg('node')}'s {a.arg('name')}"
    if link is None:
        return Outcome(a, False, f"{where} is missing")
    mtu, up = link
    wrong = []
    if a.arg("mtu") is not None and mtu != a.arg("mtu"):
        wrong.append(f"mtu {mtu}, should be {a.arg('mtu')}")
    if a.arg("up") is not None and up != a.arg("up"):
        wrong.append(f"{'up' if up else 'down'}, should be {'up' if a.arg('up') else 'down'}")
    return Outcome(a, not wrong, f"{where}: " + ("; ".join(wrong) if wrong else f"mtu {mtu}, {'up' if up else 'down'}"))


def _mtu(a: Assertion, probe: tuple[int, bool, str]) -> Outcome:
    """probe: (size sent, answered, what ping said when not)."""
    size, ok, said = probe
    head = f"{a.arg('from')} → {a.arg('to')}: {size}-byte packet with DF set"
    return Outcome(a, ok, f"{head} {'gets through' if ok else 'is lost'}" + (f" ({said})" if said and not ok else ""))


def _fdb(a: Assertion, fact: tuple[str | None, list[str]]) -> Outcome:
    """fact: the MAC the neighbour resolves to on the device, and the fdb's destinations for it."""
    mac, dsts = fact
    where = f"{a.arg('node')}'s {a.arg('device')}"
    if mac is None:
        return Outcome(a, False, f"{where} has no neighbour entry for {a.arg('neighbour')}")
    ok = dsts == [str(a.arg("dst"))]
    return Outcome(a, ok, f"{where} sends {mac} ({a.arg('neighbour')}) to {', '.join(dsts) or 'nowhere'}"
                   + ("" if ok else f" (should be {a.arg('dst')} alone)"))


def _bpf(a: Assertion, attached: list[str]) -> Outcome:
    """attached: the programs at the tc ingress of the pod's lxc device."""
    ok = bool(attached)
    return Outcome(a, ok, f"{a.arg('pod')}'s lxc device: " + (f"{', '.join(attached)} at tc ingress" if ok
                                                               else "no BPF program at tc ingress"))


def _lb(a: Assertion, fact: tuple[list[LbSlot], dict[int, tuple[str, int]]]) -> Outcome:
    """fact: the node's Service slots, and what each backend ID should be (the lab's Services)."""
    slots, wanted = fact
    wrong = []
    for s in slots:
        if s.slot == 0:
            continue
        if s.backend is None:
            wrong.append(f"{s.frontend} slot {s.slot}: backend {s.backend_id} is missing")
        elif wanted.get(s.backend_id) != s.backend:
            should = wanted.get(s.backend_id)
            wrong.append(f"{s.frontend} slot {s.slot}: backend {s.backend_id} is {s.backend[0]}:{s.backend[1]}"
                         + (f", should be {should[0]}:{should[1]}" if should else ""))
    count = len([s for s in slots if s.slot])
    return Outcome(a, not wrong, f"{a.arg('node')}'s Service map: " + ("; ".join(wrong) if wrong else
                                                                      f"all {count} slots name their backend"))


def _service_endpoints(a: Assertion, fact: dict[str, list[str]]) -> Outcome:
    """fact: node → the endpoints (address:port) its data plane leads the Service's ClusterIP to."""
    wanted = a.arg("endpoints")
    wrong, shown = [], []
    for node, found in fact.items():
        pods = sorted({e.rpartition(":")[0] for e in found})
        shown.append(f"{node}: {len(pods)} ({', '.join(found) or 'none'})")
        if len(pods) != wanted:
            wrong.append(node)
    head = f"Service {a.arg('name')} has {wanted} endpoint{'s' if wanted != 1 else ''}"
    if not fact:
        return Outcome(a, False, f"{head}: no node was read")
    if wrong:
        return Outcome(a, False, f"not as wanted ({head}) on {', '.join(wrong)}: " + "; ".join(shown))
    return Outcome(a, True, f"{head}: " + "; ".join(shown))


_JUDGES: dict[str, Any] = {"check": _check, "pair": _pair, "route": _route, "sysctl": _sysctl, "nft": _nft,
                           "bgp": _bgp, "link": _link, "mtu": _mtu, "fdb": _fdb, "bpf": _bpf, "lb": _lb,
                           "service": _service_endpoints}
