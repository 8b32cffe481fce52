"""One evaluation for any zoo model: what ``zoo eval`` prints and what model cards report.

VAE-family models (``encode`` returns a posterior) get the negative ELBO and its terms, the
importance-sampled NLL, active units and reconstruction errors; deterministic autoencoders get the
reconstruction errors. Generative models of 28x28 digits also get the sample-quality numbers of
:mod:`zoo.sample_quality` (conditional ones their conditional accuracy), and models of dSprites the
disentanglement scores of :mod:`zoo.disentanglement`. Every number is seeded, so a rerun reproduces
it on the same software.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.data import TensorData
from zoo.distributions import DiagonalGaussian
from zoo.metrics import active_units, elbo_terms, importance_sampled_nll, reconstruction_errors

#: Relative tolerance within which a fresh evaluation must match a card's numbers.
CARD_TOLERANCE = 0.01
#: Samples drawn for the sample-quality numbers, and per class for the conditional accuracy.
QUALITY_SAMPLES = 5000
CONDITIONAL_PER_CLASS = 500


def is_probabilistic(model: nn.Module, data: TensorData) -> bool:
    x = data.x[:2].to(next(model.parameters()).device)
    y = data.y[:2].to(x.device) if data.y is not None and getattr(model.config, "num_classes", 0) else None
    with torch.no_grad():
        return isinstance(model.encode(x, y), DiagonalGaussian)


def is_generative(model: nn.Module) -> bool:
    from zoo.registry import get_variant

    return get_variant(model.variant_name).generative


def evaluate(model: nn.Module, data: TensorData, *, nll_samples: int = 1000, seed: int = 0,
             dataset: str | None = None) -> dict[str, Any]:
    """Headline metrics of ``model`` on ``data`` (per example, averaged), seeded.

    ``dataset`` (the data's name) switches on the extras: sample quality for generative MNIST models,
    disentanglement scores (reduced sample counts, see :data:`zoo.disentanglement.CARD_COUNTS`) for
    dSprites."""
    model.eval()
    metrics: dict[str, Any] = {}
    if is_probabilistic(model, data):
        metrics.update(elbo_terms(model, data, seed=seed))
        if nll_samples:
            nll = importance_sampled_nll(model, data, num_samples=nll_samples, seed=seed)
            metrics["nll"], metrics["nll_stderr"] = nll["nll"], nll["nll_stderr"]
        metrics["active_units"] = active_units(model, data)["active_units"]
    metrics.update({f"recon_{k}": v for k, v in reconstruction_errors(model, data).items()})
    if dataset in ("mnist", "mnist-full") and is_generative(model):
        from zoo.sample_quality import conditional_accuracy, sample_quality

        metrics.update(sample_quality(model, data.x, num_samples=QUALITY_SAMPLES, seed=seed))
        if getattr(model.config, "num_classes", 0):
            metrics["conditional_accuracy"] = conditional_accuracy(model, CONDITIONAL_PER_CLASS, seed)[
                "conditional_accuracy"]
    if dataset == "dsprites":
        from zoo.disentanglement import card_scores

        metrics.update(card_scores(model, seed=seed))
    return metrics
