"""dSprites generated exactly: the factor grid, the original row order, and the rendering's geometry."""

from __future__ import annotations

import math

import torch

from zoo.data import load_dataset
from zoo.dsprites import FACTOR_SIZES, DSprites, factor_values, factors_to_index, index_to_factors, render


def factors(shape=0, scale=5, orientation=0, x=16, y=16):
    return torch.tensor([[shape, scale, orientation, x, y]])


def iou(a, b):
    return float((a.bool() & b.bool()).sum() / (a.bool() | b.bool()).sum())


def test_every_combination_exactly_once_in_the_original_order():
    assert math.prod(FACTOR_SIZES) == 737_280 == len(DSprites())
    all_factors = index_to_factors(torch.arange(737_280))
    assert torch.equal(factors_to_index(all_factors), torch.arange(737_280))
    assert len(torch.unique(all_factors, dim=0)) == 737_280
    # y varies fastest, then x, orientation, scale, shape
    assert all_factors[1].tolist() == [0, 0, 0, 0, 1]
    assert all_factors[32].tolist() == [0, 0, 0, 1, 0]
    assert all_factors[32 * 32].tolist() == [0, 0, 1, 0, 0]
    assert all_factors[32 * 32 * 40].tolist() == [0, 1, 0, 0, 0]
    assert all_factors[-1].tolist() == [2, 5, 39, 31, 31]


def test_factor_values_span_the_published_ranges():
    v = factor_values(torch.tensor([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31]]))
    assert v["scale"].tolist() == [0.5, 1.0]
    assert v["orientation"][0] == 0 and math.isclose(float(v["orientation"][1]), 2 * math.pi * 39 / 40, rel_tol=1e-6)
    assert v["pos_x"].tolist() == [0.0, 1.0] and v["pos_y"].tolist() == [0.0, 1.0]


def test_images_are_binary_64x64_and_the_sprite_stays_inside():
    images = render(index_to_factors(torch.randint(0, 737_280, (200,), generator=torch.Generator().manual_seed(0))))
    assert images.shape == (200, 1, 64, 64)
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    assert (images.sum((1, 2, 3)) > 0).all()
    assert images[:, :, 0, :].sum() == 0 and images[:, :, -1, :].sum() == 0  # nothing touches the border
    assert images[:, :, :, 0].sum() == 0 and images[:, :, :, -1].sum() == 0


def test_area_grows_with_the_square_of_scale():
    small, large = render(factors(shape=1, scale=0)), render(factors(shape=1, scale=5))
    ratio = float(large.sum() / small.sum())
    assert abs(ratio - (1.0 / 0.5) ** 2) < 0.4  # pixel counts of a 2:1 ellipse at radius 4.5 and 9


def test_position_moves_the_centroid_right_and_down():
    def centroid(img):
        rows, cols = img[0, 0].nonzero(as_tuple=True)
        return float(cols.float().mean()), float(rows.float().mean())

    left, right = centroid(render(factors(x=0))), centroid(render(factors(x=31)))
    top, bottom = centroid(render(factors(y=0))), centroid(render(factors(y=31)))
    assert right[0] - left[0] > 35 and abs(right[1] - left[1]) < 1
    assert bottom[1] - top[1] > 35 and abs(bottom[0] - top[0]) < 1


def test_rotation_symmetries_of_the_three_shapes():
    quarter, half = 10, 20  # orientation indices for pi/2 and pi
    assert iou(render(factors(shape=0)), render(factors(shape=0, orientation=quarter))) > 0.95
    assert iou(render(factors(shape=1)), render(factors(shape=1, orientation=half))) > 0.95
    assert iou(render(factors(shape=1)), render(factors(shape=1, orientation=quarter))) < 0.6
    assert iou(render(factors(shape=2)), render(factors(shape=2, orientation=half))) < 0.8


def test_load_dataset_streams_training_and_holds_fixed_test_rows():
    train = load_dataset("dsprites", "train")
    assert isinstance(train, DSprites) and train.num_batches(64) == 11_520
    (batch,) = next(train.batches(8, generator=torch.Generator().manual_seed(0)))
    assert batch.shape == (8, 1, 64, 64)
    test_a, test_b = load_dataset("dsprites", "test"), load_dataset("dsprites", "test")
    assert test_a.x.shape == (1000, 1, 64, 64) and torch.equal(test_a.x, test_b.x)
    assert load_dataset("dsprites", "val").x.shape == (500, 1, 64, 64)
