"""The explorer's answers as plain functions (no server, no browser): every registered checkpoint, the
pictures checked against the model itself, and every malformed request refused with a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo import pictures
from zoo.classifier import classify
from zoo.contract import has, reconstruct
from zoo.data import load_dataset
from zoo.errors import UnknownNameError
from zoo.explore import explorer as ex
from zoo.explore import images
from zoo.explore.checks import RequestError
from zoo.explore.images import GRID_PADDING, to_input
from zoo.metrics import active_units

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def explorers() -> ex.Explorers:
    return ex.Explorers("cpu")


@pytest.fixture(autouse=True)
def no_grad() -> object:
    """The tests call the models themselves too, to compare: without autograd, as the explorer does."""
    with torch.no_grad():
        yield


def digit_image(explorer: ex.Explorer, index: int = 7) -> np.ndarray:
    """Test image ``index`` as the page would send it: 8-bit, channels last."""
    return (explorer.data.x[index].permute(1, 2, 0).squeeze(-1).numpy() * 255).round().astype(np.uint8)


def label_of(explorer: ex.Explorer, index: int = 7) -> int | None:
    return int(explorer.data.y[index]) if explorer.num_classes else None


def as_float(image: np.ndarray) -> torch.Tensor:
    """A shown uint8 image (H, W) or (H, W, 3) as (1, C, H, W) in [0, 1]."""
    t = torch.from_numpy(image).float() / 255
    return (t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None])


def tiles(picture: np.ndarray, rows: int, cols: int, size: tuple[int, int], padding: int) -> torch.Tensor:
    """Cut a grid picture into its (rows * cols, 1, H, W) images."""
    h, w = size
    t = torch.from_numpy(picture).float() / 255
    return torch.stack([t[padding + r * (h + padding):padding + r * (h + padding) + h,
                          padding + c * (w + padding):padding + c * (w + padding) + w]
                        for r in range(rows) for c in range(cols)]).unsqueeze(1)


@pytest.mark.parametrize("name", zoo.list_checkpoints())
def test_every_checkpoint_answers_through_the_contract(explorers: ex.Explorers, name: str) -> None:
    """Reconstruction, posterior, sliders, interpolation, samples and map for every registered checkpoint; the
    pictures are the model's own outputs, and what does not apply is refused with the skip note."""
    explorer = explorers.get(name)
    model = explorer.model
    image, label = digit_image(explorer), label_of(explorer)
    reading = explorer.reconstruct(image, label)

    x = as_float(reading.input)
    y = None if label is None else torch.tensor([label])
    expected = reconstruct(model, x, y).clamp(0, 1)  # [0, 1] whatever the model's image_range (kl-f4: [-1, 1])
    assert (as_float(reading.reconstruction) - expected).abs().max() <= 1 / 255 + 1e-6, "not the model's forward"
    assert len(reading.table) == explorer.shape[0] and reading.chart.ndim == 3
    assert not model.training

    # the sliders start at the drawing's code: decoding their values gives the reconstruction back
    values = explorer.slider_values(reading.code)
    assert np.array_equal(explorer.decode_sliders(reading.code, values, label), reading.reconstruction)
    if explorer.units:
        moved = list(values)
        moved[0] += 2.0 * float(explorer.scale[explorer.units[0]])
        changed = explorer.decode_sliders(reading.code, moved, label)
        assert np.abs(changed.astype(int) - reading.reconstruction.astype(int)).mean() > 0.5, \
            f"moving the most informative unit {explorer.units[0]} of {name} left the image as it was"

    strip, codes = explorer.interpolation(image, digit_image(explorer, 500), "slerp", label)
    assert strip.shape[1] == ex.INTERPOLATION_STEPS * (explorer.input_shape[2] + GRID_PADDING) + GRID_PADDING
    first = tiles(strip, 1, 1, explorer.input_shape[1:], GRID_PADDING) if explorer.input_shape[0] == 1 else None
    if first is not None:  # the strip starts at A's reconstruction, as interpolate_at(t=0) does
        at_a = as_float(explorer.interpolate_at(codes, 0.0, "slerp", label))[0]
        assert (first[0] - at_a).abs().max() <= 1 / 255 + 1e-6

    if has(model, "generative"):  # the page's grid of the zoo's own prior samples with that seed
        expected = images.grid(pictures.prior_samples(model, ex.SAMPLES, y=label, seed=3), nrow=ex.SAMPLES_PER_ROW)
        assert np.array_equal(explorer.samples(3, label), expected)
    else:
        with pytest.raises(RequestError, match="does not declare `generative`"):
            explorer.samples(3, label)
        assert any("prior samples: skipped" in note for note in explorer.notes())

    assert explorer.map_kind == ("manifold" if explorer.shape == (2,) else "scatter")
    picked, caption = explorer.pick([5, 5], label)
    assert picked.shape[:2] == explorer.input_shape[1:]
    assert caption.startswith("z = (" if explorer.map_kind == "manifold" else "test image")


def test_sliders_are_the_informative_units_sorted_by_kl(explorers: ex.Explorers) -> None:
    explorer = explorers.get("vae-mnist")
    kl = torch.tensor(active_units(explorer.model, explorer.data)["kl_per_latent"])
    informative = [u for u in torch.argsort(kl, descending=True).tolist() if kl[u] > ex.INFORMATIVE]
    assert explorer.units == informative[:ex.MAX_SLIDERS]
    sliders = explorer.sliders()
    assert [s.unit for s in sliders] == explorer.units and all(s.low <= -3 and s.high >= 3 for s in sliders)
    assert "KL" in sliders[0].label and explorer.sliders_by.startswith("mean KL")


def test_a_model_without_prior_orders_sliders_by_code_variance(explorers: ex.Explorers) -> None:
    explorer = explorers.get("ae-mnist")
    variance = torch.tensor(active_units(explorer.model, explorer.data)["mean_variance"])
    assert explorer.units == torch.argsort(variance, descending=True).tolist()[:ex.MAX_SLIDERS]
    for slider in explorer.sliders():  # the data's mean +- 3 standard deviations
        centre, scale = explorer.centre[slider.unit], explorer.scale[slider.unit]
        assert slider.low == pytest.approx(float(centre - 3 * scale), abs=0.011)
        assert slider.high == pytest.approx(float(centre + 3 * scale), abs=0.011)


def test_spatial_sliders_move_one_channel_at_the_centre(explorers: ex.Explorers) -> None:
    explorer = explorers.get("vq-vae-mnist")
    assert explorer.spatial and explorer.position == (3, 3)
    reading = explorer.reconstruct(digit_image(explorer))
    values = explorer.slider_values(reading.code)
    values[0] += 1.5
    z = reading.code.clone()
    z[0, explorer.units[0], 3, 3] = values[0]
    expected = explorer.model.decode(z).clamp(0, 1)
    assert (as_float(explorer.decode_sliders(reading.code, values)) - expected).abs().max() <= 1 / 255 + 1e-6
    assert any("a unit is a channel" in note for note in explorer.notes())
    assert explorer.table_header()[0] == "channel"


def test_a_manifold_click_decodes_the_tile_under_it(explorers: ex.Explorers) -> None:
    """A click at the centre of tile (row, column) of the manifold picture decodes (nearly: half a pixel off the
    tile's exact centre) that tile's image, and not its neighbour's."""
    explorer = explorers.get("vae-mnist-2d")
    picture = explorer.map_picture()
    size = explorer.input_shape[1]
    assert picture.shape == (ex.MANIFOLD_N * size, ex.MANIFOLD_N * size)
    grid = tiles(picture, ex.MANIFOLD_N, ex.MANIFOLD_N, (size, size), 0)
    for row, column in [(0, 0), (3, 11), (14, 7)]:
        centre = [column * size + size // 2, row * size + size // 2]
        picked, caption = explorer.pick(centre)
        own = (as_float(picked)[0] - grid[row * ex.MANIFOLD_N + column]).abs()
        neighbour = (as_float(picked)[0] - grid[row * ex.MANIFOLD_N + (column + 1) % ex.MANIFOLD_N]).abs()
        assert own.max() <= 8 / 255 and own.mean() <= 1 / 255, (row, column)
        assert neighbour.mean() > 3 * own.mean(), (row, column)
        assert caption.startswith("z = (")
    left, right = explorer.manifold_code(0, 200), explorer.manifold_code(419, 200)
    assert left[0, 0] < -1.5 and right[0, 0] > 1.5 and left[0, 1] == pytest.approx(float(right[0, 1]))


def test_a_scatter_click_decodes_the_nearest_test_code(explorers: ex.Explorers) -> None:
    explorer = explorers.get("vae-mnist")
    k = 123
    x, y = explorer.scatter._pixel_points[k]
    picked, caption = explorer.pick([int(round(x)), int(round(y))])
    index = int(caption.split()[2])
    expected = explorer.model(explorer.data.x[index:index + 1]).clamp(0, 1)
    assert (as_float(picked) - expected).abs().max() <= 1 / 255 + 1e-6
    assert caption.startswith("test image") and f"(label {int(explorer.data.y[index])})" in caption
    assert np.hypot(*(explorer.scatter._pixel_points[index] - [x, y])) <= 1.0  # the point under the click


def test_class_seven_samples_read_as_seven(explorers: ex.Explorers) -> None:
    explorer = explorers.get("cvae-mnist")
    picture = explorer.samples(0, 7)
    rows = ex.SAMPLES // ex.SAMPLES_PER_ROW
    predicted = classify(tiles(picture, rows, ex.SAMPLES_PER_ROW, (28, 28), GRID_PADDING))[0].argmax(1)
    assert (predicted == 7).float().mean() >= 0.75, predicted.tolist()


def test_likelihood_of_a_drawing(explorers: ex.Explorers) -> None:
    """ELBO terms add up, the importance-sampled NLL is no worse than the ELBO, and K is stated."""
    explorer = explorers.get("vae-mnist")
    text = explorer.likelihood(digit_image(explorer))
    cells = [row.strip("| ").rsplit(" | ", 1) for row in text.splitlines() if row.startswith("| ")]
    neg_elbo, recon, kl, nll = (float(value) for _, value in cells[2:])  # after the header and its rule
    assert neg_elbo == pytest.approx(recon + kl, abs=0.02)
    assert 0 < nll <= neg_elbo + 1.0
    assert f"K = {ex.NLL_SAMPLES}" in text
    assert "not declare `variational`" in explorers.get("ae-mnist").likelihood(digit_image(explorer))


def test_a_drawing_on_white_paper_is_inverted_for_mnist(explorers: ex.Explorers) -> None:
    explorer = explorers.get("vae-mnist")
    white_on_black = digit_image(explorer)
    ink_on_paper = np.repeat((255 - white_on_black)[..., None], 3, axis=2)
    x, notes = explorer.read(ink_on_paper)
    assert any(note.startswith("inverted") for note in notes)
    assert torch.allclose(x, explorer.read(white_on_black)[0], atol=1 / 255)


def test_an_upload_of_another_size_is_resized_and_said(explorers: ex.Explorers) -> None:
    explorer = explorers.get("vae-mnist")
    big = np.kron(digit_image(explorer), np.ones((10, 10), dtype=np.uint8))
    x, notes = explorer.read(big)
    assert x.shape == (1, 1, 28, 28) and any("resized 280x280 -> 28x28" in n for n in notes)


@pytest.mark.parametrize("image, message", [
    (None, "no image yet"),
    (np.zeros((30, 100), np.uint8), "aspect ratio"),
    (np.zeros((5000, 5000), np.uint8), "1 to 4096 pixels a side"),
    (np.full((28, 28), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((2, 28, 28, 3), np.uint8), "must have shape"),
    (np.full((28, 28), 7.5, np.float32), "not an image the model can read"),
    (np.array([["a"] * 28] * 28), "must hold numbers"),
    ({"background": None}, "'composite'"),
])
def test_a_malformed_image_is_refused(explorers: ex.Explorers, image: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        explorers.get("vae-mnist").reconstruct(image)


def test_malformed_requests_are_refused_with_a_message(explorers: ex.Explorers) -> None:
    vae, cvae = explorers.get("vae-mnist"), explorers.get("cvae-mnist")
    code = vae.reconstruct(digit_image(vae)).code
    good = vae.slider_values(code)
    with pytest.raises(RequestError, match="slider 2 must be a finite number, got nan"):
        vae.decode_sliders(code, [good[0], float("nan"), *good[2:]])
    with pytest.raises(RequestError, match="finite number, got inf"):
        vae.decode_sliders(code, [float("inf"), *good[1:]])
    with pytest.raises(RequestError, match=f"expected {len(good)} slider values"):
        vae.decode_sliders(code, good[:-1])
    with pytest.raises(RequestError, match="the model changed"):
        cvae.decode_sliders(code, cvae.slider_values(torch.zeros(1, 4)), 3)
    with pytest.raises(RequestError, match="no starting point yet"):
        vae.decode_sliders(None, good)
    with pytest.raises(RequestError, match="pick a class from 0 to 9"):
        cvae.samples(0, None)
    with pytest.raises(RequestError, match="the class must be a whole number from 0 to 9, got 10"):
        cvae.samples(0, 10)
    with pytest.raises(RequestError, match="the seed must be a whole number"):
        vae.samples(-1)
    with pytest.raises(RequestError, match="the seed must be a whole number"):
        vae.samples(1.5)
    _, codes = vae.interpolation(digit_image(vae), digit_image(vae, 300), "linear")
    with pytest.raises(RequestError, match=r"must lie in \[0, 1\]"):
        vae.interpolate_at(codes, 1.5, "linear")
    with pytest.raises(RequestError, match="unknown interpolation 'cubic'"):
        vae.interpolate_at(codes, 0.5, "cubic")
    with pytest.raises(RequestError, match="the clicked x must be a whole number"):
        vae.pick([10_000, 3])
    with pytest.raises(RequestError, match="one pixel"):
        vae.pick("here")


def test_an_unknown_model_name_says_what_exists(explorers: ex.Explorers) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: vae-mnist"):
        explorers.get("vae-mnistt")
    with pytest.raises(RequestError, match="pick a model"):
        explorers.get("  ")


def test_without_data_a_model_without_prior_has_no_sliders() -> None:
    model = zoo.load("ae-mnist")
    explorer = ex.Explorer(model, "ae-mnist", data=None)
    assert explorer.units == [] and explorer.map_kind is None
    assert any("pass --data NAME" in note for note in explorer.notes())
    vae = ex.Explorer(zoo.load("vae-mnist"), "vae-mnist", data=None)
    assert vae.units == list(range(ex.MAX_SLIDERS)) and "no test data" in vae.sliders_by
    assert vae.reconstruct(np.zeros((28, 28), np.uint8)).notes == []  # nothing known to invert against


def test_test_data_of_another_shape_are_not_used() -> None:
    explorer = ex.Explorer(zoo.load("vae-mnist"), "vae-mnist", load_dataset("digits", "test"), "digits")
    assert explorer.data is None and "(1, 8, 8) images and the model reads (1, 28, 28)" in explorer.notes()[-1]


def test_every_kind_of_name_is_explored(olah, tmp_path: Path) -> None:
    """A Hub repo (served by olah on loopback), a local-dir: reference and a bare folder, each with the dataset
    its card names, and the same answers as the registered checkpoint."""
    folder = ROOT / "model_cards" / "vae-mnist-2d"
    olah.repo("org/explore-vae-mnist-2d").commit_folder(folder)
    explorers = ex.Explorers("cpu")
    reference = explorers.get("vae-mnist-2d")
    image = digit_image(reference)
    for name in ("hf-hub:org/explore-vae-mnist-2d", f"local-dir:{folder}", str(folder)):
        explorer = explorers.get(name)
        assert explorer.name == name and explorer.dataset == "mnist" and explorer.units == reference.units
        assert np.array_equal(explorer.reconstruct(image).reconstruction, reference.reconstruct(image).reconstruction)
        assert explorer.model.pretrained_info["path"]  # the card beside the picker is this folder's
        assert ex.card_text(explorer.model, name).startswith("# vae-mnist-2d")


def test_answers_are_computed_in_inference_mode(explorers: ex.Explorers) -> None:
    explorer = explorers.get("vae-mnist")
    reading = explorer.reconstruct(digit_image(explorer))
    assert reading.code.is_inference() and not explorer.model.training
    assert explorer.sample_point(3).is_inference()


def test_explorers_keep_a_few_models() -> None:
    explorers = ex.Explorers("cpu", capacity=2)
    first = explorers.get("vae-mnist-2d")
    explorers.get("cvae-mnist")
    assert explorers.get("vae-mnist-2d") is first  # kept
    explorers.get("ae-mnist")  # cvae-mnist, least recently used, is dropped
    assert list(explorers._loaded) == ["vae-mnist-2d", "ae-mnist"]
    assert explorers.get("local-dir:" + str(ROOT / "model_cards" / "vae-mnist-2d")).dataset == "mnist"


def test_to_input_keeps_transparency_as_paper() -> None:
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[10:18, 12:16] = [255, 255, 255, 255]  # an opaque white stroke, the rest transparent
    x, _ = to_input(rgba, (1, 28, 28), background=0.0)
    assert float(x[0, 0, 12, 13]) == 1.0 and float(x[0, 0, 0, 0]) == 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_explorer_runs_on_the_gpu() -> None:
    explorer = ex.Explorers("auto").get("vae-mnist")
    assert explorer.device.type == "cuda"
    reading = explorer.reconstruct(digit_image(explorer))
    assert reading.code.device.type == "cuda" and reading.reconstruction.dtype == np.uint8


def test_importing_zoo_and_the_explorer_does_not_import_gradio() -> None:
    code = ("import sys, zoo, zoo.cli, zoo.explore, zoo.explore.explorer, zoo.explore.space\n"
            "zoo.cli.build_parser()\nprint('gradio' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_two_test_images_are_of_two_labels(explorers: ex.Explorers) -> None:
    explorer = explorers.get("vae-mnist")
    stored = (explorer.data.x[:, 0] * 255).round().to(torch.uint8)

    def label(image: np.ndarray) -> int:
        return int(explorer.data.y[(stored == torch.from_numpy(image)).flatten(1).all(1)][0])

    for seed in range(5):
        a, b = explorer.test_pair(seed)
        assert label(a) != label(b)


@pytest.mark.parametrize("name", ["vamp-vae-mnist", "planar-vae-mnist", "ladder-vae-mnist"])
def test_a_mixture_prior_or_a_flow_posterior_is_explored_by_code_variance(explorers: ex.Explorers,
                                                                          name: str) -> None:
    """No per-unit KL (the VampPrior's KL to a mixture, a flow's): sliders by code variance over the data, not in
    N(0, I) units, and no KL column."""
    explorer = explorers.get(name)
    assert explorer.variational and not explorer.unit_kl
    variance = torch.tensor(active_units(explorer.model, explorer.data)["mean_variance"])
    informative = [u for u in torch.argsort(variance, descending=True).tolist() if variance[u] > ex.INFORMATIVE]
    assert explorer.units == informative[:ex.MAX_SLIDERS] and explorer.sliders_by.startswith("code variance")
    assert "KL (nats)" not in explorer.table_header()
