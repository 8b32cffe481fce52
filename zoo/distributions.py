"""The Gaussian posterior q(z|x) = N(mean, diag(exp(logvar))) that VAE-family encoders return."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# exp(logvar) is the variance. Clamping keeps exp() finite in fp32/bf16 and keeps sigma above ~2e-9;
# float16 overflows above 65504 = exp(11.09), so its upper bound is LOGVAR_MAX_FP16.
LOGVAR_MIN = -40.0
LOGVAR_MAX = 20.0
LOGVAR_MAX_FP16 = 11.0


class DiagonalGaussian:
    """A batch of diagonal Gaussians; ``mean`` and ``logvar`` have shape (batch, latent_dim).

    ``encode`` returns this object rather than a sample, so deterministic use (``.mean``) and
    stochastic use (``.rsample()``) stay apart and the caller chooses.
    """

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = mean
        top = LOGVAR_MAX_FP16 if logvar.dtype == torch.float16 else LOGVAR_MAX
        self.logvar = logvar.clamp(LOGVAR_MIN, top)

    @property
    def variance(self) -> Tensor:
        return self.logvar.exp()

    @property
    def stddev(self) -> Tensor:
        return (0.5 * self.logvar).exp()

    def rsample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample z = mean + stddev * eps; shape (num_samples, batch, d) if given."""
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        eps = torch.randn(shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.stddev * eps

    def kl_standard_normal(self) -> Tensor:
        """Analytic KL(q || N(0, I)) per latent, shape (batch, d), computed in float32 or wider."""
        mean, logvar = _at_least_fp32(self.mean), _at_least_fp32(self.logvar)
        return 0.5 * (logvar.exp() + mean.pow(2) - 1.0 - logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over latent dims; z may carry leading sample dims."""
        mean, logvar = _at_least_fp32(self.mean), _at_least_fp32(self.logvar)
        z = _at_least_fp32(z)
        return -0.5 * (((z - mean) ** 2) * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)

    def __repr__(self) -> str:
        return f"DiagonalGaussian(batch={self.mean.shape[0]}, latent_dim={self.mean.shape[-1]})"


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dim."""
    z = _at_least_fp32(z)
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
