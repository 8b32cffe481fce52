"""Maximum mean discrepancy between two samples, the divergence of the WAE-MMD and InfoVAE-MMD objectives.

    MMD^2_k(P, Q) = E k(a, a') + E k(b, b') - 2 E k(a, b),     a, a' ~ P,  b, b' ~ Q,

estimated without bias by the U-statistic (Gretton et al. 2012, eq. 3): the within-sample means leave out
the diagonal pairs (a_i, a_i). Kernels, with C = 2 d sigma^2 for codes of dimension d and prior scale sigma
(Tolstikhin et al. 2018, section 4):

- ``"imq"``: inverse multiquadratic, k(a, b) = C / (C + ||a - b||^2) (the WAE paper's choice: heavy tails
  keep gradients alive for codes far from the prior);
- ``"rbf"``: Gaussian, k(a, b) = exp(-||a - b||^2 / C).

Written here because no maintained PyTorch library exposes this estimator on its own (torchmetrics' kernel
inception distance is a polynomial-kernel MMD over Inception features); the zoo's built-ins and the example
plugin share this one copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ConfigError

KERNELS = ("imq", "rbf")


def check_kernel(kernel: str) -> None:
    """A ConfigError unless ``kernel`` is one of :data:`KERNELS` (configs check it when they are made)."""
    if kernel not in KERNELS:
        raise ConfigError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")


def kernel_matrix(a: Tensor, b: Tensor, kernel: str = "imq", scale: float = 1.0) -> Tensor:
    """k(a_i, b_j) for codes a (n, d) and b (m, d): (n, m)."""
    check_kernel(kernel)
    c = 2.0 * a.shape[-1] * scale ** 2
    squared = torch.cdist(a, b).pow(2)
    return c / (c + squared) if kernel == "imq" else torch.exp(-squared / c)


def mmd2(a: Tensor, b: Tensor, kernel: str = "imq", scale: float = 1.0) -> Tensor:
    """Unbiased estimate of MMD^2 between samples ``a`` and ``b`` of the same size n >= 2, (n, d) each."""
    n = a.shape[0]
    if n < 2 or b.shape[0] != n:
        raise ValueError(f"the unbiased MMD needs two samples of one size n >= 2, got {a.shape[0]} and {b.shape[0]}")
    off_diagonal = 1.0 - torch.eye(n, device=a.device, dtype=a.dtype)
    within_a = (kernel_matrix(a, a, kernel, scale) * off_diagonal).sum() / (n * (n - 1))
    within_b = (kernel_matrix(b, b, kernel, scale) * off_diagonal).sum() / (n * (n - 1))
    return within_a + within_b - 2.0 * kernel_matrix(a, b, kernel, scale).mean()
