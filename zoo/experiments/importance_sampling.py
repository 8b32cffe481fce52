"""Experiment 5: importance sampling from q(z|x) estimates log p(x) with far lower variance than
sampling z from the prior, at the same number of samples K."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from zoo.data import load_dataset
from zoo.experiments.report import ExperimentResult
from zoo.metrics import log_importance_weights

CLAIM = ("Estimating log p(x) with K samples from the posterior q(z|x) (importance sampling) has far lower "
         "variance than with K samples from the prior p(z), at equal K.")


@torch.no_grad()
def prior_log_weights(model: torch.nn.Module, x: torch.Tensor, num_samples: int,
                      generator: torch.Generator) -> torch.Tensor:
    """log p(x|z_k) for z_k ~ p(z) = N(0, I): (K, batch), float64 (the weights of the prior estimator)."""
    z = torch.randn(num_samples, len(x), *model.latent_shape, generator=generator)
    return -model.reconstruction_nll(x, z).double()


def estimates(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k exp(log w_k), per example."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def run(out: Path, quick: bool = False) -> ExperimentResult:
    import zoo

    model = zoo.load("vae-mnist").eval()
    images, repeats = (10, 5) if quick else (100, 20)
    ks = (10, 100) if quick else (1, 10, 100, 1000)
    x = load_dataset("mnist", "test").x[:: 1000 // images][:images]
    generator = torch.Generator().manual_seed(0)
    numbers: dict[str, float] = {}
    for k in ks:
        posterior = torch.stack([estimates(log_importance_weights(model, x, None, k, generator=generator))
                                 for _ in range(repeats)])
        prior = torch.stack([estimates(prior_log_weights(model, x, k, generator)) for _ in range(repeats)])
        numbers[f"K={k}: variance, q(z|x) proposal"] = float(posterior.var(0).mean())
        numbers[f"K={k}: variance, prior proposal"] = float(prior.var(0).mean())
        numbers[f"K={k}: mean log p(x), q(z|x) proposal"] = float(posterior.mean())
        numbers[f"K={k}: mean log p(x), prior proposal"] = float(prior.mean())
    ratios = [numbers[f"K={k}: variance, prior proposal"] / max(numbers[f"K={k}: variance, q(z|x) proposal"], 1e-12)
              for k in ks]
    holds = min(ratios) > 10
    k_top = ks[-1]
    verdict = (f"At every K the prior estimator's variance is {min(ratios):.3g}x to {max(ratios):.3g}x the "
               f"importance sampler's. It is also badly biased: at K = {k_top} the prior estimate of log p(x) "
               f"averages {numbers[f'K={k_top}: mean log p(x), prior proposal']:.1f} nats against "
               f"{numbers[f'K={k_top}: mean log p(x), q(z|x) proposal']:.1f} with q(z|x) (both are lower bounds "
               "in expectation, so the higher one is the better estimate).")
    method = (f"`vae-mnist` (bundled), {images} test digits (one every {1000 // images} rows, all classes). For each "
              f"K in {list(ks)}, each estimator is computed {repeats} times with fresh samples; the variance over "
              "repeats is averaged over the digits (nats^2).")
    return ExperimentResult("importance-sampling", CLAIM, numbers, holds, verdict, method=method, quick=quick)
