"""Reading a dataset spec YAML file (configs/datasets/NAME.yaml, or any path): the one place that
parses and checks one. Every error names the file, the key (and its line) and what was expected.

The keys are the fields of datasets.DatasetSpec, with `camera:` (datasets.Camera) and `joints:`
(datasets.JointSpec) as nested mappings; docs/datasets.md lists them. `base: NAME-OR-PATH` starts
from another spec (a relative path is read from this file's folder) and overrides its keys; a nested
mapping is merged key by key.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from murauer_dist.errors import UserError


class SpecFileError(UserError, ValueError):
    """A dataset spec file that cannot be read or does not describe a dataset."""


def _key_lines(node, prefix: str = "", lines: dict | None = None) -> dict[str, int]:
    """{dotted key: 1-based line} of a composed YAML mapping (for messages)."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}{key.value}"
            lines[path] = key.start_mark.line + 1
            _key_lines(value, path + ".", lines)
    return lines


def read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """(mapping, key lines) of a spec file; SpecFileError for a missing, unreadable or non-mapping file."""
    try:
        text = path.read_text()
        tree = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecFileError(f"dataset spec {path}:{where}: YAML syntax error "
                            f"({getattr(err, 'problem', None) or err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecFileError(f"dataset spec {path}: cannot be read ({err})") from None
    if not isinstance(tree, dict):
        raise SpecFileError(f"dataset spec {path}: expected a mapping of keys (name, camera, joints, ...), "
                            f"got {type(tree).__name__}")
    return tree, lines


def _describe(annotation) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    origin = typing.get_origin(annotation)
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        return f"a list of {_describe(item).removeprefix('an ').removeprefix('a ')}s"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_describe(a) for a in kinds) + " (or null)"
    return names.get(annotation, str(annotation))


def convert(value, annotation, where: str):
    """`value` as `annotation` (int, float, bool, str, tuple[...], X | None); ValueError(expected) otherwise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return convert(value, kinds[0], where)
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ValueError(_describe(annotation))
        return tuple(convert(v, item, where) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(_describe(bool))
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(_describe(int))
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(_describe(float))
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(_describe(str))
        return value
    raise ValueError(f"a value of type {annotation}")


def build(cls, tree: dict, path: Path, lines: dict[str, int], prefix: str = ""):
    """An instance of dataclass `cls` from the mapping `tree`, every key checked (nested dataclasses too)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}

    def where(key: str) -> str:
        line = lines.get(prefix + key)
        return f"dataset spec {path}" + (f", line {line}" if line else "") + f": key '{prefix}{key}'"

    unknown = sorted(set(tree) - set(fields))
    if unknown:
        raise SpecFileError(f"{where(unknown[0])} is not a dataset spec key; valid keys here: "
                            f"{', '.join(prefix + name for name in fields)}")
    missing = [name for name, f in fields.items() if name not in tree
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SpecFileError(f"dataset spec {path}: key '{prefix}{missing[0]}' is missing (required: "
                            f"{', '.join(prefix + m for m in missing)})")
    values = {}
    for key, value in tree.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise SpecFileError(f"{where(key)}: expected a mapping ({', '.join(f.name for f in dataclasses.fields(kind))})")
            values[key] = build(kind, value, path, lines, f"{prefix}{key}.")
            continue
        try:
            values[key] = convert(value, kind, where(key))
        except ValueError as err:
            raise SpecFileError(f"{where(key)}: expected {err}, got {value!r}") from None
    if "bones" in values:
        values["bones"] = tuple(tuple(pair) for pair in values["bones"])
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise SpecFileError(f"dataset spec {path}: section '{prefix.rstrip('.') or 'top level'}': {err}") from None


def merged(base: dict, top: dict) -> dict:
    """`top` over `base`; nested mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
