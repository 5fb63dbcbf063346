"""Watching a running lab's packets (`observe`, and `check` while it probes): the log rules
loaded in every node (and the router), the flow sources opened there (kernel/flowsources.py),
what they report decoded into flows (observe/). Everything stays in the lab's namespaces: the
rules live in them, and the sockets are opened inside them.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from cni_lab import names
from cni_lab.cluster import Lab
from cni_lab.kernel import edit, flowsources
from cni_lab.rulesets import observe as observe_rules


def namespaces(lab: Lab) -> list[str]:
    """Where the lab's packets are forwarded, and so observed: every node, and the racks' router."""
    out = [names.node_netns(lab.name, n.name) for n in lab.nodes]
    if lab.has_router:
        out.append(names.router_netns(lab.name))
    return out


def rings(lab: Lab) -> dict[str, str]:
    """Every ebpf node's ring buffer (its namespace → its pinned folder)."""
    if not lab.capabilities.loads_bpf:
        return {}
    return {names.node_netns(lab.name, n.name): names.bpf_node_dir(lab.name, n.name) for n in lab.nodes}


def load_rules(lab: Lab) -> None:
    """The log rules in every namespace observed (the same table replaced: loading twice is once)."""
    text = observe_rules.ruleset()
    for ns in namespaces(lab):
        edit.nft_apply(ns, text)


@contextlib.contextmanager
def sources(lab: Lab, conntrack: bool = True) -> Iterator[flowsources.Reader]:
    """The lab's flow sources, open for the block's length."""
    load_rules(lab)
    reader = flowsources.Reader(namespaces(lab), rings(lab), conntrack=conntrack)
    try:
        yield reader
    finally:
        reader.close()


KEEP_BYTES = 32 << 20  # what a recording keeps of the sources' datagrams; past it, it drains and counts


class Recording:
    """What the lab's sources report while a block runs (check's probing), kept raw on a thread
    of its own (receiving is cheap; decoding waits until the block is over and is asked for, so
    it takes no time from the probes), up to KEEP_BYTES. Where another observer holds the lab's
    nflog groups (`observe` running), nothing is recorded, and `busy` says so: two readers would
    split the BPF rings' events."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.chunks: list[flowsources.Chunk] = []
        self.kept = 0  # bytes of datagrams kept
        self.drained = 0  # datagrams and events received past KEEP_BYTES, not kept
        self.busy = False
        self._reader: flowsources.Reader | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Recording:
        reader = self._stack.enter_context(sources(self.lab))
        if reader.busy:
            self.busy = True
            self._stack.close()
            return self
        self._reader = reader
        self._thread = threading.Thread(target=self._run, args=(reader,), name="cni-lab-observe", daemon=True)
        self._thread.start()
        return self

    def _keep(self, chunks: list[flowsources.Chunk]) -> None:
        for chunk in chunks:
            size = len(chunk[3]) if isinstance(chunk[3], bytes) else 128
            if self.kept + size > KEEP_BYTES:
                self.drained += 1
                continue
            self.kept += size
            self.chunks.append(chunk)

    def _run(self, reader: flowsources.Reader) -> None:
        while not self._stop.is_set():
            self._keep(reader.receive(0.1))
        self._keep(reader.receive(0))  # what the last probes left

    def raw(self, limit: int | None = None) -> list[flowsources.Raw]:
        """What was kept, decoded (the first `limit` packets and events)."""
        if self._reader is None:
            return []
        decoded = self._reader.decode(self.chunks)
        return decoded if limit is None else decoded[:limit]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stack.close()
