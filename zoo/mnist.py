"""The full MNIST (``mnist-full``) from its four raw IDX files: plain bytes, never a pickle.

torchvision's ``MNIST`` class reads the ``processed/*.pt`` files it writes with ``torch.load``, an
unpickler (weights-only or not); ae-zoo never unpickles. The raw files are read with torchvision's
IDX parsers instead (``read_image_file`` / ``read_label_file``, which only parse bytes). They are looked
for under ``ROOT`` and ``ROOT/MNIST/raw`` (where ``MNIST(root, download=True)`` puts them), with their
standard names, as they are or gzipped. ``.pt`` files are refused with a message.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import torch

from zoo.errors import DataError

#: File name stems of the official splits: (images, labels).
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
#: What torchvision's MNIST writes under ROOT/MNIST/processed: pickles, refused.
PROCESSED = {"train": "training.pt", "test": "test.pt"}


def read_mnist(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of the official ``split`` ("train" or "test")."""
    images_name, labels_name = FILES[split]
    folders = [root, root / "MNIST" / "raw"]
    images, labels = _find(folders, images_name), _find(folders, labels_name)
    if images is None or labels is None:
        missing = [name for name, path in ((images_name, images), (labels_name, labels)) if path is None]
        processed = root / "MNIST" / "processed" / PROCESSED[split]
        refused = (f"refused {processed}: torchvision's processed MNIST files are pickles, and ae-zoo never unpickles. "
                   if processed.is_file() else "")
        raise DataError(f"{refused}mnist-full reads the raw IDX files {', '.join(missing)} (or .gz) from "
                        f"{folders[0]} or {folders[1]}; none found. torchvision's MNIST(root, download=True) "
                        f"puts them in ROOT/MNIST/raw, or get them from the MNIST site.")
    x, y = _read(images, images_name), _read(labels, labels_name)
    if x.dim() != 3 or y.dim() != 1:
        raise DataError(f"{images} must hold images (N, H, W) and {labels} labels (N,); they hold shapes "
                        f"{tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y.long()


def _find(folders: list[Path], name: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read(path: Path, name: str) -> torch.Tensor:
    """An IDX file's tensor, through torchvision's byte parser (gzipped files decompressed first)."""
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    try:
        if path.suffix != ".gz":
            return read_sn3_pascalvincent_tensor(str(path), strict=True)
        with tempfile.TemporaryDirectory(prefix="zoo-mnist-") as tmp:
            plain = Path(tmp) / name
            plain.write_bytes(gzip.decompress(path.read_bytes()))
            return read_sn3_pascalvincent_tensor(str(plain), strict=True)
    except (AssertionError, KeyError, ValueError, RuntimeError, OSError, EOFError) as err:
        raise DataError(f"{path} is not an MNIST IDX file ({type(err).__name__}: {err}); download it again") from None
