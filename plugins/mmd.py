"""Autoencoders regularised by the maximum mean discrepancy of their aggregate code distribution to the prior
(:mod:`zoo.mmd`, shared with the example plugin ``examples/zoo-wae``):

- ``wae-mmd``: the Wasserstein autoencoder (Tolstikhin et al. 2018, Algorithm 2): a deterministic encoder,
  L = mean_i c(x_i, f(g(x_i))) + lambda MMD^2_k({g(x_i)}, {z_i ~ N(0, I)}), with c the squared error (or the
  Bernoulli cross-entropy) and prior samples decoded to sample.
- ``info-vae``: InfoVAE-MMD (Zhao, Song & Ermon 2019, eq. 6): a VAE whose objective weighs the per-example KL
  and a divergence of the aggregate posterior separately,
  L = E_q[-log p(x|z)] + (1 - alpha) KL(q(z|x) || p(z)) + (alpha + lambda - 1) MMD^2(q(z), p(z)),
  with the aggregate posterior's sample the batch's reparameterised codes. alpha = 0, lambda = 1 is the VAE.

Both report the MMD term; the kernel (IMQ or RBF) and its scale are settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from zoo_plugins.autoencoders import Autoencoder, AutoencoderConfig, AutoencoderVariant
from zoo_plugins.vae import VAEConfig, VAEVariant, one_draw

import zoo
from zoo.config import check_fields
from zoo.distributions import generator_kwargs
from zoo.errors import ConfigError
from zoo.mmd import check_kernel, mmd2
from zoo.variant import Batch, LossOutput, split_batch


def prior_mmd(codes: Tensor, kernel: str, scale: float) -> Tensor:
    """MMD^2 between a batch's codes (n, d) and as many N(0, I) draws; 0 for a batch of one code, whose
    U-statistic is undefined (a one-example validation batch then scores its reconstruction alone)."""
    if len(codes) < 2:
        return codes.new_zeros(())
    return mmd2(codes, torch.randn_like(codes), kernel, scale)


@dataclass
class WAEConfig(AutoencoderConfig):
    """The Wasserstein autoencoder: the deterministic autoencoder's settings plus the MMD penalty's."""

    latent_dim: int = 8
    likelihood: str = "mse"
    #: lambda, the weight of the MMD penalty.
    mmd_weight: float = 10.0
    kernel: str = "imq"
    #: sigma, the prior scale in the kernel constant C = 2 d sigma^2.
    kernel_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("kernel_scale",), non_negative=("mmd_weight",))
        check_kernel(self.kernel)


class WAEModel(Autoencoder):
    """The deterministic autoencoder, with samples decoded from the prior N(0, I)."""

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None) -> Tensor:
        ref = next(self.parameters())
        z = torch.randn((n, *self.latent_shape), device=ref.device, dtype=ref.dtype, **generator_kwargs(generator))
        return self.decode(z)


class WAEVariant(AutoencoderVariant):
    """WAE-MMD: L = reconstruction + lambda MMD^2(codes, prior draws)."""

    name = "wae-mmd"
    config_class = WAEConfig
    description = "Wasserstein autoencoder (Tolstikhin et al. 2018): deterministic codes pulled to N(0, I) by MMD"
    generative = True

    def build(self, config: WAEConfig) -> WAEModel:
        return WAEModel(config)

    def loss(self, model: WAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        code = model.code(x)
        recon = model.reconstruction_nll(x, code).mean()
        cfg = model.config
        mmd = prior_mmd(code, cfg.kernel, cfg.kernel_scale)
        return LossOutput(recon + cfg.mmd_weight * mmd, {"reconstruction": recon, "mmd": mmd})


@dataclass
class InfoVAEConfig(VAEConfig):
    flat_latent_only: ClassVar[str] = "the MMD of InfoVAE compares flat codes"
    #: alpha: the per-example KL is weighted by 1 - alpha.
    alpha: float = 0.0
    #: lambda: the aggregate divergence is weighted by alpha + lambda - 1.
    info_lambda: float = 1000.0
    kernel: str = "imq"
    kernel_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("kernel_scale",))
        check_kernel(self.kernel)
        if self.alpha + self.info_lambda - 1 < 0 or self.alpha > 1:
            raise ConfigError(f"InfoVAE needs alpha <= 1 and alpha + lambda >= 1 (non-negative weights), got "
                              f"alpha={self.alpha}, info_lambda={self.info_lambda}")


class InfoVAEVariant(VAEVariant):
    """InfoVAE-MMD: L = recon + (1 - alpha) KL + (alpha + lambda - 1) MMD^2(batch codes, prior draws)."""

    name = "info-vae"
    config_class = InfoVAEConfig
    description = "InfoVAE-MMD (Zhao et al. 2019): KL and the aggregate posterior's MMD to the prior, weighted apart"

    def loss(self, model: Any, batch: Batch, *, step: int = 0) -> LossOutput:
        x, y = split_batch(batch)
        cfg = model.config
        _, z, recon, kl = one_draw(model, x, y)
        mmd = prior_mmd(z, cfg.kernel, cfg.kernel_scale)
        total = recon + (1 - cfg.alpha) * kl + (cfg.alpha + cfg.info_lambda - 1) * mmd
        return LossOutput(total, {"reconstruction": recon, "kl": kl, "mmd": mmd, "neg_elbo": recon + kl})


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(WAEVariant())
    register(InfoVAEVariant())
