"""VAE-GAN (Larsen et al. 2016): a VAE whose reconstruction is measured in a discriminator's features.

Three networks, three losses, three optimisers:

- L_prior = KL(q(z|x) || N(0, I))
- L_llike = -log N(Dis_l(x) | Dis_l(x~), I) at hidden discriminator layer l, x~ = Dec(z), z ~ q(z|x)
- L_GAN   = log Dis(x) + log(1 - Dis(Dec(z_p))) + log(1 - Dis(Dec(Enc(x)))), z_p ~ N(0, I)

Updates (Algorithm 1): encoder <- grad(L_prior + L_llike); decoder <- grad(gamma * L_llike - L_GAN);
discriminator <- grad(-L_GAN), i.e. it minimises the usual binary cross-entropy. Each network
receives only its own objective's gradient: the three gradients are taken with
``torch.autograd.grad`` restricted to that network's parameters, and no step happens before all three
are computed, so no network sees another's loss or updated weights. The step goes through
:func:`zoo.stepping.step_context`: autocast around the objectives, each objective scaled for fp16
before its gradient, gradients averaged across processes before each of the three optimiser steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.errors import ConfigError
from zoo.nets import Discriminator
from zoo.variant import Batch, LossOutput, make_adam, split_batch, step_per_objective


@dataclass
class VAEGANConfig(VAEConfig):
    architecture: str = "conv"
    hidden_dims: tuple[int, ...] = (32, 64, 128)
    latent_dim: int = 32
    discriminator_dims: tuple[int, ...] = (32, 64, 128)
    #: Index of the discriminator's hidden layer whose features define L_llike.
    feature_layer: int = -1
    #: Weight gamma of L_llike in the decoder's objective (Larsen et al.: 1e-6 .. 1e-2 range).
    gamma: float = 1e-2
    #: "minimax": the decoder minimises gamma*L_llike - L_GAN exactly as in Algorithm 1;
    #: "non_saturating": -log Dis(Dec(.)) instead of log(1 - Dis(Dec(.))) (stronger early gradients).
    generator_loss: str = "minimax"
    #: The discriminator's learning rate as a multiple of the training lr (below 1 keeps a
    #: discriminator that wins too fast from starving the decoder of gradient).
    discriminator_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("discriminator_dims", "discriminator_lr_scale"), non_negative=("gamma",))
        if self.generator_loss not in ("minimax", "non_saturating"):
            raise ConfigError(f"generator_loss must be 'minimax' or 'non_saturating', not {self.generator_loss!r}")
        if self.num_classes:
            raise ConfigError("vae-gan is unconditional: num_classes must be 0")


class VAEGANModel(VAEModel):
    """A VAE (encoder, decoder) plus a discriminator; ``forward``/``sample`` as for the VAE."""

    def __init__(self, config: VAEGANConfig) -> None:
        super().__init__(config)
        self.discriminator = Discriminator(config.input_shape, config.discriminator_dims, config.architecture,
                                           feature_layer=config.feature_layer)


def _log_sigmoid_pair(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(log D, log(1 - D)) for D = sigmoid(logits), computed stably in float32 (also under autocast)."""
    logits = logits.float()
    return F.logsigmoid(logits), F.logsigmoid(-logits)


class VAEGANVariant(VAEVariant):
    """VAE-GAN with the three-optimiser update of Larsen et al. 2016."""

    name = "vae-gan"
    config_class = VAEGANConfig
    description = "VAE-GAN (Larsen et al.): feature-wise likelihood at a discriminator layer, three optimisers"
    #: On a fixed batch the discriminator's loss falls while it learns; the feature-wise likelihood
    #: moves with the discriminator's features and need not fall.
    monitored_term = "discriminator"

    def tiny_config(self) -> VAEGANConfig:
        return VAEGANConfig(input_shape=(1, 8, 8), latent_dim=4, hidden_dims=(8, 16), discriminator_dims=(8, 16))

    def build(self, config: VAEGANConfig) -> VAEGANModel:
        return VAEGANModel(config)

    def objectives(self, model: VAEGANModel, batch: Batch) -> dict[str, Tensor]:
        """Every term, and the three networks' objectives (``encoder``, ``decoder``, ``discriminator``)."""
        x, _ = split_batch(batch)
        cfg = model.config
        posterior = model.encode(x)
        x_tilde = model.decode(posterior.sample())
        z_p = torch.randn_like(posterior.mean)
        x_p = model.decode(z_p)
        d_x, feat_x = model.discriminator(x)
        d_tilde, feat_tilde = model.discriminator(x_tilde)
        d_p, _ = model.discriminator(x_p)
        prior = posterior.kl().flatten(1).sum(-1).mean()
        sq = (feat_x.float() - feat_tilde.float()).pow(2)
        llike = (0.5 * sq + 0.5 * math.log(2 * math.pi)).sum(-1).mean()
        log_d_x, _ = _log_sigmoid_pair(d_x)
        log_d_tilde, log_1m_d_tilde = _log_sigmoid_pair(d_tilde)
        log_d_p, log_1m_d_p = _log_sigmoid_pair(d_p)
        gan = (log_d_x + log_1m_d_p + log_1m_d_tilde).mean()
        decoder_adv = -gan if cfg.generator_loss == "minimax" else -(log_d_p + log_d_tilde).mean()
        return {
            "prior": prior, "llike": llike, "gan": gan,
            "encoder": prior + llike,
            "decoder": cfg.gamma * llike + decoder_adv,
            "discriminator": -gan,
        }

    def loss(self, model: VAEGANModel, batch: Batch, *, step: int = 0) -> LossOutput:
        """For evaluation: total = L_prior + L_llike (the VAE part); all terms reported."""
        terms = self.objectives(model, batch)
        vae_loss = terms["encoder"]
        return LossOutput(vae_loss, {"prior": terms["prior"], "llike": terms["llike"], "gan": terms["gan"],
                                     "discriminator": terms["discriminator"], "vae_loss": vae_loss})

    @staticmethod
    def networks(model: VAEGANModel) -> dict[str, torch.nn.Module]:
        return {"encoder": model.encoder, "decoder": model.decoder, "discriminator": model.discriminator}

    def configure_optimizers(self, model: VAEGANModel, train_config: Any) -> dict[str, torch.optim.Optimizer]:
        optimizers = {name: make_adam(net.parameters(), train_config) for name, net in self.networks(model).items()}
        for group in optimizers["discriminator"].param_groups:
            group["lr"] = train_config.lr * model.config.discriminator_lr_scale
        return optimizers

    def train_step(self, model: VAEGANModel, batch: Batch, optimizers: dict[str, torch.optim.Optimizer],
                   *, step: int) -> dict[str, Tensor]:
        nets = self.networks(model)
        terms = step_per_objective(lambda: self.objectives(model, batch),
                                   [(name, list(net.parameters())) for name, net in nets.items()],
                                   [optimizers[name] for name in nets], step)
        return {"loss": terms["encoder"], "prior": terms["prior"], "llike": terms["llike"], "gan": terms["gan"],
                "discriminator": terms["discriminator"], "vae_loss": terms["encoder"]}


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(VAEGANVariant())
