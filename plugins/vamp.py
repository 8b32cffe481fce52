"""VampPrior VAE (Tomczak & Welling 2018): the prior is a mixture of the posteriors of learned pseudo-inputs,

    p(z) = (1/K) sum_k q(z | u_k),

with the K pseudo-inputs u_k trained with the rest of the model (kept in [0, 1] by a hardtanh, initialised
near 0.05 with standard deviation 0.01, as in the paper's MNIST experiments). The KL to a mixture has no
closed form: the loss uses the single-sample Monte-Carlo estimate log q(z|x) - log p(z) (the term is
``kl_mc``), and so do the zoo's metrics, which ask the model for its prior (``prior_log_prob``,
``latent_kl`` is None); ``sample`` draws a component, then a code from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zoo_plugins.vae import MONTE_CARLO_KL, VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.distributions import DiagonalGaussian, Posterior, generator_kwargs


@dataclass
class VampVAEConfig(VAEConfig):
    flat_latent_only: ClassVar[str] = "the VampPrior is a mixture over flat latents"
    #: K, the pseudo-inputs (mixture components of the prior). The paper uses 500 for MNIST; fewer make the
    #: prior, the importance-sampled NLL and sampling cheaper.
    num_pseudo_inputs: int = 500
    pseudo_input_mean: float = 0.05
    pseudo_input_std: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("num_pseudo_inputs",), non_negative=("pseudo_input_std",))


def mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log (1/K) sum_k N(z; means_k, diag(exp(logvars_k))) for z (..., D) and K components (K, D): (...).

    The quadratic forms are expanded into three matrix products, sum_d (z_d - m_kd)^2 / v_kd =
    z^2 @ (1/v)^T - 2 z @ (m/v)^T + sum_d m_kd^2 / v_kd, so no (..., K, D) tensor is formed: the
    importance-sampled NLL evaluates the prior for 10^5 codes at a time. Computed in float64.
    """
    z = z.double()
    inv_var = torch.exp(-logvars.double())
    m_over_v = means.double() * inv_var
    quad = (z.pow(2) @ inv_var.T) - 2 * (z @ m_over_v.T) + (means.double() * m_over_v).sum(-1)
    log_comp = -0.5 * (quad + logvars.double().sum(-1) + z.shape[-1] * math.log(2 * math.pi))
    return torch.logsumexp(log_comp, dim=-1) - math.log(means.shape[0])


class VampVAEModel(VAEModel):
    """The VAE's encoder and decoder, and ``pseudo_inputs``: the prior's mixture components' inputs."""

    def __init__(self, config: VampVAEConfig) -> None:
        super().__init__(config)
        start = torch.randn(config.num_pseudo_inputs, *config.input_shape) * config.pseudo_input_std
        self.pseudo_inputs = nn.Parameter(start + config.pseudo_input_mean)

    def prior_components(self) -> DiagonalGaussian:
        """q(z | u_k) for every pseudo-input u_k (hardtanh to [0, 1]): (K, D) means and log-variances."""
        return self.encode(F.hardtanh(self.pseudo_inputs, 0.0, 1.0))

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = log (1/K) sum_k q(z | u_k), summed over the latent; leading sample dims kept."""
        components = self.prior_components()
        return mixture_log_prob(z, components.mean, components.logvar).to(
            torch.promote_types(z.dtype, torch.float32))

    def latent_kl(self, posterior: Posterior) -> Tensor | None:
        """None: the KL to a mixture has no closed form and does not split over latents."""
        return None

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` draws from the VampPrior: a pseudo-input uniformly at random, then a code from its posterior."""
        components = self.prior_components()
        device = components.mean.device
        which = torch.randint(self.config.num_pseudo_inputs, (n,), device=device, **generator_kwargs(generator))
        eps = torch.randn((n, *self.latent_shape), device=device, dtype=components.mean.dtype,
                          **generator_kwargs(generator))
        return self.decode(components.mean[which] + components.stddev[which] * eps, y)


class VampVAEVariant(VAEVariant):
    """VampPrior VAE: L = E_q[-log p(x|z)] + E_q[log q(z|x) - log (1/K) sum_k q(z|u_k)] (one sample)."""

    name = "vamp-vae"
    config_class = VampVAEConfig
    model_class = VampVAEModel
    description = "VampPrior VAE (Tomczak & Welling): prior a mixture of posteriors at learned pseudo-inputs"
    metric_names = MONTE_CARLO_KL

    def tiny_config(self) -> VampVAEConfig:
        return VampVAEConfig(input_shape=(1, 8, 8), latent_dim=4, hidden_dims=(32,), num_pseudo_inputs=10)


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(VampVAEVariant())
