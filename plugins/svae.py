"""Hyperspherical VAE (Davidson, Falorsi, De Cao, Kipf & Tomczak 2018): codes on the unit sphere S^{m-1} in R^m,
a von Mises-Fisher posterior vMF(mu(x), kappa(x)) and the uniform prior on the sphere.

- Density: vMF(z; mu, kappa) = C_m(kappa) exp(kappa mu^T z), with
  C_m(kappa) = kappa^{m/2-1} / ((2 pi)^{m/2} I_{m/2-1}(kappa)).
- KL to the uniform prior, exact: kappa I_{m/2}(kappa) / I_{m/2-1}(kappa) + log C_m(kappa) + log |S^{m-1}|, with
  |S^{m-1}| = 2 pi^{m/2} / Gamma(m/2). It does not split over the latent's coordinates, so the model answers
  ``example_kl`` (closed form) and ``latent_kl`` is None.
- Sampling (Wood 1994, as the paper): w = mu^T z by rejection from the envelope built on eps ~ Beta((m-1)/2,
  (m-1)/2) (drawn as a ratio of chi-square variables, so every draw comes from a seeded ``torch.Generator``), a
  uniform direction v on S^{m-2}, and the Householder reflection taking e_1 to mu. Gradients reach kappa through
  w = (1 - (1 + b) eps) / (1 - (1 - b) eps) with the accepted eps held fixed, and mu through the reflection: the
  reparameterised part of the rejection-sampling gradient. The correction term of Naesseth et al. (2017) is
  left out, as the authors' PyTorch implementation leaves it out.
- Bessel functions: scipy.special.ive (exponentially scaled, float64) with its derivative
  d ive(v, k)/dk = ive(v - 1, k) - ive(v, k) (v + k) / k, as the authors' implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.distributions import Posterior, generator_kwargs
from zoo.errors import ConfigError
from zoo.model import condition_vector


class _ScaledBessel(torch.autograd.Function):
    """ive(v, kappa) = I_v(kappa) exp(-kappa) for a fixed order v, differentiable in kappa."""

    @staticmethod
    def forward(ctx: Any, kappa: Tensor, order: float) -> Tensor:
        from scipy.special import ive

        ctx.order = order
        ctx.save_for_backward(kappa)
        values = ive(order, kappa.detach().double().cpu().numpy())
        return torch.from_numpy(values).to(device=kappa.device, dtype=kappa.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (kappa,) = ctx.saved_tensors
        v = ctx.order
        slope = _ScaledBessel.apply(kappa, v - 1) - _ScaledBessel.apply(kappa, v) * (v + kappa) / kappa
        return grad * slope, None


def log_bessel_iv(order: float, kappa: Tensor) -> Tensor:
    """log I_order(kappa), computed as log ive(order, kappa) + kappa (no overflow for large kappa)."""
    return torch.log(_ScaledBessel.apply(kappa, order)) + kappa


def log_sphere_area(m: int) -> float:
    """log |S^{m-1}| = log (2 pi^{m/2} / Gamma(m/2)), the surface area of the unit sphere in R^m."""
    return math.log(2) + 0.5 * m * math.log(math.pi) - math.lgamma(0.5 * m)


class VonMisesFisher(Posterior):
    """A batch of von Mises-Fisher distributions on S^{m-1}: unit ``mean_direction`` (batch, m), ``concentration``
    (batch,). ``mode()`` is the mean direction; ``log_prob`` and the KL to the uniform prior are exact."""

    has_density = True

    def __init__(self, mean_direction: Tensor, concentration: Tensor) -> None:
        self.mean_direction = mean_direction
        self.concentration = concentration

    @property
    def dim(self) -> int:
        return self.mean_direction.shape[-1]

    def mode(self) -> Tensor:
        return self.mean_direction

    def log_normaliser(self) -> Tensor:
        """log C_m(kappa), (batch,), float64."""
        m, kappa = self.dim, self.concentration.double()
        return (m / 2 - 1) * torch.log(kappa) - (m / 2) * math.log(2 * math.pi) - log_bessel_iv(m / 2 - 1, kappa)

    def mean_resultant_length(self) -> Tensor:
        """E[mu^T z] = I_{m/2}(kappa) / I_{m/2-1}(kappa), (batch,), float64."""
        m, kappa = self.dim, self.concentration.double()
        return torch.exp(log_bessel_iv(m / 2, kappa) - log_bessel_iv(m / 2 - 1, kappa))

    def kl_to_uniform(self) -> Tensor:
        """KL(vMF(mu, kappa) || uniform on S^{m-1}) per example, exact."""
        kappa = self.concentration.double()
        kl = kappa * self.mean_resultant_length() + self.log_normaliser() + log_sphere_area(self.dim)
        return kl.to(torch.promote_types(self.concentration.dtype, torch.float32))

    def log_prob(self, z: Tensor) -> Tensor:
        """log vMF(z; mu, kappa) for unit vectors z (..., batch, m)."""
        kappa = self.concentration.double()
        value = self.log_normaliser() + kappa * (z.double() * self.mean_direction.double()).sum(-1)
        return value.to(torch.promote_types(z.dtype, torch.float32))

    def _sample_w(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        """mu^T z by Wood's rejection sampler: (*shape, batch), float64, differentiable in kappa."""
        m = self.dim
        kappa = self.concentration.double().expand(*shape, -1)
        root = torch.sqrt(4 * kappa ** 2 + (m - 1) ** 2)
        b = (-2 * kappa + root) / (m - 1)
        a = ((m - 1) + 2 * kappa + root) / 4
        d = 4 * a * b / (1 + b) - (m - 1) * math.log(m - 1)
        eps = torch.zeros_like(kappa)
        todo = torch.ones_like(kappa, dtype=torch.bool)
        options = {"device": kappa.device, "dtype": torch.float64, **generator_kwargs(generator)}
        with torch.no_grad():
            while todo.any():
                chi_a = torch.randn((*kappa.shape, m - 1), **options).pow(2).sum(-1)
                chi_b = torch.randn((*kappa.shape, m - 1), **options).pow(2).sum(-1)
                proposal = chi_a / (chi_a + chi_b)  # Beta((m-1)/2, (m-1)/2)
                u = torch.rand(kappa.shape, **options)
                t = 2 * a * b / (1 - (1 - b) * proposal)
                accept = todo & ((m - 1) * torch.log(t) - t + d >= torch.log(u))
                eps = torch.where(accept, proposal, eps)
                todo = todo & ~accept
        return (1 - (1 + b) * eps) / (1 - (1 - b) * eps)

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        shape = () if num_samples is None else (num_samples,)
        m = self.dim
        w = self._sample_w(shape, generator).unsqueeze(-1)
        mu = self.mean_direction.double()
        v = torch.randn((*shape, *mu.shape[:-1], m - 1), device=mu.device, dtype=torch.float64,
                        **generator_kwargs(generator))
        v = v / v.norm(dim=-1, keepdim=True)
        x = torch.cat([w, torch.sqrt((1 - w ** 2).clamp_min(0)) * v], -1)  # around e_1
        e1 = torch.zeros_like(mu)
        e1[..., 0] = 1
        u = e1 - mu
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # mu = e_1: u = 0, the reflection is the identity
        z = x - 2 * (x * u).sum(-1, keepdim=True) * u
        return z.to(self.mean_direction.dtype)


@dataclass
class SVAEConfig(VAEConfig):
    """latent_dim is m: codes lie on the unit sphere S^{m-1} in R^m."""

    flat_latent_only: ClassVar[str] = "the hyperspherical latent is a flat vector"
    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("latent_dim",))
        if self.latent_dim < 2:
            raise ConfigError(f"a sphere S^(m-1) needs latent_dim m >= 2, got {self.latent_dim}")


class SVAEModel(VAEModel):
    """The VAE's networks; the encoder outputs a direction (m numbers, normalised) and a concentration."""

    @staticmethod
    def encoder_outputs(config: SVAEConfig) -> int:
        return config.latent_dim + 1

    def encode(self, x: Tensor, y: Tensor | int | None = None) -> VonMisesFisher:
        cfg = self.config
        out = self.encoder(x, condition_vector(y, cfg.num_classes, len(x), x.device, x.dtype))
        direction = F.normalize(out[:, :cfg.latent_dim], dim=-1)
        concentration = F.softplus(out[:, cfg.latent_dim]) + 1  # kappa > 1, as the paper's implementation
        return VonMisesFisher(direction, concentration)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """The uniform prior on S^{m-1}: -log |S^{m-1}| for every code (leading sample dims kept)."""
        return torch.full(z.shape[:-1], -log_sphere_area(self.config.latent_dim), device=z.device,
                          dtype=torch.promote_types(z.dtype, torch.float32))

    def latent_kl(self, posterior: Posterior) -> Tensor | None:
        """None: the KL to the uniform prior on the sphere does not split over coordinates (see example_kl)."""
        return None

    def example_kl(self, posterior: VonMisesFisher) -> Tensor:
        return posterior.kl_to_uniform()

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` draws from the uniform distribution on the sphere (normalised standard normals)."""
        ref = next(self.parameters())
        z = torch.randn((n, *self.latent_shape), generator=generator, device=ref.device, dtype=ref.dtype)
        return self.decode(F.normalize(z, dim=-1), y)


class SVAEVariant(VAEVariant):
    """S-VAE: L = E_vMF[-log p(x|z)] + KL(vMF(mu, kappa) || U(S^{m-1})) (exact)."""

    name = "svae"
    config_class = SVAEConfig
    model_class = SVAEModel
    description = "Hyperspherical VAE (Davidson et al. 2018): von Mises-Fisher posterior, uniform prior on the sphere"


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(SVAEVariant())
