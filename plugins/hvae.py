"""Hamiltonian VAE (Caterini, Doucet & Sejdinovic 2018): the encoder's Gaussian draw is moved by K tempered
leapfrog steps of Hamiltonian dynamics towards the posterior p(z|x), and the bound accounts for it exactly.

With z0 ~ q0(z|x) = N(mu(x), diag sigma(x)^2), gamma0 ~ N(0, I), rho0 = gamma0 / sqrt(beta0) and the
potential U(z) = -log p(x, z), each step k = 1..K is

    rho <- rho - (eps / 2) * grad U(z);  z <- z + eps * rho;  rho <- rho - (eps / 2) * grad U(z)
    rho_k = sqrt(beta_{k-1} / beta_k) * rho

with the quadratic tempering schedule 1 / sqrt(beta_k) = (1 - 1 / sqrt(beta0)) (k / K)^2 + 1 / sqrt(beta0), so
beta_K = 1 (the paper's fixed schedule). Leapfrog steps preserve volume and the tempering scales the momentum
by (beta0 / beta_K)^(d/2) in all, so the pair (z_K, rho_K) has density q0(z0|x) N(gamma0; 0, I), and

    ELBO = E[log p(x, z_K) + log N(rho_K; 0, I) - log q0(z0|x) - log N(gamma0; 0, I)].

The step sizes eps (one per latent) and beta0 are learned with the rest. The momentum is an auxiliary
variable: ``sample_and_log_prob`` returns z_K and log q(z_K, rho_K|x) - log N(rho_K; 0, I), with which
log p(x|z) + log p(z) - log q is an importance weight for p(x) (its expectation over the draws is p(x)). The
zoo's ELBO, IS-NLL and Monte-Carlo KL therefore apply unchanged; the loss term is ``kl_mc``. Each step needs
grad_z log p(x, z), so the posterior holds the image and the decoder; in training the gradients go through
the dynamics (second derivatives of the decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from zoo_plugins.vae import MONTE_CARLO_KL, VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.distributions import DiagonalGaussian, Posterior, generator_kwargs, standard_normal_log_prob
from zoo.errors import ConfigError


@dataclass
class HVAEConfig(VAEConfig):
    flat_latent_only: ClassVar[str] = "the Hamiltonian VAE moves a flat latent"
    #: K, the tempered leapfrog steps.
    leapfrog_steps: int = 3
    #: Initial leapfrog step size eps (learned, one per latent).
    step_size: float = 0.01
    #: Initial inverse temperature beta0 in (0, 1) (learned).
    beta_zero: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("leapfrog_steps", "step_size", "beta_zero"))
        if not self.beta_zero < 1:
            raise ConfigError(f"beta_zero is the initial inverse temperature and must lie in (0, 1), "
                              f"got {self.beta_zero}")


def tempering(beta_zero: Tensor, steps: int) -> list[Tensor]:
    """beta_0..beta_K of the quadratic schedule 1 / sqrt(beta_k) = (1 - 1 / sqrt(beta0)) (k/K)^2 + 1 / sqrt(beta0)."""
    inv_root = 1.0 / beta_zero.sqrt()
    return [1.0 / ((1 - inv_root) * (k / steps) ** 2 + inv_root) ** 2 for k in range(steps + 1)]


class HamiltonianPosterior(Posterior):
    """The HVAE's q: a Gaussian draw moved by tempered leapfrog steps on ``log_joint`` (log p(x, z), per example).

    ``mode()`` runs the dynamics from the Gaussian's mean with zero momentum (a deterministic code).
    ``log_prob(z)`` of an arbitrary code has no closed form (the marginal over the momentum)."""

    has_density = True

    def __init__(self, base: DiagonalGaussian, log_joint: Callable[[Tensor], Tensor], step_sizes: Tensor,
                 betas: list[Tensor]) -> None:
        self.base = base
        self.log_joint = log_joint
        self.step_sizes = step_sizes
        self.betas = betas

    def _grad_log_joint(self, z: Tensor, differentiable: bool) -> Tensor:
        if not differentiable or not z.requires_grad:  # a frozen encoder's draw needs no graph of its own
            z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.log_joint(z).sum(), z, create_graph=differentiable)
        return grad

    def dynamics(self, z: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:
        """(z_K, rho_K) from (z0, rho0); differentiable (second order) when autograd is on, detached otherwise.

        The steps need grad_z log p(x, z) even when the caller has autograd off (evaluation) or runs in
        ``torch.inference_mode`` (the explorer): they run on plain copies with autograd on."""
        differentiable = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        eps, betas = self.step_sizes, self.betas
        with torch.inference_mode(False), torch.enable_grad():
            if not differentiable:  # inference tensors cannot enter autograd: work on plain copies
                z, rho, eps = z.detach().clone(), rho.detach().clone(), eps.detach().clone()
                betas = [b.detach().clone() for b in betas]
            for k in range(1, len(betas)):
                rho = rho + 0.5 * eps * self._grad_log_joint(z, differentiable)
                z = z + eps * rho
                rho = rho + 0.5 * eps * self._grad_log_joint(z, differentiable)
                rho = rho * (betas[k - 1] / betas[k]).sqrt()
        return (z, rho) if differentiable else (z.detach(), rho.detach())

    def mode(self) -> Tensor:
        return self.dynamics(self.base.mean, torch.zeros_like(self.base.mean))[0]

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_and_log_prob(num_samples, generator)[0]

    def sample_and_log_prob(self, num_samples: int | None = None,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """z_K and log q(z_K, rho_K|x) - log N(rho_K; 0, I) = log q0(z0|x) + log N(gamma0) - log N(rho_K)."""
        z0 = self.base.sample(num_samples, generator=generator)
        gamma0 = torch.randn(z0.shape, device=z0.device, dtype=z0.dtype, **generator_kwargs(generator))
        z, rho = self.dynamics(z0, gamma0 / self.betas[0].sqrt())
        log_q = self.base.log_prob(z0) + standard_normal_log_prob(gamma0) - standard_normal_log_prob(rho)
        return z, log_q

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError("a Hamiltonian posterior gives log q only for its own draws (with their momentum): "
                                  "use sample_and_log_prob()")


class HVAEModel(VAEModel):
    """The VAE's encoder and decoder, the leapfrog step sizes and the initial inverse temperature."""

    def __init__(self, config: HVAEConfig) -> None:
        super().__init__(config)
        self.log_step_size = nn.Parameter(torch.full((config.latent_dim,), math.log(config.step_size)))
        self.beta_zero_logit = nn.Parameter(torch.tensor(math.log(config.beta_zero / (1 - config.beta_zero))))

    def encode(self, x: Tensor, y: Tensor | int | None = None) -> HamiltonianPosterior:
        base = super().encode(x, y)

        def log_joint(z: Tensor) -> Tensor:
            image = x.clone() if x.is_inference() else x  # called outside inference mode (see dynamics)
            return -self.reconstruction_nll(image, z, y) + self.prior_log_prob(z)

        betas = tempering(torch.sigmoid(self.beta_zero_logit), self.config.leapfrog_steps)
        return HamiltonianPosterior(base, log_joint, self.log_step_size.exp(), betas)


class HVAEVariant(VAEVariant):
    """HVAE: L = E[-log p(x|z_K) - log p(z_K) - log N(rho_K) + log q0(z0|x) + log N(gamma0)] (one draw)."""

    name = "hvae"
    config_class = HVAEConfig
    model_class = HVAEModel
    description = "Hamiltonian VAE (Caterini et al. 2018): tempered leapfrog steps on log p(x, z) refine the posterior"
    metric_names = MONTE_CARLO_KL
    #: The loss differentiates log p(x, z) inside itself (torch.autograd.grad with create_graph); torch.compile of
    #: it fails on torch 2.14 ("a leaf Variable that requires grad is being used in an in-place operation").
    compilable = False


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(HVAEVariant())
