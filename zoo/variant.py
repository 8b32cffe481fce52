"""The ``Variant`` contract: everything about one kind of autoencoder, in one object.

A plugin registers ``Variant`` instances. A variant owns its config dataclass (round-trips through
``config.json``), builds the ``nn.Module``, computes the loss, creates its optimisers and performs
one training step. Subclassing is reuse: a beta-VAE is a VAE whose loss weighs the KL.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from zoo.config import config_from_dict, config_to_dict, replace_config
from zoo.errors import ConfigError, NonFiniteLossError
from zoo.stepping import step_context

if TYPE_CHECKING:
    from zoo.training import TrainConfig

NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

Batch = Tensor | tuple[Tensor, ...] | list[Tensor]


@dataclass
class LossOutput:
    """A loss: the ``total`` to minimise and its named ``terms`` (each averaged over the batch)."""

    total: Tensor
    terms: dict[str, Tensor]

    def detached(self) -> dict[str, Tensor]:
        """All terms plus ``loss``, detached, still on the device (no host sync)."""
        return {"loss": self.total.detach(), **{k: v.detach() for k, v in self.terms.items()}}


class Variant:
    """Base class of every model variant. Subclasses set the class attributes and implement
    :meth:`build` and :meth:`loss`; they may override :meth:`configure_optimizers` and
    :meth:`train_step` (the trainer hook) and :meth:`tiny_config`.
    """

    #: Registry name: lower case words joined by '-', e.g. ``"beta-vae"``.
    name: ClassVar[str] = ""
    #: The dataclass holding every architecture and loss setting.
    config_class: ClassVar[type]
    #: One line for ``zoo list``.
    description: ClassVar[str] = ""
    #: True when the model needs labels ``y`` (``encode(x, y)``, ``sample(n, y=...)``).
    conditional: ClassVar[bool] = False
    #: True when ``model.sample(n)`` draws from a prior.
    generative: ClassVar[bool] = False
    #: The ``train_step`` term that must fall when training on one fixed batch (conformance kit).
    monitored_term: ClassVar[str] = "loss"

    # -- configs ---------------------------------------------------------------------------
    def default_config(self) -> Any:
        return self.config_class()

    def tiny_config(self) -> Any:
        """A config small enough for a unit test to train in well under a second."""
        return replace_config(self.default_config(), {"input_shape": (1, 8, 8), "latent_dim": 4,
                                                      "hidden_dims": (32,)})

    def make_config(self, config: Any = None, **overrides: Any) -> Any:
        """A validated config: ``config`` (a dataclass or dict) or the default, plus ``overrides``."""
        if config is None:
            config = self.default_config()
        elif isinstance(config, dict):
            config = config_from_dict(self.config_class, config, source=f"{self.name} config")
        elif not isinstance(config, self.config_class):
            raise ConfigError(f"variant {self.name!r} expects a {self.config_class.__name__}, "
                              f"got {type(config).__name__}")
        return replace_config(config, overrides, source=f"{self.name} config") if overrides else config

    def config_from_json(self, data: dict[str, Any], source: str) -> Any:
        return config_from_dict(self.config_class, data, source=source)

    def config_to_json(self, config: Any) -> dict[str, Any]:
        return config_to_dict(config)

    # -- the model -------------------------------------------------------------------------
    def build(self, config: Any) -> nn.Module:
        """Return a freshly initialised model for ``config``."""
        raise NotImplementedError(f"variant {self.name!r} must implement build(config)")

    def loss(self, model: nn.Module, batch: Batch, *, step: int = 0) -> LossOutput:
        """Return the loss for one batch; ``step`` drives schedules (warm-up, capacity)."""
        raise NotImplementedError(f"variant {self.name!r} must implement loss(model, batch)")

    # -- training --------------------------------------------------------------------------
    def configure_optimizers(self, model: nn.Module, train_config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers; the default is one Adam over every parameter."""
        return {"model": make_adam(model.parameters(), train_config)}

    def train_step(self, model: nn.Module, batch: Batch, optimizers: dict[str, torch.optim.Optimizer],
                   *, step: int) -> dict[str, Tensor]:
        """One optimisation step; returns the detached loss terms (no host sync).

        The loss is checked before any weight changes, so a non-finite loss leaves the weights of
        the last good step in place. The forward pass, the backward pass and the step go through
        :func:`zoo.stepping.step_context`, which applies the run's precision (autocast, fp16 scaling)
        and averages gradients across processes; an override must do the same.
        """
        ctx = step_context()
        (optimizer,) = optimizers.values()
        with ctx.autocast():
            out = self.loss(model, batch, step=step)
        ensure_finite(out, step)
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(out.total)
        ctx.step(optimizer)
        return out.detached()

    # -- checks ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the class is a usable variant (called when a plugin registers it)."""
        if not NAME_PATTERN.match(self.name or ""):
            raise ConfigError(f"variant name {self.name!r} must be lower-case words joined by '-' (e.g. 'my-vae')")
        if not dataclasses.is_dataclass(getattr(self, "config_class", None)):
            raise ConfigError(f"variant {self.name!r}: config_class must be a dataclass")

    def __repr__(self) -> str:
        return f"<Variant {self.name!r}>"


def split_batch(batch: Batch) -> tuple[Tensor, Tensor | None]:
    """``x`` or ``(x, y)`` -> ``(x, y or None)``."""
    if isinstance(batch, Tensor):
        return batch, None
    if len(batch) == 1:
        return batch[0], None
    return batch[0], batch[1]


def ensure_finite(out: LossOutput, step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the step, every term and likely causes."""
    if math.isfinite(out.total.item()):  # one host read; torch.isfinite would add a handful of ops per step
        return
    terms = ", ".join(f"{k}={float(v.detach().float().mean()):.4g}" for k, v in out.detached().items())
    raise NonFiniteLossError(
        f"non-finite loss at step {step} ({terms}). The model keeps the weights of the last good step. "
        f"Likely causes: a learning rate too high (try --lr 1e-4), inputs with NaN/inf, a Gaussian "
        f"decoder_std too small, or fp16 overflow (use bf16 or fp32)."
    )


def make_adam(params: Any, train_config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the fused kernel where the device supports it (fewer kernel launches per step)."""
    params = [p for p in params if p.requires_grad]
    device = params[0].device.type if params else "cpu"
    fused = device in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=train_config.lr, weight_decay=train_config.weight_decay, fused=fused)
