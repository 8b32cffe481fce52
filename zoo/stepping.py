"""What a variant's ``train_step`` calls so that one step works in every setup the Trainer runs.

The Trainer makes a :class:`StepContext` active around its training loop and :func:`step_context`
returns it; outside a Trainer it returns a plain one (float32, one process), so ``train_step`` can
still be called directly, as the conformance kit does. One ``train_step`` then serves fp32, bf16,
fp16 and several processes alike::

    ctx = step_context()
    with ctx.autocast():                  # bf16/fp16 autocast; nothing in fp32
        out = ctx.compiled(self.loss)(model, batch, step=step)   # torch.compile'd under `compile`
    ctx.ensure_finite(out, step)          # before any weight changes (or, deferred, skipped on the device)
    optimizer.zero_grad(set_to_none=True)
    ctx.backward(out.total)               # the loss times the fp16 scale
    ctx.step(optimizer)                   # gradients averaged across processes, unscaled, stepped

A variant that gives each network its own gradient (VAE-GAN) takes ``ctx.grad(loss, params, ...)``
(``torch.autograd.grad`` of the scaled loss) and calls ``ctx.step`` once per optimiser. The Trainer
calls :meth:`StepContext.end_step` once after every ``train_step``: the scaler's ``update()``, once
per iteration whatever the number of optimisers, as PyTorch's AMP recipe for several losses and
optimisers prescribes (one scaler; ``scale`` every loss, ``step`` every optimiser, ``update`` once).

With fp16 or several processes, an optimiser stepped without :meth:`StepContext.step` would train on
scaled or unsynchronised gradients: the Trainer turns that into an error at the first such step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from zoo.distributed import World
from zoo.errors import ConfigError

logger = logging.getLogger(__name__)


class StepContext:
    """Autocast, the fp16 gradient scaler and cross-process gradient averaging for one run."""

    def __init__(self, *, precision: str = "fp32",
                 autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
                 scaler: torch.amp.GradScaler | None = None, world: World | None = None,
                 compile_mode: str | None = None, deferred_finite_check: bool = False) -> None:
        self.precision = precision
        self.scaler = scaler
        self.world = world or World()
        #: Check the loss on the device (see :meth:`ensure_finite`); the Trainer sets it where it applies.
        self.deferred_finite_check = deferred_finite_check
        self._skip: Tensor | None = None  # this step's "loss not finite" flag (1.0 / 0.0) for the optimisers
        self._first_bad: Tensor | None = None  # the first step whose loss was not finite (-1: none yet)
        #: torch.compile's mode for :meth:`compiled` (None: eager; zoo.compiling).
        self.compile_mode = compile_mode
        self._compiled: dict[Any, Callable[..., Any]] = {}
        self._autocast = autocast
        self._autocast_used = False
        self._stepping = False
        self._checked = False
        self._variant = ""

    @property
    def autocast_used(self) -> bool:
        """Whether a ``train_step`` has entered :meth:`autocast` under this context."""
        return self._autocast_used

    def autocast(self) -> AbstractContextManager[object]:
        """The context to compute the forward pass and the loss in (autocast; a null context in fp32)."""
        self._autocast_used = True
        return self._autocast()

    def compiled(self, loss: Callable[..., Any]) -> Callable[..., Any]:
        """``loss`` as this run computes it: itself, or under ``compile`` its torch.compile'd form (compiled
        once per loss function and kept for the run; :mod:`zoo.compiling`)."""
        if self.compile_mode is None:
            return loss
        key = (getattr(loss, "__func__", loss), id(getattr(loss, "__self__", None)))
        if key not in self._compiled:
            from zoo.compiling import compile_loss

            self._compiled[key] = compile_loss(loss, self.compile_mode)
        return self._compiled[key]

    def ensure_finite(self, out: Any, step: int) -> None:
        """Stop at a non-finite loss with the weights of the last good step.

        By default :func:`zoo.variant.ensure_finite`: one host read of the loss per step, the error at this
        step. With ``deferred_finite_check`` (the Trainer's ``finite_check``) the check stays on the device,
        with no host read: :meth:`step` hands the flag to the optimiser kernel as ``found_inf``, as a
        gradient scaler does, so a non-finite step changes no weight and no optimiser state, and
        :meth:`raise_if_non_finite`, called wherever the Trainer reads the loss terms anyway, stops the run
        naming the first such step.
        """
        if not self.deferred_finite_check:
            from zoo.variant import ensure_finite

            ensure_finite(out, step)
            return
        bad = ~torch.isfinite(out.total.detach())
        self._skip = bad.to(torch.float32)
        first = self._first_bad if self._first_bad is not None else torch.full((), -1, device=bad.device)
        self._first_bad = torch.where(bad & (first < 0), step, first)

    def start_run(self, *, deferred_finite_check: bool) -> None:
        """A new run (``Trainer.fit``) on this context: how its losses are checked, and nothing found yet."""
        self.deferred_finite_check = deferred_finite_check
        self._skip = self._first_bad = None

    def raise_if_non_finite(self) -> None:
        """With ``deferred_finite_check``: the error of the first step whose loss was not finite, if any (one
        host read)."""
        step = -1 if self._first_bad is None else int(self._first_bad)
        if step < 0:
            return
        from zoo.errors import NonFiniteLossError

        raise NonFiniteLossError(
            f"non-finite loss at step {step} (found on the device, read at a later report). The optimiser "
            f"skipped that step and any later non-finite one, so the model keeps the weights of the last good "
            f"step. Likely causes: a learning rate too high (try --lr 1e-4), inputs with NaN/inf, a Gaussian "
            f"likelihood whose std is too small, or fp16 overflow (use bf16 or fp32).")

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, with the loss multiplied by the fp16 scale when there is one."""
        self._scaled(loss).backward()

    def grad(self, loss: Tensor, params: Sequence[Tensor], **kwargs: Any) -> tuple[Tensor | None, ...]:
        """``torch.autograd.grad(loss, params, **kwargs)`` of the scaled loss (store them in ``p.grad``
        and call :meth:`step`, which unscales them)."""
        return torch.autograd.grad(self._scaled(loss), params, **kwargs)

    def backward_per_objective(self, objectives: Sequence[tuple[Tensor, Sequence[Tensor]]]) -> None:
        """Set each parameter's gradient from its own objective: ``p.grad = d objective / d p`` for every
        ``(objective, parameters)`` pair, through one graph kept until the last pair (a GAN's networks, an
        IWAE whose encoder and decoder follow different bounds). Frozen parameters are left out; a parameter
        an objective does not reach gets no gradient; a pair whose parameters are all frozen is skipped. Call
        :meth:`step` on the optimisers afterwards."""
        trainable = [(objective, [p for p in params if p.requires_grad]) for objective, params in objectives]
        trainable = [(objective, params) for objective, params in trainable if params]  # a network frozen whole
        for i, (objective, params) in enumerate(trainable):
            grads = self.grad(objective, params, retain_graph=i + 1 < len(trainable), allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Average the optimiser's gradients across processes, then step it (through the scaler,
        which unscales the gradients and skips the step if they overflowed)."""
        self.world.average_gradients(p for group in optimizer.param_groups for p in group["params"])
        self._stepping = True
        if self._skip is not None:
            optimizer.found_inf = self._skip  # read by torch's fused optimisers: a flagged step changes nothing
        try:
            if self.scaler is None:
                optimizer.step()
            else:
                self.scaler.step(optimizer)
        finally:
            self._stepping = False
            if self._skip is not None:
                del optimizer.found_inf

    def end_step(self) -> Tensor | None:
        """After every ``train_step``: update the fp16 scale; after the first, warn when a reduced
        precision was asked for but the variant's ``train_step`` never entered :meth:`autocast`.

        With a gradient scaler, returns 1.0 (a tensor on the device, no host sync) when the scaler skipped
        this step because its gradients overflowed, else 0.0; None without a scaler. The scaler backs
        its scale off exactly on such a step (``backoff_factor`` < 1), so a smaller scale after
        ``update()`` means a skipped step.
        """
        skipped = None
        if self.scaler is not None:
            scale = getattr(self.scaler, "_scale", None)  # the scale tensor; None before any loss was scaled
            before = scale.clone() if isinstance(scale, Tensor) else None
            self.scaler.update()
            if before is not None:
                skipped = (self.scaler._scale < before).to(torch.float32).reshape(())
        if not self._checked:
            self._checked = True
            if self.precision != "fp32" and not self._autocast_used:
                logger.warning("variant %r computes its loss outside step_context().autocast(), so precision=%r "
                               "has no effect: it trains in float32", self._variant, self.precision)
        return skipped

    @contextmanager
    def active(self, optimizers: dict[str, torch.optim.Optimizer], variant: str, *,
               guard: bool | None = None) -> Iterator[StepContext]:
        """Make this the context :func:`step_context` returns. With ``guard`` (default: with a scaler or
        several processes, where it matters), an optimiser stepped other than through :meth:`step` raises a
        ConfigError before it changes a weight; the conformance kit guards always."""
        self._variant = variant
        token = _ACTIVE.set(self)
        guarded = self.scaler is not None or self.world.size > 1 if guard is None else guard
        hooks = [opt.register_step_pre_hook(self._guard(name)) for name, opt in optimizers.items()] if guarded else []
        try:
            yield self
        finally:
            for hook in hooks:
                hook.remove()
            _ACTIVE.reset(token)

    def _scaled(self, loss: Tensor) -> Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def _guard(self, name: str) -> Callable[..., None]:
        def check(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if not self._stepping:
                why = ("fp16 needs its gradients unscaled" if self.scaler is not None else
                       f"{self.world.size} processes need their gradients averaged" if self.world.size > 1 else
                       "fp16 and several processes need it")
                raise ConfigError(
                    f"variant {self._variant!r} stepped its optimiser {name!r} itself, but {why}: its train_step "
                    f"must use zoo.stepping.step_context(): ctx.backward(loss) or ctx.grad(...), then "
                    f"ctx.step(optimizer) (see CONTRIBUTING.md, 'train_step')")
        return check


_PLAIN = StepContext()
_ACTIVE: ContextVar[StepContext | None] = ContextVar("zoo_step_context", default=None)


def step_context() -> StepContext:
    """The active :class:`StepContext` (the Trainer's), or a plain float32 single-process one."""
    return _ACTIVE.get() or _PLAIN
