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

from zoo.data import TensorData
from zoo.distributions import DiagonalGaussian, standard_normal_log_prob
from zoo.losses import bernoulli_nll, reconstruction_nll, squared_error


def _batches(data: TensorData, batch_size: int, device: torch.device) -> Any:
    for batch in data.batches(batch_size, shuffle=False):
        x = batch[0].to(device)
        y = batch[1].to(device) if len(batch) > 1 else None
        yield x, y


def _labels_for(model: nn.Module, y: Tensor | None) -> Tensor | None:
    return y if getattr(model.config, "num_classes", 0) else None


@torch.no_grad()
def log_importance_weights(model: nn.Module, x: Tensor, y: Tensor | None, num_samples: int,
                           chunk: int = 100, generator: torch.Generator | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples: (K, batch), float64."""
    cfg = model.config
    posterior = model.encode(x, y)
    out = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        z = posterior.rsample(k, generator=generator)
        log_px_z = -reconstruction_nll(model.decode_logits(z, y), x, cfg.likelihood, getattr(cfg, "decoder_std", 1.0))
        out.append(log_px_z.double() + standard_normal_log_prob(z).double() - posterior.log_prob(z).double())
    return torch.cat(out)


@torch.no_grad()
def importance_sampled_nll(model: nn.Module, data: TensorData, num_samples: int = 1000, batch_size: int = 100,
                           seed: int = 0) -> dict[str, float]:
    """Test NLL -log p(x) estimated with ``num_samples`` importance samples from q(z|x).

    Returns the mean NLL and its standard error over examples.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    per_example = []
    for x, y in _batches(data, batch_size, device):
        log_w = log_importance_weights(model, x, _labels_for(model, y), num_samples, generator=generator)
        per_example.append(-(torch.logsumexp(log_w, 0) - math.log(num_samples)))
    nll = torch.cat(per_example)
    return {"nll": float(nll.mean()), "nll_stderr": float(nll.std() / math.sqrt(len(nll))),
            "num_samples": num_samples}


@torch.no_grad()
def elbo_terms(model: nn.Module, data: TensorData, num_samples: int = 10, batch_size: int = 500,
               seed: int = 0) -> dict[str, float]:
    """Negative ELBO = reconstruction NLL (averaged over ``num_samples`` z per example) + analytic KL."""
    model.eval()
    cfg = model.config
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    recon_sum = kl_sum = 0.0
    for x, y in _batches(data, batch_size, device):
        y = _labels_for(model, y)
        posterior = model.encode(x, y)
        z = posterior.rsample(num_samples, generator=generator)
        recon = reconstruction_nll(model.decode_logits(z, y), x, cfg.likelihood, getattr(cfg, "decoder_std", 1.0))
        recon_sum += float(recon.double().mean(0).sum())
        kl_sum += float(posterior.kl_standard_normal().double().sum())
    n = len(data)
    return {"neg_elbo": (recon_sum + kl_sum) / n, "reconstruction": recon_sum / n, "kl": kl_sum / n}


@torch.no_grad()
def reconstruction_errors(model: nn.Module, data: TensorData, batch_size: int = 500) -> dict[str, float]:
    """Per-example squared error and binary cross-entropy of eval-mode (deterministic) reconstructions."""
    model.eval()
    device = next(model.parameters()).device
    mse = bce = 0.0
    for x, y in _batches(data, batch_size, device):
        recon = model(x, _labels_for(model, y)).float().clamp(1e-6, 1 - 1e-6)
        mse += float(squared_error(recon, x).sum())
        if x.min() >= 0 and x.max() <= 1:
            bce += float(bernoulli_nll(torch.logit(recon), x).sum())
    n = len(data)
    return {"mse": mse / n, "bce": bce / n}


@torch.no_grad()
def active_units(model: nn.Module, data: TensorData, threshold: float = 0.01, batch_size: int = 500) -> dict[str, Any]:
    """Burda et al.: unit i is active when Var_x(E_q[z_i]) > threshold. Also per-latent mean KL."""
    model.eval()
    device = next(model.parameters()).device
    means, kls = [], []
    for x, y in _batches(data, batch_size, device):
        posterior = model.encode(x, _labels_for(model, y))
        means.append(posterior.mean.double())
        kls.append(posterior.kl_standard_normal().double())
    variance = torch.cat(means).var(0)
    return {"active_units": int((variance > threshold).sum()), "latent_dim": int(variance.numel()),
            "mean_variance": variance.tolist(), "kl_per_latent": torch.cat(kls).mean(0).tolist()}


def _code(model: nn.Module, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(code, per-latent KL or None): the posterior mean for VAE-family models, else the code."""
    code = model.encode(x, y)
    if isinstance(code, DiagonalGaussian):
        return code.mean, code.kl_standard_normal()
    return code, None


@torch.no_grad()
def reconstruction_gain(model: nn.Module, data: TensorData, *, replace_with: str = "prior",
                        batch_size: int = 500) -> dict[str, Any]:
    """Per latent i: the reconstruction NLL (the model's likelihood, in nats for Bernoulli) of the
    decoded posterior mean with z_i replaced by its prior mean 0 (``replace_with="prior"``, VAE
    family) or by its mean over ``data`` (``"marginal"``, any model), minus the NLL with z_i kept.

    Set beside the latent's KL it shows what a latent buys: a latent whose gain is below its KL
    costs more nats than it saves (``below_kl`` lists them) and is on its way to collapse."""
    if replace_with not in ("prior", "marginal"):
        raise ValueError(f"replace_with must be 'prior' or 'marginal', not {replace_with!r}")
    model.eval()
    cfg = model.config
    device = next(model.parameters()).device
    codes, kls, batches = [], [], []
    for x, y in _batches(data, batch_size, device):
        y = _labels_for(model, y)
        code, kl = _code(model, x, y)
        codes.append(code)
        kls.append(kl)
        batches.append((x, y))
    if kls[0] is None and replace_with == "prior":
        raise ValueError(f"{model.variant_name!r} has no prior; use replace_with='marginal'")
    fill = torch.zeros_like(codes[0][0]) if replace_with == "prior" else torch.cat(codes).mean(0)
    dims = codes[0].shape[1]
    kept, removed = 0.0, torch.zeros(dims, dtype=torch.float64)
    std = getattr(cfg, "decoder_std", 1.0)

    def nll(z: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        return reconstruction_nll(model.decode_logits(z, y), x, cfg.likelihood, std).double()

    for code, (x, y) in zip(codes, batches, strict=True):
        kept += float(nll(code, x, y).sum())
        for i in range(dims):
            z = code.clone()
            z[:, i] = fill[i]
            removed[i] += float(nll(z, x, y).sum())
    n = len(data)
    gain = ((removed - kept) / n).tolist()
    result: dict[str, Any] = {"gain": gain, "reconstruction": kept / n, "replace_with": replace_with}
    if kls[0] is not None:
        kl = torch.cat(kls).double().mean(0).tolist()
        result["kl_per_latent"] = kl
        result["below_kl"] = costly_latents(kl, gain)
    return result


def costly_latents(kl_per_latent: Sequence[float], gain_per_latent: Sequence[float]) -> list[int]:
    """Latents whose reconstruction gain (nats) is below their KL (nats): they cost more of the ELBO than they
    give back, so the bar chart flags them."""
    if len(kl_per_latent) != len(gain_per_latent):
        raise ValueError(f"{len(kl_per_latent)} KL values but {len(gain_per_latent)} gains: one each per latent")
    return [i for i, (kl, gain) in enumerate(zip(kl_per_latent, gain_per_latent, strict=True)) if gain < kl]
