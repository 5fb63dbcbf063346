"""What runs, and where that is recorded: /run/cni-lab/<lab>/ (root only, gone at reboot like
the namespaces themselves). `down` reads this record first, then sweeps by name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from cni_lab.errors import LabError
from cni_lab.cluster import Lab
from cni_lab.model import LAB_NAME

STATE_ROOT = Path(os.environ.get("CNI_LAB_STATE_DIR", "/run/cni-lab"))
STATE_FILE = "state.json"


@dataclass
class LabState:
    name: str
    status: str  # "building" while `up` runs, "up" once complete
    source: str
    document: dict[str, Any]
    digest: str
    namespaces: list[str]
    created: float = field(default_factory=time.time)
    lab: dict[str, Any] | None = None  # the resolved lab as built (codec.py); None in older records

    @staticmethod
    def digest_of(document: dict[str, Any]) -> str:
        canonical = json.dumps(document, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def lab_dir(name: str) -> Path:
    # The lab name is the only user input that becomes a path: it must be a plain name.
    if not LAB_NAME.match(name):
        raise LabError(f"{name!r} is not a lab name (1-12 of [a-z0-9-], starting with a letter)")
    return STATE_ROOT / name


def _ensure_root() -> None:
    STATE_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(STATE_ROOT, 0o700)


def write(state: LabState) -> None:
    _ensure_root()
    folder = lab_dir(state.name)
    folder.mkdir(mode=0o700, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.tmp"
    # its fields as they are (asdict would deep-copy the recorded lab, a tenth of a second at 1000 pods)
    record = {f.name: getattr(state, f.name) for f in fields(state)}
    # compact: written twice by every `up` (building, then up); `jq . state.json` reads it best
    tmp.write_text(json.dumps(record, separators=(",", ":"), default=str))
    os.replace(tmp, folder / STATE_FILE)


def read(name: str) -> LabState | None:
    path = lab_dir(name) / STATE_FILE
    try:
        raw = json.loads(path.read_text())
        return LabState(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise LabError(f"{path}: corrupted lab state ({e}); `cni-lab down --all` still removes the lab") from None


def names() -> list[str]:
    """Labs with a state folder (running, or left behind by a killed process)."""
    try:
        return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir() and LAB_NAME.match(p.name))
    except FileNotFoundError:
        return []


def remove(name: str) -> None:
    shutil.rmtree(lab_dir(name), ignore_errors=True)
    with contextlib.suppress(OSError):
        if STATE_ROOT.exists() and not any(STATE_ROOT.iterdir()):
            STATE_ROOT.rmdir()


def clear(name: str) -> None:
    """Empty a lab's folder but for its lock (held by the caller)."""
    for entry in lab_dir(name).iterdir():
        if entry.name == ".lock":
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Only one `up`/`down`/`check` of a lab at a time: the second gets a clear error."""
    _ensure_root()
    folder = lab_dir(name)
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LabError(f"lab {name} is busy: another cni-lab command is working on it") from None
            raise
        yield
    finally:
        os.close(fd)


LAST_CHECK = "last-check.json"


def save_last_check(name: str, text: str) -> None:
    """The last check's result as JSON text (for `report`)."""
    path = lab_dir(name) / LAST_CHECK
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_last_check(name: str) -> dict[str, Any] | None:
    try:
        return json.loads((lab_dir(name) / LAST_CHECK).read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Status:
    """A recorded lab as the kernel has it now (what `status` shows)."""

    lab: Lab
    status: str
    present: dict[str, bool]  # netns name → exists in the kernel
    daemons: dict[str, tuple[int | None, bool]] = field(default_factory=dict)  # node → (pid, running)
    faults: list[str] = field(default_factory=list)  # injected with `cni-lab fault`, until `heal`
    dns: tuple[str, int | None, bool] | None = None  # kube-dns's dnsmasq: (its pod, pid, running); None: no DNS

    @property
    def healthy(self) -> bool:
        return (self.status == "up" and all(self.present.values()) and all(ok for _, ok in self.daemons.values())
                and (self.dns is None or self.dns[2]) and not self.faults)
