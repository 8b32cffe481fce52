"""``TrainConfig.compile``: the training step's loss through ``torch.compile``.

What is compiled is the variant's ``loss`` (the forward pass and, through AOTAutograd, its backward),
called from the default ``train_step`` via :meth:`zoo.stepping.StepContext.compiled`. The optimiser step
stays eager: ``make_adam`` already takes Adam's fused kernel, one call for all parameters. (Checked with torch
2.14: torch.compile does not trace into that kernel, ``_fused_adam`` being wrapped in ``torch.compiler.disable``,
so compiling ``optimizer.step`` captures nothing of it; the foreach Adam does compile, but takes no
``found_inf`` flag, which the deferred finite check hands the fused one. Capturing the optimiser
too would mean trading one for the other.) The finite-loss
check and the term bookkeeping stay outside the graph, so a compiled run keeps every guarantee of an
eager one. ``mode`` is torch.compile's: ``"reduce-overhead"`` adds CUDA graphs on a GPU.

A variant opts out with ``compilable = False`` (its loss then runs eagerly, and the run says so); one that
overrides ``train_step`` decides for itself by calling ``step_context().compiled(self.loss)`` or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from zoo.errors import ConfigError

#: torch.compile's modes (``torch._inductor.list_mode_options``), the values ``compile`` takes besides None.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: str | None) -> str | None:
    """``mode`` if it is None or one of torch.compile's modes; otherwise a ConfigError naming them."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(f"compile must be one of {', '.join(map(repr, COMPILE_MODES))} (torch.compile's "
                          f"modes) or None for eager, not {mode!r}")
    return mode


def compile_loss(loss: Callable[..., Any], mode: str) -> Callable[..., Any]:
    """``loss`` (returning a :class:`~zoo.variant.LossOutput`) compiled with ``torch.compile(mode=mode)``.

    The compiled function returns the total and the terms as a tuple (plain outputs for the graph); the
    wrapper hands the caller the same ``LossOutput`` an eager call would. Shapes are static
    (``dynamic=False``): an epoch's smaller last batch gets a graph of its own, compiled once, because the
    dynamic-shape graph torch.compile would otherwise switch to ran a small VAE's step at about 2.6x the
    time of the static one on the CPU (benchmarks/bench_overhead.py).

    The ``step`` goes in as a 0-d float tensor: a Python int would be a constant of the graph, and a loss
    whose schedule reads it (a KL warm-up) would be recompiled at every step until torch.compile's
    recompile limit, then run eagerly. Losses read it through :func:`zoo.variant.linear_ramp`. The tensor is
    made on the batch's device (:func:`step_device`; a fill, no host-to-device copy): a CPU input would keep
    inductor from capturing the graph with CUDA graphs under ``"reduce-overhead"`` (it skips, or partitions, a
    graph that reads a CPU tensor).
    """
    from zoo.variant import LossOutput

    def parts(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = loss(*args, **kwargs)
        return out.total, out.terms

    compiled = torch.compile(parts, mode=mode, dynamic=False)

    def call(*args: Any, **kwargs: Any) -> LossOutput:
        if isinstance(kwargs.get("step"), int):  # a graph input, not a constant the graph is specialised on
            kwargs["step"] = torch.full((), float(kwargs["step"]), device=step_device(args))
        return LossOutput(*compiled(*args, **kwargs))

    return call


def step_device(args: tuple[Any, ...]) -> torch.device:
    """The device of a loss call's batch (its first tensor after the model), else of the model's parameters, else
    the CPU: where the compiled loss's step tensor is made."""
    for arg in args[1:]:
        first = arg[0] if isinstance(arg, (tuple, list)) and arg else arg
        if isinstance(first, torch.Tensor):
            return first.device
    if args and isinstance(args[0], torch.nn.Module):
        parameter = next(args[0].parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")
