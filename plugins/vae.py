"""Variational autoencoders: the VAE and the beta-VAE (with capacity schedule and KL warm-up).

q(z|x) = N(mu, diag(exp(logvar))), z = mu + sigma * eps, prior N(0, I), analytic KL; Bernoulli
decoder (BCE on logits) or Gaussian decoder with fixed sigma (-log N(x; f(z), sigma^2 I) with its
constant); K Monte-Carlo samples per example. Convention: sums per example, mean over the batch.

The latent is a flat vector of ``latent_dim`` numbers, or with ``latent_channels > 0`` (conv
architecture) a spatial grid (latent_channels, H / 2^L, W / 2^L) as the VAEs of latent diffusion have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

import zoo
from zoo.config import check_fields
from zoo.distributions import DiagonalGaussian, Posterior
from zoo.errors import ConfigError
from zoo.losses import reconstruction_nll
from zoo.model import ZooModel, condition_vector
from zoo.nets import Decoder, Encoder, SpatialDecoder, SpatialEncoder, spatial_latent_shape
from zoo.variant import Batch, LossOutput, Variant, linear_ramp, split_batch


@dataclass
class VAEConfig:
    """Architecture and likelihood of a VAE; ``num_classes > 0`` makes it conditional (CVAE)."""

    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (512, 256)
    architecture: str = "mlp"
    activation: str = "relu"
    #: "bernoulli" (decoder outputs logits; data in [0, 1]) or "gaussian" (fixed decoder_std).
    likelihood: str = "bernoulli"
    #: sigma_dc of the Gaussian decoder.
    decoder_std: float = 0.1
    #: K, the Monte-Carlo samples of z per example in the reconstruction term.
    mc_samples: int = 1
    num_classes: int = 0
    #: 0: a flat latent of latent_dim numbers. Above 0 (architecture "conv"): a spatial latent of this many
    #: channels at the conv trunk's resolution (latent_dim is then not used).
    latent_channels: int = 0

    #: Families whose latent must be flat (a mixture prior, a flow, codes on a sphere) say why here; a spatial
    #: latent (latent_channels > 0) is then refused with that reason.
    flat_latent_only: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, positive=("input_shape", "latent_dim", "hidden_dims", "decoder_std", "mc_samples"),
                     non_negative=("num_classes", "latent_channels"))
        if self.latent_channels and self.flat_latent_only:
            raise ConfigError(f"{self.flat_latent_only}: set latent_channels=0")
        if self.latent_channels and self.architecture != "conv":
            raise ConfigError(f"a spatial latent (latent_channels={self.latent_channels}) needs architecture='conv', "
                              f"not {self.architecture!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ConfigError(f"VAE likelihood must be 'bernoulli' or 'gaussian', not {self.likelihood!r}")


class VAEModel(ZooModel):
    """Encoder -> DiagonalGaussian posterior; decoder p(x|z[, y]). ``encode`` returns the posterior."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        cond = config.num_classes
        if config.latent_channels:
            self.encoder = SpatialEncoder(config.input_shape, config.hidden_dims, 2 * config.latent_channels,
                                          config.activation, cond_dim=cond)
            self.decoder = SpatialDecoder(config.latent_channels, config.hidden_dims, config.input_shape,
                                          config.activation, cond_dim=cond)
        else:
            self.encoder = Encoder(config.input_shape, config.hidden_dims, self.encoder_outputs(config),
                                   config.architecture, config.activation, cond_dim=cond)
            self.decoder = Decoder(config.latent_dim, config.hidden_dims, config.input_shape,
                                   config.architecture, config.activation, cond_dim=cond)

    @staticmethod
    def encoder_outputs(config: VAEConfig) -> int:
        """Numbers the encoder of a flat latent outputs per example: the posterior's mean and log-variance
        (a flow posterior adds a context for its transforms)."""
        return 2 * config.latent_dim

    @property
    def latent_shape(self) -> tuple[int, ...]:
        cfg = self.config
        if cfg.latent_channels:
            return spatial_latent_shape(cfg.input_shape, cfg.hidden_dims, cfg.latent_channels)
        return (cfg.latent_dim,)

    def _cond(self, y: Tensor | int | None, n: int, like: Tensor) -> Tensor | None:
        return condition_vector(y, self.config.num_classes, n, like.device, like.dtype)

    def encode(self, x: Tensor, y: Tensor | int | None = None) -> DiagonalGaussian:
        mean, logvar = self.encoder(x, self._cond(y, len(x), x)).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode_logits(self, z: Tensor, y: Tensor | int | None = None) -> Tensor:
        """Decoder output (logits or Gaussian mean); ``z`` may carry leading sample dims (K, B, *latent_shape)."""
        lead = z.shape[:z.dim() - len(self.latent_shape)]
        if len(lead) == 1:  # (B, *latent_shape): no sample dims to fold into the batch (no reshapes to record)
            return self.decoder(z, self._cond(y, lead[0], z))
        flat = z.reshape(-1, *self.latent_shape)
        cond = self._cond(y, lead[-1], z)
        if cond is not None:
            cond = cond.repeat(flat.shape[0] // lead[-1], 1)
        return self.decoder(flat, cond).reshape(*lead, *self.config.input_shape)

    def reconstruction_nll(self, x: Tensor, z: Tensor, y: Tensor | int | None = None) -> Tensor:
        """-log p(x|z) per example (Bernoulli: BCE on the logits; Gaussian: with its constant)."""
        return reconstruction_nll(self.decode_logits(z, y), x, self.config.likelihood, self.config.decoder_std)

    def decode(self, z: Tensor, y: Tensor | int | None = None) -> Tensor:
        """Mean of p(x|z): sigmoid of the logits (Bernoulli) or the Gaussian mean."""
        out = self.decode_logits(z, y)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def forward(self, x: Tensor, y: Tensor | int | None = None) -> Tensor:
        """Reconstruction: from the posterior mean in eval mode (deterministic), a sample in training."""
        posterior = self.encode(x, y)
        z = posterior.sample() if self.training else posterior.mode()
        return self.decode(z, y)

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` draws from the prior N(0, I) (of class ``y`` for a conditional model)."""
        ref = next(self.parameters())
        z = torch.randn((n, *self.latent_shape), generator=generator, device=ref.device, dtype=ref.dtype)
        return self.decode(z, y)


def one_draw(model: VAEModel, x: Tensor, y: Tensor | None = None) -> tuple[Posterior, Tensor, Tensor, Tensor]:
    """The pieces of a one-sample ELBO that the VAE families reweight or add to: (posterior, one reparameterised
    draw z per example, the batch-mean reconstruction NLL at z, the batch-mean closed-form KL)."""
    posterior = model.encode(x, y)
    z = posterior.sample()
    return posterior, z, model.reconstruction_nll(x, z, y).mean(), model.example_kl(posterior).mean()


def keeps_standard_normal_prior(model: ZooModel) -> bool:
    """Whether ``model`` keeps the zoo's default prior N(0, I) and its closed-form KL (a VampPrior, a hyperspherical
    or a ladder model overrides :meth:`~zoo.ZooModel.latent_kl` or :meth:`~zoo.ZooModel.example_kl`)."""
    cls = type(model)
    return cls.latent_kl is ZooModel.latent_kl and cls.example_kl is ZooModel.example_kl


#: The card's description of the KL of a model without a closed-form one (a mixture prior, a flow posterior).
MONTE_CARLO_KL = {"kl": "KL(q(z|x) || p(z)) (nats; Monte Carlo over the ELBO's samples: no closed form)"}


class VAEVariant(Variant):
    """VAE: L = E_q[-log p(x|z)] (K samples) + KL(q(z|x) || N(0, I))."""

    name = "vae"
    config_class = VAEConfig
    description = "Variational autoencoder: Gaussian posterior, analytic KL, Bernoulli or Gaussian decoder"
    generative = True
    variational = True
    has_likelihood = True
    #: The network :meth:`build` makes; the VAE families with another prior or posterior set their own.
    model_class: type[VAEModel] = VAEModel

    def build(self, config: VAEConfig) -> VAEModel:
        if config.num_classes and not self.conditional:
            raise ConfigError(f"{self.name} is unconditional: num_classes must be 0, got {config.num_classes}; "
                              f"train the 'cvae' variant for a model conditioned on labels")
        return self.model_class(config)

    def terms(self, model: VAEModel, x: Tensor, y: Tensor | None) -> tuple[Posterior, Tensor, Tensor, bool]:
        """(posterior, reconstruction NLL per example averaged over K samples, KL per example, whether the KL
        is the closed form). A model without a closed-form KL (:meth:`~zoo.ZooModel.example_kl` is None: a
        mixture prior, a flow posterior) gets the Monte-Carlo estimate log q(z|x) - log p(z) at the same K
        draws that the reconstruction term uses."""
        posterior = model.encode(x, y)
        k = model.config.mc_samples
        if k == 1 and type(posterior) is DiagonalGaussian and keeps_standard_normal_prior(model):
            z, kl = posterior.sample_and_kl()  # one autograd node for the draw and the KL: fewer operations
            return posterior, model.reconstruction_nll(x, z, y), kl, True
        kl = model.example_kl(posterior)
        if kl is None:
            z, log_q = posterior.sample_and_log_prob(k if k > 1 else None)
        else:
            # K > 1: z is (K, B, *latent_shape) and the NLL is averaged over K. One sample draws the same numbers
            # as (1, B, ...) would, without the sample dim: the same values with fewer operations per step.
            z = posterior.sample(k if k > 1 else None)
        recon = model.reconstruction_nll(x, z, y)
        recon = recon.mean(0) if k > 1 else recon
        if kl is None:
            kl = log_q - model.prior_log_prob(z)
            return posterior, recon, kl.mean(0) if k > 1 else kl, False
        return posterior, recon, kl, True

    def kl_weight_and_target(self, config: Any, step: int | Tensor | None) -> tuple[Any, Any]:
        """(weight on the KL, capacity C or None) at training step ``step``; ``step=None`` asks for the weight
        and capacity after every schedule has ended, the objective evaluation reports (eval mode: validation
        and its early stopping, ``zoo eval``). Numbers for an int step, 0-d tensors for a compiled loss's
        tensor step (:func:`zoo.variant.linear_ramp`). The plain VAE weighs it by 1."""
        return 1.0, None

    def loss(self, model: VAEModel, batch: Batch, *, step: int | Tensor = 0) -> LossOutput:
        x, y = split_batch(batch)
        _, recon, kl, closed_form = self.terms(model, x, y)
        recon, kl = recon.mean(), kl.mean()
        weight, capacity = self.kl_weight_and_target(model.config, step if model.training else None)
        neg_elbo = recon + kl
        # A Monte-Carlo KL says so in its name: it is a noisy estimate, and can be negative for one batch.
        kl_name = "kl" if closed_form else "kl_mc"
        if capacity is None and not isinstance(weight, Tensor) and weight == 1.0:  # the plain VAE: the -ELBO
            return LossOutput(neg_elbo, {"reconstruction": recon, kl_name: kl, "neg_elbo": neg_elbo})
        kl_term = weight * (kl - capacity).abs() if capacity is not None else weight * kl
        return LossOutput(recon + kl_term, {"reconstruction": recon, kl_name: kl, "neg_elbo": neg_elbo})


@dataclass
class BetaVAEConfig(VAEConfig):
    beta: float = 4.0
    #: Burgess et al.: the loss is beta * |KL - C| with C growing linearly from 0 to capacity_max
    #: nats over capacity_steps steps; capacity_max = 0 turns the schedule off.
    capacity_max: float = 0.0
    capacity_steps: int = 100_000
    #: KL warm-up: the KL weight rises linearly from 0 to beta over warmup_steps (0: off). Both schedules are
    #: training's: evaluation (eval mode: validation and early stopping, ``zoo eval``) sees the loss at their ends.
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("capacity_steps",), non_negative=("beta", "capacity_max", "warmup_steps"))


class BetaVAEVariant(VAEVariant):
    """beta-VAE: the VAE with the KL weighted by beta (beta = 1 is exactly the VAE)."""

    name = "beta-vae"
    config_class = BetaVAEConfig
    description = "beta-VAE: weighted KL, optional capacity schedule (Burgess et al.) and KL warm-up"

    def kl_weight_and_target(self, config: BetaVAEConfig, step: int | Tensor | None) -> tuple[Any, Any]:
        warm = 1.0 if step is None or config.warmup_steps == 0 else linear_ramp(step, config.warmup_steps)
        if config.capacity_max <= 0:
            return config.beta * warm, None
        done = 1.0 if step is None else linear_ramp(step, config.capacity_steps)
        return config.beta * warm, config.capacity_max * done


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(VAEVariant())
    register(BetaVAEVariant())
