"""Reconstruction likelihoods and penalties, one convention everywhere.

Convention: every term is **summed over the dimensions of one example and averaged over the
batch**. So the KL and the reconstruction term stand on the same scale and beta means what the
papers mean; a checkpoint's config.json records this as ``"reduction": "sum-per-example/mean-batch"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.errors import ConfigError, DataError

REDUCTION = "sum-per-example/mean-batch"
LIKELIHOODS = ("bernoulli", "gaussian", "mse")


_CHECKED_IN_RANGE: ContextVar[bool] = ContextVar("zoo_targets_checked_in_unit_range", default=False)


def in_unit_range(x: Tensor) -> bool:
    lo, hi = torch.aminmax(x.detach())
    return bool((lo >= 0) & (hi <= 1))


@contextmanager
def unit_range_checked(*datasets: Tensor) -> Iterator[bool]:
    """Check ``datasets`` once; if all lie in [0, 1], Bernoulli losses inside the block skip their
    per-batch check (a reduction and a host sync every step) because it cannot fail. Otherwise nothing
    changes: the per-batch check still raises for a Bernoulli model, and others do not care. Yields
    whether the check is skipped (also when an enclosing block has checked its data already)."""
    skip = _CHECKED_IN_RANGE.get() or all(in_unit_range(x) for x in datasets)  # checked already: no sync
    token = _CHECKED_IN_RANGE.set(skip)
    try:
        yield skip
    finally:
        _CHECKED_IN_RANGE.reset(token)


def check_unit_range(x: Tensor) -> None:
    """Fail clearly when Bernoulli targets fall outside [0, 1] (unless checked already for the whole
    data: :func:`unit_range_checked`)."""
    if _CHECKED_IN_RANGE.get():
        return
    lo, hi = torch.aminmax(x.detach())
    if bool((lo < 0) | (hi > 1)):  # one host sync per call
        raise DataError(
            f"the Bernoulli likelihood (BCE) needs targets in [0, 1], but the data spans "
            f"[{float(lo):.4g}, {float(hi):.4g}]. Scale the data (e.g. divide 0-255 pixels by 255), "
            f"or use likelihood='gaussian' (VAEs) / 'mse' (autoencoders) for unbounded data."
        )


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log Bernoulli(x; sigmoid(logits)) per example: binary cross-entropy summed over pixels."""
    check_unit_range(x)
    target = x.float() if x.shape == logits.shape else x.float().expand_as(logits)
    nll = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return _sum_example(nll, x.dim())


def gaussian_nll(mean: Tensor, x: Tensor, std: float) -> Tensor:
    """-log N(x; mean, std^2 I) per example, including the constant 0.5 * log(2 pi std^2)."""
    if std <= 0:
        raise ConfigError(f"decoder_std must be positive, got {std}")
    z = (x.float() - mean.float()) / std
    nll = 0.5 * z.pow(2) + math.log(std) + 0.5 * math.log(2 * math.pi)
    return _sum_example(nll, x.dim())


def squared_error(recon: Tensor, x: Tensor) -> Tensor:
    """||x - recon||^2 per example."""
    return _sum_example((recon.float() - x.float()).pow(2), x.dim())


def reconstruction_nll(decoded: Tensor, x: Tensor, likelihood: str, decoder_std: float = 1.0) -> Tensor:
    """Dispatch on the likelihood name; ``decoded`` is logits (bernoulli) or the mean (others).

    ``decoded`` may carry leading Monte-Carlo sample dims in front of ``x``'s shape.
    """
    if likelihood == "bernoulli":
        return bernoulli_nll(decoded, x)
    if likelihood == "gaussian":
        return gaussian_nll(decoded, x, decoder_std)
    if likelihood == "mse":
        return squared_error(decoded, x)
    raise ConfigError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")


def bernoulli_kl(rho: float, rho_hat: Tensor, eps: float = 1e-6) -> Tensor:
    """KL(Bernoulli(rho) || Bernoulli(rho_hat)) elementwise (the sparse autoencoder penalty)."""
    rho_hat = rho_hat.float().clamp(eps, 1 - eps)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


def _sum_example(values: Tensor, target_dims: int) -> Tensor:
    """Sum over one example's dims (the target's dims but its batch dim), keeping sample and batch."""
    keep = values.dim() - target_dims + 1
    return values.flatten(start_dim=keep).sum(-1)
