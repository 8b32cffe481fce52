"""What the zoo's tools ask of a model, in one place: its variant's capabilities, its labels, its
posterior, images in the zoo's range, and how a latent of any shape is summarised unit by unit.

A tool (evaluation, pictures, reports, experiments, fine-tuning) never reads a variant's config keys
or calls undocumented methods: it asks these functions and the documented :class:`~zoo.model.ZooModel`
methods. The zoo's data are images in [0, 1]; a model that works on another range (``image_range``,
e.g. (-1, 1) for latent-diffusion autoencoders) is handed and read through :func:`model_input` and
:func:`unit_images`, which the helpers here (:func:`posterior_of`, :func:`decode_images`,
:func:`reconstruct`, :func:`sample_images`, :func:`likelihood_nll`) apply.

A **latent unit** is one index along the first latent dimension: a latent of a flat latent ``(D,)``, a
channel of a spatial latent ``(C, h, w)``; per-unit numbers of a spatial latent are summed (KL, nats)
or averaged (variances) over the positions, and tools say so.

A **latent group** is a named run of units (:class:`LatentGroup`): one stochastic layer of a hierarchical model
(``ladder-vae``'s z1 and z2). A model declares its groups (``latent_groups``) and, where its KL splits by layer,
their KL per example (``group_kl``); every other model is one group ``z``. Tools report KL and active units per
group and draw traversals per group (:func:`latent_groups`, :func:`group_kl`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from zoo.distributions import Posterior, as_posterior
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.variant import Variant


def variant_of(model: nn.Module) -> Variant:
    """The registered variant a model was made by (``model.variant_name``): its capabilities and metrics."""
    from zoo.registry import get_variant

    name = getattr(model, "variant_name", "")
    if not name:
        raise ConfigError(f"this {type(model).__name__} has no variant_name: create it with zoo.create() or zoo.load()")
    return get_variant(name)


#: The capability flags a variant declares (class attributes of zoo.Variant), and what each means.
CAPABILITIES = {
    "conditional": "takes labels y",
    "generative": "samples from a prior",
    "variational": "has a posterior density and a prior density",
    "has_likelihood": "defines the likelihood p(x|z)",
}


def has(model: nn.Module, capability: str) -> bool:
    """Whether ``model``'s variant declares ``capability`` (a key of :data:`CAPABILITIES`)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; the zoo knows {', '.join(CAPABILITIES)}")
    return bool(getattr(variant_of(model), capability))


def require(model: nn.Module, capability: str, what: str) -> None:
    """Raise a ConfigError, naming ``what`` needed it, unless ``model``'s variant declares ``capability``."""
    if not has(model, capability):
        raise ConfigError(f"{what} needs a model that {CAPABILITIES[capability]} ({capability} = True); "
                          f"variant {model.variant_name!r} does not declare it")


def skip_note(model: nn.Module, capability: str, what: str) -> str:
    """The one line a report prints for a tool it skipped: what, and which capability the variant lacks."""
    return f"{what}: skipped, variant `{model.variant_name}` does not declare `{capability}` " \
           f"({CAPABILITIES[capability]})."


def labels_for(model: nn.Module, y: Tensor | int | None) -> Tensor | int | None:
    """``y`` for a conditional model, None for any other (data labels are not a condition to them)."""
    return y if has(model, "conditional") else None


def image_range(model: nn.Module) -> tuple[float, float]:
    """The (low, high) range of the images ``model`` takes and returns ((0, 1) unless it declares another)."""
    low, high = getattr(model, "image_range", (0.0, 1.0))
    return float(low), float(high)


def model_input(model: nn.Module, x: Tensor) -> Tensor:
    """Images in [0, 1] mapped linearly into the model's ``image_range`` (unchanged for (0, 1))."""
    low, high = image_range(model)
    return x if (low, high) == (0.0, 1.0) else x * (high - low) + low


def unit_images(model: nn.Module, images: Tensor) -> Tensor:
    """The model's images mapped from its ``image_range`` back to [0, 1] (not clamped)."""
    low, high = image_range(model)
    return images if (low, high) == (0.0, 1.0) else (images - low) / (high - low)


def posterior_of(model: nn.Module, x: Tensor, y: Tensor | int | None = None) -> Posterior:
    """``model.encode(x, y)`` of images ``x`` in [0, 1] as a :class:`Posterior` (labels passed to
    conditional models only)."""
    y = labels_for(model, y)
    x = model_input(model, x)
    return as_posterior(model.encode(x) if y is None else model.encode(x, y))


def decode_images(model: nn.Module, z: Tensor, y: Tensor | int | None = None) -> Tensor:
    """``model.decode(z, y)`` as images in [0, 1] (labels for conditional models only; not clamped)."""
    y = labels_for(model, y)
    return unit_images(model, model.decode(z) if y is None else model.decode(z, y))


def reconstruct(model: nn.Module, x: Tensor, y: Tensor | int | None = None) -> Tensor:
    """``model(x, y)`` for images in [0, 1], as images in [0, 1] (not clamped)."""
    y = labels_for(model, y)
    x = model_input(model, x)
    return unit_images(model, model(x) if y is None else model(x, y))


def sample_images(model: nn.Module, n: int, y: Tensor | int | None = None,
                  generator: torch.Generator | None = None, sampler: str | None = None) -> Tensor:
    """``model.sample(n, y, generator)`` as images in [0, 1] (not clamped); with ``sampler``, decoded draws of
    that fitted ex-post sampler (:mod:`zoo.samplers`) instead of the model's prior."""
    if sampler is not None:
        return unit_images(model, model.sample(n, generator=generator, sampler=sampler))
    return unit_images(model, model.sample(n, y=labels_for(model, y), generator=generator))


def likelihood_nll(model: nn.Module, x: Tensor, z: Tensor, y: Tensor | int | None = None) -> Tensor:
    """``model.reconstruction_nll`` of images ``x`` in [0, 1] (handed over in the model's range) given codes ``z``."""
    y = labels_for(model, y)
    return model.reconstruction_nll(model_input(model, x), z, y)


def latent_kl(model: nn.Module, posterior: Posterior) -> Tensor | None:
    """KL(q(z|x) || p(z)) per latent element in closed form (:meth:`zoo.ZooModel.latent_kl`), or None where the
    model's prior and posterior have none (a mixture prior, a flow posterior): per-unit KL is then left out."""
    own = getattr(model, "latent_kl", None)
    if own is not None:
        return own(posterior)
    return posterior.kl() if posterior.closed_form_kl else None


@torch.no_grad()
def has_unit_kl(model: nn.Module, x: Tensor, y: Tensor | int | None = None) -> bool:
    """Whether ``model`` has a closed-form KL per latent unit (:func:`latent_kl`), asked of the posterior of
    image(s) ``x``: tools that show per-unit KL, or take N(0, I) as the prior, check it first."""
    return latent_kl(model, posterior_of(model, x, y)) is not None


def kl_per_example(model: nn.Module, posterior: Posterior, z: Tensor | None = None,
                   log_q: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """KL(q(z|x) || p(z)) per example: the closed form where the model has one (:meth:`zoo.ZooModel.example_kl`),
    otherwise the Monte-Carlo estimate mean_k [log q(z_k|x) - log p(z_k)] over the draws ``z`` (K, batch, ...)
    or (batch, ...) with their ``log_q`` (from ``posterior.sample_and_log_prob``), or over one new draw."""
    own = getattr(model, "example_kl", None)
    if own is not None:
        closed = own(posterior)
    else:
        closed = latent_kl(model, posterior)
        closed = None if closed is None else closed.flatten(1).sum(-1)
    if closed is not None:
        return closed
    if z is None or log_q is None:
        z, log_q = posterior.sample_and_log_prob(generator=generator)
    estimate = log_q - model.prior_log_prob(z)
    return estimate.mean(0) if estimate.dim() == 2 else estimate


def latent_shape(model: nn.Module) -> tuple[int, ...]:
    """One example's code shape, as the model declares it."""
    return tuple(int(d) for d in model.latent_shape)


def is_spatial(shape: tuple[int, ...]) -> bool:
    """True for a latent with positions (C, h, w), False for a flat latent (D,)."""
    return len(shape) > 1


def unit_name(shape: tuple[int, ...]) -> str:
    """What a latent unit is called in tables and captions: "latent" or "channel"."""
    return "channel" if is_spatial(shape) else "latent"


def unit_sum(values: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(N, *shape) -> (N, units): each unit's values summed over its positions (additive numbers: KL)."""
    return values.flatten(2).sum(-1) if is_spatial(shape) else values


def unit_mean(values: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(N, *shape) -> (N, units) or (*shape,) -> (units,): averaged over positions (variances)."""
    if not is_spatial(shape):
        return values
    return values.flatten(values.dim() - len(shape) + 1).mean(-1)


def with_unit(z: Tensor, unit: int, value: Tensor | float) -> Tensor:
    """A copy of codes ``z`` (N, *shape) with unit ``unit`` set to ``value`` (a number, or one value per
    position of the unit) in every example."""
    z = z.clone()
    z[:, unit] = torch.as_tensor(value, dtype=z.dtype, device=z.device)
    return z


#: Group names appear in metric keys (``kl_z1``) and file names: lower-case letters, digits and underscores.
GROUP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class LatentGroup:
    """A named run of latent units (indices along the first latent dimension), e.g. one layer of a hierarchy."""

    name: str
    units: range
    description: str = ""


def latent_groups(model: nn.Module) -> tuple[LatentGroup, ...]:
    """The model's latent groups in unit order (``model.latent_groups``), or one group ``z`` of every unit for a
    model that declares none. A declaration is checked: names as :data:`GROUP_NAME`, distinct, and ranges that
    cover the units once, in order."""
    units = latent_shape(model)[0]
    own = getattr(model, "latent_groups", None)
    if own is None:
        return (LatentGroup("z", range(units), "the whole latent"),)
    groups = tuple(own)
    names = [g.name for g in groups]
    bad = [n for n in names if not GROUP_NAME.match(n)]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"{type(model).__name__}.latent_groups: group names must be distinct lower-case words "
                          f"(letters, digits, '_'), got {names}")
    covered = [u for g in groups for u in g.units]
    if covered != list(range(units)):
        spans = ", ".join(f"{g.name}: {g.units.start}..{g.units.stop - 1}" for g in groups)
        raise ConfigError(f"{type(model).__name__}.latent_groups must cover the {units} latent units once, in order "
                          f"(0..{units - 1}); got {spans}")
    return groups


def group_kl(model: nn.Module, posterior: Posterior, z: Tensor | None = None, log_q: Tensor | None = None,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """KL(q || p) per latent group and example, {group name: (batch,)}, summing to the example's KL.

    A model with its own split (``model.group_kl(posterior, z)``: a hierarchical model's KL per layer, each given
    the layers above at the draws ``z``) answers; otherwise a closed-form per-unit KL (:func:`latent_kl`) is summed
    within each group, and a model of one group gets :func:`kl_per_example` (Monte Carlo over ``z`` and ``log_q``
    where there is no closed form). ``z`` (batch, ...) or (K, batch, ...) are draws of ``posterior``: one is
    drawn with ``generator`` where a model needs one and none is given."""
    groups = latent_groups(model)
    own = getattr(model, "group_kl", None)
    if own is not None:
        if z is None:
            z = posterior.sample(generator=generator)
        return own(posterior, z)
    per_unit = latent_kl(model, posterior)
    if per_unit is not None:
        units = unit_sum(per_unit, tuple(per_unit.shape[1:]))
        return {g.name: units[:, g.units.start:g.units.stop].sum(-1) for g in groups}
    if len(groups) > 1:
        raise ConfigError(f"{type(model).__name__} declares {len(groups)} latent groups but no per-unit KL: define "
                          f"group_kl(posterior, z), the KL per group at draws z")
    return {groups[0].name: kl_per_example(model, posterior, z, log_q, generator)}
