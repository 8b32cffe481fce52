"""Evaluation metrics: importance-sampled log-likelihood, ELBO terms, reconstruction error, active units.

Conventions: every number is per example (nats for likelihoods), averaged over the data set. The
importance-sampled estimate (Burda et al. 2016) is

    log p(x) ~= log (1/K) sum_k exp(log p(x|z_k) + log p(z_k) - log q(z_k|x)),   z_k ~ q(z|x),

computed with log-sum-exp over float64 weights, batched over examples and samples, with no
autograd graph. It is a stochastic lower bound that tightens as K grows (K = 1 is the ELBO).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo.contract import (
    group_kl,
    has,
    has_unit_kl,
    labels_for,
    latent_groups,
    latent_kl,
    latent_shape,
    likelihood_nll,
    posterior_of,
    reconstruct,
    require,
    unit_mean,
    unit_name,
    unit_sum,
    with_unit,
)
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.losses import bernoulli_nll, squared_error


def _batches(data: TensorData, batch_size: int, device: torch.device) -> Any:
    """(x, labels for the model or None) batches of ``data`` on ``device``."""
    for batch in data.batches(batch_size, shuffle=False):
        x = batch[0].to(device)
        y = batch[1].to(device) if len(batch) > 1 else None
        yield x, y


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def log_importance_weights(model: nn.Module, x: Tensor, y: Tensor | None, num_samples: int,
                           chunk: int = 100, generator: torch.Generator | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples: (K, batch), float64.

    p(z) is the model's own prior (``prior_log_prob``) and log q(z_k|x) comes with each draw
    (``sample_and_log_prob``: a flow posterior's includes the log-determinant)."""
    y = labels_for(model, y)
    posterior = posterior_of(model, x, y)
    out = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        z, log_q = posterior.sample_and_log_prob(k, generator=generator)
        log_px_z = -likelihood_nll(model, x, z, y)
        out.append(log_px_z.double() + model.prior_log_prob(z).double() - log_q.double())
    return torch.cat(out)


@torch.no_grad()
def importance_sampled_nll_per_example(model: nn.Module, data: TensorData, num_samples: int = 1000,
                                       batch_size: int = 100, seed: int = 0) -> Tensor:
    """-log p(x) of every example of ``data``, estimated with ``num_samples`` importance samples: (N,), float64.

    Per-example values let two models be compared on the same examples (a paired difference and its
    standard error), which is far tighter than comparing two means."""
    require(model, "variational", "the importance-sampled NLL")
    model.eval()
    device = _device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    per_example = []
    for x, y in _batches(data, batch_size, device):
        log_w = log_importance_weights(model, x, y, num_samples, generator=generator)
        per_example.append(-(torch.logsumexp(log_w, 0) - math.log(num_samples)))
    return torch.cat(per_example).cpu()


def importance_sampled_nll(model: nn.Module, data: TensorData, num_samples: int = 1000, batch_size: int = 100,
                           seed: int = 0) -> dict[str, float]:
    """Test NLL -log p(x) estimated with ``num_samples`` importance samples from q(z|x) (variational models).

    Returns the mean NLL and its standard error over examples.
    """
    nll = importance_sampled_nll_per_example(model, data, num_samples, batch_size, seed)
    stderr = float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else math.nan  # one example: no spread
    return {"nll": float(nll.mean()), "nll_stderr": stderr,
            "num_samples": num_samples}


@torch.no_grad()
def marginal_nll(model: nn.Module, data: TensorData, num_samples: int = 1000, batch_size: int = 100,
                 seed: int = 0) -> dict[str, float]:
    """-log p(x) of a conditional model with the label summed out under a uniform p(y):
    -log (1/C) sum_y p(x|y), each p(x|y) importance sampled from q(z|x, y) with ``num_samples // C`` draws
    (stratified over the C labels, ``num_samples`` draws in all: the cost of one conditional NLL).

    A conditional model's :func:`importance_sampled_nll` is -log p(x|y) at the true label; this is the
    likelihood of the image alone, comparable with an unconditional model's. Like every importance-sampled
    estimate it is a stochastic upper bound on -log p(x) that tightens as the draws grow."""
    require(model, "conditional", "the marginal NLL over labels")
    classes = int(model.num_classes)
    per_class = max(1, num_samples // classes)
    log_p = torch.stack([-importance_sampled_nll_per_example(
        model, TensorData(data.x, torch.full((len(data),), c, dtype=torch.long)), per_class, batch_size, seed)
        for c in range(classes)])
    nll = -(torch.logsumexp(log_p, 0) - math.log(classes))
    stderr = float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else math.nan
    return {"nll": float(nll.mean()), "nll_stderr": stderr, "samples_per_class": per_class}


@torch.no_grad()
def elbo_terms(model: nn.Module, data: TensorData, num_samples: int = 10, batch_size: int = 500,
               seed: int = 0) -> dict[str, float]:
    """Negative ELBO = reconstruction NLL (averaged over ``num_samples`` z per example) + KL (variational models).

    The KL is the closed form where the model has one, else the Monte-Carlo estimate over the same draws
    (:func:`zoo.contract.group_kl`, summed over the latent groups). A model of several groups
    (:func:`zoo.contract.latent_groups`) also gets each group's KL, ``kl_NAME``."""
    require(model, "variational", "the ELBO")
    model.eval()
    device = _device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    grouped = len(latent_groups(model)) > 1
    recon_sum = 0.0
    kl_sums: dict[str, float] = {}
    for x, y in _batches(data, batch_size, device):
        y = labels_for(model, y)
        posterior = posterior_of(model, x, y)
        z, log_q = posterior.sample_and_log_prob(num_samples, generator=generator)
        recon_sum += float(likelihood_nll(model, x, z, y).double().mean(0).sum())
        for name, value in group_kl(model, posterior, z, log_q).items():
            kl_sums[name] = kl_sums.get(name, 0.0) + float(value.double().sum())
    n = len(data)
    kl_total = sum(kl_sums.values()) / n
    groups = {f"kl_{name}": value / n for name, value in kl_sums.items()} if grouped else {}
    return {"neg_elbo": recon_sum / n + kl_total, "reconstruction": recon_sum / n, "kl": kl_total, **groups}


@torch.no_grad()
def reconstruction_errors(model: nn.Module, data: TensorData, batch_size: int = 500) -> dict[str, float]:
    """Per-example squared error and binary cross-entropy of eval-mode (deterministic) reconstructions."""
    model.eval()
    device = _device(model)
    mse = bce = 0.0
    for x, y in _batches(data, batch_size, device):
        recon = reconstruct(model, x, y).float().clamp(1e-6, 1 - 1e-6)
        mse += float(squared_error(recon, x).sum())
        if x.min() >= 0 and x.max() <= 1:
            bce += float(bernoulli_nll(torch.logit(recon), x).sum())
    n = len(data)
    return {"mse": mse / n, "bce": bce / n}


@torch.no_grad()
def active_units(model: nn.Module, data: TensorData, threshold: float = 0.01, batch_size: int = 500) -> dict[str, Any]:
    """Burda et al.: unit i is active when Var_x(E_q[z_i]) > threshold. Also the mean KL per unit (variational
    models whose KL factorises over the latent, :func:`zoo.contract.latent_kl`).

    A unit is a latent of a flat latent; of a spatial latent, a channel, whose variance is averaged and
    whose KL is summed over its positions (``unit`` says which). ``groups`` counts the active units of each
    latent group (:func:`zoo.contract.latent_groups`; one group ``z`` for most models).
    """
    model.eval()
    device = _device(model)
    shape = latent_shape(model)
    variational = has(model, "variational")
    means, kls = [], []
    for x, y in _batches(data, batch_size, device):
        posterior = posterior_of(model, x, y)
        means.append(posterior.mode().double())
        kl = latent_kl(model, posterior) if variational else None
        if kl is not None:
            kls.append(unit_sum(kl.double(), shape))
    variance = unit_mean(torch.cat(means).var(0), shape)
    active = variance > threshold
    groups = {g.name: {"active_units": int(active[g.units.start:g.units.stop].sum()), "units": len(g.units)}
              for g in latent_groups(model)}
    result = {"active_units": int(active.sum()), "units": int(variance.numel()),
              "unit": unit_name(shape), "mean_variance": variance.tolist(), "groups": groups}
    if kls:
        result["kl_per_latent"] = torch.cat(kls).mean(0).tolist()
    return result


@torch.no_grad()
def reconstruction_gain(model: nn.Module, data: TensorData, *, replace_with: str = "prior",
                        batch_size: int = 500) -> dict[str, Any]:
    """Per latent unit i: the reconstruction NLL (``model.reconstruction_nll``, nats for Bernoulli) of the
    decoded code with unit i replaced by its prior mean 0 (``replace_with="prior"``, variational models)
    or by its mean over ``data`` (``"marginal"``, any model with a likelihood), minus the NLL with unit i kept.

    Set beside the unit's KL it shows what a unit buys, cheaply and deterministically: ``below_kl`` lists the
    units whose gain is below their KL, the ones on their way to collapse. It is a proxy, evaluated at the
    posterior mean with the unit set to one value. The exact quantity, what the negative ELBO gains when
    q(z_i|x) is replaced by the prior, is :func:`prior_replacement_cost` (Monte Carlo). Units of a spatial
    latent are channels: the whole channel is replaced at every position."""
    if replace_with not in ("prior", "marginal"):
        raise ValueError(f"replace_with must be 'prior' or 'marginal', not {replace_with!r}")
    require(model, "has_likelihood", "the reconstruction gain")
    if replace_with == "prior":
        require(model, "variational", "the reconstruction gain against the prior (use replace_with='marginal')")
        first = next(_batches(data, 1, _device(model)))
        if not has_unit_kl(model, *first):
            raise ConfigError(f"the reconstruction gain against the prior replaces a unit by its prior mean 0 and "
                              f"sets it beside the unit's KL; {model.variant_name!r}'s prior or posterior has no "
                              f"per-unit KL (a mixture prior or a flow): use replace_with='marginal'")
    model.eval()
    device = _device(model)
    shape = latent_shape(model)
    codes, kls, batches = [], [], []
    for x, y in _batches(data, batch_size, device):
        y = labels_for(model, y)
        posterior = posterior_of(model, x, y)
        codes.append(posterior.mode())
        if replace_with == "prior":
            kls.append(unit_sum(latent_kl(model, posterior), shape))
        batches.append((x, y))
    fill = torch.zeros_like(codes[0][0]) if replace_with == "prior" else torch.cat(codes).mean(0)
    units = shape[0]
    kept, removed = 0.0, torch.zeros(units, dtype=torch.float64)
    for code, (x, y) in zip(codes, batches, strict=True):
        kept += float(likelihood_nll(model, x, code, y).double().sum())
        for i in range(units):
            removed[i] += float(likelihood_nll(model, x, with_unit(code, i, fill[i]), y).double().sum())
    n = len(data)
    gain = ((removed - kept) / n).tolist()
    result: dict[str, Any] = {"gain": gain, "reconstruction": kept / n, "replace_with": replace_with,
                              "unit": unit_name(shape)}
    if kls:
        kl = torch.cat(kls).double().mean(0).tolist()
        result["kl_per_latent"] = kl
        result["below_kl"] = costly_latents(kl, gain)
    return result


@torch.no_grad()
def prior_replacement_cost(model: nn.Module, data: TensorData, *, num_samples: int = 10, batch_size: int = 500,
                           seed: int = 0) -> dict[str, Any]:
    """Per latent unit i, what replacing the posterior q(z_i|x) by the prior p(z_i) = N(0, 1) does to the ELBO,
    by Monte Carlo with ``num_samples`` draws per example:

        gain_i = E_{z_{-i} ~ q, z_i ~ p}[-log p(x|z)] - E_{z ~ q}[-log p(x|z)]   (the reconstruction it buys)
        change_i = gain_i - KL_i                                                 (the rise of -ELBO)

    A unit with ``change_i < 0`` costs more nats of KL than it saves in reconstruction: the ELBO is better
    without it (``costs_more`` lists them). This is the exact quantity that :func:`reconstruction_gain`
    approximates at the posterior mean. Needs a variational model with a N(0, I) prior and a per-unit KL
    (:func:`zoo.contract.latent_kl`). Units of a spatial latent are channels, redrawn at every position."""
    require(model, "has_likelihood", "the prior replacement cost")
    require(model, "variational", "the prior replacement cost")
    device = _device(model)
    if not has_unit_kl(model, *next(_batches(data, 1, device))):
        raise ConfigError(f"the prior replacement cost redraws a unit from N(0, 1) and sets it beside the unit's KL; "
                          f"{model.variant_name!r}'s prior or posterior has no per-unit KL (a mixture prior or a flow)")
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = latent_shape(model)
    units = shape[0]
    kept, replaced, kl = 0.0, torch.zeros(units, dtype=torch.float64), torch.zeros(units, dtype=torch.float64)
    for x, y in _batches(data, batch_size, device):
        y = labels_for(model, y)
        posterior = posterior_of(model, x, y)
        z = posterior.sample(num_samples, generator=generator)
        kept += float(likelihood_nll(model, x, z, y).double().mean(0).sum())
        kl += unit_sum(latent_kl(model, posterior).double(), shape).sum(0).cpu()
        for i in range(units):
            swapped = z.clone()
            swapped[:, :, i] = torch.randn(swapped[:, :, i].shape, device=device, dtype=z.dtype, generator=generator)
            replaced[i] += float(likelihood_nll(model, x, swapped, y).double().mean(0).sum())
    n = len(data)
    gain = (replaced - kept) / n
    change = gain - kl / n
    return {"gain": gain.tolist(), "kl_per_latent": (kl / n).tolist(), "change": change.tolist(),
            "costs_more": [i for i in range(units) if change[i] < 0], "num_samples": num_samples,
            "unit": unit_name(shape)}


def costly_latents(kl_per_latent: Sequence[float], gain_per_latent: Sequence[float]) -> list[int]:
    """Latents whose reconstruction gain (nats) is below their KL (nats): they cost more of the ELBO than they
    give back, so the bar chart flags them."""
    if len(kl_per_latent) != len(gain_per_latent):
        raise ValueError(f"{len(kl_per_latent)} KL values but {len(gain_per_latent)} gains: one each per latent")
    return [i for i, (kl, gain) in enumerate(zip(kl_per_latent, gain_per_latent, strict=True)) if gain < kl]
