"""A minimal training loop for experiments that change the loss itself (weights on its terms,
noise injected into a latent), which a variant's fixed loss cannot express."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from zoo.data import TensorData


def train_with_loss(model: nn.Module, data: TensorData, loss: Callable[[nn.Module, Tensor], Tensor], *,
                    epochs: int, lr: float = 1e-3, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Adam on ``loss(model, x)`` for ``epochs`` passes over ``data`` (seeded order), then eval mode."""
    from zoo.training import TrainConfig
    from zoo.variant import make_adam

    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimiser = make_adam(model.parameters(), TrainConfig(lr=lr))
    model.train()
    for _ in range(epochs):
        for x, *_ in data.batches(batch_size, generator=order):
            value = loss(model, x)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
    return model.eval()


def weighted_elbo(reconstruction_weight: float = 1.0, kl_weight: float = 1.0, *, noise_dim: int | None = None,
                  noise_std: float = 0.0) -> Callable[[nn.Module, Tensor], Tensor]:
    """The VAE loss with weights on its two terms (1, 1 is the negative ELBO); with ``noise_dim``,
    Gaussian noise of ``noise_std`` is added to that latent on its way into the decoder."""
    def loss(model: nn.Module, x: Tensor) -> Tensor:
        posterior = model.encode(x)
        z = posterior.sample()
        if noise_dim is not None:
            z = z.clone()
            z[:, noise_dim] += noise_std * torch.randn_like(z[:, noise_dim])
        recon = model.reconstruction_nll(x, z)
        return reconstruction_weight * recon.mean() + kl_weight * posterior.kl().flatten(1).sum(1).mean()

    return loss
