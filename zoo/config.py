"""Config dataclasses <-> JSON dicts, strictly: an unknown key is an error, never silently dropped."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, TypeVar

from zoo.errors import ConfigError

C = TypeVar("C")

# Keys that config.json reserves for the zoo itself; a variant config must not use them.
RESERVED_KEY = "_zoo"
CONFIG_VERSION = 1


def config_to_dict(config: Any) -> dict[str, Any]:
    """Return the config as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"expected a config dataclass instance, got {type(config).__name__}")
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_dict(config_class: type[C], data: dict[str, Any], *, source: str = "config") -> C:
    """Build ``config_class`` from ``data``; missing keys take defaults, unknown keys raise.

    ``source`` names where the dict came from (a file path, "overrides") for the error message.
    """
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(hints)} for {config_class.__name__}. "
            f"Valid keys: {', '.join(sorted(fields))}."
        )
    hints = typing.get_type_hints(config_class)
    values = {key: _coerce(value, hints.get(key)) for key, value in data.items()}
    try:
        return config_class(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: invalid {config_class.__name__}: {err}") from err


def replace_config(config: C, overrides: dict[str, Any], *, source: str = "overrides") -> C:
    """Return a copy of ``config`` with ``overrides`` applied, validated like a fresh config."""
    merged = config_to_dict(config) | dict(overrides)
    return config_from_dict(type(config), merged, source=source)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line ``key=value`` (value read as JSON when it parses, else as a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"expected KEY=VALUE, got {text!r} (e.g. --set latent_dim=8)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _coerce(value: Any, hint: Any) -> Any:
    """Turn JSON lists back into the tuples the dataclass declares (also inside ``X | None``)."""
    if not isinstance(value, list):
        return value
    candidates = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if any(arg is tuple or typing.get_origin(arg) is tuple for arg in candidates):
        return tuple(value)
    return value
