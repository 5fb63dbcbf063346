"""pyroute2's bytes, encoded once per kind of message and filled in for every repeat.

`up` sends thousands of messages that differ only in a few fields (an interface index, an
address, a sequence number). pyroute2's generic encoder costs tens of microseconds a message;
filling known places in bytes it produced costs about one. Where a field lives is not written
down here: pyroute2 encodes the message twice with two different values for that field (every
byte different), and the bytes that differ are the field. So pyroute2 stays the one definition of
every message; tests/unit/test_templates.py holds the filled bytes to pyroute2's for every kind
the lab sends, with random values.

A template is keyed by the builder, its fixed arguments (`const`: what changes the message's
shape, e.g. which attributes are present or an interface's name) and each field's kind and
length. Field kinds: u8, u16, u32 (native order, as netlink's integers), be16 (network order, a
VXLAN port), ip (an IPv4 or IPv6 address, packed), mac (six bytes), name (a fixed-length string).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Callable

Builder = Callable[..., Any]  # keyword arguments -> an encodable pyroute2 message

# two values per kind that differ in every byte, and how a value becomes bytes
_SENTINELS: dict[str, tuple[Any, Any]] = {
    "u8": (0x11, 0x22), "u16": (0x1111, 0x2222), "u32": (0x11111111, 0x22222222), "be16": (0x1111, 0x2222),
    "mac": ("11:11:11:11:11:11", "22:22:22:22:22:22"),
}
_PACK: dict[str, Callable[[Any], bytes]] = {
    "u8": struct.Struct("=B").pack, "u16": struct.Struct("=H").pack, "u32": struct.Struct("=I").pack,
    "be16": struct.Struct(">H").pack, "ip": lambda v: v.packed,
    "mac": lambda v: bytes.fromhex(v.replace(":", "")), "name": lambda v: v.encode(),
}
SEQ_OFFSET = 8  # nlmsghdr: length, type, flags, then the sequence number


@dataclass(frozen=True)
class Field:
    kind: str
    value: Any

    def size(self) -> int:
        if self.kind == "ip":
            return 16 if self.value.version == 6 else 4
        if self.kind == "name":
            return len(self.value)
        return len(_PACK[self.kind](_SENTINELS[self.kind][0]))

    def sentinels(self) -> tuple[Any, Any]:
        if self.kind == "ip":
            return (IPv6Address("1111:" * 7 + "1111"), IPv6Address("2222:" * 7 + "2222")) if self.value.version == 6 \
                else (IPv4Address("17.17.17.17"), IPv4Address("34.34.34.34"))
        if self.kind == "name":
            return "a" * len(self.value), "b" * len(self.value)
        return _SENTINELS[self.kind]


def u8(v: int) -> Field:
    return Field("u8", v)


def u16(v: int) -> Field:
    return Field("u16", v)


def u32(v: int) -> Field:
    return Field("u32", v)


def be16(v: int) -> Field:
    return Field("be16", v)


def ip(v: IPv4Address | IPv6Address) -> Field:
    return Field("ip", v)


def mac(v: str) -> Field:
    return Field("mac", v)


def name(v: str) -> Field:
    return Field("name", v)


def encode(build: Builder, msg_type: int, flags: int, seq: int, **values: Any) -> bytes:
    """pyroute2's encoding of `build(**values)` as a request of `msg_type` with `flags` and `seq`
    (Field values given as their plain value)."""
    msg = build(**{k: v.value if isinstance(v, Field) else v for k, v in values.items()})
    msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"] = msg_type, flags, seq
    msg.encode()
    return bytes(msg.data)


class Template:
    """One kind of message as pyroute2 encodes it, with where each field's bytes are."""

    def __init__(self, build: Builder, msg_type: int, flags: int, const: dict[str, Any], fields: dict[str, Field]) -> None:
        def plain(override: dict[str, Any]) -> bytes:
            values = {**const, **{k: f.sentinels()[0] for k, f in fields.items()}, **override}
            return encode(build, msg_type, flags, 0, **values)

        self.data = plain({})
        self.places: dict[str, tuple[tuple[int, ...], str, int]] = {}  # field -> (offsets, kind, size)
        for key, f in fields.items():
            first, second = f.sentinels()
            other = plain({key: second})
            if len(other) != len(self.data):
                raise ValueError(f"{build.__name__}: field {key} changes the message's length")
            size = f.size()
            differ = [i for i, (a, b) in enumerate(zip(self.data, other)) if a != b]
            runs: list[list[int]] = []
            for i in differ:
                if runs and runs[-1][-1] == i - 1:
                    runs[-1].append(i)
                else:
                    runs.append([i])
            # each place the field's bytes are (IFA_LOCAL and IFA_ADDRESS both carry an IPv4 address)
            offsets = tuple(run[0] + k for run in runs for k in range(0, len(run), size))
            if not runs or any(len(run) % size for run in runs) or any(
                    self.data[o:o + size] != _PACK[f.kind](first) or other[o:o + size] != _PACK[f.kind](second)
                    for o in offsets):
                raise ValueError(f"{build.__name__}: field {key} is not where its {size} bytes would be")
            self.places[key] = (offsets, f.kind, size)

    def fill(self, seq: int, fields: dict[str, Field]) -> bytes:
        out = bytearray(self.data)
        struct.pack_into("=I", out, SEQ_OFFSET, seq)
        for key, f in fields.items():
            offsets, kind, size = self.places[key]
            value = _PACK[kind](f.value)
            for offset in offsets:
                out[offset:offset + size] = value
        return bytes(out)


class Encoder:
    """The templates of one process: `encode` gives the same bytes as pyroute2 would."""

    def __init__(self) -> None:
        self._templates: dict[tuple[Any, ...], Template] = {}
        self.made = 0  # templates built (each costs a few pyroute2 encodes)

    def encode(self, build: Builder, msg_type: int, flags: int, seq: int, **values: Any) -> bytes:
        fields: dict[str, Field] = {}
        shape: list[Any] = [build, msg_type, flags]  # what decides the bytes around the fields
        for k, v in values.items():  # (call sites pass their arguments in one order: no sorting)
            if isinstance(v, Field):
                fields[k] = v
                shape.append((k, v.kind, len(v.value) if v.kind == "name" else v.value.version if v.kind == "ip" else 0))
            else:
                shape.append((k, v if v is None or isinstance(v, (bool, int, str)) else _frozen(v)))
        key = tuple(shape)
        template = self._templates.get(key)
        if template is None:
            const = {k: v for k, v in values.items() if not isinstance(v, Field)}
            template = self._templates[key] = Template(build, msg_type, flags, const, fields)
            self.made += 1
        return template.fill(seq, fields)


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value
