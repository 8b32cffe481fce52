"""The KL of a factorised Gaussian VAE split into index-code MI, total correlation and dimension-wise KL.

Chen et al. 2018 (beta-TCVAE), eq. 2: with q(z) the aggregate posterior of N training examples,

    E_x KL(q(z|x) || p(z)) = I_q(x; z)                                        (index-code MI)
                           + KL(q(z) || prod_j q(z_j))                        (total correlation)
                           + sum_j KL(q(z_j) || p(z_j))                       (dimension-wise KL)

and each term is an expectation over z ~ q(z|x) of a difference of log-densities. log q(z) and
log q(z_j) are sums over the whole data set; a minibatch of M estimates them (Section 4.1):

- minibatch-weighted sampling (``"mws"``): log q(z_i) ~ logsumexp_m log q(z_i|x_m) - log(N M);
- minibatch stratified sampling (``"mss"``, Appendix C): the batch stands for a stratified draw with
  weights 1/N for the example itself, (N - M + 1) / (N (M - 1)) for one other and 1 / (M - 1) for the
  remaining M - 2 (they sum to 1). The authors' ``log_importance_weight_matrix`` strides by the row length
  and so fills columns instead of the diagonal (rtqichen/beta-tcvae pull request #1); this follows the paper.
- the whole data set in the batch (``"full"``, N = M): log q(z_i) = logsumexp_m log q(z_i|x_m) - log N,
  exact for that set; cards use it on the test images.

Written here because no maintained library has it: pythae and disentanglement_lib keep it inside their
models' losses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zoo.distributions import DiagonalGaussian

ESTIMATORS = ("mws", "mss", "full")


def pairwise_log_density(z: Tensor, posterior: DiagonalGaussian) -> Tensor:
    """log q(z_i,j | x_m) for every draw i, example m and dimension j: a (B, B, D) tensor (flat latents)."""
    mean, logvar = posterior.mean.unsqueeze(0), posterior.logvar.unsqueeze(0)
    z = z.unsqueeze(1)
    return -0.5 * ((z - mean).pow(2) * torch.exp(-logvar) + logvar + math.log(2 * math.pi))


def stratified_log_weights(batch_size: int, dataset_size: int, like: Tensor) -> Tensor:
    """The (M, M) log-weights of minibatch stratified sampling: row i weighs example i by 1/N, example i + 1
    (cyclically) by (N - M + 1) / (N (M - 1)), and the other M - 2 by 1 / (M - 1)."""
    m, n = batch_size - 1, dataset_size
    weights = torch.full((batch_size, batch_size), 1.0 / m, dtype=like.dtype, device=like.device)
    weights.fill_diagonal_(1.0 / n)
    rows = torch.arange(batch_size, device=like.device)
    weights[rows, (rows + 1) % batch_size] = (n - m) / (n * m)
    return weights.log()


def kl_decomposition(z: Tensor, posterior: DiagonalGaussian, dataset_size: int,
                     estimator: str = "mws") -> dict[str, Tensor]:
    """Per-draw estimates (each of shape (B,)) of the index-code ``mutual_information``, the
    ``total_correlation`` and the ``dimension_kl`` at draws ``z`` (B, D) of ``posterior`` (B examples of a
    data set of ``dataset_size``), against the prior N(0, I). Their sum is log q(z|x) - log p(z) exactly."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, not {estimator!r}")
    batch = z.shape[0]
    if dataset_size < batch or (estimator == "full" and dataset_size != batch):
        raise ValueError(f"dataset_size ({dataset_size}) must be the number of training examples, at least the batch "
                         f"({batch}); the 'full' estimator takes the whole data set as the batch")
    pairs = pairwise_log_density(z, posterior)  # (B, B, D)
    log_q_given_x = pairs.diagonal(dim1=0, dim2=1).sum(0)  # log q(z_i | x_i)
    if estimator == "mss" and batch > 1:
        log_w = stratified_log_weights(batch, dataset_size, z)
    else:
        scale = batch if estimator == "full" else batch * dataset_size
        log_w = torch.full((batch, batch), -math.log(scale), dtype=z.dtype, device=z.device)
    log_q = torch.logsumexp(log_w + pairs.sum(-1), dim=1)
    log_q_marginals = torch.logsumexp(log_w.unsqueeze(-1) + pairs, dim=1).sum(-1)
    log_p = (-0.5 * (z.pow(2) + math.log(2 * math.pi))).sum(-1)
    return {"mutual_information": log_q_given_x - log_q, "total_correlation": log_q - log_q_marginals,
            "dimension_kl": log_q_marginals - log_p}


def dataset_kl_decomposition(model: torch.nn.Module, x: Tensor, *, seed: int = 0) -> dict[str, float]:
    """The three terms on a whole data set ``x`` (one draw per example; the ``"full"`` estimator: the exact
    aggregate posterior of that set), averaged over its examples; for cards, on the test images."""
    device = next(model.parameters()).device
    with torch.no_grad():
        posterior = model.encode(x.to(device))
        z = posterior.sample(generator=torch.Generator(device=device).manual_seed(seed))
        terms = kl_decomposition(z, posterior, len(x), "full")
    return {name: float(value.mean()) for name, value in terms.items()}
