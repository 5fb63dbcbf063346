"""Typed values as JSON and back: the resolved lab is recorded as it was built, so `status`,
`check` and `explain` read what `up` made, not what today's code would make of the scenario.

Handles what the model is made of: dataclasses, IPv4 and IPv6 addresses and networks, tuples, frozensets,
optional values and plain JSON. Pure: no kernel, no files.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any, TypeVar

T = TypeVar("T")
TEXT_TYPES = (IPv4Address, IPv4Network, IPv4Interface, IPv6Address, IPv6Network, IPv6Interface)


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, TEXT_TYPES):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(encode(v) for v in value)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(kind: Any, data: Any) -> Any:
    """`data` (from `encode`) as a value of type `kind`."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if data is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) > 1 and all(o in TEXT_TYPES for o in inner):  # an address of either family
            for option in inner:
                try:
                    return option(data)
                except ValueError:
                    continue
            raise ValueError(f"{data!r} is none of {inner}")
        if len(inner) > 1:  # a dataclass or a word (a data plane's `Refused(reason)` or how it does it)
            shaped = [o for o in inner if dataclasses.is_dataclass(o)]
            if isinstance(data, dict) and len(shaped) == 1:
                return decode(shaped[0], data)
            return decode(next(o for o in inner if not dataclasses.is_dataclass(o)), data)
        (only,) = inner
        return decode(only, data)
    if dataclasses.is_dataclass(kind):
        hints = _hints(kind)  # type: ignore[arg-type]
        return kind(**{f.name: decode(hints[f.name], data[f.name])  # type: ignore[operator]
                       for f in dataclasses.fields(kind) if f.name in data})
    if kind in TEXT_TYPES:
        return kind(data)
    if origin is tuple:
        args = typing.get_args(kind)
        return tuple(decode(args[0], v) for v in data)
    if origin is frozenset:
        (inner,) = typing.get_args(kind)
        return frozenset(decode(inner, v) for v in data)
    return data


def load(kind: type[T], data: Any) -> T:
    value: T = decode(kind, data)
    return value
