"""The neighbour flusher's requests are the bytes pyroute2 would send (no namespace needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from cni_lab.errors import LabError
from cni_lab.kernel import neighbours


@pytest.mark.parametrize("table,address", [(neighbours.ARP, "10.244.3.17"), (neighbours.NDP, "fd00:10:244::2a")])
def test_a_delete_request_is_what_pyroute2_encodes(table: neighbours.Table, address: str) -> None:
    with neighbours.Flusher(table, []) as flusher:
        made = flusher.delete_request(42, socket.inet_pton(table.family, address), 7)
    msg = ndmsg()
    msg["family"], msg["ifindex"] = table.family, 42
    msg["attrs"] = [("NDA_DST", address)]
    msg["header"]["type"] = neighbours.RTM_DELNEIGH
    msg["header"]["flags"] = neighbours.NLM_F_REQUEST | neighbours.NLM_F_ACK
    msg["header"]["sequence_number"] = 7
    msg.encode()
    assert made == bytes(msg.data)


def test_a_table_that_cannot_be_read_is_said_so() -> None:
    hidden = neighbours.Table("arp", socket.AF_INET, "/nonexistent/neigh/default", "/nonexistent/arp_cache")
    assert hidden.cap() is None and hidden.entries() == 0


def test_raising_a_cap_that_cannot_be_seen_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # inside a container's own network namespace the limits do not exist
    hidden = neighbours.Table("arp", socket.AF_INET, "/nonexistent/neigh/default", "/nonexistent/arp_cache")
    monkeypatch.setattr(neighbours, "ARP", hidden)
    with pytest.raises(LabError, match="not visible in this network namespace"):
        neighbours.raise_cap(tmp_path, 4096)
    assert not list(tmp_path.iterdir())  # nothing recorded
