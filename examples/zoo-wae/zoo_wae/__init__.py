"""WAE-MMD (Tolstikhin et al. 2018) as an ae-zoo plugin.

A deterministic encoder and a decoder; instead of a per-example KL, the aggregate code distribution
q(z) is pulled towards the prior p(z) = N(0, I) with a maximum mean discrepancy penalty:

    L = mean_i ||x_i - f(g(x_i))||^2 + lambda * MMD_k(q(z), p(z)),

with the inverse multiquadratic kernel k(a, b) = C / (C + ||a - b||^2), C = 2 * latent_dim * sigma^2,
and the unbiased U-statistic estimate of MMD^2 over the batch (``zoo.mmd.mmd2``, the estimator the built-in
``wae-mmd`` and ``info-vae`` use). Sampling decodes prior draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import zoo
from zoo.config import check_fields
from zoo.losses import squared_error
from zoo.mmd import mmd2
from zoo.model import ZooModel
from zoo.nets import Decoder, Encoder
from zoo.variant import Batch, LossOutput, Variant, split_batch

CARDS = Path(__file__).parent / "cards"


@dataclass
class WAEConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 8
    hidden_dims: tuple[int, ...] = (512, 256)
    architecture: str = "mlp"
    activation: str = "relu"
    #: Weight lambda of the MMD penalty.
    mmd_weight: float = 10.0
    #: Prior scale sigma used in the kernel constant C = 2 * latent_dim * sigma^2.
    kernel_scale: float = 1.0

    def __post_init__(self) -> None:
        # Types against the annotations, and sizes and weights in range: a ConfigError naming the key.
        check_fields(self, positive=("input_shape", "latent_dim", "hidden_dims", "kernel_scale"),
                     non_negative=("mmd_weight",))


class WAEModel(ZooModel):
    def __init__(self, config: WAEConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder(config.input_shape, config.hidden_dims, config.latent_dim,
                               config.architecture, config.activation)
        self.decoder = Decoder(config.latent_dim, config.hidden_dims, config.input_shape,
                               config.architecture, config.activation)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None) -> Tensor:
        ref = next(self.parameters())
        z = torch.randn((n, self.config.latent_dim), generator=generator, device=ref.device, dtype=ref.dtype)
        return self.decode(z)


class WAEVariant(Variant):
    name = "wae"
    config_class = WAEConfig
    description = "Wasserstein autoencoder (WAE-MMD, IMQ kernel): example third-party plugin"
    generative = True

    def build(self, config: WAEConfig) -> WAEModel:
        return WAEModel(config)

    def loss(self, model: WAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        x, _ = split_batch(batch)
        z = model.encode(x)
        recon = squared_error(model.decode(z), x).mean()
        mmd = mmd2(z, torch.randn_like(z), "imq", model.config.kernel_scale)
        return LossOutput(recon + model.config.mmd_weight * mmd, {"reconstruction": recon, "mmd": mmd})


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(WAEVariant())


@zoo.hookimpl
def zoo_register_checkpoints(register: Any) -> None:
    register(zoo.CheckpointRef(name="wae-digits", variant="wae", folder=CARDS / "wae-digits",
                               dataset="digits",
                               description="WAE-MMD on scikit-learn's 8x8 digits"))
