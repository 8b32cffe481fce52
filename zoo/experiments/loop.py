"""A minimal training loop for experiments that change the loss itself (weights on its terms,
noise injected into a latent), which a variant's fixed loss cannot express."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from zoo.data import TensorData


def train_with_loss(model: nn.Module, data: TensorData, loss: Callable[[nn.Module, Tensor], Tensor], *,
                    epochs: int, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
                    after_epoch: Callable[[int], None] | None = None) -> nn.Module:
    """Adam on ``loss(model, x)`` for ``epochs`` passes over ``data`` (seeded order), then eval mode.
    ``after_epoch(epoch)`` (0-based) runs after each pass, e.g. to measure or to move a schedule on."""
    from zoo.training import TrainConfig
    from zoo.variant import make_adam

    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimiser = make_adam(model.parameters(), TrainConfig(lr=lr))
    for epoch in range(epochs):
        model.train()
        for x, *_ in data.batches(batch_size, generator=order):
            value = loss(model, x)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
        if after_epoch is not None:
            after_epoch(epoch)
    return model.eval()


class LinearWarmup:
    """A KL weight that rises linearly from 0 to 1 over ``epochs`` epochs (KL annealing, Bowman et al. 2016;
    Sonderby et al. 2016): call it for the weight, ``advance(epoch)`` after each epoch."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.done = epochs, 0

    def __call__(self) -> float:
        return min(1.0, self.done / self.epochs)

    def advance(self, epoch: int) -> None:
        self.done = epoch + 1


def weighted_elbo(reconstruction_weight: float = 1.0, kl_weight: float | Callable[[], float] = 1.0, *,
                  free_bits: float = 0.0, noise_dim: int | None = None,
                  noise_std: float = 0.0) -> Callable[[nn.Module, Tensor], Tensor]:
    """The VAE loss with weights on its two terms (1, 1 is the negative ELBO). ``kl_weight`` may be a callable
    read at every step (a schedule such as :class:`LinearWarmup`). ``free_bits`` > 0 is Kingma et al.'s (2016)
    free-bits objective: each latent's KL, averaged over the batch, counts as at least ``free_bits`` nats, so a
    latent below that pays nothing for carrying information. With ``noise_dim``, Gaussian noise of
    ``noise_std`` is added to that latent on its way into the decoder."""
    def loss(model: nn.Module, x: Tensor) -> Tensor:
        posterior = model.encode(x)
        z = posterior.sample()
        if noise_dim is not None:
            z = z.clone()
            z[:, noise_dim] += noise_std * torch.randn_like(z[:, noise_dim])
        recon = model.reconstruction_nll(x, z)
        kl = posterior.kl().flatten(1).mean(0).clamp_min(free_bits).sum()
        weight = kl_weight() if callable(kl_weight) else kl_weight
        return reconstruction_weight * recon.mean() + weight * kl

    return loss
