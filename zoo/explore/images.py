"""Images between the page and a model.

In: what the page sends (the sketchpad's composite, an upload, or an array posted to the API) is checked
(:class:`~zoo.explore.checks.RequestError` for anything that is not an image of the model's shape) and
adapted the way fine-tuning adapts data (:func:`zoo.finetuning.adapt_images`: 8-bit -> [0, 1], RGB <->
grey, resized). One more step matters for drawings: a model of light strokes on a dark background (MNIST,
dSprites) reads dark ink on white paper as its negative, so an image whose border is on the other side of
mid-grey from the data's border is inverted, and the page says so.

Out: images (N, C, H, W) in [0, 1] become uint8 arrays at their own resolution (the page scales them up
without smoothing), several in a grid with a white 2-pixel border as :func:`zoo.pictures.save_grid` draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.explore.checks import RequestError

#: Largest side, in pixels, of an image the page accepts (a guard against memory, not a model limit).
MAX_SIDE = 4096
#: How far an image's aspect ratio may differ from the model's before it is refused rather than resized.
ASPECT_TOLERANCE = 0.05
#: Padding between the images of a grid, in pixels.
GRID_PADDING = 2


def border_level(x: Tensor) -> float:
    """Mean value of the outermost pixels of images (N, C, H, W): the background's brightness."""
    edges = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    return float(edges.float().mean())


def composite(value: Any) -> Any:
    """The image in what an image editor sends (a dict with ``composite``), or the value itself."""
    if isinstance(value, dict):
        if "composite" not in value:
            raise RequestError(f"an image editor's value needs a 'composite' image, got keys {sorted(value)}")
        return value["composite"]
    return value


def to_input(image: Any, input_shape: tuple[int, int, int], background: float | None) -> tuple[Tensor, list[str]]:
    """One image from the page as a model input (1, C, H, W) in [0, 1], and what was changed to get it.

    ``image`` is an array (H, W), (H, W, 1|3|4) of 8-bit or [0, 1] values, or an editor value holding one.
    ``background`` is the data's border level (:func:`border_level`), None when the model's data are not
    known (nothing is inverted then). Raises a RequestError for no image, a shape that is not an image, an
    aspect ratio other than the model's, more than ``MAX_SIDE`` pixels a side, or values that are not
    pixels.
    """
    from zoo.errors import DataError
    from zoo.finetuning import adapt_images

    image = composite(image)
    if image is None:
        raise RequestError("no image yet: draw in the sketchpad or upload an image")
    array = np.asarray(image)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise RequestError(f"an image must hold numbers, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = array[..., 3:].astype(np.float64) / (255.0 if array.dtype == np.uint8 else 1.0)
        paper = 0.0 if background is not None and background < 0.5 else (255.0 if array.dtype == np.uint8 else 1.0)
        array = (array[..., :3] * alpha + paper * (1 - alpha)).astype(np.float32 if array.dtype != np.uint8
                                                                     else np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise RequestError(f"an image must have shape (H, W) or (H, W, 1, 3 or 4 channels), got {array.shape}")
    height, width = array.shape[:2]
    c, h, w = input_shape
    if min(height, width) < 1 or max(height, width) > MAX_SIDE:
        raise RequestError(f"the image is {width}x{height} pixels (W x H); send 1 to {MAX_SIDE} pixels a side "
                           f"(the model reads {w}x{h})")
    if abs((width / height) / (w / h) - 1) > ASPECT_TOLERANCE:
        raise RequestError(f"the image is {width}x{height} pixels (W x H) and the model reads {w}x{h}: crop it "
                           f"to the same aspect ratio ({w}:{h}) first; it is not stretched")
    x = torch.from_numpy(np.ascontiguousarray(array))
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise RequestError("the image holds NaN or infinite values")
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    try:
        x, notes = adapt_images(x.unsqueeze(0).to(torch.uint8 if array.dtype == bool else x.dtype), input_shape)
    except DataError as err:
        raise RequestError(f"not an image the model can read: {err}") from None
    if background is not None and (border_level(x) < 0.5) != (background < 0.5):
        x = 1.0 - x
        notes.append("inverted: the model's data are " + ("light on a dark background" if background < 0.5
                                                           else "dark on a light background"))
    return x, notes


def to_array(image: Tensor) -> np.ndarray:
    """One image (C, H, W) or (1, C, H, W) in [0, 1] as uint8 (H, W) for grey, (H, W, 3) for colour."""
    if image.dim() == 4:
        if len(image) != 1:
            raise ValueError(f"to_array shows one image, got a batch of {len(image)}: use grid()")
        image = image[0]
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()


def grid(images: Tensor, nrow: int, padding: int = GRID_PADDING) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as one uint8 picture, ``nrow`` a row, white ``padding`` between them."""
    from torchvision.utils import make_grid

    picture = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding, pad_value=1.0)
    if images.shape[1] == 1:
        picture = picture[:1]
    return to_array(picture)
