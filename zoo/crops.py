"""Crops of images of any size at one resolution: how fully convolutional autoencoders (the VAEs of latent
diffusion) are fine-tuned on a folder of photos of different sizes.

:class:`ImageCrops` holds the images at their own sizes and serves batches of ``size`` x ``size`` crops:
random ones for training (a new crop of every image each epoch, drawn from the trainer's seeded data-order
generator, so runs and resumed runs repeat), centred ones for validation. It is a batch source the Trainer
takes like a dataset held in memory. :func:`read_images` reads a folder or tensors into it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.errors import DataError


class ImageCrops:
    """Images (C, H_i, W_i) in [0, 1], each at least ``size`` on both sides, served as (B, C, size, size) crops:
    at random offsets (``random=True``) or centred."""

    y = None

    def __init__(self, images: list[Tensor], size: int, *, random: bool, device: torch.device | str = "cpu") -> None:
        if not images:
            raise DataError("no images to crop")
        small = [tuple(im.shape[1:]) for im in images if min(im.shape[1:]) < size]
        if small:
            raise DataError(f"images of {small[0][0]}x{small[0][1]} pixels are smaller than the {size}x{size} crops")
        self.images, self.size, self.random = images, size, random
        self.device = torch.device(device)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.images[0].shape[0], self.size, self.size

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> ImageCrops:
        return ImageCrops([im.to(device) for im in self.images], self.size, random=self.random, device=device)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[Tensor]]:
        """``(crops,)`` batches; the order and (random crops) the offsets come from ``generator``."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield (torch.stack([self.crop(int(i), generator) for i in order[start:start + batch_size]]),)

    def crop(self, index: int, generator: torch.Generator | None = None) -> Tensor:
        image = self.images[index]
        height, width = image.shape[1:]
        if self.random:
            top = int(torch.randint(height - self.size + 1, (), generator=generator))
            left = int(torch.randint(width - self.size + 1, (), generator=generator))
        else:
            top, left = (height - self.size) // 2, (width - self.size) // 2
        return image[:, top:top + self.size, left:left + self.size]

    def centred(self) -> ImageCrops:
        """The same images served as centred crops (for validation)."""
        return ImageCrops(self.images, self.size, random=False, device=self.device)


def read_images(data: Any, channels: int, size: int) -> tuple[str, list[Tensor], list[str]]:
    """(description, images (C, H_i, W_i) in [0, 1] with ``channels`` channels, what was adapted) from an image
    folder (PNG/JPEG, flat or one sub-folder per class) or a tensor of images (N, C, H, W) in [0, 1]; an image
    with a side below ``size`` is enlarged (bilinear, antialiased) so that its shorter side is ``size``."""
    if isinstance(data, str | Path) and Path(data).is_dir():
        description, images = _read_folder(Path(data), channels)
    elif isinstance(data, Tensor) and data.dim() == 4:
        if data.shape[1] != channels:
            raise DataError(f"the images have {data.shape[1]} channels and the model {channels}")
        description, images = f"in-memory tensor: {len(data)} images of {tuple(data.shape[1:])}", list(data.float())
    else:
        raise DataError(f"crops are cut from an image folder or a tensor of images (N, C, H, W), not "
                        f"{type(data).__name__}")
    notes = []
    out = []
    for image in images:
        height, width = image.shape[1:]
        if min(height, width) < size:
            scale = size / min(height, width)
            shape = (max(size, round(height * scale)), max(size, round(width * scale)))
            image = F.interpolate(image[None], size=shape, mode="bilinear", antialias=True,
                                  align_corners=False)[0].clamp_(0, 1)
            notes.append(f"{height}x{width} -> {shape[0]}x{shape[1]}")
        out.append(image.contiguous())
    adaptations = [f"random {size}x{size} crops for training, centred ones for validation"]
    if notes:
        adaptations.append(f"enlarged {len(notes)} image(s) smaller than the crops (e.g. {notes[0]}; bilinear)")
    return description, out, adaptations


def _read_folder(path: Path, channels: int) -> tuple[str, list[Tensor]]:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from zoo.data import image_files

    files, _ = image_files(path)
    images, sizes = [], set()
    for file in files:
        try:
            with Image.open(file) as im:
                pixels = pil_to_tensor(im.convert("L" if channels == 1 else "RGB"))
        except OSError as err:
            raise DataError(f"cannot read the image {file}: {err}") from err
        images.append(pixels.float() / 255.0)
        sizes.add(tuple(pixels.shape[1:]))
    shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:5]) + (" ..." if len(sizes) > 5 else "")
    return f"image folder {path}: {len(files)} images of {shown} pixels", images
