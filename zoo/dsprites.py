"""dSprites, generated exactly: every combination of its five factors, rendered on demand.

737,280 binary 64x64 images: shape (square, ellipse, heart) x scale (6 values in [0.5, 1]) x
orientation (40 values in [0, 2 pi)) x position x (32 values in [0, 1]) x position y (32 values in
[0, 1]), each combination exactly once, indexed in the original file's order (y fastest, then x,
orientation, scale, shape). A pixel is 1 when its centre lies inside the sprite's exact outline
(square, 2:1 ellipse, implicit heart curve), tested for whole batches at once in torch, so nothing is
downloaded and the full set never sits in memory.

The outlines and the position range are this module's own rendering, not the DeepMind PNGs: the
factor grid is the same, the pixels are close to but not identical with the original file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SIZE = 64
#: Half-width of a scale-1 sprite in pixels, and the range of sprite centres.
BASE_RADIUS = 9.0
MARGIN = 12.0


def factor_values(factors: Tensor) -> dict[str, Tensor]:
    """Integer factor indices (N, 5) -> their values: scale, orientation (radians), positions."""
    return {
        "shape": factors[:, 0],
        "scale": 0.5 + factors[:, 1].float() * (0.5 / 5),
        "orientation": factors[:, 2].float() * (2 * math.pi / 40),
        "pos_x": factors[:, 3].float() / 31,
        "pos_y": factors[:, 4].float() / 31,
    }


def index_to_factors(index: Tensor) -> Tensor:
    """Row index in the original order (y fastest) -> factor indices (N, 5)."""
    out = []
    rest = index.long()
    for size in reversed(FACTOR_SIZES):
        out.append(rest % size)
        rest = rest // size
    return torch.stack(out[::-1], dim=1)


def factors_to_index(factors: Tensor) -> Tensor:
    index = torch.zeros(len(factors), dtype=torch.long)
    for i, size in enumerate(FACTOR_SIZES):
        index = index * size + factors[:, i].long()
    return index


def _inside(shape: int, u: Tensor, v: Tensor) -> Tensor:
    """Pixel centres inside a sprite, in the sprite's own frame (u right, v up; radius about 1)."""
    if shape == 0:  # square
        return (u.abs() <= 0.85) & (v.abs() <= 0.85)
    if shape == 1:  # ellipse, 2:1
        return u.pow(2) + (v / 0.5).pow(2) <= 1.0
    x, y = u * 1.15, v * 1.15 + 0.15  # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, point down
    return (x.pow(2) + y.pow(2) - 1).pow(3) - x.pow(2) * y.pow(3) <= 0


def render(factors: Tensor) -> Tensor:
    """Images (N, 1, 64, 64) in {0, 1} for factor indices (N, 5)."""
    values = factor_values(factors)
    grid = torch.arange(SIZE, dtype=torch.float32) + 0.5
    py, px = grid[None, :, None], grid[None, None, :]  # image rows go down
    theta = values["orientation"][:, None, None]
    radius = (BASE_RADIUS * values["scale"])[:, None, None]
    cx = (MARGIN + values["pos_x"] * (SIZE - 2 * MARGIN))[:, None, None]
    cy = (MARGIN + values["pos_y"] * (SIZE - 2 * MARGIN))[:, None, None]
    dx, dy = (px - cx) / radius, (cy - py) / radius  # offsets with y up
    u = dx * torch.cos(theta) + dy * torch.sin(theta)  # rotate by -theta into the sprite frame
    v = -dx * torch.sin(theta) + dy * torch.cos(theta)
    images = torch.zeros(len(factors), SIZE, SIZE, dtype=torch.bool)
    for shape in range(len(SHAPES)):
        rows = values["shape"] == shape
        if rows.any():
            images[rows] = _inside(shape, u[rows], v[rows])
    return images.unsqueeze(1).float()


class DSprites:
    """The dataset as a batch source for ``zoo.train`` (duck-types ``zoo.data.TensorData``'s batching).

    ``indices`` restricts it to a subset of the 737,280 rows (default: all). Batches are rendered
    when drawn; ``factors(i)`` gives the ground-truth factors for metrics.
    """

    y = None
    input_shape = (1, SIZE, SIZE)

    def __init__(self, indices: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        total = math.prod(FACTOR_SIZES)
        self.indices = torch.arange(total) if indices is None else indices.long()
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str) -> DSprites:
        return DSprites(self.indices, device)

    def images(self, rows: Tensor) -> Tensor:
        return render(index_to_factors(self.indices[rows])).to(self.device)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield (self.images(order[start:start + batch_size]),)


def sample_subset(n: int, seed: int = 0) -> DSprites:
    """A fixed random subset of ``n`` rows (for evaluation), the same for a given seed."""
    total = math.prod(FACTOR_SIZES)
    return DSprites(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n])
