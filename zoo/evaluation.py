"""One evaluation for any zoo model: what ``zoo eval`` prints and what model cards report.

What is measured follows the capabilities the model's variant declares (:mod:`zoo.contract`):
variational models get the negative ELBO and its terms, the importance-sampled NLL and active
units; every model gets the reconstruction errors; generative models of 28x28 digits also get the
sample-quality numbers of :mod:`zoo.sample_quality` (conditional ones their conditional accuracy);
models of dSprites the disentanglement scores of :mod:`zoo.disentanglement`; and every variant adds
its own numbers (:meth:`zoo.Variant.metrics`, e.g. a VQ model's codebook usage). :func:`skipped`
says, one line each, what did not apply. Every number is seeded, so a rerun reproduces it on the
same software.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.contract import has, skip_note, variant_of
from zoo.data import DATASETS, TensorData, as_data
from zoo.errors import ConfigError
from zoo.metrics import active_units, elbo_terms, importance_sampled_nll, marginal_nll, reconstruction_errors

#: Relative tolerance within which a fresh evaluation must match a card's numbers.
CARD_TOLERANCE = 0.01
#: Samples drawn for the sample-quality numbers, and per class for the conditional accuracy.
QUALITY_SAMPLES = 5000
CONDITIONAL_PER_CLASS = 500
#: The sample-quality numbers a fitted ex-post sampler's draws get on cards.
SAMPLER_QUALITY = ("fcd", "confidence", "fcd_mlp")

#: Datasets whose generative models get the sample-quality numbers (the classifier reads 28x28 digits).
DIGIT_DATASETS = ("mnist", "mnist-full")


def evaluate(model: nn.Module, data: TensorData | str | Any, *, nll_samples: int = 1000, seed: int = 0,
             dataset: str | None = None, elbo_samples: int = 10) -> dict[str, Any]:
    """Headline metrics of ``model`` on ``data`` (per example, averaged), seeded.

    >>> zoo.evaluate(zoo.load("vae-mnist"), "mnist")    # a dataset name means its test split

    ``data`` is a :class:`~zoo.data.TensorData`, a dataset name (its ``test`` split) or anything
    :func:`zoo.data.as_data` takes (tensors, ``(x, y)``, an image folder). ``dataset`` (the data's name;
    a dataset name given as ``data`` sets it) switches on the extras: sample quality for generative MNIST
    models, disentanglement scores (reduced sample counts, see :data:`zoo.disentanglement.CARD_COUNTS`) for
    dSprites. ``elbo_samples`` z are drawn per example for the ELBO (one is enough for autoencoders
    whose posterior is nearly a point, as the latent-diffusion ones with a KL weight of 1e-6)."""
    if isinstance(data, str) and data in DATASETS:
        dataset = dataset or data
    if not isinstance(data, TensorData):
        data = as_data(data, tuple(model.config.input_shape), split="test")
    model.eval()
    metrics: dict[str, Any] = {}
    if has(model, "variational"):
        metrics.update(elbo_terms(model, data, num_samples=elbo_samples, seed=seed))
        if nll_samples:
            nll = importance_sampled_nll(model, data, num_samples=nll_samples, seed=seed)
            metrics["nll"], metrics["nll_stderr"] = nll["nll"], nll["nll_stderr"]
            if has(model, "conditional"):  # nll is -log p(x|y): also the image's own likelihood
                metrics["nll_marginal"] = marginal_nll(model, data, num_samples=nll_samples, seed=seed)["nll"]
        if len(data) > 1:  # a variance over the data needs two examples
            activity = active_units(model, data)
            metrics["active_units"] = activity["active_units"]
            if len(activity["groups"]) > 1:
                metrics.update({f"active_units_{name}": group["active_units"]
                                for name, group in activity["groups"].items()})
    metrics.update({f"recon_{k}": v for k, v in reconstruction_errors(model, data).items()})
    if dataset in DIGIT_DATASETS and has(model, "generative"):
        from zoo.sample_quality import conditional_accuracy, sample_quality

        metrics.update(sample_quality(model, data.x, num_samples=QUALITY_SAMPLES, seed=seed))
        if has(model, "conditional"):
            accuracy = conditional_accuracy(model, CONDITIONAL_PER_CLASS, seed)
            metrics.update({key: value for key, value in accuracy.items() if key.startswith("conditional_accuracy")})
    if getattr(model, "samplers", None):
        metrics.update(fitted_sampler_metrics(model, data, digits=dataset in DIGIT_DATASETS, seed=seed))
    if dataset == "dsprites":
        from zoo.disentanglement import card_scores

        metrics.update(card_scores(model, seed=seed))
    metrics.update(variant_metrics(model, data, seed=seed, taken=set(metrics)))
    return metrics


def fitted_sampler_metrics(model: nn.Module, data: TensorData, *, digits: bool, seed: int = 0) -> dict[str, float]:
    """Each fitted ex-post sampler's numbers: -log density of ``data``'s codes (where it has a density) and, on
    digits, the sample quality of its decoded draws (``sampler_NAME_fcd``, ``sampler_NAME_confidence``, and the
    position-sensitive judge's ``sampler_NAME_fcd_mlp``)."""
    from zoo.cards import sampler_metric_prefix
    from zoo.sample_quality import sample_quality
    from zoo.samplers import encode_codes

    codes = encode_codes(model, data.x)  # once for every sampler
    metrics: dict[str, float] = {}
    for name, fitted in model.samplers.items():
        key = sampler_metric_prefix(name)
        with torch.no_grad():
            log_prob = fitted.log_prob(codes)
        if log_prob is not None:
            metrics[f"{key}_code_nll"] = -float(log_prob.mean())
        if digits:
            quality = sample_quality(model, data.x, num_samples=QUALITY_SAMPLES, seed=seed, sampler=name)
            metrics.update({f"{key}_{metric}": quality[metric] for metric in SAMPLER_QUALITY})
    return metrics


def variant_metrics(model: nn.Module, data: TensorData, *, seed: int = 0,
                    taken: set[str] = frozenset()) -> dict[str, float]:
    """The variant's own numbers (:meth:`zoo.Variant.metrics`), in eval mode without autograd; a key that
    clashes with ``taken`` (the zoo's own) or has no description in ``metric_names`` is a ConfigError."""
    variant = variant_of(model)
    model.eval()
    with torch.no_grad():
        extra = variant.metrics(model, data, seed=seed)
    clash = sorted(set(extra) & taken)
    if clash:
        raise ConfigError(f"variant {variant.name!r} returns metric(s) {', '.join(clash)} from metrics(), which the "
                          f"zoo already reports: rename them (e.g. prefix them with the variant's name)")
    undescribed = sorted(set(extra) - set(variant.metric_names))
    if undescribed:
        raise ConfigError(f"variant {variant.name!r} returns metric(s) {', '.join(undescribed)} without a "
                          f"description: add them to its metric_names (shown in zoo eval, reports and cards)")
    return {key: float(value) for key, value in extra.items()}


def skipped(model: nn.Module, dataset: str | None) -> list[str]:
    """One line per measurement :func:`evaluate` and the report leave out for this model, and why."""
    notes = []
    if not has(model, "variational"):
        notes.append(skip_note(model, "variational", "negative ELBO, importance-sampled NLL, active units, "
                                                     "per-latent KL"))
    if not has(model, "generative"):
        notes.append(skip_note(model, "generative", "prior samples" + (" and sample quality"
                                                                       if dataset in DIGIT_DATASETS else "")))
    if not has(model, "has_likelihood"):
        notes.append(skip_note(model, "has_likelihood", "reconstruction gain per latent"))
    return notes
