"""``mnist-full`` reads the raw IDX files (plain bytes) and refuses torchvision's processed ``.pt`` pickles:
nothing is ever unpickled. The files here are small IDX files written by the test itself."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import pytest
import torch

from zoo.data import load_dataset
from zoo.errors import DataError


def write_idx(path: Path, data: torch.Tensor, *, compress: bool = False) -> None:
    """An IDX file of unsigned bytes: magic (0, 0, type 0x08, dims), each dim big-endian, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, data.dim()) + b"".join(struct.pack(">I", d) for d in data.shape)
    payload = header + data.to(torch.uint8).numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)


def mnist_files(root: Path, *, compress: bool = False, n: int = 12) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    splits = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        suffix = ".gz" if compress else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        splits[split] = (images, labels)
    return splits


class Payload:
    """Unpickling this would create a file: proof that a refused .pt file ran nothing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant_processed_pickles(root: Path, marker: Path) -> None:
    for name in ("training.pt", "test.pt"):
        path = root / "MNIST" / "processed" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(Payload(marker)))


@pytest.mark.parametrize(("where", "compress"), [("", False), ("MNIST/raw", False), ("MNIST/raw", True)])
def test_raw_idx_files_are_read_under_root_or_mnist_raw(tmp_path: Path, where: str, compress: bool) -> None:
    root = tmp_path / "root"
    expected = mnist_files(root / where, compress=compress)
    marker = tmp_path / "unpickled"
    plant_processed_pickles(root, marker)  # present too, and never read
    for split, (images, labels) in expected.items():
        data = load_dataset("mnist-full", split, root=root)
        assert torch.equal(data.x, images.float().div(255).unsqueeze(1))
        assert torch.equal(data.y, labels.long())
    assert not marker.exists()


def test_processed_pt_files_alone_are_refused_without_unpickling(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "unpickled"
    plant_processed_pickles(tmp_path, marker)
    monkeypatch.setenv("ZOO_MNIST_ROOT", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("mnist-full", "train")
    message = str(info.value)
    assert f"refused {tmp_path / 'MNIST' / 'processed' / 'training.pt'}" in message
    assert "pickle" in message and "train-images-idx3-ubyte" in message
    assert not marker.exists()


def test_missing_files_name_what_is_looked_for_and_where(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist-full", "test", root=tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message


def test_a_file_that_is_not_idx_is_a_data_error(tmp_path: Path) -> None:
    mnist_files(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte is not an MNIST IDX file"):
        load_dataset("mnist-full", "train", root=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(5, 28, 28))
    with pytest.raises(DataError, match="holds 5 images but .* holds 12 labels"):
        load_dataset("mnist-full", "train", root=tmp_path)
