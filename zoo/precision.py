"""Mixed precision for training: ``TrainConfig.precision`` is ``"fp32"``, ``"bf16"`` or ``"fp16"``.

Reduced precision is ``torch.autocast``, never ``model.half()``: weights, gradients and optimiser
states stay float32, and only the ops autocast lists (matrix products, convolutions) run in 16 bits.
Loss terms come out float32 because :mod:`zoo.losses` and :mod:`zoo.distributions` upcast before they
reduce (the KL, the likelihoods). fp16 also needs a :class:`torch.amp.GradScaler`: its range is too
narrow for small gradients, so every loss is multiplied by a scale before its backward pass, the
gradients are divided by it before the optimiser steps, and a step whose gradients overflowed is
skipped while the scale backs off. bf16 has float32's range and needs no scaler.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from zoo.errors import ConfigError

#: Precision name -> the autocast dtype (None: plain float32, no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str) -> str:
    """Return ``name`` if it is a precision the trainer knows; otherwise a ConfigError naming them."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, not {name!r}")
    return name


def autocast_factory(name: str, device: torch.device) -> Callable[[], AbstractContextManager[object]]:
    """A function returning a fresh autocast context for ``name`` on ``device`` (a null context for fp32).

    Fails before training when the device cannot autocast to that dtype, saying what to use instead:
    torch disables an unsupported autocast with a warning, which would silently train in float32.
    """
    dtype = PRECISIONS[check_precision(name)]
    if dtype is None:
        return contextlib.nullcontext
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{device} does not support bf16: use --precision fp16 (with its gradient scaler) or fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.autocast(device.type, dtype=dtype)
    if any("autocast" in str(w.message).lower() for w in caught):
        hint = "use --precision bf16 on the CPU" if device.type == "cpu" else "use bf16 or fp32"
        raise ConfigError(f"torch {torch.__version__} cannot autocast to {name} on {device.type}: {hint}")
    return lambda: torch.autocast(device.type, dtype=dtype)


def make_scaler(name: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The gradient scaler fp16 needs (None for fp32 and bf16)."""
    return torch.amp.GradScaler(device.type) if check_precision(name) == "fp16" else None
