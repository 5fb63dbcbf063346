"""The one place cni-lab ever changes the host: the shared neighbour table's limits, only when a
user asks (`check --neighbour-cap N`), recorded first in the lab's state and put back by `down`.

Every namespace's ARP entries live in one kernel table capped by the root namespace's
`net.ipv4.neigh.default.gc_thresh3` (1024 by default), and past the cap the kernel evicts an
entry for a new one only once it has been stale for 5 seconds (an entry stays reachable for up
to 45 s after use). A 1000-pod lab's matrix needs tens of thousands of entries: with the default
cap it takes many minutes (probe/check.py waits for room); with a larger cap, seconds.

The limits stay raised while the lab is up: its entries stay in the table after the check, and a
table holding more entries than its cap refuses new ones, in every namespace of the host, until
they age. `down` puts the limits back once the lab's entries are gone, and only when no other lab
still needs them raised (each raise records the values from before the first one).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

KEYS = ("gc_thresh1", "gc_thresh2", "gc_thresh3")
SYSCTL = "/proc/sys/net/ipv4/neigh/default/{}"
STATS = "/proc/net/stat/arp_cache"  # its "entries" column counts the whole table
RECORD = "neighbour-cap.json"


def read() -> dict[str, int]:
    return {k: int(Path(SYSCTL.format(k)).read_text()) for k in KEYS}


def _write(values: dict[str, int]) -> None:
    # raise thresh3 before thresh2 and lower it after, so thresh2 <= thresh3 holds throughout
    order = KEYS[::-1] if values["gc_thresh3"] >= read()["gc_thresh3"] else KEYS
    for key in order:
        Path(SYSCTL.format(key)).write_text(str(values[key]))


def entries() -> int:
    try:
        return int(Path(STATS).read_text().splitlines()[1].split()[0], 16)
    except (OSError, IndexError, ValueError):
        return 0


def raise_cap(folder: Path, cap: int, others: Iterable[Path] = ()) -> dict[str, int]:
    """Record the limits from before any lab raised them in `folder` (a lab's state folder;
    `others` are the other labs' folders), then raise them. Returns what was recorded."""
    record = folder / RECORD
    before = _recorded(record) or next(filter(None, (_recorded(o / RECORD) for o in others)), None) or read()
    if not record.exists():  # a second raise keeps the original values
        record.write_text(json.dumps(before))
    now = read()
    _write({"gc_thresh1": now["gc_thresh1"], "gc_thresh2": max(now["gc_thresh2"], cap // 2),
            "gc_thresh3": max(now["gc_thresh3"], cap)})
    return before


def raised(folder: Path) -> bool:
    """Whether the lab whose state folder this is raised the limits (and `down` puts them back)."""
    return (folder / RECORD).exists()


def _recorded(record: Path) -> dict[str, int] | None:
    try:
        values = {k: int(v) for k, v in json.loads(record.read_text()).items() if k in KEYS}
    except (OSError, ValueError, AttributeError):
        return None
    return values if set(values) == set(KEYS) else None


def restore(folder: Path, others: Iterable[Path] = (), wait: float = 3.0) -> dict[str, int] | None:
    """Put back what `raise_cap` recorded, after the lab's namespaces are gone (`down`). Not while
    another lab's record says it still needs the raise; and not before the table has shrunk below
    the cap being put back (the kernel frees a removed namespace's entries shortly after), for at
    most `wait` seconds."""
    record = folder / RECORD
    before = _recorded(record)
    record.unlink(missing_ok=True)
    if before is None or any((o / RECORD).exists() for o in others):
        return None
    deadline = time.monotonic() + wait
    while entries() > before["gc_thresh3"] and time.monotonic() < deadline:
        time.sleep(0.02)
    _write(before)
    return before
