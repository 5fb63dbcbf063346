"""The nflog packet reader's hand walk of attributes, held against pyroute2's own decoding of
the same bytes (the message as kernel/flowsources defines it on pyroute2's nfgen_msg), and the
config request a listener binds with, as encoded."""

from __future__ import annotations

import socket
import struct

import pytest

from cni_lab.kernel import flowsources


def packet_message(hook: int, indev: int, outdev: int, payload: bytes, prefix: str) -> bytes:
    """A packet message encoded by pyroute2, as the kernel sends one (NFULNL_MSG_PACKET)."""
    _, packet = flowsources._messages()
    msg = packet()
    msg["header"]["type"] = 4 << 8 | flowsources.NFULNL_MSG_PACKET
    msg["nfgen_family"] = socket.AF_INET
    msg["attrs"] = [("NFULA_PACKET_HDR", {"hw_protocol": 0x0800, "hook": hook, "pad": 0}),
                    *([("NFULA_IFINDEX_INDEV", indev)] if indev else []),
                    *([("NFULA_IFINDEX_OUTDEV", outdev)] if outdev else []),
                    ("NFULA_PAYLOAD", payload), ("NFULA_PREFIX", prefix)]
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("hook,indev,outdev,size,prefix", [
    (2, 7, 3, 84, "cni-lab forward"), (1, 5, 0, 20, "cni-lab input"), (3, 0, 9, 128, "cni-lab output"),
    (2, 2, 4, 1, "cni-lab policy-drop ingress"), (0, 0, 0, 0, "")])
def test_the_hand_walk_reads_what_pyroute2_decodes(hook: int, indev: int, outdev: int, size: int,
                                                   prefix: str) -> None:
    payload = bytes(range(size))
    data = packet_message(hook, indev, outdev, payload, prefix)
    _, packet = flowsources._messages()
    decoded = packet(data)
    decoded.decode()
    by_pyroute2 = (decoded.get_attr("NFULA_PACKET_HDR")["hook"], decoded.get_attr("NFULA_IFINDEX_INDEV") or 0,
                   decoded.get_attr("NFULA_IFINDEX_OUTDEV") or 0, bytes(decoded.get_attr("NFULA_PAYLOAD") or b""),
                   decoded.get_attr("NFULA_PREFIX") or "")
    assert flowsources.packet_fields(data) == by_pyroute2 == (hook, indev, outdev, payload, prefix)


def test_a_cut_message_yields_what_it_holds_and_never_raises() -> None:
    data = packet_message(2, 7, 3, bytes(40), "cni-lab forward")
    for end in range(len(data) + 1):
        flowsources.packet_fields(data[:end])  # no exception, whatever the length
    assert flowsources.packet_fields(data[:28])[0] == 2  # the packet header alone (20 + 8 bytes)
    assert flowsources.packet_fields(data[:27])[0] is None  # cut inside it: not read


def test_the_bind_request_names_the_group_and_asks_for_an_ack() -> None:
    data = flowsources.config_request(7, socket.AF_UNSPEC, flowsources.GROUP,
                                      [("NFULA_CFG_CMD", {"command": flowsources.NFULNL_CFG_CMD_BIND})])
    length, kind, flags, sequence, _ = struct.unpack_from("=IHHII", data)
    assert (length, kind, sequence) == (len(data), 4 << 8 | flowsources.NFULNL_MSG_CONFIG, 7)
    assert flags == flowsources.NLM_F_REQUEST | flowsources.NLM_F_ACK
    assert struct.unpack_from(">H", data, 18)[0] == flowsources.GROUP  # nfgenmsg res_id: the group
    assert data[20:24] == struct.pack("=HH", 5, 1) and data[24] == flowsources.NFULNL_CFG_CMD_BIND
