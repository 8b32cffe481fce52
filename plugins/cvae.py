"""Conditional VAE: q(z|x, y) and p(x|z, y), the one-hot label concatenated to both inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.errors import ConfigError, DataError
from zoo.variant import Batch, LossOutput, split_batch


@dataclass
class CVAEConfig(VAEConfig):
    num_classes: int = 10


class CVAEVariant(VAEVariant):
    """CVAE: the VAE loss with every distribution conditioned on the label y."""

    name = "cvae"
    config_class = CVAEConfig
    description = "Conditional VAE: sample(n, y=label) generates the requested class"
    conditional = True

    def tiny_config(self) -> CVAEConfig:
        return CVAEConfig(input_shape=(1, 8, 8), latent_dim=4, hidden_dims=(32,), num_classes=3)

    def build(self, config: CVAEConfig) -> VAEModel:
        if config.num_classes < 1:
            raise ConfigError("cvae needs num_classes >= 1 (the number of labels it conditions on)")
        return VAEModel(config)

    def loss(self, model: VAEModel, batch: Batch, *, step: int | Tensor = 0) -> LossOutput:
        _, y = split_batch(batch)
        if y is None:
            raise DataError("cvae is conditional: batches must be (x, y) with integer labels y")
        return super().loss(model, batch, step=step)


@zoo.hookimpl
def zoo_register_variants(register: Any) -> None:
    register(CVAEVariant())
