"""Exceptions of the zoo, each with a message that says what was wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """Base class of every error the zoo raises on purpose."""


class UnknownNameError(ZooError, LookupError):
    """A variant, checkpoint or option name that nothing registered.

    A ``LookupError`` rather than a ``KeyError``: ``KeyError`` quotes its message, which turns a
    helpful multi-line hint into one unreadable repr.
    """

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "", *, plural: str = "") -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        lines = [f"unknown {kind} {name!r}."]
        if close:
            lines.append(f"Did you mean: {', '.join(close)}?")
        lines.append(f"Known {plural or kind + 's'}: {', '.join(known) if known else '(none)'}.")
        if hint:
            lines.append(hint)
        super().__init__(" ".join(lines))
        self.name = name
        self.close_matches = close


class DuplicateNameError(ZooError):
    """Two plugins registered the same name; both are named so the user knows what to uninstall."""


class PluginLoadError(ZooError):
    """A plugin failed to load while strict plugin loading was on."""


class ConfigError(ZooError, ValueError):
    """A config (or config.json) that does not fit the variant it is meant for."""


class DataError(ZooError, ValueError):
    """Training or evaluation data that cannot be used as given (range, shape, type)."""


class NonFiniteLossError(ZooError, FloatingPointError):
    """A loss became NaN or infinite; the model keeps the weights of the last good step."""


class CheckpointError(ZooError, OSError):
    """A checkpoint folder or weights file that cannot be loaded as asked."""


class UsageError(ZooError):
    """A command line that does not parse (an unknown option, a word where a number belongs)."""


class FolderLockedError(ZooError):
    """An output folder that another run holds (its lock names the holder's pid)."""


class CollectiveTimeoutError(ZooError):
    """A training process waited longer than the collective timeout for the others (one stopped answering)."""


class OutOfMemoryError(ZooError, MemoryError):
    """Training needed more memory than the device has; the message says which sizes to reduce."""


class MissingDependencyError(ZooError, ImportError):
    """A feature needs an optional package that is not installed; the message says what to install."""
