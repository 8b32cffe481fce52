"""Posterior kinds: what a zoo model's ``encode`` returns, one small protocol for every latent.

Every kind answers the same questions, so a tool never needs to know which model it holds:

- ``mode()``: the most likely code, (batch, *latent_shape): the point a tool decodes, interpolates and plots;
- ``sample(num_samples=None, generator=None)``: a draw, (batch, *latent_shape) or with a leading
  ``num_samples`` dimension; seeded by ``generator``;
- ``shape`` / ``latent_shape``: (batch, *latent_shape) and the per-example latent shape;
- ``has_density``: whether ``kl()`` and ``log_prob(z)`` exist.

Kinds:

- :class:`DiagonalGaussian` (VAE family): N(mean, diag(exp(logvar))) over a latent of any shape. Its
  ``sample`` is reparameterised (gradients flow to mean and logvar); ``kl()`` is the analytic KL to the
  standard normal prior per latent element and ``log_prob(z)`` the density summed over the latent.
- :class:`PointMass` (deterministic autoencoders): the code itself; every sample is the code.
- :class:`QuantizedCode` (VQ models): the quantised continuous code, the code indices and the codebook.

A plain tensor returned by ``encode`` is read as a point mass (:func:`as_posterior`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

# exp(logvar) is the variance. Clamping keeps exp() finite in fp32/bf16 and keeps sigma above ~2e-9;
# float16 overflows above 65504 = exp(11.09), so its upper bound is LOGVAR_MAX_FP16.
LOGVAR_MIN = -40.0
LOGVAR_MAX = 20.0
LOGVAR_MAX_FP16 = 11.0


class Posterior:
    """Base class of the posterior kinds: a batch of distributions over codes of one latent shape."""

    #: True when the kind defines ``kl()`` and ``log_prob(z)``.
    has_density: ClassVar[bool] = False

    def mode(self) -> Tensor:
        """The most likely code, (batch, *latent_shape)."""
        raise NotImplementedError

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """A draw of shape (batch, *latent_shape), or (num_samples, batch, *latent_shape) if given."""
        code = self.mode()
        return code if num_samples is None else code.expand(num_samples, *code.shape)

    @property
    def shape(self) -> torch.Size:
        """(batch, *latent_shape)."""
        return self.mode().shape

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one example's code: (D,) for a flat latent, (C, h, w) for a spatial one."""
        return tuple(self.shape[1:])

    def kl(self) -> Tensor:
        """KL(q(z|x) || p(z)) per latent element, (batch, *latent_shape), in nats."""
        raise NotImplementedError(f"a {type(self).__name__} has no density: no KL to a prior")

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over the latent; ``z`` may carry leading sample dims."""
        raise NotImplementedError(f"a {type(self).__name__} has no density: no log q(z|x)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch={self.shape[0]}, latent_shape={self.latent_shape})"


def generator_kwargs(generator: torch.Generator | None) -> dict[str, torch.Generator]:
    """``{"generator": generator}``, or nothing for the default generator: torch.compile traces
    ``torch.randn(shape, generator=None)`` with a dynamic batch size as an error, ``torch.randn(shape)`` not
    (the draws are the same)."""
    return {} if generator is None else {"generator": generator}


class DiagonalGaussian(Posterior):
    """A batch of diagonal Gaussians; ``mean`` and ``logvar`` have shape (batch, *latent_shape).

    ``encode`` returns this object rather than a sample, so deterministic use (``mode()``, the mean)
    and stochastic use (``sample()``) stay apart and the caller chooses.
    """

    has_density = True

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} must have one shape")
        self.mean = mean
        top = LOGVAR_MAX_FP16 if logvar.dtype == torch.float16 else LOGVAR_MAX
        self.logvar = logvar.clamp(LOGVAR_MIN, top)

    @property
    def variance(self) -> Tensor:
        return self.logvar.exp()

    @property
    def stddev(self) -> Tensor:
        return (0.5 * self.logvar).exp()

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample z = mean + stddev * eps (gradients reach mean and logvar)."""
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype, **generator_kwargs(generator))
        return self.mean + self.stddev * eps

    def kl(self) -> Tensor:
        """Analytic KL(q || N(0, I)) per latent element, computed in float32 or wider."""
        mean, logvar = _at_least_fp32(self.mean), _at_least_fp32(self.logvar)
        return 0.5 * (logvar.exp() + mean.pow(2) - 1.0 - logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        mean, logvar = _at_least_fp32(self.mean), _at_least_fp32(self.logvar)
        z = _at_least_fp32(z)
        density = -0.5 * (((z - mean) ** 2) * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
        return _sum_latent(density, self.mean.dim() - 1)


class PointMass(Posterior):
    """A deterministic code: the encoder's output itself."""

    def __init__(self, code: Tensor) -> None:
        self.code = code

    def mode(self) -> Tensor:
        return self.code


class QuantizedCode(Posterior):
    """A VQ model's code: ``quantized`` (batch, D, h, w) holds the codebook vector at every position,
    ``indices`` (batch, h, w) which vector it is, ``codebook`` (K, D) every vector.

    ``quantized`` carries the straight-through gradient to the encoder when made in training;
    ``mode()`` and every sample are ``quantized``. ``encoded`` is the encoder's continuous output before
    quantisation (the commitment term compares the two).
    """

    def __init__(self, quantized: Tensor, indices: Tensor, codebook: Tensor, encoded: Tensor) -> None:
        self.quantized = quantized
        self.indices = indices
        self.codebook = codebook
        self.encoded = encoded

    def mode(self) -> Tensor:
        return self.quantized


def as_posterior(encoded: Posterior | Tensor) -> Posterior:
    """What ``encode`` returned, as a :class:`Posterior` (a bare tensor is a :class:`PointMass`)."""
    if isinstance(encoded, Posterior):
        return encoded
    if isinstance(encoded, Tensor):
        return PointMass(encoded)
    raise TypeError(f"encode() must return a zoo.distributions.Posterior (DiagonalGaussian, PointMass, "
                    f"QuantizedCode) or a tensor, got {type(encoded).__name__}")


def standard_normal_log_prob(z: Tensor, latent_dims: int = 1) -> Tensor:
    """log N(z; 0, I) summed over the last ``latent_dims`` dims (1 for a flat latent, 3 for (C, h, w))."""
    z = _at_least_fp32(z)
    return _sum_latent(-0.5 * (z.pow(2) + math.log(2 * math.pi)), latent_dims)


def _sum_latent(values: Tensor, latent_dims: int) -> Tensor:
    """Sum over the last ``latent_dims`` dims, keeping sample and batch dims."""
    return values.sum(dim=tuple(range(-latent_dims, 0)))


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
