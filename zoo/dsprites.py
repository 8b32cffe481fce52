"""dSprites, generated exactly: every combination of its five factors, rendered on demand.

737,280 binary 64x64 images: shape (square, ellipse, heart) x scale (6 values in [0.5, 1]) x
orientation (40 values in [0, 2 pi)) x position x (32 values in [0, 1]) x position y (32 values in
[0, 1]), each combination exactly once, indexed in the original file's order (y fastest, then x,
orientation, scale, shape). A pixel is 1 when its centre lies inside the sprite's exact outline
(square, 2:1 ellipse, implicit heart curve), tested for whole batches at once in torch, so nothing is
downloaded and the full set never sits in memory.

For experiments a CPU can afford, the same grid renders at a smaller ``size`` (the geometry scales with
it: a 32x32 image is the 64x64 one at half the resolution) and a subset holds some factors fixed
(:func:`fixed_factor_indices`), e.g. squares at orientation 0, whose only factors are scale and position,
or keeps a factor to a band of its grid (``ranges``: pos_x on indices 12 to 19 only).
Such a subset is small (6,144 images), a set a model could memorise; :class:`ContinuousDSprites` draws
scale and position anywhere between the grid's values, so that no finite set of images is there to be
memorised.

The outlines and the position range are this module's own rendering, not the DeepMind PNGs: the
factor grid is the same, the pixels are close to but not identical with the original file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

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


def render(factors: Tensor, size: int = SIZE) -> Tensor:
    """Images (N, 1, size, size) in {0, 1} for factor indices (N, 5), on the factors' device.

    ``size`` other than 64 scales the sprite and its range of positions with the image, so every
    factor keeps its meaning (at 32 a position step is 0.65 px instead of 1.3)."""
    values = factor_values(factors)
    zoom = size / SIZE
    grid = torch.arange(size, dtype=torch.float32, device=factors.device) + 0.5
    py, px = grid[None, :, None], grid[None, None, :]  # image rows go down
    theta = values["orientation"][:, None, None]
    radius = (BASE_RADIUS * zoom * values["scale"])[:, None, None]
    margin = MARGIN * zoom
    cx = (margin + values["pos_x"] * (size - 2 * margin))[:, None, None]
    cy = (margin + values["pos_y"] * (size - 2 * margin))[:, None, None]
    dx, dy = (px - cx) / radius, (cy - py) / radius  # offsets with y up
    u = dx * torch.cos(theta) + dy * torch.sin(theta)  # rotate by -theta into the sprite frame
    v = -dx * torch.sin(theta) + dy * torch.cos(theta)
    if factors.device.type != "cpu":
        return inside_by_shape(values["shape"], u, v).unsqueeze(1).float()
    images = torch.zeros(len(factors), size, size, dtype=torch.bool)
    for shape in range(len(SHAPES)):  # each sprite tested against its own outline only
        rows = values["shape"] == shape
        if rows.any():
            images[rows] = _inside(shape, u[rows], v[rows])
    return images.unsqueeze(1).float()


def inside_by_shape(shapes: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Pixels inside each sprite's outline without indexing by the data: every outline is tested and the
    sprite's own chosen, so the work does not depend on the values and a GPU renders it inside a CUDA
    graph (no host sync). :func:`render` uses it off the CPU, where the extra work costs nothing."""
    shape = shapes[:, None, None]
    return torch.where(shape == 0, _inside(0, u, v), torch.where(shape == 1, _inside(1, u, v), _inside(2, u, v)))


class DSprites:
    """The dataset as a batch source for ``zoo.train`` (duck-types ``zoo.data.TensorData``'s batching).

    ``indices`` restricts it to a subset of the 737,280 rows (default: all), ``size`` sets the image
    size (default 64). Batches are rendered on ``device`` when drawn.
    """

    y = None

    def __init__(self, indices: Tensor | None = None, device: torch.device | str = "cpu", size: int = SIZE) -> None:
        total = math.prod(FACTOR_SIZES)
        self.indices = torch.arange(total) if indices is None else indices.long()
        self.device = torch.device(device)
        self.size = size
        self.input_shape = (1, size, size)

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str) -> DSprites:
        return DSprites(self.indices, device, self.size)

    def images(self, rows: Tensor) -> Tensor:
        return render(index_to_factors(self.indices[rows]).to(self.device), self.size)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return _num_batches(len(self), batch_size, drop_last)

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield (self.images(order[start:start + batch_size]),)


def _num_batches(rows: int, batch_size: int, drop_last: bool) -> int:
    """Batches of ``batch_size`` in ``rows`` rows: the last partial one counts unless ``drop_last``."""
    return rows // batch_size if drop_last else -(-rows // batch_size)


def fixed_factor_indices(fixed: Mapping[str, int]) -> Tensor:
    """The rows (original order) whose factors named in ``fixed`` take the given indices, e.g.
    ``{"shape": 0, "orientation": 0}``: the 6,144 squares at orientation 0."""
    check_fixed_factors(fixed)
    factors = index_to_factors(torch.arange(math.prod(FACTOR_SIZES)))
    keep = torch.ones(len(factors), dtype=torch.bool)
    for name, value in fixed.items():
        keep &= factors[:, FACTOR_NAMES.index(name)] == value
    return keep.nonzero().squeeze(1)


def check_fixed_factors(fixed: Mapping[str, int]) -> None:
    """ValueError naming the problem when ``fixed`` names an unknown factor or an index out of its range."""
    unknown = sorted(set(fixed) - set(FACTOR_NAMES))
    if unknown:
        raise ValueError(f"unknown dSprites factor(s) {unknown}; the factors are {FACTOR_NAMES}")
    for name, value in fixed.items():
        size = FACTOR_SIZES[FACTOR_NAMES.index(name)]
        if not 0 <= value < size:
            raise ValueError(f"factor {name!r} takes indices 0 to {size - 1}, not {value}")


def factor_ranges(fixed: Mapping[str, int] | None = None,
                  ranges: Mapping[str, tuple[int, int]] | None = None) -> tuple[tuple[int, int], ...]:
    """The grid indices each factor keeps, as inclusive ``(low, high)`` per factor in :data:`FACTOR_NAMES`
    order: ``fixed`` factors one index, ``ranges`` factors a band of theirs (``{"pos_x": (12, 19)}``), the
    others their whole grid. ValueError naming the factor when a name is unknown, an index or band lies
    outside the grid, or a factor is both fixed and given a range."""
    fixed, ranges = dict(fixed or {}), dict(ranges or {})
    check_fixed_factors(fixed)
    unknown = sorted(set(ranges) - set(FACTOR_NAMES))
    if unknown:
        raise ValueError(f"unknown dSprites factor(s) {unknown}; the factors are {FACTOR_NAMES}")
    both = sorted(set(fixed) & set(ranges))
    if both:
        raise ValueError(f"factor(s) {both} are both fixed and given a range; give each one or the other")
    out = []
    for name, size in zip(FACTOR_NAMES, FACTOR_SIZES, strict=True):
        low, high = (fixed[name], fixed[name]) if name in fixed else ranges.get(name, (0, size - 1))
        if not 0 <= low <= high < size:
            raise ValueError(f"factor {name!r} takes indices 0 to {size - 1}; the range ({low}, {high}) is not a "
                             "band (low, high) with low <= high inside it")
        out.append((int(low), int(high)))
    return tuple(out)


def sample_subset(n: int, seed: int = 0) -> DSprites:
    """A fixed random subset of ``n`` rows (for evaluation), the same for a given seed."""
    total = math.prod(FACTOR_SIZES)
    return DSprites(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n])


#: The factors that vary continuously in the real world of dSprites: scale and position (shape is a
#: category; orientation is left on the grid, where the symmetries of square and ellipse are exact).
CONTINUOUS_FACTORS = ("scale", "pos_x", "pos_y")


class ContinuousDSprites:
    """A stream of dSprites images with ``continuous`` factors drawn uniformly over their whole range (between
    the grid's values too) and the others on the grid; ``fixed`` factors hold one index, ``ranges`` keep a
    factor to a band of grid indices (:func:`factor_ranges`; a continuous one is drawn anywhere in the band).

    A batch source for ``zoo.train`` like :class:`DSprites`: an "epoch" is ``length`` fresh draws (default:
    as many as the grid of the free factors holds), drawn from the trainer's generator, so a seed fixes the
    stream and a resumed run draws the same batches.
    """

    y = None

    def __init__(self, fixed: Mapping[str, int] | None = None, size: int = SIZE,
                 continuous: Sequence[str] = CONTINUOUS_FACTORS, length: int | None = None,
                 device: torch.device | str = "cpu", ranges: Mapping[str, tuple[int, int]] | None = None) -> None:
        self.fixed, self.ranges = dict(fixed or {}), dict(ranges or {})
        self.bands = factor_ranges(self.fixed, self.ranges)
        unknown = sorted(set(continuous) - set(CONTINUOUS_FACTORS))
        if unknown:
            raise ValueError(f"only {CONTINUOUS_FACTORS} can vary continuously, not {unknown}")
        self.continuous = tuple(continuous)
        self.size = size
        self.input_shape = (1, size, size)
        self.length = math.prod(high - low + 1 for low, high in self.bands) if length is None else length
        self.device = torch.device(device)

    def __len__(self) -> int:
        return self.length

    def to(self, device: torch.device | str) -> ContinuousDSprites:
        return ContinuousDSprites(self.fixed, self.size, self.continuous, self.length, device, self.ranges)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return _num_batches(self.length, batch_size, drop_last)

    def draw_factors(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 5) float factor "indices": one-index factors as given, continuous ones uniform on their band,
        the others uniform on the band's grid indices."""
        columns = []
        for name, (low, high) in zip(FACTOR_NAMES, self.bands, strict=True):
            if low == high:
                columns.append(torch.full((n,), float(low)))
            elif name in self.continuous:
                columns.append(low + torch.rand(n, generator=generator) * (high - low))
            else:
                columns.append(torch.randint(low, high + 1, (n,), generator=generator).float())
        return torch.stack(columns, dim=1)

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[Tensor]]:
        """``len(self)`` fresh images in batches; ``shuffle`` is ignored (every draw is random), and an
        unseeded call (no ``generator``) draws from a fixed seed, as a fixed set for pictures would be."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        stop = self.length - self.length % batch_size if drop_last else self.length
        for start in range(0, stop, batch_size):
            n = min(batch_size, stop - start)
            yield (render(self.draw_factors(n, generator).to(self.device), self.size),)
