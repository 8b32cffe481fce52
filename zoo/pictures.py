"""Image grids of a model's reconstructions and samples (PNG through torchvision)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


@torch.no_grad()
def reconstruction_rows(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Inputs stacked above their eval-mode reconstructions: (2 * n, C, H, W)."""
    was_training = model.training
    model.eval()
    x = x.to(next(model.parameters()).device)
    recon = model(x, y).float().clamp(0, 1)
    model.train(was_training)
    return torch.cat([x.float().cpu(), recon.cpu()])


@torch.no_grad()
def class_rows(model: nn.Module, num_classes: int, per_class: int, seed: int = 0) -> Tensor:
    """One row per class of a conditional model's samples: (num_classes * per_class, C, H, W)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    rows = [model.sample(per_class, y=k, generator=generator).float().clamp(0, 1).cpu() for k in range(num_classes)]
    return torch.cat(rows)


@torch.no_grad()
def prior_samples(model: nn.Module, n: int, y: int | None = None, seed: int = 0) -> Tensor:
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return model.sample(n, y=y, generator=generator).float().clamp(0, 1).cpu()


def save_grid(images: Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write ``images`` (N, C, H, W in [0, 1]) as one PNG grid, ``nrow`` images per row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=nrow, padding=2, pad_value=1.0)
    return path
