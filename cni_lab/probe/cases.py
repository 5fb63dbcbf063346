"""Probing generated cases one after another on a running lab (`cni-lab conformance`): per case,
check's matrix (probe/engine.py: an ICMP echo and a UDP datagram between every two endpoints) and
its port probes (probe/ports.py, on the ports the case names, between every two pods), both at
once, with a short wait; the cells the reference allows that got no answer in it are probed again
with check's own waits before they count as a difference (conformance.suspects).

Why a short wait is enough: a case's denied probes are never answered, so each run lasts as long
as its wait, while an allowed one crosses this machine in well under a millisecond (check's
waits, 1.3 s and 1.5 s, are sized for big labs in batches and a busy neighbour table). A cell
the network reached is never probed again: a packet that got through did, as long as no earlier
case let it through. So before every case the nodes' connection tracking tables are emptied
(kernel/conntrack.py): every probe also leaves from a new socket, but its source port is drawn at
random, and at 150 cases a minute a probe's ports recur within the 30 s a UDP entry lives often
enough to matter (the ICMP ids, too, are random per run).
"""

from __future__ import annotations

from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Sequence

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.errors import LabError
from cni_lab.kernel import conntrack, netns
from cni_lab.probe import pairs as pairing
from cni_lab.probe import ports as port_probes
from cni_lab.probe.engine import Prober, Settings, verdict_of
from cni_lab.probe.matrix import node_sources
from cni_lab.probe.ports import PortResult
from cni_lab.probe.workers import Picked

FAST = 0.25  # seconds a case's probes wait for an answer
FAST_SETTINGS = Settings(attempts=1, interval=FAST, settle=FAST)
ICMP = "ICMP"
Key = tuple[str, str, str]  # (probe, source id, destination id), as conformance.Key


class CaseProber:
    """The endpoints of one lab, probed case after case. Opened once per run: the source each
    node's kernel picks towards every endpoint (read once: policies do not change routes), and a
    conntrack socket per node; the probe sockets themselves are new for every case."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.endpoints = pairing.endpoints(lab, 4)
        self.pods = [ep for ep in self.endpoints if ep.kind == "pod"]
        self.index = {ep.id: i for i, ep in enumerate(self.endpoints)}
        self.jobs = pairing.AllPairs(len(self.endpoints))
        self.node_sources: dict[tuple[str, str], str] = {}
        self.notes: list[str] = []
        self.tables: conntrack.Flusher | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cni-lab-ports")

    def __enter__(self) -> CaseProber:
        try:
            missing = [ep.netns for ep in self.endpoints if not netns.is_netns(ep.netns)]
            if missing:
                raise LabError(f"lab {self.lab.name} is damaged: {len(missing)} namespaces are missing (first: "
                               f"{missing[0]}); run `sudo cni-lab down {self.lab.name}` and `up` again")
            self.node_sources = node_sources(self.endpoints)
            try:
                self.tables = conntrack.Flusher([names.node_netns(self.lab.name, n.name) for n in self.lab.nodes])
            except OSError as e:
                self._no_flush(e)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.tables is not None:
            self.tables.close()
            self.tables = None
        self.pool.shutdown(wait=True)  # a port run in flight ends within its wait

    def _no_flush(self, e: OSError) -> None:
        self.notes.append(f"the nodes' connection tracking could not be emptied between cases ({e.strerror or e}): "
                          "a probe whose ports an earlier case used within conntrack's timeout may pass as established")

    def forget(self) -> None:
        """Before a case: the nodes' connection tracking emptied, so no earlier case's flow decides
        one of its probes."""
        if self.tables is None:
            return
        try:
            self.tables.flush()
        except OSError as e:
            self._no_flush(e)
            self.tables.close()
            self.tables = None

    def observe(self, probes: Sequence[tuple[str, int | None]]) -> dict[Key, str]:
        """Every cell of a case's probes, with the short wait: the matrix here, the ports meanwhile
        on a thread of the pool (both spend the wait in select(); the kernel does the rest)."""
        wanted = [(p, n) for p, n in probes if p != ICMP and n is not None]
        pending: Future[list[PortResult]] | None = None
        if wanted and len(self.pods) > 1:
            pending = self.pool.submit(port_probes.run, self.pods, wanted, FAST)
        seen: dict[Key, str] = {}
        try:
            if any(p == ICMP for p, _ in probes):
                seen |= self._matrix(range(len(self.jobs)), FAST_SETTINGS)
        finally:
            results = pending.result() if pending is not None else []  # even when the matrix failed
        return seen | _port_cells(results)

    def again(self, keys: Sequence[Key]) -> dict[Key, str]:
        """The cells `keys` probed again, with check's own waits (new sockets: new flows)."""
        seen: dict[Key, str] = {}
        pairs = [self.jobs.index(self.index[src], self.index[dst]) for probe, src, dst in keys if probe == ICMP]
        if pairs:
            seen |= self._matrix(pairs, Settings())
        ports = sorted({probe for probe, _, _ in keys if probe != ICMP})
        if ports:
            wanted = [(protocol, int(port)) for protocol, _, port in (p.partition("/") for p in ports)]
            cells = _port_cells(port_probes.run(self.pods, wanted))
            seen |= {k: cells[k] for k in keys if k in cells}
        return seen

    def _matrix(self, indexes: Sequence[int], settings: Settings) -> dict[Key, str]:
        picked = array("I", indexes)
        with Prober(self.endpoints, self.lab.name, settings) as prober:
            out = prober.run(Picked(self.jobs, picked))
            for text in prober.missing:
                if text not in self.notes:
                    self.notes.append(text)
        seen = {}
        for k, j in enumerate(picked):
            s, d = self.jobs[j]
            seen[(ICMP, self.endpoints[s].id, self.endpoints[d].id)] = verdict_of(out.verdict[k])
        return seen


def _port_cells(results: Sequence[PortResult]) -> dict[Key, str]:
    return {(f"{r.protocol}/{r.port}", r.src.id, r.dst.id): r.verdict for r in results}
