"""state.py: what runs, recorded under the state folder; here a tmp folder stands in for /run/cni-lab."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cni_lab import state
from cni_lab.errors import LabError


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cni-lab"  # not made yet: the first write makes it, as on a fresh boot
    monkeypatch.setattr(state, "STATE_ROOT", folder)
    return folder


def record(name: str = "lab", **changes: object) -> state.LabState:
    document = {"name": name, "nodes": [{"name": "node1", "pods": 1}]}
    fields: dict[str, object] = {"name": name, "status": "up", "source": "s.yaml", "document": document,
                                 "digest": state.LabState.digest_of(document),
                                 "namespaces": [f"cnilab-{name}.node1", f"cnilab-{name}.node1.pod-1"],
                                 "created": 1700000000.5, "lab": {"nodes": [{"name": "node1"}]}}
    fields.update(changes)
    return state.LabState(**fields)


def test_what_is_written_reads_back_the_same(root: Path) -> None:
    written = record()
    state.write(written)
    assert state.read("lab") == written
    assert (root / "lab" / state.STATE_FILE).is_file()
    assert not list((root / "lab").glob(".*.tmp"))  # written aside, then renamed over
    building = record(status="building", lab=None)
    state.write(building)  # `up` writes twice: building, then up
    assert state.read("lab") == building


def test_the_folders_are_for_root_only(root: Path) -> None:
    state.write(record())
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "lab").stat().st_mode) == 0o700


def test_a_lab_never_recorded_reads_as_none_and_a_corrupted_record_is_one_clear_error(root: Path) -> None:
    assert state.read("lab") is None
    state.write(record())
    (root / "lab" / state.STATE_FILE).write_text('{"name": "lab"')
    with pytest.raises(LabError, match=r"state.json: corrupted lab state .*`cni-lab down --all` still removes the lab"):
        state.read("lab")
    (root / "lab" / state.STATE_FILE).write_text('{"name": "lab", "unknown": 1}')  # not a LabState's fields
    with pytest.raises(LabError, match="corrupted lab state"):
        state.read("lab")


def test_names_are_the_lab_folders_sorted(root: Path) -> None:
    assert state.names() == []  # no state folder at all
    for name in ("web", "alpha", "db"):
        state.write(record(name))
    (root / "Not_A_Lab").mkdir()
    (root / "stray-file").write_text("")
    assert state.names() == ["alpha", "db", "web"]


def test_remove_takes_the_lab_and_the_emptied_state_folder(root: Path) -> None:
    state.write(record("one"))
    state.write(record("two"))
    state.remove("one")
    assert state.names() == ["two"] and root.is_dir()
    state.remove("two")
    assert not root.exists()  # nothing left: the folder goes too
    state.remove("two")  # removing what is gone is done


def test_a_lab_name_is_never_a_path(root: Path) -> None:
    for bad in ("../etc", "a/b", "", "Lab"):
        with pytest.raises(LabError, match="is not a lab name"):
            state.lab_dir(bad)
    with pytest.raises(LabError):
        state.write(record("../x"))
    assert not root.exists() or not any(root.iterdir())


def test_the_lock_is_exclusive_per_lab_and_released_on_leaving(root: Path) -> None:
    with state.locked("lab"):
        with pytest.raises(LabError, match="lab lab is busy: another cni-lab command is working on it"):
            with state.locked("lab"):
                pass  # pragma: no cover - the second lock must not be taken
        with state.locked("other"):  # another lab is not held up
            pass
    with state.locked("lab"):  # released: taken again
        pass
    with pytest.raises(RuntimeError), state.locked("lab"):
        raise RuntimeError("the command failed")
    with state.locked("lab"):  # released after a failure too
        pass


def test_clear_keeps_only_the_lock(root: Path) -> None:
    with state.locked("lab"):
        state.write(record())
        (root / "lab" / "bird").mkdir()
        (root / "lab" / "bird" / "node1.conf").write_text("")
        state.save_last_check("lab", "{}")
        state.clear("lab")
        assert [p.name for p in (root / "lab").iterdir()] == [".lock"]


def test_the_last_check_is_kept_for_report(root: Path) -> None:
    state.write(record())
    assert state.load_last_check("lab") is None
    state.save_last_check("lab", '{"passed": true, "pairs": 12}')
    assert state.load_last_check("lab") == {"passed": True, "pairs": 12}
    (root / "lab" / state.LAST_CHECK).write_text("not json")
    assert state.load_last_check("lab") is None


def test_the_digest_is_stable_whatever_the_key_order() -> None:
    one = {"name": "lab", "dataplane": "vxlan", "nodes": [{"name": "n1", "pods": 2}]}
    other = {"nodes": [{"pods": 2, "name": "n1"}], "dataplane": "vxlan", "name": "lab"}
    digest = state.LabState.digest_of(one)
    assert digest == state.LabState.digest_of(other)
    assert len(digest) == 16 and int(digest, 16) >= 0
    # the same across runs and releases: a recorded lab's digest is compared with the scenario's now
    assert digest == "668dea8e20916c1d"  # sha256 of the sorted-key JSON, first 16 hex digits
    assert state.LabState.digest_of({**one, "dataplane": "bgp"}) != digest
    assert state.LabState.digest_of({**one, "nodes": [{"name": "n1", "pods": 3}]}) != digest
