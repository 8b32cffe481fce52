"""Deterministic autoencoders whose code is pulled towards a prior by a regulariser instead of a KL:

- ``rae`` (Ghosh et al. 2020, "From variational to deterministic autoencoders"):
  L = reconstruction + beta * 1/2 ||z||^2 + lambda * L_REG, with L_REG the squared L2 norm of the decoder's
  parameters (``regularizer="l2"``, RAE-L2) or the gradient penalty ||d/dz sum_i f_i(z)||^2 at z = g(x)
  (``"gp"``, RAE-GP; the gradient of the summed outputs, as the authors' code and pythae compute it). It has
  no prior to sample: Ghosh et al. fit one afterwards (a Gaussian mixture: ``model.fit_sampler("gmm", data)``).
- ``aae`` (Makhzani et al. 2016, the deterministic encoder): a discriminator D on codes tells prior draws
  z ~ N(0, I) from codes g(x); the encoder is trained to reconstruct and to fool it (non-saturating
  -log D(g(x))), the decoder to reconstruct, the discriminator by binary cross-entropy. Makhzani et al.
  alternate a reconstruction phase and a regularisation phase; here the three gradients are taken in one
  step, each network only its own objective's (:meth:`zoo.stepping.StepContext.backward_per_objective`).
  Samples decode prior draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zoo_plugins.autoencoders import Autoencoder, AutoencoderConfig, AutoencoderVariant
from zoo_plugins.mmd import WAEModel

import zoo
from zoo.config import check_fields
from zoo.errors import ConfigError
from zoo.nets import CodeDiscriminator
from zoo.variant import Batch, LossOutput, make_adam, split_batch, step_per_objective

RAE_REGULARIZERS = ("l2", "gp", "none")


@dataclass
class RAEConfig(AutoencoderConfig):
    latent_dim: int = 16
    #: beta, the weight of the code penalty 1/2 ||z||^2 per example (pythae's default).
    embedding_weight: float = 1e-4
    #: "l2": the decoder's parameters' squared norm; "gp": the decoder's gradient penalty; "none".
    regularizer: str = "l2"
    #: lambda, the weight of the regulariser (pythae's default).
    reg_weight: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, non_negative=("embedding_weight", "reg_weight"))
        if self.regularizer not in RAE_REGULARIZERS:
            raise ConfigError(f"rae regularizer must be one of {', '.join(RAE_REGULARIZERS)}, not {self.regularizer!r}")


def decoder_gradient_penalty(model: Autoencoder, code: Tensor) -> Tensor:
    """||d/dz sum_i f_i(z)||^2 at each code (f: the decoded image), averaged over the batch. In training its
    graph is kept for the step's backward; under no_grad (evaluation) it is still measured, on a detached code."""
    training = code.requires_grad
    with torch.enable_grad():
        z = code if training else code.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.decode(z).sum(), z, create_graph=training)
    penalty = grad.pow(2).sum(-1).mean()
    return penalty if training else penalty.detach()


class RAEVariant(AutoencoderVariant):
    """RAE: L = reconstruction + beta ||z||^2 / 2 + lambda L_REG."""

    name = "rae"
    config_class = RAEConfig
    description = "Regularised autoencoder (Ghosh et al. 2020): code penalty plus decoder L2 or gradient penalty"

    def loss(self, model: Autoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        cfg = model.config
        code = model.code(x)
        recon = model.reconstruction_nll(x, code).mean()
        embedding = 0.5 * code.pow(2).sum(-1).mean()
        if cfg.regularizer == "l2":
            reg = sum(p.pow(2).sum() for p in model.decoder.parameters())
        elif cfg.regularizer == "gp":
            reg = decoder_gradient_penalty(model, code)
        else:
            reg = code.new_zeros(())
        total = recon + cfg.embedding_weight * embedding + cfg.reg_weight * reg
        return LossOutput(total, {"reconstruction": recon, "embedding": embedding, "regularizer": reg})


@dataclass
class AAEConfig(AutoencoderConfig):
    latent_dim: int = 16
    #: Hidden layers of the code discriminator (Makhzani et al.: two of 1000 units).
    discriminator_dims: tuple[int, ...] = (1000, 1000)
    #: Weight of the encoder's adversarial term against its reconstruction term.
    adversarial_weight: float = 1.0
    #: The discriminator's learning rate as a multiple of the training lr.
    discriminator_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("discriminator_dims", "discriminator_lr_scale"),
                     non_negative=("adversarial_weight",))


class AAEModel(WAEModel):
    """A deterministic autoencoder, a discriminator on codes, and samples decoded from N(0, I)."""

    def __init__(self, config: AAEConfig) -> None:
        super().__init__(config)
        self.discriminator = CodeDiscriminator(config.latent_dim, config.discriminator_dims)


class AAEVariant(AutoencoderVariant):
    """The adversarial autoencoder with three objectives and two optimisers."""

    name = "aae"
    config_class = AAEConfig
    description = "Adversarial autoencoder (Makhzani et al. 2016): a discriminator pulls the codes to N(0, I)"
    generative = True
    monitored_term = "reconstruction"

    def tiny_config(self) -> AAEConfig:
        return self.make_config(super().tiny_config(), discriminator_dims=(16,))

    def build(self, config: AAEConfig) -> AAEModel:
        return AAEModel(config)

    def objectives(self, model: AAEModel, batch: Batch) -> dict[str, Tensor]:
        """Every term and the three objectives: ``encoder`` (reconstruction + weight * -log D(g(x))),
        ``decoder`` (reconstruction) and ``discriminator`` (-log D(z_prior) - log(1 - D(g(x))))."""
        x, _ = split_batch(batch)
        code = model.code(x)
        recon = model.reconstruction_nll(x, code).mean()
        fooled = model.discriminator(code).float()
        generator = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        prior = model.discriminator(torch.randn_like(code)).float()
        encoded = model.discriminator(code.detach()).float()
        discriminator = (F.binary_cross_entropy_with_logits(prior, torch.ones_like(prior))
                         + F.binary_cross_entropy_with_logits(encoded, torch.zeros_like(encoded)))
        return {"reconstruction": recon, "generator": generator, "discriminator": discriminator,
                "encoder": recon + model.config.adversarial_weight * generator, "decoder": recon}

    def loss(self, model: AAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        """For evaluation: the encoder's objective, every term reported."""
        terms = self.objectives(model, batch)
        return LossOutput(terms["encoder"], {k: terms[k] for k in ("reconstruction", "generator", "discriminator")})

    @staticmethod
    def networks(model: AAEModel) -> dict[str, list[nn.Parameter]]:
        return {"encoder": list(model.encoder.parameters()), "decoder": list(model.decoder.parameters()),
                "discriminator": list(model.discriminator.parameters())}

    def configure_optimizers(self, model: AAEModel, train_config: Any) -> dict[str, torch.optim.Optimizer]:
        nets = self.networks(model)
        discriminator = make_adam(nets["discriminator"], train_config)
        for group in discriminator.param_groups:
            group["lr"] = train_config.lr * model.config.discriminator_lr_scale
        return {"autoencoder": make_adam(nets["encoder"] + nets["decoder"], train_config),
                "discriminator": discriminator}

    def train_step(self, model: AAEModel, batch: Batch, optimizers: dict[str, torch.optim.Optimizer],
                   *, step: int) -> dict[str, Tensor]:
        terms = step_per_objective(lambda: self.objectives(model, batch), list(self.networks(model).items()),
                                   optimizers.values(), step)
        return {"loss": terms["encoder"], **{k: terms[k] for k in ("reconstruction", "generator", "discriminator")}}


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(RAEVariant())
    register(AAEVariant())
