"""FIELD_MAP and TYPE_MAP applied: a decoded message's values at the mapped paths, its attribute type.

The settings are parsed in `consumer.config.fieldmap` (their syntax is described there); here a
parsed path is looked up in a decoded message, and a flat contract object is built from it.
"""

from __future__ import annotations

from decimal import Decimal
from fnmatch import fnmatchcase
from itertools import pairwise
from typing import Any

from consumer.config.fieldmap import CE, HEADER, FieldMap, Path
from consumer.formats.fields import plain_decimal
from consumer.formats.message import Decoded, Headers, find_header
from consumer.values.attributes import TYPES


def lookup(path: Path, decoded: Decoded, headers: Headers | None) -> Any:
    """The value at `path` in a decoded message (or its headers), None when any step is missing."""
    if path.source == HEADER:
        return find_header(headers, path.keys[0])
    node: Any = decoded.ce if path.source == CE else decoded.obj
    for key in path.keys:
        if type(node) is dict:
            node = node.get(key)
        elif type(node) is list and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return _plain(node)


def resolve_type(name: str, type_map: tuple[tuple[str, str], ...]) -> str | None:
    """The attribute type an event type name maps to, None when nothing matches."""
    for glob, kind in type_map:
        if fnmatchcase(name, glob):
            return kind
    return name if name in TYPES else None


def flatten(decoded: Decoded, kind: str, field_map: FieldMap, headers: Headers | None) -> dict[str, Any]:
    """The flat contract object of one event: top-level values, overridden by the mapped ones."""
    obj = decoded.obj
    flat = {k: _plain(v) for k, v in obj.items()}
    for target, path in field_map.paths(kind).items():
        value = lookup(path, decoded, headers)
        if "." not in target:
            flat[target] = value
        elif value is not None:  # a missing value leaves the structure as the producer sent it
            _put(flat, target.split("."), value)
    return flat


def _put(flat: dict[str, Any], steps: list[str], value: Any) -> None:
    """Set a nested target (``contacts.0.email``), copying each container on the way (never the producer's).

    A missing container is made (a list before a numeric step, else an object); a list too short
    for an index is padded with nulls, which validation refuses naming their path.
    """
    node: Any = flat
    for step, after in pairwise(steps):
        child = _get(node, step)
        if type(child) is dict:
            child = dict(child)
        elif type(child) is list:
            child = list(child)
        else:
            child = [] if after.isdigit() else {}
        _set(node, step, child)
        node = child
    _set(node, steps[-1], value)


def _get(node: Any, step: str) -> Any:
    if type(node) is list:
        index = int(step) if step.isdigit() else len(node)
        return node[index] if index < len(node) else None
    return node.get(step) if type(node) is dict else None


def _set(node: Any, step: str, value: Any) -> None:
    if type(node) is list and step.isdigit():
        index = int(step)
        node.extend([None] * (index + 1 - len(node)))
        node[index] = value
    elif type(node) is dict:
        node[step] = value


def plain_object(obj: Any) -> Any:
    """A registry decoder's object with its top-level Decimals as JSON numbers (nested: at lookup)."""
    if type(obj) is not dict:
        return obj
    return {k: _plain(v) for k, v in obj.items()}


def _plain(value: Any) -> Any:
    """Registry decoders give Decimal for Avro decimals: as a JSON number, like a JSON producer sends.

    An integral decimal becomes an int, another a float; one that is not finite, has more than
    MAX_INT_DIGITS integer digits or overflows a double stays a Decimal, which the validator refuses
    naming the field (as it refuses an int beyond 64 bits): `consumer.formats.fields.plain_decimal`,
    the same conversion the validator gives a nested decimal.
    """
    return plain_decimal(value) if type(value) is Decimal else value


def mapped_source(field: str, paths: dict[str, Path]) -> Path | None:
    """The mapped path a refused field (``contacts[0].email``) came from: its target or an enclosing one."""
    dotted = field.replace("[", ".").replace("]", "")
    while True:
        path = paths.get(dotted)
        if path is not None or "." not in dotted:
            return path
        dotted = dotted.rpartition(".")[0]
