"""Ex-post samplers: a density fitted, after training, to the codes a model gives its training data.

A deterministic or weakly regularised autoencoder has no prior worth sampling: its codes do not fill
N(0, I) (the "holes" of the lecture). Ghosh et al. (2020) and Dai & Wipf (2019) give it one afterwards:
encode the training data, fit a density to the codes (a Gaussian, a Gaussian mixture, a flow, a second
VAE), draw codes from it and decode them.

- A plugin registers a :class:`Sampler` (``zoo_register_samplers``): its settings (``config_class``), how
  to :meth:`~Sampler.build` an unfitted :class:`FittedSampler` for codes of a given size, and how to
  :meth:`~Sampler.fit` it.
- ``model.fit_sampler("gmm", data)`` encodes ``data`` (posterior means), fits, freezes the result and keeps
  it in ``model.samplers["gmm"]``; ``model.sample(n, sampler="gmm")`` decodes its draws.
- A fitted sampler is part of the model: its tensors are in ``model.safetensors`` (``samplers.gmm.*``), its
  settings and how it was fitted in config.json's ``_zoo.samplers``, so it saves, loads (strictly), moves
  between devices and goes to the Hub with the model, in the one folder layout. Training a model again
  drops its samplers (its codes move; fit them again).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zoo.config import config_from_dict, config_to_dict, replace_config
from zoo.errors import ConfigError, UnknownNameError

logger = logging.getLogger(__name__)

#: Examples encoded per forward pass when collecting codes.
ENCODE_BATCH = 1000


class FittedSampler(nn.Module):
    """A density over flat codes (N, D) that draws new ones. ``record`` says how it was fitted."""

    def __init__(self) -> None:
        super().__init__()
        self.record: dict[str, Any] = {}

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` codes (n, D), drawn with ``generator`` only (so a seed reproduces them)."""
        raise NotImplementedError

    def log_prob(self, codes: Tensor) -> Tensor | None:
        """log density of each code (N,) in nats, or None where the density has no closed form."""
        return None


class Sampler:
    """What a plugin registers: one kind of ex-post sampler."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The dataclass of the sampler's settings (components, layers, epochs...).
    config_class: ClassVar[type] = type(None)

    def build(self, config: Any, latent_shape: tuple[int, ...]) -> FittedSampler:
        """An unfitted sampler for one example's codes of ``latent_shape`` (handed over flattened to D numbers),
        with the tensors (shapes) a fitted one has, from ``config`` and ``latent_shape`` alone."""
        raise NotImplementedError(f"sampler {self.name!r} must implement build(config, latent_shape)")

    def fit(self, sampler: FittedSampler, codes: Tensor, config: Any, generator: torch.Generator) -> None:
        """Fit ``sampler`` in place to ``codes`` (N, D), drawing randomness from ``generator`` (and the global
        generator, which :func:`fit_sampler` seeds and restores)."""
        raise NotImplementedError(f"sampler {self.name!r} must implement fit(sampler, codes, config, generator)")

    def make_config(self, settings: dict[str, Any] | None = None) -> Any:
        """The validated settings: the defaults with ``settings`` set (unknown keys are a ConfigError)."""
        return replace_config(self.config_class(), settings or {}, source=f"sampler {self.name!r} settings")

    def validate(self) -> None:
        """Check the object is a usable sampler (called when a plugin registers it)."""
        from zoo.variant import NAME_PATTERN

        if not NAME_PATTERN.match(self.name or ""):
            raise ConfigError(f"sampler name {self.name!r} must be lower-case words joined by '-' (e.g. 'my-flow')")
        if not dataclasses.is_dataclass(self.config_class):
            raise ConfigError(f"sampler {self.name!r}: config_class must be a dataclass")

    def __repr__(self) -> str:
        return f"<Sampler {self.name!r}>"


def list_samplers() -> list[str]:
    """Sorted names of the installed ex-post samplers."""
    from zoo.plugins import get_registry

    return list(get_registry().samplers)


def get_sampler(name: str) -> Sampler:
    """The registered :class:`Sampler` called ``name`` (close matches suggested when unknown)."""
    from zoo.plugins import get_registry

    samplers = get_registry().samplers
    if name not in samplers:
        raise UnknownNameError("sampler", name, samplers,
                               "`zoo list` shows the installed samplers; install the plugin that provides it.")
    return samplers[name]


@torch.no_grad()
def encode_codes(model: nn.Module, x: Tensor) -> Tensor:
    """The codes (posterior means, eval mode) of images ``x``, flattened to (N, D) float32 on the model's device."""
    from zoo.contract import posterior_of

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        codes = [posterior_of(model, x[i:i + ENCODE_BATCH].to(device)).mode().float().flatten(1)
                 for i in range(0, len(x), ENCODE_BATCH)]
    finally:
        model.train(was_training)
    return torch.cat(codes)


def fit_sampler(model: nn.Module, name: str, data: Any, *, seed: int = 0, data_label: str | None = None,
                **settings: Any) -> FittedSampler:
    """Fit the sampler ``name`` to the codes ``model`` gives ``data`` (a dataset name's ``train`` split,
    a :class:`~zoo.data.TensorData`, images, or what :func:`zoo.data.as_data` takes) and keep it in
    ``model.samplers[name]`` (replacing an earlier fit). ``settings`` set the sampler's config fields;
    ``data_label`` says on the card what the data were (default: the dataset name, or "given data")."""
    from zoo.data import DATASETS, as_data, load_dataset

    if getattr(model, "num_classes", 0):
        raise ConfigError(f"ex-post samplers fit p(z) without labels; this {model.variant_name!r} model is "
                          f"conditional (num_classes={model.num_classes}): sample it with labels instead")
    sampler = get_sampler(name)
    config = sampler.make_config(settings)
    if isinstance(data, str) and data in DATASETS:
        described, data = f"{data} `train` split", load_dataset(data, "train")
    else:
        described = f"images under {data}" if isinstance(data, (str, Path)) else "given data"
        data = as_data(data, tuple(model.config.input_shape), split="train")
    described = data_label or described
    codes = encode_codes(model, data.x)
    with torch.random.fork_rng(devices=[codes.device] if codes.device.type == "cuda" else []):
        torch.manual_seed(seed)  # initial weights, random orders and draws inside fit(): reproducible, and the
        fitted = sampler.build(config, tuple(model.latent_shape)).to(codes.device)  # caller's random state kept
        fitted.train()
        sampler.fit(fitted, codes, config, torch.Generator(device=codes.device).manual_seed(seed))
    fitted.eval().requires_grad_(False)
    fitted.record = {"sampler": name, "config": config_to_dict(config), "codes": len(codes),
                     "data": described, "seed": seed}
    model.samplers[name] = fitted
    return fitted


def sample_codes(model: nn.Module, name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` codes (n, *latent_shape) from the model's fitted sampler ``name``, in the model's dtype."""
    fitted = model.samplers
    if name not in fitted:
        have = ", ".join(fitted) or "none"
        raise UnknownNameError(f"fitted sampler (this model has: {have})", name, list(fitted),
                               f"Fit it first: model.fit_sampler({name!r}, data) or `zoo fit-sampler`.")
    ref = next(model.parameters())
    with torch.no_grad():
        codes = fitted[name].sample(n, generator)
    return codes.reshape(n, *model.latent_shape).to(ref.dtype)


def network_parameters(model: nn.Module) -> int:
    """The number of the model's own parameters, without those of its fitted samplers."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("samplers."))


def sampler_records(model: nn.Module) -> dict[str, dict[str, Any]]:
    """What config.json keeps of each fitted sampler: its kind, settings and how it was fitted."""
    return {name: dict(fitted.record) for name, fitted in getattr(model, "samplers", {}).items()}


def attach_samplers(model: nn.Module, records: Any, source: str) -> None:
    """Rebuild (unfitted) the samplers config.json's ``_zoo.samplers`` lists, so the weights load strictly."""
    if not records:
        return
    if not isinstance(records, dict):
        raise ConfigError(f"{source}: _zoo.samplers must map names to sampler records, got {type(records).__name__}")
    for name, record in records.items():
        if not isinstance(record, dict):
            raise ConfigError(f"{source}: _zoo.samplers.{name} must be a sampler record (an object with 'sampler' "
                              f"and 'config'), got {json.dumps(record)}; save the model again")
        sampler = get_sampler(record.get("sampler", name))
        config = config_from_dict(sampler.config_class, dict(record.get("config", {})),
                                  source=f"{source} _zoo.samplers.{name}")
        fitted = sampler.build(config, tuple(model.latent_shape))
        fitted.eval().requires_grad_(False)
        fitted.record = dict(record)
        model.samplers[name] = fitted


def drop_samplers(model: nn.Module) -> None:
    """Forget a model's fitted samplers (before it trains again: its codes will move)."""
    fitted = getattr(model, "samplers", None)
    if fitted:
        logger.warning("dropping the fitted sampler(s) %s: training moves the codes they were fitted to; fit them "
                       "again afterwards (model.fit_sampler)", ", ".join(fitted))
        fitted.clear()


def describe(record: dict[str, Any]) -> str:
    """One line for a card: which sampler, with which settings, fitted to what."""
    settings = ", ".join(f"{k}={v}" for k, v in record.get("config", {}).items())
    return (f"`{record.get('sampler')}` ({settings}) fitted to the codes (posterior means) of "
            f"{record.get('codes', '?'):,} examples ({record.get('data', 'given data')}), seed {record.get('seed', 0)}")
