"""The VAEs that penalise the total correlation of the code: beta-TCVAE and FactorVAE.

Both keep the VAE's networks (Gaussian posterior, prior N(0, I)) and penalise only the part of the KL that
ties the latents together, the total correlation TC = KL(q(z) || prod_j q(z_j)) of the aggregate
posterior q(z), instead of the whole KL as the beta-VAE does:

- beta-TCVAE (Chen et al. 2018): L = recon + alpha MI + beta TC + gamma dimension-wise KL, the three
  terms estimated on the minibatch (:mod:`zoo.total_correlation`; stratified sampling by default).
- FactorVAE (Kim & Mnih 2018): L = recon + KL + gamma TC, with TC estimated by the density-ratio trick:
  a discriminator D tells codes z ~ q(z) from codes whose dimensions were shuffled independently across
  the batch (draws of prod_j q(z_j)), and TC ~ E_q[log D(z) / (1 - D(z))], the mean of its logit. The
  discriminator has its own optimiser and objective (binary cross-entropy); each network gets only the
  gradient of its own objective (:meth:`zoo.stepping.StepContext.backward_per_objective`). Kim & Mnih
  permute the codes of a second batch; here they are the same batch's codes, permuted (the product of the
  marginals is the same, and every variant keeps one batch per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant, one_draw

import zoo
from zoo.config import check_fields
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.nets import CodeDiscriminator
from zoo.total_correlation import ESTIMATORS, dataset_kl_decomposition, kl_decomposition
from zoo.variant import Batch, LossOutput, make_adam, split_batch, step_per_objective

#: Test examples the cards' decomposition uses (it holds an N x N x latent_dim tensor).
DECOMPOSITION_EXAMPLES = 1000

DECOMPOSITION_NAMES = {
    "mutual_information": "index-code mutual information I(x; z) (nats; Chen et al.'s decomposition of the KL on "
                          f"{DECOMPOSITION_EXAMPLES:,} test examples spread evenly over the set (all of a smaller "
                          "one), their aggregate posterior taken exactly)",
    "total_correlation": "total correlation KL(q(z) || prod_j q(z_j)) (nats; same decomposition)",
    "dimension_kl": "dimension-wise KL sum_j KL(q(z_j) || p(z_j)) (nats; same decomposition)",
}


def decomposition_examples(data: TensorData) -> Tensor:
    """:data:`DECOMPOSITION_EXAMPLES` images of ``data`` spread evenly over it (data sets are often sorted by
    class), or all of a smaller one."""
    if len(data) <= DECOMPOSITION_EXAMPLES:
        return data.x
    return data.x[torch.linspace(0, len(data) - 1, DECOMPOSITION_EXAMPLES).round().long()]


def decomposition_metrics(model: VAEModel, data: TensorData, seed: int) -> dict[str, float]:
    """The three terms on :func:`decomposition_examples` of ``data``."""
    return dataset_kl_decomposition(model, decomposition_examples(data), seed=seed)


@dataclass
class BetaTCVAEConfig(VAEConfig):
    flat_latent_only: ClassVar[str] = "the total correlation is over the dimensions of a flat latent"
    #: Weight of the index-code mutual information.
    alpha: float = 1.0
    #: Weight of the total correlation (the term beta-TCVAE raises; 6 as in YannDubs/disentangling-vae).
    beta: float = 6.0
    #: Weight of the dimension-wise KL.
    gamma: float = 1.0
    #: N, the number of training examples, for the minibatch estimates of q(z): set it to your data's size.
    dataset_size: int = 60_000
    #: "mss" (minibatch stratified sampling) or "mws" (minibatch-weighted sampling).
    estimator: str = "mss"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("dataset_size",), non_negative=("alpha", "beta", "gamma"))
        if self.estimator not in ESTIMATORS[:2]:
            raise ConfigError(f"estimator must be 'mss' or 'mws', not {self.estimator!r}")
        if self.mc_samples != 1:
            raise ConfigError(f"beta-tcvae pairs one draw per example in its estimator: mc_samples must be 1, "
                              f"got {self.mc_samples}")


class BetaTCVAEVariant(VAEVariant):
    """beta-TCVAE: the KL split into MI, TC and dimension-wise KL, weighted apart."""

    name = "beta-tcvae"
    config_class = BetaTCVAEConfig
    description = "beta-TCVAE (Chen et al. 2018): the KL split into MI, total correlation and dimension-wise KL"
    metric_names = DECOMPOSITION_NAMES

    def tiny_config(self) -> BetaTCVAEConfig:
        return self.make_config(super().tiny_config(), dataset_size=1000)

    def loss(self, model: VAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        x, y = split_batch(batch)
        cfg = model.config
        posterior, z, recon, kl = one_draw(model, x, y)
        if len(x) > cfg.dataset_size:
            raise ConfigError(f"a batch of {len(x)} is larger than dataset_size={cfg.dataset_size}: set dataset_size "
                              f"to the number of training examples")
        parts = {name: value.mean() for name, value in
                 kl_decomposition(z.float(), posterior, cfg.dataset_size, cfg.estimator).items()}
        total = (recon + cfg.alpha * parts["mutual_information"] + cfg.beta * parts["total_correlation"]
                 + cfg.gamma * parts["dimension_kl"])
        return LossOutput(total, {"reconstruction": recon, "kl": kl, **parts, "neg_elbo": recon + kl})

    def metrics(self, model: VAEModel, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        return decomposition_metrics(model, data, seed)


@dataclass
class FactorVAEConfig(VAEConfig):
    flat_latent_only: ClassVar[str] = "the total-correlation discriminator permutes the dimensions of a flat latent"
    #: gamma, the weight of the discriminator's total-correlation estimate in the VAE's loss (10 as the
    #: dSprites script of 1Konny/FactorVAE; Kim & Mnih sweep 10 to 100).
    tc_weight: float = 10.0
    #: Hidden layers of the discriminator (Kim & Mnih: 6 layers of 1000 units, leaky ReLU 0.2).
    discriminator_dims: tuple[int, ...] = (1000, 1000, 1000, 1000, 1000)
    #: The discriminator's Adam (Kim & Mnih: lr 1e-4, betas 0.5 and 0.9).
    discriminator_lr: float = 1e-4
    discriminator_betas: tuple[float, float] = (0.5, 0.9)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("discriminator_dims", "discriminator_lr"), non_negative=("tc_weight",))
        if len(self.discriminator_betas) != 2 or not all(0 <= b < 1 for b in self.discriminator_betas):
            raise ConfigError(f"discriminator_betas must be two numbers in [0, 1), got {self.discriminator_betas}")


class FactorVAEModel(VAEModel):
    """A VAE plus a discriminator on codes: its logit is log D(z) / (1 - D(z)), D = P(z came from q(z))."""

    def __init__(self, config: FactorVAEConfig) -> None:
        super().__init__(config)
        self.discriminator = CodeDiscriminator(config.latent_dim, config.discriminator_dims)

    def tc_logits(self, z: Tensor) -> Tensor:
        """The discriminator's logit per code (B,)."""
        return self.discriminator(z)


def permute_dims(z: Tensor) -> Tensor:
    """Each dimension of the batch of codes ``z`` (B, D) shuffled independently across the batch: draws of
    the product of the batch's marginals."""
    order = torch.rand(z.shape, device=z.device).argsort(dim=0)
    return z.gather(0, order)


class FactorVAEVariant(VAEVariant):
    """FactorVAE with its two optimisers (VAE; discriminator)."""

    name = "factor-vae"
    config_class = FactorVAEConfig
    description = "FactorVAE (Kim & Mnih 2018): total correlation penalised through a discriminator on codes"
    model_class = FactorVAEModel
    #: The discriminator moves the TC term; the ELBO falls on a fixed batch.
    monitored_term = "neg_elbo"
    metric_names = {**DECOMPOSITION_NAMES,
                    "discriminator_tc": "total correlation as the discriminator estimates it, E_q[logit D(z)] "
                                        "(nats; the density-ratio estimate FactorVAE trains on)"}

    def tiny_config(self) -> FactorVAEConfig:
        """Small networks and gamma = 1: on a unit test's few examples the discriminator soon tells any codes
        apart, and a large gamma then spends every step on its estimate instead of the ELBO."""
        return self.make_config(super().tiny_config(), discriminator_dims=(16, 16), tc_weight=1.0)

    def objectives(self, model: FactorVAEModel, batch: Batch) -> dict[str, Tensor]:
        """Every term, and the two objectives: ``vae`` (recon + KL + gamma TC) and ``discriminator`` (the
        binary cross-entropy of telling codes from permuted codes)."""
        x, _ = split_batch(batch)
        _, z, recon, kl = one_draw(model, x)
        tc = model.tc_logits(z).float().mean()
        codes = z.detach()
        real, fake = model.tc_logits(codes).float(), model.tc_logits(permute_dims(codes)).float()
        discriminator = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                         + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        neg_elbo = recon + kl
        return {"reconstruction": recon, "kl": kl, "total_correlation": tc, "neg_elbo": neg_elbo,
                "discriminator": discriminator, "vae": neg_elbo + model.config.tc_weight * tc}

    def loss(self, model: FactorVAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        """For evaluation: the VAE's objective, every term reported."""
        terms = self.objectives(model, batch)
        return LossOutput(terms["vae"], {k: v for k, v in terms.items() if k != "vae"})

    @staticmethod
    def networks(model: FactorVAEModel) -> dict[str, list[nn.Parameter]]:
        return {"vae": [*model.encoder.parameters(), *model.decoder.parameters()],
                "discriminator": list(model.discriminator.parameters())}

    def configure_optimizers(self, model: FactorVAEModel, train_config: Any) -> dict[str, torch.optim.Optimizer]:
        nets = self.networks(model)
        cfg = model.config
        discriminator = make_adam(nets["discriminator"], train_config)
        for group in discriminator.param_groups:
            group["lr"], group["betas"] = cfg.discriminator_lr, tuple(cfg.discriminator_betas)
        return {"vae": make_adam(nets["vae"], train_config), "discriminator": discriminator}

    def train_step(self, model: FactorVAEModel, batch: Batch, optimizers: dict[str, torch.optim.Optimizer],
                   *, step: int) -> dict[str, Tensor]:
        terms = step_per_objective(lambda: self.objectives(model, batch), list(self.networks(model).items()),
                                   optimizers.values(), step)
        terms["loss"] = terms.pop("vae")
        return terms

    def metrics(self, model: FactorVAEModel, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        device = next(model.parameters()).device
        z = model.encode(decomposition_examples(data).to(device)).sample(
            generator=torch.Generator(device=device).manual_seed(seed))
        return {**decomposition_metrics(model, data, seed), "discriminator_tc": float(model.tc_logits(z).mean())}


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(BetaTCVAEVariant())
    register(FactorVAEVariant())
