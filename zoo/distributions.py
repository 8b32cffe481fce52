"""Posterior kinds: what a zoo model's ``encode`` returns, one small protocol for every latent.

Every kind answers the same questions, so a tool never needs to know which model it holds:

- ``mode()``: the most likely code, (batch, *latent_shape): the point a tool decodes, interpolates and plots;
- ``sample(num_samples=None, generator=None)``: a draw, (batch, *latent_shape) or with a leading
  ``num_samples`` dimension; seeded by ``generator``;
- ``shape`` / ``latent_shape``: (batch, *latent_shape) and the per-example latent shape;
- ``has_density``: whether the posterior has a density: ``sample_and_log_prob`` gives log q(z|x) of its draws;
- ``closed_form_kl``: whether ``kl()`` gives KL(q || N(0, I)) per latent element in closed form (a model
  whose prior is not the standard normal says which KL applies: :meth:`zoo.ZooModel.latent_kl`).

Kinds:

- :class:`DiagonalGaussian` (VAE family): N(mean, diag(exp(logvar))) over a latent of any shape. Its
  ``sample`` is reparameterised (gradients flow to mean and logvar); ``kl()`` is the analytic KL to the
  standard normal prior per latent element and ``log_prob(z)`` the density summed over the latent.
- :class:`FlowPosterior` (normalising-flow posteriors): a diagonal Gaussian pushed through invertible
  transforms; log q(z|x) of a draw includes the flow's log-determinant, and there is no closed-form KL.
- :class:`PointMass` (deterministic autoencoders): the code itself; every sample is the code.
- :class:`QuantizedCode` (VQ models): the quantised continuous code, the code indices and the codebook.

A plain tensor returned by ``encode`` is read as a point mass (:func:`as_posterior`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from zoo.gaussian_draw import DrawAndKL, fused_draw_applies

# exp(logvar) is the variance. Clamping keeps exp() finite in fp32/bf16 and keeps sigma above ~2e-9;
# float16 overflows above 65504 = exp(11.09), so its upper bound is LOGVAR_MAX_FP16.
LOGVAR_MIN = -40.0
LOGVAR_MAX = 20.0
LOGVAR_MAX_FP16 = 11.0


class Posterior:
    """Base class of the posterior kinds: a batch of distributions over codes of one latent shape."""

    #: True when the kind has a density: ``sample_and_log_prob`` (and, where it can be evaluated, ``log_prob(z)``).
    has_density: ClassVar[bool] = False
    #: True when ``kl()`` gives KL(q || N(0, I)) per latent element in closed form.
    closed_form_kl: ClassVar[bool] = False

    def mode(self) -> Tensor:
        """The most likely code, (batch, *latent_shape)."""
        raise NotImplementedError

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """A draw of shape (batch, *latent_shape), or (num_samples, batch, *latent_shape) if given."""
        code = self.mode()
        return code if num_samples is None else code.expand(num_samples, *code.shape)

    def sample_and_log_prob(self, num_samples: int | None = None,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A draw (as :meth:`sample`) and log q(z|x) of it, summed over the latent: what the ELBO, the IWAE
        bound and the importance-sampled NLL need. A flow posterior knows the density of its own draws
        without inverting the flow."""
        z = self.sample(num_samples, generator=generator)
        return z, self.log_prob(z)

    @property
    def shape(self) -> torch.Size:
        """(batch, *latent_shape)."""
        return self.mode().shape

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one example's code: (D,) for a flat latent, (C, h, w) for a spatial one."""
        return tuple(self.shape[1:])

    def kl(self) -> Tensor:
        """KL(q(z|x) || N(0, I)) per latent element, (batch, *latent_shape), in nats, where ``closed_form_kl``.
        Tools ask the model (:meth:`zoo.ZooModel.latent_kl`), whose prior need not be N(0, I)."""
        raise NotImplementedError(f"a {type(self).__name__} has no closed-form KL to N(0, I)")

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
    closed_form_kl = True

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

    def sample_and_kl(self) -> tuple[Tensor, Tensor]:
        """One reparameterised draw (:meth:`sample`) and KL(q || N(0, I)) summed over the latent, (batch,): the
        same numbers as those two calls, with fewer operations per training step where
        :func:`zoo.gaussian_draw.fused_draw_applies` (one autograd node, :class:`zoo.gaussian_draw.DrawAndKL`)."""
        if not fused_draw_applies(self.mean):
            kl = self.kl()
            return self.sample(), kl.sum(-1) if kl.dim() == 2 else kl.flatten(1).sum(-1)
        eps = torch.randn(self.mean.shape, device=self.mean.device, dtype=self.mean.dtype)
        return DrawAndKL.apply(self.mean, self.logvar, eps)

    def kl(self) -> Tensor:
        """Analytic KL(q || N(0, I)) per latent element, computed in float32 or wider."""
        mean, logvar = _at_least_fp32(self.mean), _at_least_fp32(self.logvar)
        return 0.5 * (logvar.exp() + mean.pow(2) - 1.0 - logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        mean, logvar = _at_least_fp32(self.mean), _at_least_fp32(self.logvar)
        z = _at_least_fp32(z)
        density = -0.5 * (((z - mean) ** 2) * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
        return _sum_latent(density, self.mean.dim() - 1)


class FlowPosterior(Posterior):
    """q(z|x) of a normalising flow: z = f_L(...f_1(z0)), z0 ~ ``base`` (a :class:`DiagonalGaussian`), so
    log q(z|x) = log q0(z0|x) - sum_l log|det df_l/dz_{l-1}| (Rezende & Mohamed 2015, eq. 6).

    ``transforms`` are ``torch.distributions.Transform`` objects (Pyro's planar, radial and
    autoregressive flows are), already conditioned on ``x`` where they take a context. Draws come with
    their density (:meth:`sample_and_log_prob`); ``log_prob(z)`` of an arbitrary ``z`` would need the
    inverse, which planar and radial flows do not have in closed form, so it is not offered. ``mode()``
    is the flow of the base mean: the code tools decode (not necessarily the density's maximum).
    """

    has_density = True

    def __init__(self, base: DiagonalGaussian, transforms: list[torch.distributions.Transform]) -> None:
        self.base = base
        self.transforms = transforms

    def _flow(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """(z_L, sum of log|det J| over the transforms), the latter with z0's sample and batch dims."""
        z, log_det = z0, torch.zeros(z0.shape[:-1], device=z0.device, dtype=_at_least_fp32(z0).dtype)
        for transform in self.transforms:
            nxt = transform(z)
            log_det = log_det + transform.log_abs_det_jacobian(z, nxt)
            z = nxt
        return z, log_det

    def mode(self) -> Tensor:
        return self._flow(self.base.mean)[0]

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_and_log_prob(num_samples, generator)[0]

    def sample_and_log_prob(self, num_samples: int | None = None,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z0 = self.base.sample(num_samples, generator=generator)
        z, log_det = self._flow(z0)
        return z, self.base.log_prob(z0) - log_det

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError("a flow posterior gives log q(z|x) only for its own draws: use "
                                  "sample_and_log_prob() (planar and radial flows have no closed-form inverse)")


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
    raise TypeError(f"encode() must return a zoo.distributions.Posterior (DiagonalGaussian, FlowPosterior, PointMass, "
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
