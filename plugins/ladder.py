"""Ladder VAE (Sonderby, Raiko, Maaloe, Sonderby & Winther 2016) with two stochastic layers: the zoo's first
hierarchical latent.

Generative model: p(z2) = N(0, I), p(z1|z2) = N(mu_p(z2), diag sigma_p(z2)^2) from a top-down network, and p(x|z1)
from the VAE's decoder. Inference is the paper's ladder: a deterministic bottom-up pass d1 = f1(x), d2 = f2(d1)
gives a Gaussian estimate N(mu_hat_i, sigma_hat_i^2) for each layer; the top layer's posterior is its estimate,
q(z2|x) = N(mu_hat2, sigma_hat2^2), and the layer below combines its estimate with the top-down prior by precision:

    sigma_q1^-2 = sigma_hat1^-2 + sigma_p1^-2,    mu_q1 = (mu_hat1 sigma_hat1^-2 + mu_p1 sigma_p1^-2) sigma_q1^2,

so q(z1|x, z2) shares the top-down network with the generative model.

**The code the zoo's tools see** is one flat vector u = (u1, z2) of ``latent_dim + top_latent_dim`` numbers, with
u1 = (z1 - mu_p(z2)) / sigma_p(z2): the bottom layer standardised given the top one. In these coordinates the prior
is N(0, I) over the whole code (the change of variables z1 <-> u1 has the same Jacobian under q and p, so the
density ratio, the ELBO and the importance-sampled NLL are the model's), ``sample`` decodes N(0, I) draws, and
moving a unit of z2 with u1 held moves z1 through the top-down network: a traversal of the top group shows what
the top layer controls. ``layers(code)`` gives (z1, z2). The two groups are declared (``latent_groups``): ``z1``
(units 0..latent_dim-1, standardised) and ``z2``.

**The KL** is taken per layer in closed form given the layer above, at the draw the reconstruction uses,

    KL(q(z2|x) || p(z2)) + KL(q(z1|x, z2) || p(z1|z2)),   z2 ~ q(z2|x),

an unbiased estimate of KL(q(z1, z2|x) || p(z1, z2)) (the paper's analytic KL per layer); the loss reports the
layers' terms apart (``kl_z1``, ``kl_z2``). The KL of u1 against N(0, I) equals the KL of z1 against p(z1|z2): KL is
unchanged by the shared affine map.

**Warm-up** (``warmup_steps``): the paper's deterministic warm-up weighs the KL by step / warmup_steps in training
(the loss's other terms stay the ELBO's). Without it two layers already collapse here: on the MNIST recipe without
warm-up 6 of 24 units stay active and the validation negative ELBO is 135.0 nats, against 118.9 with 1,500 steps of
warm-up (``python -m zoo_model_cards.select_ladder``). The paper's batch normalisation is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.contract import LatentGroup
from zoo.distributions import DiagonalGaussian, Posterior
from zoo.nets import mlp
from zoo.variant import Batch, LossOutput, linear_ramp, split_batch


@dataclass
class LadderVAEConfig(VAEConfig):
    """``latent_dim`` is the bottom layer z1 (next to x), ``top_latent_dim`` the top layer z2; ``hidden_dims`` are
    the bottom-up layers up to d1 (mirrored by the decoder p(x|z1)), ``top_hidden_dims`` those from d1 to d2
    (mirrored by the top-down network p(z1|z2))."""

    flat_latent_only: ClassVar[str] = "the ladder VAE's layers are flat latents"
    top_latent_dim: int = 8
    top_hidden_dims: tuple[int, ...] = (128,)
    #: Deterministic warm-up (the paper's): in training the KL's weight rises linearly from 0 to 1 over this many
    #: steps (0: off). Evaluation (eval mode: validation, ``zoo eval``) always reports the negative ELBO.
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("top_latent_dim", "top_hidden_dims"), non_negative=("warmup_steps",))


def precision_weighted(estimate: DiagonalGaussian, prior: DiagonalGaussian) -> DiagonalGaussian:
    """q(z1|x, z2) in the standardised coordinates u1 = (z1 - mu_p) / sigma_p: the precision-weighted combination of
    the bottom-up ``estimate`` N(mu_hat, sigma_hat^2) and the top-down ``prior`` N(mu_p, sigma_p^2), whose mean
    mu_q - mu_p = (sigma_q^2 / sigma_hat^2)(mu_hat - mu_p) and variance sigma_q^2 are divided by sigma_p and
    sigma_p^2."""
    logvar_q = -torch.logaddexp(-estimate.logvar, -prior.logvar)
    shift = (logvar_q - estimate.logvar).exp() * (estimate.mean - prior.mean)
    return DiagonalGaussian(shift * (-0.5 * prior.logvar).exp(), logvar_q - prior.logvar)


class LadderPosterior(Posterior):
    """q(u1, z2|x) = q(z2|x) q(u1|x, z2): draw the top layer, then the bottom one given it. Closed-form density;
    the KL splits by layer (:meth:`layer_kl`), not by unit."""

    has_density = True

    def __init__(self, top: DiagonalGaussian, estimate: DiagonalGaussian,
                 top_down: Callable[[Tensor], DiagonalGaussian]) -> None:
        self.top = top
        self.estimate = estimate
        self.top_down = top_down

    @property
    def bottom_units(self) -> int:
        return self.estimate.mean.shape[-1]

    def split(self, code: Tensor) -> tuple[Tensor, Tensor]:
        """(u1, z2) of codes (..., latent_dim + top_latent_dim)."""
        return code[..., :self.bottom_units], code[..., self.bottom_units:]

    def bottom(self, z2: Tensor) -> DiagonalGaussian:
        """q(u1|x, z2) for top-layer codes z2 (batch, D2) or (K, batch, D2), as one batch of K * batch Gaussians
        (a DiagonalGaussian sums over every dim after the first): reshape its results to z2's leading dims."""
        lead = z2.shape[:-1]
        units = self.bottom_units
        estimate = DiagonalGaussian(self.estimate.mean.expand(*lead, units).reshape(-1, units),
                                    self.estimate.logvar.expand(*lead, units).reshape(-1, units))
        return precision_weighted(estimate, self.top_down(z2.reshape(-1, z2.shape[-1])))

    def mode(self) -> Tensor:
        """z2 at its posterior mean, u1 at its posterior mean given that z2."""
        z2 = self.top.mean
        return torch.cat([self.bottom(z2).mean, z2], dim=-1)

    def sample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        z2 = self.top.sample(num_samples, generator=generator)
        u1 = self.bottom(z2).sample(generator=generator).reshape(*z2.shape[:-1], self.bottom_units)
        return torch.cat([u1, z2], dim=-1)

    def log_prob(self, code: Tensor) -> Tensor:
        """log q(z2|x) + log q(u1|x, z2), summed over the latent; leading sample dims kept."""
        u1, z2 = self.split(code)
        bottom = self.bottom(z2).log_prob(u1.reshape(-1, self.bottom_units)).reshape(z2.shape[:-1])
        return self.top.log_prob(z2) + bottom

    def layer_kl(self, code: Tensor) -> dict[str, Tensor]:
        """{"z1": KL(q(z1|x, z2) || p(z1|z2)) at the z2 of ``code``, "z2": KL(q(z2|x) || N(0, I))} per example,
        averaged over leading sample dims of ``code``."""
        _, z2 = self.split(code)
        bottom = self.bottom(z2).kl().sum(-1).reshape(z2.shape[:-1])
        return {"z1": bottom.mean(0) if bottom.dim() == 2 else bottom, "z2": self.top.kl().sum(-1)}


class LadderVAEModel(VAEModel):
    """The VAE's bottom-up trunk and decoder p(x|z1), a bottom-up MLP from d1 to the top layer's estimate, and
    the top-down MLP giving p(z1|z2)."""

    def __init__(self, config: LadderVAEConfig) -> None:
        super().__init__(config)
        features = self.encoder.head.in_features  # d1: the trunk's output, before the bottom layer's head
        self.top_encoder = mlp([features, *config.top_hidden_dims, 2 * config.top_latent_dim], config.activation)
        self.top_down = mlp([config.top_latent_dim, *reversed(config.top_hidden_dims), 2 * config.latent_dim],
                            config.activation)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim + self.config.top_latent_dim,)

    @property
    def latent_groups(self) -> tuple[LatentGroup, ...]:
        bottom, top = self.config.latent_dim, self.config.top_latent_dim
        return (LatentGroup("z1", range(bottom), "the bottom layer, standardised given z2"),
                LatentGroup("z2", range(bottom, bottom + top), "the top layer"))

    def prior_given(self, z2: Tensor) -> DiagonalGaussian:
        """p(z1|z2) = N(mu_p(z2), diag sigma_p(z2)^2) for top-layer codes (..., top_latent_dim)."""
        mean, logvar = self.top_down(z2).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def encode(self, x: Tensor, y: Tensor | int | None = None) -> LadderPosterior:
        d1 = self.encoder.trunk(x)
        estimate = DiagonalGaussian(*self.encoder.head(d1).chunk(2, dim=1))
        top = DiagonalGaussian(*self.top_encoder(d1).chunk(2, dim=1))
        return LadderPosterior(top, estimate, self.prior_given)

    def layers(self, code: Tensor) -> tuple[Tensor, Tensor]:
        """(z1, z2) of codes (..., latent_dim + top_latent_dim): z1 = mu_p(z2) + sigma_p(z2) u1."""
        u1, z2 = code[..., :self.config.latent_dim], code[..., self.config.latent_dim:]
        prior = self.prior_given(z2)
        return prior.mean + prior.stddev * u1, z2

    def decode_logits(self, z: Tensor, y: Tensor | int | None = None) -> Tensor:
        """p(x|z1)'s logits (or Gaussian mean) for codes (..., latent_dim + top_latent_dim); only z1 reaches x."""
        z1 = self.layers(z)[0]
        lead = z1.shape[:-1]
        return self.decoder(z1.reshape(-1, z1.shape[-1])).reshape(*lead, *self.config.input_shape)

    def latent_kl(self, posterior: Posterior) -> Tensor | None:
        """None: the bottom layer's KL depends on the top layer's draw, so the KL splits by layer, not by unit
        (:meth:`group_kl`)."""
        return None

    def group_kl(self, posterior: LadderPosterior, z: Tensor) -> dict[str, Tensor]:
        """KL per layer and example at the draws ``z`` of ``posterior`` (:meth:`LadderPosterior.layer_kl`)."""
        return posterior.layer_kl(z)


class LadderVAEVariant(VAEVariant):
    """Ladder VAE: L = E_q[-log p(x|z1)] + KL(q(z2|x) || p(z2)) + KL(q(z1|x, z2) || p(z1|z2)) at one draw of z2
    (K draws with ``mc_samples``); during a warm-up the KL is weighted by step / warmup_steps in training."""

    name = "ladder-vae"
    config_class = LadderVAEConfig
    model_class = LadderVAEModel
    description = ("Ladder VAE (Sonderby et al. 2016): two stochastic layers, the bottom one's posterior the "
                   "precision-weighted combination of a bottom-up estimate and the top-down prior")
    metric_names = {"kl": "KL(q(z1, z2|x) || p(z1, z2)) (nats; per layer in closed form given the layer above, at "
                          "the ELBO's draws)",
                    "kl_z1": "KL(q(z1|x, z2) || p(z1|z2)) (nats; closed form at the ELBO's draws of z2)",
                    "kl_z2": "KL(q(z2|x) || N(0, I)) (nats; closed form)"}

    def tiny_config(self) -> LadderVAEConfig:
        return LadderVAEConfig(input_shape=(1, 8, 8), latent_dim=4, hidden_dims=(32,), top_latent_dim=2,
                               top_hidden_dims=(16,))

    def loss(self, model: LadderVAEModel, batch: Batch, *, step: int | Tensor = 0) -> LossOutput:
        x, _ = split_batch(batch)
        posterior = model.encode(x)
        k = model.config.mc_samples
        z = posterior.sample(k if k > 1 else None)
        recon = model.reconstruction_nll(x, z)
        recon = (recon.mean(0) if k > 1 else recon).mean()
        kl = {name: value.mean() for name, value in model.group_kl(posterior, z).items()}
        total_kl = kl["z1"] + kl["z2"]
        neg_elbo = recon + total_kl
        terms = {"reconstruction": recon, "kl": total_kl, "kl_z1": kl["z1"], "kl_z2": kl["z2"], "neg_elbo": neg_elbo}
        warmup = model.config.warmup_steps
        if warmup and model.training:
            weight = linear_ramp(step, warmup)
            if isinstance(weight, Tensor) or weight < 1.0:
                return LossOutput(recon + weight * total_kl, terms)
        return LossOutput(neg_elbo, terms)


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(LadderVAEVariant())
