"""Strict YAML <-> dataclasses: the codec under the configuration, the manifest and run files.

Unknown keys, wrong types and values outside a ``Literal`` are errors that name the key, what was
received and what is allowed. YAML aliases are refused (a 1 kB file of nested aliases expands to
billions of nodes) and never written.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import ConfigError, EdgeadError


def to_dict(obj: Any) -> Any:
    """Dataclasses to plain YAML-safe dicts (tuples become lists); method sections by name."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("inline"):  # a dict field whose entries are keys of their own (method sections)
                out.update({k: to_dict(v) for k, v in sorted(value.items())})
            else:
                out[f.name] = to_dict(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    own = getattr(cls, "__from_dict__", None)
    if own is not None:  # a schema that reads itself (ExperimentConfig's method sections)
        return own(data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {_join(where, unknown[0])!r}; valid keys of "
            f"{where or 'the config'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = get_args(tp)[0]
        items = [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        args = get_args(tp)
        if args and args[1] is not Any:  # dict[str, X]: every value is an X
            return {k: coerce(args[1], v, _join(where, str(k))) for k, v in value.items()}
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - schema bug


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (value parsed as YAML) onto a nested dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return data


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML without aliases: ten lines of nested ``*a`` references expand to billions of nodes
    (a "billion laughs" file of 1 kB), which no size limit on the file catches."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


class _AliasFound(Exception):
    pass


class _PlainDumper(yaml.SafeDumper):
    """Never writes an alias, so everything edgead writes reads back with _PlainLoader."""

    def ignore_aliases(self, data):
        return True


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False)


def read_yaml_text(text: str, where: str, error: type[EdgeadError] = ConfigError) -> dict[str, Any]:
    """YAML text that must hold a mapping (empty: empty mapping); ``error`` on anything else."""
    try:
        loaded = yaml.load(text, Loader=_PlainLoader)
    except _AliasFound as line:
        raise error(f"{where} uses a YAML alias (*name, line {line}), which edgead files never contain") from None
    except yaml.YAMLError as exc:
        raise error(f"{where} is not valid YAML: {exc}") from None
    except RecursionError:
        raise error(f"{where} is nested too deeply to be a configuration") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{where} is corrupt: expected a mapping at the top level")
    return loaded


def read_yaml_mapping(path: Path, error: type[EdgeadError] = ConfigError) -> dict[str, Any]:
    """A YAML file that must hold a mapping; a binary or unreadable file is ``error`` too."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path} is not a YAML file: it is not UTF-8 text") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    return read_yaml_text(text, str(path), error)


def check_finite(obj: Any, where: str) -> None:
    """Every number inside ``obj`` (dataclasses, lists, dicts) is finite: a NaN threshold would pass every part."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ConfigError(f"{where} must be a finite number, got {obj}")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            check_finite(getattr(obj, f.name), f"{where}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{where}.{k}")
