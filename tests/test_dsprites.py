"""dSprites generated exactly: the factor grid, the original row order, and the rendering's geometry."""

from __future__ import annotations

import math

import pytest
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


def test_a_smaller_image_is_the_same_scene_at_a_lower_resolution():
    def centroid(img):  # (1, H, W) -> (x, y) of the lit pixels' centres
        rows, cols = img[0].nonzero(as_tuple=True)
        return torch.tensor([float(cols.float().mean()) + 0.5, float(rows.float().mean()) + 0.5])

    chosen = index_to_factors(torch.randint(0, 737_280, (50,), generator=torch.Generator().manual_seed(1)))
    large, small = render(chosen), render(chosen, size=32)
    assert small.shape == (50, 1, 32, 32) and set(small.unique().tolist()) <= {0.0, 1.0}
    for big, little in zip(large, small, strict=True):
        assert (centroid(big) / 2 - centroid(little)).abs().max() < 0.6  # pixel centres: positions halve
        assert abs(float(little.sum()) * 4 / float(big.sum()) - 1) < 0.35  # areas quarter


def test_rendering_without_indexing_by_shape_gives_the_same_pixels():
    from zoo.dsprites import _inside, inside_by_shape

    generator = torch.Generator().manual_seed(2)
    shapes = torch.randint(3, (300,), generator=generator)
    u, v = (torch.rand(2, 300, 16, 16, generator=generator) * 2.4 - 1.2).unbind(0)  # points in and around outlines
    by_shape = inside_by_shape(shapes, u, v)
    assert 0.2 < float(by_shape.float().mean()) < 0.8
    for shape in range(3):
        rows = shapes == shape
        assert torch.equal(by_shape[rows], _inside(shape, u[rows], v[rows]))


def test_fixed_factors_pick_their_rows_and_bad_ones_are_named():
    from zoo.dsprites import check_fixed_factors, fixed_factor_indices

    rows = fixed_factor_indices({"shape": 0, "orientation": 0})
    assert len(rows) == 6 * 32 * 32
    chosen = index_to_factors(rows)
    assert (chosen[:, 0] == 0).all() and (chosen[:, 2] == 0).all() and len(torch.unique(chosen, dim=0)) == len(rows)
    with pytest.raises(ValueError, match=r"unknown dSprites factor\(s\) \['colour'\]"):
        check_fixed_factors({"colour": 1})
    with pytest.raises(ValueError, match="factor 'scale' takes indices 0 to 5, not 6"):
        check_fixed_factors({"scale": 6})


def test_factor_ranges_keep_each_factor_to_its_band_and_bad_ones_are_named():
    from zoo.dsprites import factor_ranges

    assert factor_ranges() == ((0, 2), (0, 5), (0, 39), (0, 31), (0, 31))
    assert factor_ranges({"shape": 0}, {"pos_x": (12, 19)}) == ((0, 0), (0, 5), (0, 39), (12, 19), (0, 31))
    with pytest.raises(ValueError, match=r"factor\(s\) \['pos_x'\] are both fixed and given a range"):
        factor_ranges({"pos_x": 3}, {"pos_x": (0, 4)})
    with pytest.raises(ValueError, match=r"factor 'pos_y' takes indices 0 to 31; the range \(20, 32\) is not a band"):
        factor_ranges(ranges={"pos_y": (20, 32)})
    with pytest.raises(ValueError, match="is not a band"):
        factor_ranges(ranges={"scale": (4, 2)})
    with pytest.raises(ValueError, match=r"unknown dSprites factor\(s\) \['size'\]"):
        factor_ranges(ranges={"size": (0, 1)})


def test_a_stream_with_ranges_draws_inside_its_bands_and_the_default_stream_is_unchanged():
    from zoo.dsprites import ContinuousDSprites

    stream = ContinuousDSprites({"shape": 0, "orientation": 0}, size=32, ranges={"pos_x": (12, 19), "pos_y": (16, 16)})
    assert len(stream) == 6 * 8 and stream.to("cpu").bands == stream.bands
    factors = stream.draw_factors(4000, torch.Generator().manual_seed(0))
    pos_x = factors[:, 3]
    assert pos_x.min() >= 12 and pos_x.max() <= 19 and pos_x.min() < 12.1 and pos_x.max() > 18.9
    assert (factors[:, 4] == 16).all() and (factors[:, 0] == 0).all()
    whole = ContinuousDSprites(continuous=("scale",))  # shape, orientation and position drawn on the grid
    drawn = whole.draw_factors(3000, torch.Generator().manual_seed(1))
    assert set(drawn[:, 2].unique().tolist()) == set(range(40)) and (drawn[:, 3] == drawn[:, 3].round()).all()
    # no ranges: the draws of the stream the bundled dSprites recipes train on, as written before ranges existed
    generator, again = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = torch.stack([torch.randint(3, (10,), generator=again).float(), torch.rand(10, generator=again) * 5,
                            torch.randint(40, (10,), generator=again).float(), torch.rand(10, generator=again) * 31,
                            torch.rand(10, generator=again) * 31], 1)
    assert torch.equal(ContinuousDSprites().draw_factors(10, generator), expected)


def test_a_continuous_stream_draws_between_the_grid_values_and_repeats_for_a_seed():
    from zoo.dsprites import ContinuousDSprites

    stream = ContinuousDSprites({"shape": 2, "orientation": 10}, size=32)
    assert len(stream) == 6 * 32 * 32 and stream.num_batches(64) == 96 and stream.input_shape == (1, 32, 32)
    factors = stream.draw_factors(2000, torch.Generator().manual_seed(0))
    assert (factors[:, 0] == 2).all() and (factors[:, 2] == 10).all()
    for column, top in ((1, 5), (3, 31), (4, 31)):  # scale and position: anywhere in their range, off the grid
        values = factors[:, column]
        assert values.min() >= 0 and values.max() <= top and (values != values.round()).float().mean() > 0.99
        assert abs(float(values.mean()) - top / 2) < 0.05 * top
    first = next(stream.batches(16, generator=torch.Generator().manual_seed(3)))[0]
    again = next(stream.batches(16, generator=torch.Generator().manual_seed(3)))[0]
    assert first.shape == (16, 1, 32, 32) and torch.equal(first, again)
    assert sum(1 for _ in stream.batches(1000, drop_last=True)) == 6
    with pytest.raises(ValueError, match="only .* can vary continuously, not \\['shape'\\]"):
        ContinuousDSprites(continuous=("shape",))
