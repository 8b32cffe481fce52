"""The ``Variant`` contract: everything about one kind of autoencoder, in one object.

A plugin registers ``Variant`` instances. A variant owns its config dataclass (round-trips through
``config.json``), builds the ``nn.Module``, computes the loss, creates its optimisers and performs
one training step. Subclassing is reuse: a beta-VAE is a VAE whose loss weighs the KL.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from zoo.config import config_from_dict, config_to_dict, replace_config
from zoo.errors import ConfigError, NonFiniteLossError
from zoo.stepping import step_context

if TYPE_CHECKING:
    from zoo.data import TensorData
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
    :meth:`train_step` (the trainer hook), :meth:`tiny_config` and :meth:`metrics`.

    The capability flags tell the zoo's tools what a model of this variant can answer; a tool skips
    what does not apply and says so (CONTRIBUTING.md, "Capabilities"). The conformance kit checks
    every flag against the model.
    """

    #: Registry name: lower case words joined by '-', e.g. ``"beta-vae"``.
    name: ClassVar[str] = ""
    #: The dataclass holding every architecture and loss setting.
    config_class: ClassVar[type]
    #: One line for ``zoo list``.
    description: ClassVar[str] = ""
    #: The model takes labels ``y`` (``encode(x, y)``, ``decode(z, y)``, ``sample(n, y=...)``) and has
    #: ``num_classes > 0``; training data must be labelled. Only conditional variants get the labels of
    #: labelled data in their training batches (others get ``(x,)``).
    conditional: ClassVar[bool] = False
    #: ``model.sample(n)`` draws from a prior worth judging (sample pictures, sample quality).
    generative: ClassVar[bool] = False
    #: ``encode`` returns a posterior with a density (``kl()``, ``log_prob(z)``) and the model has a prior
    #: density (``prior_log_prob(z)``): the ELBO, the importance-sampled NLL and per-latent KL apply.
    variational: ClassVar[bool] = False
    #: ``model.reconstruction_nll(x, z, y)`` gives -log p(x|z) per example (reconstruction gain, ELBO).
    has_likelihood: ClassVar[bool] = False
    #: The diffusers class whose folders (config.json with this ``_class_name``) this variant reads, with
    #: :meth:`config_from_diffusers`; "" for none. ``zoo.load("local-dir:...")`` and the Hub loader use it.
    diffusers_class_name: ClassVar[str] = ""
    #: Descriptions of the extra numbers :meth:`metrics` returns, by key (for ``zoo eval``, reports, cards). A key
    #: of the zoo's own metrics here re-describes it for this variant (e.g. a KL estimated by Monte Carlo).
    metric_names: ClassVar[dict[str, str]] = {}
    #: The ``train_step`` term that must fall when training on one fixed batch (conformance kit).
    monitored_term: ClassVar[str] = "loss"
    #: ``TrainConfig.compile`` may torch.compile this variant's ``loss`` (zoo.compiling); False keeps it eager.
    compilable: ClassVar[bool] = True

    # -- configs ---------------------------------------------------------------------------
    def default_config(self) -> Any:
        return self.config_class()

    def tiny_config(self) -> Any:
        """A config small enough for a unit test to train in well under a second: ``input_shape``
        (1, 8, 8), ``latent_dim`` 4 and ``hidden_dims`` (32,), for those of these fields the config has."""
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        small = {"input_shape": (1, 8, 8), "latent_dim": 4, "hidden_dims": (32,)}
        return replace_config(self.default_config(), {k: v for k, v in small.items() if k in fields})

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

    def config_from_diffusers(self, data: dict[str, Any], source: str) -> Any:
        """The config of a folder in diffusers' layout (its config.json), for variants that name a
        :attr:`diffusers_class_name`."""
        raise ConfigError(f"variant {self.name!r} does not read diffusers folders")

    # -- the model -------------------------------------------------------------------------
    def build(self, config: Any) -> nn.Module:
        """Return a freshly initialised model for ``config``."""
        raise NotImplementedError(f"variant {self.name!r} must implement build(config)")

    def loss(self, model: nn.Module, batch: Batch, *, step: int | Tensor = 0) -> LossOutput:
        """Return the loss for one batch; ``step`` drives schedules (warm-up, capacity). Under
        ``compile`` the step comes as a 0-d tensor (:mod:`zoo.compiling`): read it through
        :func:`linear_ramp`, or as a tensor, never as a Python number, or the loss recompiles every step."""
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
            out = ctx.compiled(self.loss)(model, batch, step=step)
        ctx.ensure_finite(out, step)
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(out.total)
        ctx.step(optimizer)
        return out.detached()

    # -- evaluation ------------------------------------------------------------------------
    def metrics(self, model: nn.Module, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        """The variant's own numbers on ``data`` (e.g. a VQ model's codebook usage), added to
        ``zoo eval``, reports and model cards; every key needs a description in :attr:`metric_names`.
        Called in eval mode under ``torch.no_grad()``; draw randomness only from a generator seeded with
        ``seed``, so a card's numbers reproduce. Default: none."""
        return {}

    # -- checks ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the class is a usable variant (called when a plugin registers it)."""
        if not NAME_PATTERN.match(self.name or ""):
            raise ConfigError(f"variant name {self.name!r} must be lower-case words joined by '-' (e.g. 'my-vae')")
        if not dataclasses.is_dataclass(getattr(self, "config_class", None)):
            raise ConfigError(f"variant {self.name!r}: config_class must be a dataclass")

    def __repr__(self) -> str:
        return f"<Variant {self.name!r}>"


def linear_ramp(step: int | Tensor, steps: int) -> float | Tensor:
    """``step / steps`` capped at 1: a schedule rising linearly from 0 to 1 over ``steps`` steps (KL warm-up,
    a capacity). A number for an int step (eager training), a 0-d tensor for a tensor step (a compiled loss,
    where the step is a graph input and the schedule costs no recompilation)."""
    if isinstance(step, Tensor):
        return (step / steps).clamp(max=1.0)
    return min(1.0, step / steps)


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
        f"likelihood whose std is too small, or fp16 overflow (use bf16 or fp32)."
    )


def make_adam(params: Any, train_config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the fused kernel where the device supports it (fewer kernel launches per step).

    ``params`` are parameters or parameter groups, as ``torch.optim`` takes them: dicts with ``"params"``
    and per-group settings, e.g. ``[{"params": net.parameters()}, {"params": codebook, "lr": 1e-4}]``.
    Frozen parameters (``requires_grad=False``) are left out, and so is a group left empty by that.
    """
    groups = list(params)
    if not all(isinstance(g, dict) for g in groups):
        if any(isinstance(g, dict) for g in groups):
            raise ConfigError("make_adam takes parameters or parameter groups (dicts with 'params'), not a mix")
        groups = [{"params": groups}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [g for g in groups if g["params"]]
    flat = [p for g in groups for p in g["params"]]
    device = flat[0].device.type if flat else "cpu"
    fused = device in ("cpu", "cuda") and all(p.is_floating_point() for p in flat)
    return torch.optim.Adam(groups or flat, lr=train_config.lr, weight_decay=train_config.weight_decay, fused=fused)



def step_per_objective(objectives: Callable[[], dict[str, Tensor]], routes: Sequence[tuple[str, Sequence[Tensor]]],
                       optimizers: Iterable[torch.optim.Optimizer], step: int) -> dict[str, Tensor]:
    """One training step of a model whose networks each follow their own objective (a GAN's three networks,
    FactorVAE's VAE and critic, PIWAE's encoder and decoder): ``objectives()`` under the run's autocast; every
    routed objective checked finite before any weight changes; each parameter's gradient from the objective
    its route names (:meth:`zoo.stepping.StepContext.backward_per_objective`); every optimiser stepped through
    the step context. ``routes``: ``(term name, parameters)`` pairs. Returns all terms, detached."""
    ctx = step_context()
    with ctx.autocast():
        terms = objectives()
    ctx.ensure_finite(LossOutput(sum(terms[name] for name, _ in routes), dict(terms)), step)
    ctx.backward_per_objective([(terms[name], params) for name, params in routes])
    for optimizer in optimizers:
        ctx.step(optimizer)
    return {name: value.detach() for name, value in terms.items()}
