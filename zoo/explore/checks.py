"""What the page's requests must hold, checked before a model sees them.

A request can come from the page or from anyone who posts to the server's API, so nothing in it is
trusted: a value that is not a finite number, a label or seed out of range, or a point off a picture
is a :class:`RequestError`, whose message the page shows (the server stays up and answers the next
request).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from zoo.errors import ZooError


class RequestError(ZooError, ValueError):
    """A request the page cannot answer as sent; the message says what was wrong and what to send."""


def finite(value: Any, what: str) -> float:
    """``value`` as a float, or a RequestError if it is not a finite number (NaN, infinity, text, None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RequestError(f"{what} must be a finite number, got {number}")
    return number


def finite_values(values: Sequence[Any], count: int, what: str) -> list[float]:
    """``count`` finite numbers, one per slider; the first bad one is named."""
    if len(values) != count:
        raise RequestError(f"expected {count} {what} values, got {len(values)}")
    return [finite(v, f"{what} {i + 1}") for i, v in enumerate(values)]


def fraction(value: Any, what: str) -> float:
    """A finite number in [0, 1]."""
    number = finite(value, what)
    if not 0.0 <= number <= 1.0:
        raise RequestError(f"{what} must lie in [0, 1], got {number}")
    return number


def whole(value: Any, what: str, low: int, high: int) -> int:
    """A whole number in [low, high] (a float such as 7.0 counts, 7.5 does not)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value  # exact: a float holds whole numbers only up to 2**53
    else:
        real = finite(value, what)
        number = int(real) if real.is_integer() else None
    if number is None or not low <= number <= high:
        raise RequestError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return number


def label(value: Any, num_classes: int) -> int | None:
    """The class a conditional model is asked for (None for an unconditional model, whatever was sent)."""
    if num_classes <= 0:
        return None
    if value is None or value == "":
        raise RequestError(f"this model is conditional: pick a class from 0 to {num_classes - 1}")
    return whole(value, "the class", 0, num_classes - 1)


def seed(value: Any) -> int:
    """A seed for torch.Generator.manual_seed: a whole number from 0 to 2**63 - 1."""
    return whole(value, "the seed", 0, 2**63 - 1)


def point(index: Any, width: int, height: int) -> tuple[int, int]:
    """A clicked pixel (x, y) of a width x height picture, as Gradio's select event reports it."""
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise RequestError(f"a click must name one pixel (x, y) of the picture, got {index!r}")
    x = whole(index[0], "the clicked x", 0, width - 1)
    y = whole(index[1], "the clicked y", 0, height - 1)
    return x, y
