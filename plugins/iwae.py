"""Importance-weighted autoencoders: IWAE (Burda et al. 2016) and MIWAE, CIWAE, PIWAE (Rainforth et al. 2018).

With importance weights log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x), the bounds on
log p(x) per example are

- IWAE_K   = log (1/K) sum_k w_k                        (K = 1: the ELBO; tighter as K grows);
- MIWAE_MK = (1/M) sum_m log (1/K) sum_k w_{m,k}          (M independent IWAE_K bounds averaged);
- CIWAE_b  = b ELBO_K + (1 - b) IWAE_K                    (ELBO_K = (1/K) sum_k log w_k);
- PIWAE    : the encoder follows MIWAE_MK, the decoder IWAE_{M K}, with the same M K draws.

Rainforth et al. show that the encoder's gradient signal-to-noise ratio falls as K grows, so the
tighter IWAE bound trains a worse inference network; MIWAE, CIWAE and PIWAE trade the two off.
Every bound uses the model's own prior and the posterior's log q of its draws, so any zoo VAE model
(a mixture prior, a flow posterior) can be trained with them. Gradients are the standard
reparameterised ones of the bound (not the doubly reparameterised estimator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.metrics import importance_sampled_nll
from zoo.variant import Batch, LossOutput, split_batch, step_per_objective

BOUNDS = ("iwae", "miwae", "ciwae", "piwae")
#: Entries of :meth:`IWAEVariant.objectives` that are objectives, not terms to report.
PIWAE_PARTS = ("objective", "encoder", "decoder")


@dataclass
class IWAEConfig(VAEConfig):
    """A VAE trained on an importance-weighted bound: ``mc_samples`` is K, the importance samples per bound."""

    mc_samples: int = 5
    #: "iwae", "miwae" (M groups of K), "ciwae" (convex combination with the ELBO), "piwae" (encoder on
    #: MIWAE, decoder on IWAE_{MK}).
    bound: str = "iwae"
    #: M, the independent groups of K samples of MIWAE and PIWAE (1 for IWAE and CIWAE).
    num_groups: int = 1
    #: b of CIWAE: the ELBO's weight (1: the ELBO, 0: IWAE).
    ciwae_beta: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("num_groups",), non_negative=("ciwae_beta",))
        if self.bound not in BOUNDS:
            raise ConfigError(f"IWAE bound must be one of {', '.join(BOUNDS)}, not {self.bound!r}")
        if self.num_groups > 1 and self.bound in ("iwae", "ciwae"):
            raise ConfigError(f"num_groups={self.num_groups} is M of MIWAE and PIWAE; bound {self.bound!r} takes "
                              f"K = mc_samples samples in one group: set num_groups=1, or bound='miwae'")
        if self.ciwae_beta > 1:
            raise ConfigError(f"ciwae_beta weighs the ELBO against IWAE and must lie in [0, 1], got {self.ciwae_beta}")


def log_weights(model: VAEModel, x: Tensor, y: Tensor | None, num_groups: int, num_samples: int) -> Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) for ``num_groups`` x ``num_samples`` reparameterised draws
    per example: (M, K, batch), with gradients."""
    posterior = model.encode(x, y)
    z, log_q = posterior.sample_and_log_prob(num_groups * num_samples)
    log_w = -model.reconstruction_nll(x, z, y) + model.prior_log_prob(z) - log_q
    return log_w.reshape(num_groups, num_samples, -1)


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k w_k over the second-to-last dim of log w (..., K, batch): (..., batch)."""
    return torch.logsumexp(log_w, dim=-2) - math.log(log_w.shape[-2])


class IWAEVariant(VAEVariant):
    """IWAE and its relatives: the VAE's model trained on an importance-weighted bound."""

    name = "iwae"
    config_class = IWAEConfig
    description = "Importance-weighted autoencoder (Burda et al.); MIWAE, CIWAE, PIWAE bounds (Rainforth et al.)"
    metric_names = {"neg_iwae_bound": "negative IWAE bound at the training K (mc_samples x num_groups samples per "
                                      "example; nats)"}

    def objectives(self, model: VAEModel, batch: Batch) -> dict[str, Tensor]:
        """The batch-mean negative bounds: ``neg_elbo``, ``neg_iwae_bound`` (over all M K draws), the training
        ``objective``, and for PIWAE the ``encoder`` (MIWAE) and ``decoder`` (IWAE_{MK}) objectives."""
        x, y = split_batch(batch)
        cfg = model.config
        log_w = log_weights(model, x, y, cfg.num_groups, cfg.mc_samples)
        elbo = log_w.mean(dim=(0, 1))
        iwae_all = iwae_bound(log_w.reshape(1, -1, log_w.shape[-1]))[0]
        terms = {"neg_elbo": -elbo.mean(), "neg_iwae_bound": -iwae_all.mean()}
        if cfg.bound == "iwae":
            terms["objective"] = terms["neg_iwae_bound"]
        elif cfg.bound == "ciwae":
            terms["objective"] = -(cfg.ciwae_beta * elbo + (1 - cfg.ciwae_beta) * iwae_all).mean()
        else:
            miwae = iwae_bound(log_w).mean(0)
            terms["neg_miwae_bound"] = -miwae.mean()
            if cfg.bound == "miwae":
                terms["objective"] = terms["neg_miwae_bound"]
            else:  # PIWAE: each network its own bound
                terms.update(encoder=terms["neg_miwae_bound"], decoder=terms["neg_iwae_bound"],
                             objective=terms["neg_iwae_bound"])
        return terms

    def loss(self, model: VAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        """The bound the variant trains on (PIWAE: the decoder's IWAE_{MK}, the bound on log p(x))."""
        terms = self.objectives(model, batch)
        return LossOutput(terms["objective"], {k: v for k, v in terms.items() if k not in PIWAE_PARTS})

    def train_step(self, model: VAEModel, batch: Batch, optimizers: dict[str, torch.optim.Optimizer],
                   *, step: int) -> dict[str, Tensor]:
        """The default step, except PIWAE: encoder gradients from MIWAE, decoder gradients from IWAE_{MK}."""
        if model.config.bound != "piwae":
            return super().train_step(model, batch, optimizers, step=step)
        routes = [("encoder", list(model.encoder.parameters())), ("decoder", list(model.decoder.parameters()))]
        terms = step_per_objective(lambda: self.objectives(model, batch), routes, optimizers.values(), step)
        return {"loss": terms["objective"], **{k: v for k, v in terms.items() if k not in PIWAE_PARTS}}

    def metrics(self, model: VAEModel, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        """The IWAE bound at the training K: the importance-sampled estimate of log p(x) with that many samples."""
        k = model.config.mc_samples * model.config.num_groups
        return {"neg_iwae_bound": importance_sampled_nll(model, data, num_samples=k, seed=seed)["nll"]}


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(IWAEVariant())
