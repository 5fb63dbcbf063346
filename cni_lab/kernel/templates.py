"""pyroute2's bytes, encoded once per kind of message and filled in for every repeat.

`up` sends thousands of messages that differ only in a few fields (an interface index, an
address, a sequence number). pyroute2's generic encoder costs tens of microseconds a message;
filling known places in bytes it produced costs about one. Where a field lives is not written
down here: pyroute2 encodes the message with a sentinel value in every field, then with all of
them changed (every byte different, each field's bytes its own), and the bytes that differ are the
fields. So pyroute2 stays the one definition of
every message; tests/unit/test_templates.py holds the filled bytes to pyroute2's for every kind
the lab sends, with random values.

A template is keyed by the builder, its fixed arguments (`const`: what changes the message's
shape, e.g. which attributes are present or an interface's name) and each field's kind and
length. Field kinds: u8, u16, u32 (native order, as netlink's integers), be16 (network order, a
VXLAN port), ip (an IPv4 or IPv6 address, packed), mac (six bytes), name (a fixed-length string).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Callable

Builder = Callable[..., Any]  # keyword arguments -> an encodable pyroute2 message

# how a value becomes bytes
_PACK: dict[str, Callable[[Any], bytes]] = {
    "u8": struct.Struct("=B").pack, "u16": struct.Struct("=H").pack, "u32": struct.Struct("=I").pack,
    "be16": struct.Struct(">H").pack, "ip": lambda v: v.packed,
    "mac": lambda v: bytes.fromhex(v.replace(":", "")), "name": lambda v: v.encode(),
}
_WIDTH = {"u8": 1, "u16": 2, "be16": 2, "u32": 4, "mac": 6}  # bytes of the fixed-size kinds
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
        return _WIDTH[self.kind]

    def sentinels(self, i: int = 0) -> tuple[Any, Any]:
        """Two values for the `i`th field of a message that differ in every byte, and from the
        values of every other field (so one second encoding tells all the fields apart)."""
        a, b = 0x11 + i, 0x41 + i  # below 0x80: a signed 32-bit field (an ifindex) takes them too
        size = self.size()
        if self.kind == "ip":
            kind = IPv6Address if size == 16 else IPv4Address
            return kind(bytes([a] * size)), kind(bytes([b] * size))
        if self.kind == "name":
            return chr(ord("a") + i) * size, chr(ord("A") + i) * size
        if self.kind == "mac":
            return ":".join([f"{a:02x}"] * 6), ":".join([f"{b:02x}"] * 6)
        return int.from_bytes(bytes([a] * size), "little"), int.from_bytes(bytes([b] * size), "little")


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
        order = {key: i for i, key in enumerate(fields)}

        self.encodings = 0  # how many times pyroute2 encoded it to find the fields (2, unless a field misbehaves)

        def plain(override: dict[str, Any]) -> bytes:
            self.encodings += 1
            values = {**const, **{k: f.sentinels(order[k])[0] for k, f in fields.items()}, **override}
            return encode(build, msg_type, flags, 0, **values)

        self.data = plain({})
        self.places: dict[str, tuple[tuple[int, ...], str, int]] = {}  # field -> (offsets, kind, size)
        # every field changed at once: one more encoding (each field's values are its own bytes)
        every = plain({k: f.sentinels(order[k])[1] for k, f in fields.items()})
        if len(every) == len(self.data):
            for key, f in fields.items():
                first, second = (_PACK[f.kind](v) for v in f.sentinels(order[key]))
                self.places[key] = (_found(self.data, every, first, second), f.kind, f.size())
            changed = sum(a != b for a, b in zip(self.data, every))
            if changed == sum(len(offsets) * size for offsets, _, size in self.places.values()) and \
                    all(offsets for offsets, _, _ in self.places.values()):
                return
        for key, f in fields.items():  # something did not add up: one field at a time, to name it
            self.places[key] = self._locate(build, plain, key, f, order[key])

    def _locate(self, build: Builder, plain: Callable[[dict[str, Any]], bytes], key: str, f: Field,
                i: int) -> tuple[tuple[int, ...], str, int]:
        first, second = f.sentinels(i)
        other = plain({key: second})
        if len(other) != len(self.data):
            raise ValueError(f"{build.__name__}: field {key} changes the message's length")
        size = f.size()
        offsets = _found(self.data, other, _PACK[f.kind](first), _PACK[f.kind](second))
        if not offsets or sum(a != b for a, b in zip(self.data, other)) != size * len(offsets):
            raise ValueError(f"{build.__name__}: field {key} is not where its {size} bytes would be")
        return offsets, f.kind, size

    @classmethod
    def stored(cls, found: dict[str, Any]) -> Template:
        """A template as `as_stored` wrote it."""
        template = cls.__new__(cls)
        template.data = bytes.fromhex(found["data"])
        template.encodings = 0
        template.places = {k: (tuple(offsets), kind, size) for k, (offsets, kind, size) in found["places"].items()}
        return template

    def as_stored(self) -> dict[str, Any]:
        return {"data": self.data.hex(), "places": {k: [list(o), kind, size] for k, (o, kind, size) in self.places.items()}}

    def fill(self, seq: int, fields: dict[str, Field]) -> bytes:
        out = bytearray(self.data)
        struct.pack_into("=I", out, SEQ_OFFSET, seq)
        for key, f in fields.items():
            offsets, kind, size = self.places[key]
            value = _PACK[kind](f.value)
            for offset in offsets:
                out[offset:offset + size] = value
        return bytes(out)


def _found(base: bytes, other: bytes, first: bytes, second: bytes) -> tuple[int, ...]:
    """Where `base` holds `first` and `other` holds `second` (every place: IFA_LOCAL and
    IFA_ADDRESS both carry an IPv4 address)."""
    offsets = []
    at = base.find(first)
    while at >= 0:
        if other[at:at + len(second)] == second:
            offsets.append(at)
        at = base.find(first, at + 1)
    return tuple(offsets)


class Encoder:
    """The templates of one process: `encode` gives the same bytes as pyroute2 would.

    With a `store` (a file), templates made by an earlier run are read from it and new ones
    written to it by `save`, so a run whose messages are all known does not load pyroute2 at all
    (~15 ms of `up`'s start-up). The file's name carries a digest of what makes the bytes:
    pyroute2's version and the source of this module and of rtnl.py (the builders); anything
    else, or a file that does not read back, is ignored and made again."""

    def __init__(self, store: Path | None = None) -> None:
        self._templates: dict[tuple[Any, ...], Template] = {}
        self.made = 0  # templates built (each costs two pyroute2 encodings)
        self.store = store
        self._stored: dict[str, Any] | None = None  # the store's templates, read on first use
        self._dirty = False

    def encode(self, build: Builder, msg_type: int, flags: int, seq: int, **values: Any) -> bytes:
        fields: dict[str, Field] = {}
        shape: list[Any] = [build, msg_type, flags]  # what decides the bytes around the fields
        for k, v in values.items():  # (call sites pass their arguments in one order: no sorting)
            if isinstance(v, Field):
                fields[k] = v
                shape.append((k, v.kind, v.size()))
            else:
                shape.append((k, v if v is None or isinstance(v, (bool, int, str)) else _frozen(v)))
        key = tuple(shape)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self._stored_or_made(key, build, msg_type, flags, values, fields)
        return template.fill(seq, fields)

    def _stored_or_made(self, key: tuple[Any, ...], build: Builder, msg_type: int, flags: int,
                        values: dict[str, Any], fields: dict[str, Field]) -> Template:
        text = repr((build.__name__, *key[1:]))
        if self.store is not None:
            if self._stored is None:
                self._stored = _read(self.store)
            found = self._stored.get(text)
            if found is not None:
                return Template.stored(found)
        const = {k: v for k, v in values.items() if not isinstance(v, Field)}
        template = Template(build, msg_type, flags, const, fields)
        self.made += 1
        if self._stored is not None:
            self._stored[text] = template.as_stored()
            self._dirty = True
        return template

    def save(self) -> None:
        """Write what this run made to the store (best effort: a cache)."""
        if self.store is None or not self._dirty or self._stored is None:
            return
        try:
            self.store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.store.with_name(f".{self.store.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self._stored))
            os.replace(tmp, self.store)
            self._dirty = False
        except OSError:
            pass


def _read(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def store_for(folder: Path) -> Path | None:
    """The store's file in `folder` for this pyroute2 and this code (None without pyroute2)."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return None
    digest = hashlib.sha256()
    for source in (Path(next(iter(spec.submodule_search_locations))) / "config" / "version.py",
                   Path(__file__), Path(__file__).with_name("rtnl.py")):
        try:
            digest.update(source.read_bytes())
        except OSError:
            return None
    return folder / f"netlink-{digest.hexdigest()[:16]}.json"


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value
