"""VAEs with normalising-flow posteriors: planar and radial flows (Rezende & Mohamed 2015) and inverse
autoregressive flow (IAF, Kingma et al. 2016).

q(z|x) is the encoder's diagonal Gaussian q0(z0|x) pushed through L invertible transforms,
z = f_L(...f_1(z0)), with log q(z|x) = log q0(z0|x) - sum_l log|det df_l/dz_{l-1}|; the prior stays N(0, I).
The KL has no closed form, so the loss is the single-sample estimate
-log p(x|z) + log q(z|x) - log p(z) (terms ``reconstruction`` and ``kl_mc``), and the importance-sampled
NLL uses the same log q(z|x), log-determinant included (:class:`zoo.distributions.FlowPosterior`).

The transforms are Pyro's (``pyro.distributions.transforms``), a well-kept implementation: ``Planar``
(f(z) = z + u_hat tanh(w^T z + b), u_hat keeping w^T u_hat >= -1 so it is invertible), ``Radial``, and
``ConditionalAffineAutoregressive`` with ``stable=True``, Kingma et al.'s numerically stable IAF update
z = s * z + (1 - s) * m with s = sigmoid(.) from a MADE network that also reads a context h the encoder
outputs (eq. 14 and its Figure 2). Consecutive IAF steps reverse the order of the latents. Planar and
radial parameters are shared by all examples (as pythae's VAE_LinNF has them); the IAF is conditioned on x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from zoo_plugins.vae import MONTE_CARLO_KL, VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.config import check_fields
from zoo.distributions import DiagonalGaussian, FlowPosterior
from zoo.errors import ConfigError
from zoo.model import condition_vector

FLOWS = ("planar", "radial", "iaf")


@dataclass
class FlowVAEConfig(VAEConfig):
    """A VAE whose posterior is a diagonal Gaussian followed by ``flow_length`` transforms of kind ``flow``."""

    flat_latent_only: ClassVar[str] = "flow posteriors transform flat latents"
    flow: str = "planar"
    flow_length: int = 10
    #: IAF: hidden layers of each step's MADE network, and the size of the context h the encoder outputs.
    iaf_hidden_dims: tuple[int, ...] = (128, 128)
    iaf_context_dim: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("flow_length", "iaf_hidden_dims", "iaf_context_dim"))
        if self.flow not in FLOWS:
            raise ConfigError(f"flow must be one of {', '.join(FLOWS)}, not {self.flow!r}")
        if self.flow == "iaf" and self.latent_dim < 2:
            raise ConfigError("an autoregressive flow needs latent_dim >= 2")


def make_transforms(config: FlowVAEConfig) -> nn.ModuleList:
    """The flow's L transform modules (Pyro; imported here so ``import zoo`` does not import Pyro)."""
    from pyro.distributions.transforms import ConditionalAffineAutoregressive, Planar, Radial
    from pyro.nn import ConditionalAutoRegressiveNN

    dim = config.latent_dim
    if config.flow == "planar":
        return nn.ModuleList(Planar(dim) for _ in range(config.flow_length))
    if config.flow == "radial":
        return nn.ModuleList(Radial(dim) for _ in range(config.flow_length))
    steps = []
    for i in range(config.flow_length):
        order = torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1)
        made = ConditionalAutoRegressiveNN(dim, config.iaf_context_dim, list(config.iaf_hidden_dims),
                                           permutation=order)
        steps.append(ConditionalAffineAutoregressive(made, stable=True))
    return nn.ModuleList(steps)


class FlowVAEModel(VAEModel):
    """The VAE with ``flows``: its posterior is a :class:`~zoo.distributions.FlowPosterior`."""

    def __init__(self, config: FlowVAEConfig) -> None:
        super().__init__(config)
        self.flows = make_transforms(config)

    @staticmethod
    def encoder_outputs(config: FlowVAEConfig) -> int:
        return 2 * config.latent_dim + (config.iaf_context_dim if config.flow == "iaf" else 0)

    def encode(self, x: Tensor, y: Tensor | int | None = None) -> FlowPosterior:
        cfg = self.config
        out = self.encoder(x, condition_vector(y, cfg.num_classes, len(x), x.device, x.dtype))
        mean, logvar = out[:, :cfg.latent_dim], out[:, cfg.latent_dim:2 * cfg.latent_dim]
        if cfg.flow == "iaf":
            context = out[:, 2 * cfg.latent_dim:]
            transforms = [step.condition(context) for step in self.flows]
        else:
            transforms = list(self.flows)
        return FlowPosterior(DiagonalGaussian(mean, logvar), transforms)


class FlowVAEVariant(VAEVariant):
    """VAE with a flow posterior: L = E_q[-log p(x|z)] + E_q[log q0(z0|x) - sum log|det J| - log p(z)]."""

    name = "planar-vae"
    config_class = FlowVAEConfig
    model_class = FlowVAEModel
    description = "VAE with a planar-flow posterior (Rezende & Mohamed 2015): log q(z|x) with the log-determinant"
    metric_names = MONTE_CARLO_KL

    def tiny_config(self) -> FlowVAEConfig:
        return self.make_config(input_shape=(1, 8, 8), latent_dim=4, hidden_dims=(32,), flow_length=2,
                                iaf_hidden_dims=(16,), iaf_context_dim=4)


@dataclass
class RadialVAEConfig(FlowVAEConfig):
    flow: str = "radial"


@dataclass
class IAFVAEConfig(FlowVAEConfig):
    flow: str = "iaf"
    flow_length: int = 2


class RadialVAEVariant(FlowVAEVariant):
    name = "radial-vae"
    config_class = RadialVAEConfig
    description = "VAE with a radial-flow posterior (Rezende & Mohamed 2015)"


class IAFVAEVariant(FlowVAEVariant):
    name = "iaf-vae"
    config_class = IAFVAEConfig
    description = "VAE with an inverse autoregressive flow posterior (Kingma et al. 2016), conditioned on x"


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(FlowVAEVariant())
    register(RadialVAEVariant())
    register(IAFVAEVariant())
