"""Probe worker processes: the probe loop is CPU-bound Python, so a big matrix is probed by one
process per core, batch after batch (probe/budget.py), from sockets opened before and after the fork.

Worker k owns the endpoints i with i % count == k: it answers for their responders (opened by the
parent before the fork, so no probe wakes two workers) and sends their probes from sockets of its
own (an ephemeral UDP port and a raw ICMP socket per endpoint, so replies come back to it alone).
Interleaving the endpoints gives every worker a share of any batch. Between batches a worker
keeps answering for its responders, since another worker's probes may still need them, and
waits for the next batch on its pipe; the parent ends it when the check is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import pickle
import selectors
import signal
import struct
from array import array
from typing import Callable, Sequence

from cni_lab.probe.engine import Jobs, Outcomes, Prober
from cni_lab.probe.pairs import AllPairs

LENGTH = struct.Struct("Q")


class Picked:
    """Some of the pairs of a matrix, by index."""

    def __init__(self, jobs: AllPairs, indexes: Sequence[int]) -> None:
        self.jobs, self.indexes = jobs, indexes

    def __len__(self) -> int:
        return len(self.indexes)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.jobs[self.indexes[i]]


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a worker gets SIGKILL when `check` dies, so none outlives it."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)


def _read_exactly(fd: int, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Workers:
    """`count` processes probing batches of the pairs of `jobs` (a context manager)."""

    def __init__(self, prober: Prober, jobs: AllPairs, count: int) -> None:
        self.prober, self.jobs, self.count = prober, jobs, count
        self.children: list[tuple[int, int, int]] = []  # (pid, command fd, result fd)
        self.shared = mmap.mmap(-1, 8 * count)  # pairs finished, per worker, over its whole life
        # the pairs in flight, over all workers, stay what one process would have
        self.settings = dataclasses.replace(prober.settings, window=max(16, prober.settings.window // count))

    def __enter__(self) -> Workers:
        prober = self.prober
        # Each worker pings from raw sockets of its own. The parent's would get a copy of every
        # echo reply too (the kernel gives one to each matching raw socket): close them first.
        prober.drop_pingers()
        try:
            for k in range(self.count):
                self._fork(k)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _fork(self, k: int) -> None:
        commands_r, commands_w = os.pipe()
        results_r, results_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                os.close(commands_w)
                os.close(results_r)
                for _, other_w, other_r in self.children:  # the other workers' pipes are not ours
                    os.close(other_w)
                    os.close(other_r)
                _die_with_parent()
                _Worker(self.prober.for_worker(range(k, self.jobs.n, self.count), self.settings), self.jobs, k,
                        self.shared).serve(commands_r, results_w)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(commands_r)
        os.close(results_w)
        self.children.append((pid, commands_w, results_r))

    def __exit__(self, *exc: object) -> None:
        # every batch has been reported (or we are failing): no worker may outlive the check
        for pid, command_fd, result_fd in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.close(command_fd)
            os.close(result_fd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()

    def finished(self) -> int:
        return sum(struct.unpack_from(f"{self.count}Q", self.shared))

    def run(self, batch: Sequence[int], progress: Callable[[int], None] | None = None) -> Outcomes:
        """Probe the pairs `batch` (indexes into `jobs`); outcomes in the batch's order."""
        n1 = self.jobs.n - 1
        shares = [array("I") for _ in range(self.count)]  # each worker's pairs
        places = [array("I") for _ in range(self.count)]  # where each of them is in the batch
        for i, j in enumerate(batch):
            w = (j // n1) % self.count
            shares[w].append(j)
            places[w].append(i)
        before = self.finished()
        for (_, command_fd, _), share in zip(self.children, shares):
            _write_all(command_fd, LENGTH.pack(len(share)) + share.tobytes())
        results: dict[int, bytearray] = {fd: bytearray() for _, _, fd in self.children}
        pipes = selectors.DefaultSelector()  # epoll: these descriptors are past select()'s 1024
        try:
            for fd in results:
                pipes.register(fd, selectors.EVENT_READ)
            while pipes.get_map():
                for key, _ in pipes.select(timeout=0.1):
                    chunk = os.read(key.fd, 1 << 20)
                    if not chunk:
                        raise RuntimeError("a probe worker failed")
                    got = results[key.fd]
                    got += chunk
                    if len(got) >= LENGTH.size and len(got) == LENGTH.size + LENGTH.unpack_from(got)[0]:
                        pipes.unregister(key.fd)
                if progress is not None:
                    progress(self.finished() - before)
        finally:
            pipes.close()
        out = Outcomes(Picked(self.jobs, batch))
        for (_, _, fd), place in zip(self.children, places):
            verdicts, rtts, extra = pickle.loads(bytes(results[fd][LENGTH.size:]))
            results[fd] = bytearray()
            part = array("f")
            part.frombytes(rtts)
            for k, i in enumerate(place):
                out.verdict[i], out.rtt[i] = verdicts[k], part[k]
            for k, e in extra.items():
                out.extra[place[k]] = e
        if progress is not None:
            progress(len(batch))
        return out


class _Worker:
    """The life of one worker process: open its senders, then serve batches until ended."""

    def __init__(self, prober: Prober, jobs: AllPairs, k: int, shared: mmap.mmap) -> None:
        self.prober, self.jobs, self.k, self.shared = prober, jobs, k, shared
        self.owned = list(prober.sender)
        self.done = 0

    def _progress(self, finished: int, _total: int) -> None:
        struct.pack_into("Q", self.shared, 8 * self.k, self.done + finished)

    def serve(self, commands: int, results: int) -> None:
        idle = selectors.DefaultSelector()
        idle.register(commands, selectors.EVENT_READ, None)
        for i in self.owned:
            idle.register(self.prober.udp[i], selectors.EVENT_READ, i)
        while True:
            for key, _ in idle.select():
                if key.data is not None:
                    self.prober.answer(key.data)
                    continue
                (size,) = LENGTH.unpack(_read_exactly(commands, LENGTH.size))
                share = array("I")
                share.frombytes(_read_exactly(commands, 4 * size))
                outcome = self.prober.run(Picked(self.jobs, share), self._progress)
                self.done += len(share)
                self._progress(0, 0)
                data = pickle.dumps((bytes(outcome.verdict), outcome.rtt.tobytes(), outcome.extra))
                _write_all(results, LENGTH.pack(len(data)) + data)


__all__ = ["Jobs", "Picked", "Workers"]
