"""The kernel facts an exercise's assertions are judged on: one thin reader per kind, each reading
what a learner could read on a real node (routes, sysctls, nft listings, BIRD's sessions, links,
the fdb, tc filters, BPF maps, a packet sent). Never the learner's commands."""

from __future__ import annotations

import subprocess
from typing import Any, Callable

from cni_lab import names, plan, state, target_netns
from cni_lab.cluster import Lab
from cni_lab.exercise.assertions import Assertion, CheckFacts, LbSlot
from cni_lab.kernel import readback
from cni_lab.probe.matrix import CheckResult
from cni_lab.steps import BpfServices


def check_facts(result: CheckResult) -> CheckFacts:
    """The check as grading judges it: whether it passed, every pair's rule and verdict, in words."""
    pairs = {(r.pair.src.id, r.pair.dst.id): (r.pair.rule, r.verdict) for r in result.results}
    failures = result.failures
    words = f"{len(result.results) - len(failures)}/{len(result.results)} pairs as expected"
    if failures:
        shown = ", ".join(f"{r.pair.src.id} → {r.pair.dst.id} {r.verdict}" for r in failures[:4])
        words += f"; not as expected: {shown}" + (f" and {len(failures) - 4} more" if len(failures) > 4 else "")
    extra = [*result.cni_problems[:2],
             *(f"{p.src.id} → {p.dst.id} {p.protocol}/{p.port}: {p.verdict}" for p in result.port_failures[:2]),
             *(f"{s.src} → Service {s.service} port {s.port}: {s.problem or 'not answered'}" for s in result.services
               if not s.ok)][:3]
    if extra:
        words += "; " + "; ".join(extra)
    return CheckFacts(result.passed, pairs, words)


class Reader:
    """Reads each fact once per grading (a namespace's view is shared by its assertions)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._views: dict[str, readback.NetnsView] = {}

    def read(self, a: Assertion) -> Any:
        reader: Callable[[Assertion], Any] = getattr(self, "_" + a.kind)
        return reader(a)

    def ns(self, target: str) -> str:
        return target_netns.target_netns(self.lab, target)

    def view(self, ns: str) -> readback.NetnsView:
        if ns not in self._views:
            self._views[ns] = readback.read(ns, [])
        return self._views[ns]

    def _route(self, a: Assertion) -> list[tuple[str, str | None, str | None]]:
        view = self.view(self.ns(a.arg("node")))
        return [(r.dst, r.gateway, r.dev) for r in [*view.routes, *view.routes6] if r.type == "unicast"]

    def _sysctl(self, a: Assertion) -> str | None:
        key = str(a.arg("key")).replace(".", "/")
        done = _in(self.ns(a.arg("node")), "cat", f"/proc/sys/{key}")
        return done.stdout.strip() if done.returncode == 0 else None

    def _nft(self, a: Assertion) -> str:
        return _in(self.ns(a.arg("node")), "nft", "list", "ruleset").stdout

    def _bgp(self, a: Assertion) -> dict[str, str]:
        from cni_lab.kernel import daemons
        from cni_lab.errors import LabError

        socket = state.lab_dir(self.lab.name) / names.bird_dir(a.arg("node")) / "bird.ctl"
        try:
            return {s.name: s.info for s in daemons.protocols(socket) if s.proto == "BGP"}
        except LabError:
            return {}  # BIRD does not answer: no session is up

    def _link(self, a: Assertion) -> tuple[int, bool] | None:
        link = self.view(self.ns(a.arg("node"))).link(a.arg("name"))
        return None if link is None else (link.mtu, link.up)

    def _mtu(self, a: Assertion) -> tuple[int, bool, str]:
        ns = self.ns(a.arg("from"))
        link = self.view(ns).link(names.POD_IFNAME)
        size = link.mtu if link is not None else 1500
        to = next(p.ip for p in self.lab.pods if p.id == a.arg("to"))
        # 28 bytes of IPv4 and ICMP headers: the packet is the MTU exactly; -M do sets DF
        done = _in(ns, "ping", "-c1", "-W1", "-M", "do", "-s", str(size - 28), str(to))
        said = next((line.strip() for line in done.stdout.splitlines() + done.stderr.splitlines()
                     if "mtu" in line.lower() or "too long" in line.lower()), "")
        return size, done.returncode == 0, said

    def _fdb(self, a: Assertion) -> tuple[str | None, list[str]]:
        link = self.view(self.ns(a.arg("node"))).link(a.arg("device"))
        if link is None:
            return None, []
        mac = next((m for ip, m, _ in link.neighbours if ip == str(a.arg("neighbour"))), None)
        return mac, [dst for m, dst in link.fdb if mac is not None and m == mac]

    def _bpf(self, a: Assertion) -> list[str]:
        from cni_lab.kernel import bpf

        node, pod = a.arg("pod").split("/", 1)
        lxc = names.lxc_veth(self.lab.name, node, pod.replace("/", "."))
        return [x.program for x in bpf.attached(names.node_netns(self.lab.name, node))
                if x.ifname == lxc and x.direction == "ingress"]

    def _lb(self, a: Assertion) -> tuple[list[LbSlot], dict[int, tuple[str, int]]]:
        from cni_lab.kernel import bpf

        node = a.arg("node")
        slots = [LbSlot(f"{e.address}:{e.port}/{e.protocol}", e.slot, e.backend_id, e.backend)
                 for e in bpf.lb_services(names.bpf_node_dir(self.lab.name, node))]
        wanted = {b.id: (str(b.address), b.port) for s in plan.service_steps(self.lab, self.lab.services)
                  if isinstance(s, BpfServices) and s.netns == names.node_netns(self.lab.name, node) for b in s.backends}
        return slots, wanted


    def _service(self, a: Assertion) -> dict[str, list[str]]:
        """node → the endpoints (address:port) its data plane leads the Service's ClusterIP to:
        the kube-proxy table's endpoint chains, or the BPF Service map's slots and backends. The
        lab's record says only which ClusterIP the Service has (for the BPF map's key)."""
        nodes = [a.arg("node")] if a.arg("node") else [n.name for n in self.lab.nodes]
        if self.lab.capabilities.services == "kube-proxy-nftables":
            from cni_lab.rulesets import kubeproxy

            return {node: kubeproxy.endpoints(_in(self.ns(node), "nft", "list", "table", "ip", kubeproxy.TABLE).stdout,
                                              a.arg("name"))
                    for node in nodes}
        from cni_lab.kernel import bpf

        address = next((str(s.cluster_ip) for s in self.lab.services if s.qualified == a.arg("name")), None)
        return {node: sorted({f"{e.backend[0]}:{e.backend[1]}" for e in bpf.lb_services(names.bpf_node_dir(self.lab.name, node))
                              if e.address == address and e.slot and e.backend is not None})
                for node in nodes}


def _in(ns: str, *command: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True, text=True, timeout=10)
    except FileNotFoundError as e:
        return subprocess.CompletedProcess(list(command), 127, "", str(e))
