"""The one place cni-lab ever changes the host: the shared neighbour table's limits, only when a
user asks (`check --neighbour-cap N`), recorded first in the lab's state and put back after.

Every namespace's ARP entries live in one kernel table capped by the root namespace's
`net.ipv4.neigh.default.gc_thresh3` (1024 by default), and the kernel frees an entry for a new
one only once it is 5 seconds old. A 1000-pod lab's matrix needs tens of thousands of entries:
with the default cap it takes minutes; with a larger cap, seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

KEYS = ("gc_thresh1", "gc_thresh2", "gc_thresh3")
SYSCTL = "/proc/sys/net/ipv4/neigh/default/{}"
RECORD = "neighbour-cap.json"


def read() -> dict[str, int]:
    return {k: int(Path(SYSCTL.format(k)).read_text()) for k in KEYS}


def _write(values: dict[str, int]) -> None:
    # raise thresh3 before thresh2 and lower it after, so thresh2 <= thresh3 holds throughout
    order = KEYS[::-1] if values["gc_thresh3"] >= read()["gc_thresh3"] else KEYS
    for key in order:
        Path(SYSCTL.format(key)).write_text(str(values[key]))


def raise_cap(folder: Path, cap: int) -> dict[str, int]:
    """Record the current limits in `folder`, then raise them. Returns what was there."""
    before = read()
    record = folder / RECORD
    if not record.exists():  # a second raise keeps the original values
        record.write_text(json.dumps(before))
    _write({"gc_thresh1": before["gc_thresh1"], "gc_thresh2": max(before["gc_thresh2"], cap // 2),
            "gc_thresh3": max(before["gc_thresh3"], cap)})
    return before


def restore(folder: Path) -> dict[str, int] | None:
    """Put back what `raise_cap` recorded (also after a killed check: `down` calls this)."""
    record = folder / RECORD
    try:
        before = {k: int(v) for k, v in json.loads(record.read_text()).items() if k in KEYS}
    except (OSError, ValueError):
        return None
    if set(before) == set(KEYS):
        _write(before)
    record.unlink(missing_ok=True)
    return before
