"""Config dataclasses <-> JSON dicts, strictly: an unknown key is an error, never silently dropped, and
every value is checked against its field's annotation (:func:`check_fields`).

A value of the wrong type (``"latent_dim": "sixteen"``, ``--set latent_dim=abc``) or an impossible one
(``latent_dim=0``) is a :class:`~zoo.errors.ConfigError` naming the key, the value, what is accepted and
an example, raised before any layer is built: torch's own messages (``empty(): argument 'size' must be
tuple of ints``) name none of these.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from zoo.errors import ConfigError

C = TypeVar("C")

# Keys that config.json reserves for the zoo itself; a variant config must not use them.
RESERVED_KEY = "_zoo"
CONFIG_VERSION = 1

#: Examples for fields without a default of the type (e.g. ``int | None = None``).
_EXAMPLES: dict[Any, Any] = {int: 8, float: 0.5, bool: True, str: "text"}


def config_to_dict(config: Any) -> dict[str, Any]:
    """Return the config as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"expected a config dataclass instance, got {type(config).__name__}")
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_dict(config_class: type[C], data: dict[str, Any], *, source: str = "config") -> C:
    """Build ``config_class`` from ``data``; missing keys take defaults, unknown keys raise, and every
    value must fit its field's annotation (JSON lists become the declared tuples, integers floats).

    ``source`` names where the dict came from (a file path, "overrides") for the error message.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object of settings, got {_shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(hints)} for {config_class.__name__}. "
            f"Valid keys: {', '.join(sorted(fields))}."
        )
    annotations = field_types(config_class)
    try:
        values = {key: coerce_value(value, annotations.get(key), key, _default(fields[key]))
                  for key, value in data.items()}
        return config_class(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: invalid {config_class.__name__}: {err}") from err


def replace_config(config: C, overrides: dict[str, Any], *, source: str = "overrides") -> C:
    """Return a copy of ``config`` with ``overrides`` applied, validated like a fresh config."""
    merged = config_to_dict(config) | dict(overrides)
    return config_from_dict(type(config), merged, source=source)


def check_fields(config: Any, *, positive: Iterable[str] = (), non_negative: Iterable[str] = ()) -> None:
    """Check a config dataclass in its ``__post_init__``: every field against its annotation (JSON lists
    become the declared tuples, integers become floats where a float is declared), then the value rules.

    ``positive`` names fields that must be at least 1 (integers) or greater than 0 (floats);
    ``non_negative`` fields that must be at least 0. For a tuple every entry is checked; None (where
    the annotation allows it) passes. Raises :class:`ConfigError` naming the key, the value and the rule.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    annotations = field_types(type(config))
    for name, f in fields.items():
        value = getattr(config, name)
        coerced = coerce_value(value, annotations.get(name), name, _default(f))
        if coerced is not value:
            object.__setattr__(config, name, coerced)
    for names, low in ((positive, 1), (non_negative, 0)):
        for name in names:
            value = getattr(config, name)
            entries = list(enumerate(value)) if isinstance(value, tuple | list) else [(None, value)]
            for index, entry in entries:
                if entry is None or isinstance(entry, bool) or not isinstance(entry, int | float):
                    continue
                key = name if index is None else f"{name}[{index}]"
                if low == 1 and isinstance(entry, float):
                    if entry <= 0:
                        raise ConfigError(f"{key} must be greater than 0, got {entry!r}")
                elif entry < low:
                    raise ConfigError(f"{key} must be at least {low}, got {entry!r}")


@functools.cache
def field_types(config_class: type) -> dict[str, Any]:
    """The resolved annotation of every field of ``config_class`` (strings under ``from __future__
    import annotations`` included)."""
    return typing.get_type_hints(config_class)


def coerce_value(value: Any, hint: Any, key: str, default: Any = dataclasses.MISSING) -> Any:
    """``value`` as the type ``hint`` declares, or a :class:`ConfigError` saying what ``key`` accepts.

    Understood: int, float, bool, str, ``tuple[X, ...]``, fixed tuples, ``list[X]``, ``Literal[...]``
    and unions with None; other annotations pass the value through unchecked. Integral floats become
    ints, ints become floats, lists become tuples, paths become text; nothing else is converted.
    """
    if hint is None or hint is Any:
        return value
    ok, result = _coerce(value, hint)
    if ok:
        return result
    example = default if default is not dataclasses.MISSING and default is not None else _example(hint)
    shown = f" (e.g. {key}={json.dumps(_jsonable(example))})" if example is not dataclasses.MISSING else ""
    if isinstance(example, str):
        shown = f" (e.g. {key}={example!r})"
    if isinstance(result, str):  # a reason of its own (a wrong length, a non-finite number)
        raise ConfigError(f"{key} must be {result}{shown}, got {_shown(value)}")
    raise ConfigError(f"{key} must be {describe(hint)}{shown}, got {_shown(value)}")


def describe(hint: Any) -> str:
    """What an annotation accepts, in words ("an integer", "a list of 3 integers", "a number or null")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "text"
    if origin in (typing.Union, types.UnionType):
        options = [describe(a) for a in args if a is not type(None)]
        return " or ".join(options) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (tuple, list):
        if origin is list or not args or (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {_plural(args[0]) if args else 'values'}"
        if all(a == args[0] for a in args):
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    return getattr(hint, "__name__", str(hint))


def parse_override(text: str, config_class: type | None = None) -> tuple[str, Any]:
    """Parse a command-line ``key=value``; with ``config_class``, read the value by the field's type.

    The value is read as JSON when it parses, else as text. Knowing the field: a text field takes the
    text as written (``--set likelihood=123``), a list field also takes a comma list or one value
    (``--set hidden_dims=256,128``, ``--set hidden_dims=64``). The result is checked by the config itself.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected KEY=VALUE, got {text!r} (e.g. --set latent_dim=8)")
    value = _json_or_text(raw)
    hint = field_types(config_class).get(key) if config_class is not None and dataclasses.is_dataclass(
        config_class) else None
    if hint is None:
        return key, value
    candidates = _union_args(hint)
    if str in candidates and not isinstance(value, str) and not (value is None and type(None) in candidates):
        return key, raw
    sequence = next((a for a in candidates if typing.get_origin(a) in (tuple, list)), None)
    if sequence is not None and not isinstance(value, list) and value is not None:
        return key, [_json_or_text(part.strip()) for part in raw.split(",")]
    return key, value


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(True, the value as ``hint``) or (False, None or a reason in words)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return (True, None) if type(None) in args else (False, None)
        for arg in args:
            if arg is not type(None):
                ok, result = _coerce(value, arg)
                if ok:
                    return True, result
        return False, None
    if hint is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, None
        if isinstance(value, float):
            value = int(value) if value.is_integer() else None
        if value is None:
            return False, None
        return (True, value) if -2**63 <= value < 2**63 else (False, "an integer that fits in 64 bits")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, None
        return (True, float(value)) if math.isfinite(value) else (False, "a finite number")
    if hint is str:
        if isinstance(value, os.PathLike):
            return True, os.fspath(value)
        return (True, value) if isinstance(value, str) else (False, None)
    if origin is typing.Literal:
        return (True, value) if value in args else (False, None)
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            return False, None
        variadic = origin is list or not args or (len(args) == 2 and args[1] is Ellipsis)
        element_types = [args[0] if args else Any] * len(value) if variadic else list(args)
        if not variadic and len(value) != len(args):
            return False, describe(hint)
        items = []
        for item, element in zip(value, element_types, strict=True):
            ok, result = (True, item) if element is Any else _coerce(item, element)
            if not ok:
                return False, describe(hint)
            items.append(result)
        return True, (tuple(items) if origin is tuple else items)
    if isinstance(hint, type):
        return (True, value) if isinstance(value, hint) else (False, None)
    return True, value  # an annotation this module does not understand: unchecked


def _union_args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _plural(hint: Any) -> str:
    words = {int: "integers", float: "numbers", str: "texts", bool: "true/false values"}
    return words.get(hint, describe(hint) + " values")


def _example(hint: Any) -> Any:
    for arg in _union_args(hint):
        if arg in _EXAMPLES:
            return _EXAMPLES[arg]
        origin, args = typing.get_origin(arg), typing.get_args(arg)
        if origin is typing.Literal:
            return args[0]
        if origin in (tuple, list) and args:
            size = 2 if len(args) == 2 and args[1] is Ellipsis else len(args)
            return [_EXAMPLES.get(args[0], 1)] * size
    return dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _shown(value: Any) -> str:
    """A value as a message shows it: text quoted and marked as text, lists and numbers as written."""
    if isinstance(value, str):
        return f"{value!r} (text)"
    if isinstance(value, tuple):
        value = list(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
