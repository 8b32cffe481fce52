"""zoo.pictures: interpolations, traversals, the 2-D manifold, latent scatter and per-latent bar charts,
checked on the bundled MNIST checkpoints (a VAE, a 2-D VAE, a CVAE and a deterministic AE)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor
from torch.testing import assert_close

import zoo
from zoo.data import TensorData, load_dataset
from zoo.metrics import costly_latents
from zoo.pictures import interpolate, manifold, save_latent_bars, save_latent_scatter, slerp, traversals


@pytest.fixture(scope="module")
def test_set() -> TensorData:
    return load_dataset("mnist", "test")  # 100 images per class, sorted by class


@pytest.fixture(scope="module")
def vae() -> torch.nn.Module:
    return zoo.load("vae-mnist")


@pytest.fixture(scope="module")
def vae_2d() -> torch.nn.Module:
    return zoo.load("vae-mnist-2d")


@pytest.fixture(scope="module")
def cvae() -> torch.nn.Module:
    return zoo.load("cvae-mnist")


@pytest.fixture(scope="module")
def ae() -> torch.nn.Module:
    return zoo.load("ae-mnist")


def spy_on_decode(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """Record every z the model decodes (the real decoder still runs)."""
    seen: list[Tensor] = []
    decode = model.decode

    def recording(z: Tensor, y: Tensor | int | None = None) -> Tensor:
        seen.append(z.detach().clone())
        return decode(z, y)

    monkeypatch.setattr(model, "decode", recording)
    return seen


@torch.no_grad()
def code_of(model: torch.nn.Module, x: Tensor, y: Tensor | int | None = None) -> Tensor:
    return model.encode(x.unsqueeze(0), y).mode()


# --- slerp ----------------------------------------------------------------------------------------------------------

def test_slerp_keeps_the_norm_of_equal_norm_codes_and_hits_both_endpoints() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, generator=generator)
    b = b * a.norm() / b.norm()
    assert_close(slerp(a, b, 0.0), a)
    assert_close(slerp(a, b, 1.0), b)
    for t in (0.25, 0.5, 0.8):
        assert_close(slerp(a, b, t).norm(), a.norm())
    linear_mid = (a + b) / 2
    assert linear_mid.norm() < 0.9 * a.norm()  # random 16-D codes are near-orthogonal: the chord dips inside
    assert not torch.allclose(slerp(a, b, 0.5), linear_mid)


def test_slerp_is_linear_for_parallel_codes_and_broadcasts_over_pairs_and_steps() -> None:
    a = torch.tensor([1.0, 2.0, -1.0])
    for b in (2 * a, -a):  # the great circle is ill-defined: linear, finite
        assert_close(slerp(a, b, 0.5), (a + b) / 2)
    pairs_a, pairs_b = torch.randn(4, 1, 3), torch.randn(4, 1, 3)
    out = slerp(pairs_a, pairs_b, torch.linspace(0, 1, 6)[:, None])
    assert out.shape == (4, 6, 3)
    assert_close(out[:, 0], pairs_a[:, 0])
    assert_close(out[:, -1], pairs_b[:, 0])


# --- interpolate ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolation_starts_and_ends_at_the_decoded_posterior_means(vae, test_set, method) -> None:
    x_a, x_b = test_set.x[0], test_set.x[100]  # a 0 and a 1
    vae.train()
    images = interpolate(vae, x_a, x_b, steps=7, method=method)
    assert vae.training, "the model's training flag is restored"
    vae.eval()
    assert images.shape == (7, 1, 28, 28) and images.device.type == "cpu"
    assert images.min() >= 0 and images.max() <= 1
    with torch.no_grad():
        assert_close(images[0], vae.decode(code_of(vae, x_a))[0])
        assert_close(images[-1], vae.decode(code_of(vae, x_b))[0])
    assert (images[0] - images[-1]).abs().mean() > 0.05  # a 0 and a 1 decode differently


def test_slerp_and_linear_interpolations_decode_different_midpoints(vae, test_set, monkeypatch) -> None:
    x_a, x_b = test_set.x[0], test_set.x[100]
    a, b = code_of(vae, x_a)[0], code_of(vae, x_b)[0]
    seen = spy_on_decode(vae, monkeypatch)
    interpolate(vae, x_a, x_b, steps=3, method="linear")
    interpolate(vae, x_a, x_b, steps=3, method="slerp")
    linear_mid, spherical_mid = seen[0][1], seen[1][1]
    assert_close(linear_mid, (a + b) / 2)
    assert_close(spherical_mid, slerp(a, b, 0.5))
    assert spherical_mid.norm() > linear_mid.norm() * 1.05


def test_interpolating_a_batch_of_pairs_gives_one_row_per_pair(vae, test_set) -> None:
    x_a, x_b = test_set.x[[0, 200, 400]], test_set.x[[100, 300, 500]]
    images = interpolate(vae, x_a, x_b, steps=5)
    assert images.shape == (15, 1, 28, 28)
    with torch.no_grad():
        starts = vae.decode(vae.encode(x_a).mode())
        ends = vae.decode(vae.encode(x_b).mode())
    assert_close(images[0::5], starts)
    assert_close(images[4::5], ends)


def test_unknown_interpolation_method_names_the_allowed_ones(vae, test_set) -> None:
    with pytest.raises(ValueError, match="unknown interpolation method 'cubic'.*linear, slerp"):
        interpolate(vae, test_set.x[0], test_set.x[1], method="cubic")


def test_interpolation_of_a_deterministic_autoencoder_uses_its_codes(ae, test_set) -> None:
    x_a, x_b = test_set.x[300], test_set.x[800]
    images = interpolate(ae, x_a, x_b, steps=6, method="slerp")
    assert images.shape == (6, 1, 28, 28)
    with torch.no_grad():
        assert_close(images[0], ae.decode(code_of(ae, x_a))[0])
        assert_close(images[-1], ae.decode(code_of(ae, x_b))[0])


def test_conditional_interpolation_encodes_and_decodes_with_the_label(cvae, test_set) -> None:
    x_a, x_b = test_set.x[300], test_set.x[350]  # two 3s
    images = interpolate(cvae, x_a, x_b, steps=4, y=3)
    with torch.no_grad():
        assert_close(images[0], cvae.decode(code_of(cvae, x_a, 3), 3)[0])
        assert_close(images[-1], cvae.decode(code_of(cvae, x_b, 3), 3)[0])
    pairs = interpolate(cvae, test_set.x[[0, 300]], test_set.x[[50, 350]], steps=4, y=torch.tensor([0, 3]))
    assert pairs.shape == (8, 1, 28, 28)
    assert_close(pairs[4:], images)  # per-pair labels: the second pair's row is decoded as a 3


# --- traversals -----------------------------------------------------------------------------------------------------

def test_traversal_rows_are_sorted_by_mean_kl_over_the_data(vae, test_set) -> None:
    images, order = traversals(vae, test_set.x[300], data=test_set)
    assert images.shape == (16 * 9, 1, 28, 28)
    assert sorted(order) == list(range(16))
    with torch.no_grad():
        kl = vae.encode(test_set.x).kl().mean(0)
    assert (kl[order].diff() <= 1e-6).all(), f"KL along the rows: {kl[order].tolist()}"
    assert kl[order[0]] > 1.0 > kl[order[-1]]  # the bundled VAE has active and collapsed latents

    top, top_order = traversals(vae, test_set.x[300], data=test_set, dims=4)
    assert top_order == order[:4] and top.shape == (4 * 9, 1, 28, 28)
    _, chosen = traversals(vae, test_set.x[300], data=test_set, dims=[order[5], order[0], order[9]])
    assert chosen == [order[0], order[5], order[9]]


def test_traversal_without_data_orders_by_the_images_own_kl(vae, test_set) -> None:
    x = test_set.x[300]
    _, order = traversals(vae, x, steps=3)
    with torch.no_grad():
        kl = vae.encode(x[None]).kl()[0]
    assert (kl[order].diff() <= 1e-6).all()


def test_each_traversal_row_moves_one_latent_over_the_prior_values(vae, test_set, monkeypatch) -> None:
    x = test_set.x[300]
    base = code_of(vae, x)[0]
    seen = spy_on_decode(vae, monkeypatch)
    _, order = traversals(vae, x, steps=5, span=2.0, data=test_set)
    z = seen[0].reshape(16, 5, 16)
    for row, d in enumerate(order):
        others = [i for i in range(16) if i != d]
        assert_close(z[row][:, others], base[others].expand(5, -1), rtol=0, atol=0)
        assert_close(z[row][:, d], torch.linspace(-2.0, 2.0, 5))


def test_autoencoder_traversals_span_each_latents_spread_and_sort_by_variance(ae, test_set, monkeypatch) -> None:
    x = test_set.x[300]
    with torch.no_grad():
        codes = ae.encode(test_set.x).mode()
    seen = spy_on_decode(ae, monkeypatch)
    images, order = traversals(ae, x, dims=5, steps=3, span=2.0, data=test_set)
    assert images.shape == (15, 1, 28, 28)
    assert order == torch.argsort(codes.var(0), descending=True)[:5].tolist()
    z = seen[0].reshape(5, 3, 32)
    for row, d in enumerate(order):
        mean, std = codes[:, d].mean(), codes[:, d].std()
        assert_close(z[row][:, d], torch.stack([mean - 2 * std, mean, mean + 2 * std]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="without a standard normal prior and per-unit KL.*data="):
        traversals(ae, x)


def test_conditional_traversals_take_the_label(cvae, test_set) -> None:
    images, order = traversals(cvae, test_set.x[300], y=3, data=test_set, dims=3, steps=4)
    assert images.shape == (12, 1, 28, 28) and len(order) == 3


def test_traversal_arguments_are_checked(vae, test_set) -> None:
    with pytest.raises(ValueError, match="one image"):
        traversals(vae, test_set.x[:2])
    with pytest.raises(ValueError, match="0..15"):
        traversals(vae, test_set.x[0], dims=[3, 16])
    with pytest.raises(ValueError, match="1..16"):
        traversals(vae, test_set.x[0], dims=17)


# --- manifold -------------------------------------------------------------------------------------------------------

def test_manifold_decodes_a_symmetric_quantile_grid(vae_2d, monkeypatch) -> None:
    seen = spy_on_decode(vae_2d, monkeypatch)
    images = manifold(vae_2d, 6, bound=0.05)
    assert images.shape == (36, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    z = seen[0].reshape(6, 6, 2)  # (row, column, latent)
    grid = z[0, :, 0]
    assert_close(grid, -grid.flip(0))  # symmetric about the prior mean
    assert_close(grid[-1], torch.tensor(math.sqrt(2) * torch.erfinv(torch.tensor(0.9)).item()))  # Phi^-1(0.95)
    assert_close(z[:, :, 0], grid.expand(6, 6))  # z1 grows left to right in every row
    assert_close(z[:, :, 1], grid.flip(0)[:, None].expand(6, 6))  # z2 grows bottom to top
    assert images[0].ne(images[35]).any()


def test_manifold_of_a_wider_latent_says_why_not(vae) -> None:
    with pytest.raises(ValueError,
                       match=r"latent has shape \(16,\) and manifold\(\) needs a flat 2-D latent.*traversals"):
        manifold(vae)


# --- matplotlib plots -----------------------------------------------------------------------------------------------

def assert_png(path: Path, min_size: int = 300) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_size
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20  # not blank


def test_latent_scatter_pca_and_2d(vae, vae_2d, test_set, tmp_path) -> None:
    path = save_latent_scatter(vae, test_set, tmp_path / "pca.png", max_points=300)
    assert path == tmp_path / "pca.png"
    assert_png(path)
    assert_png(save_latent_scatter(vae, test_set, tmp_path / "dims.png", dims=(3, 7), max_points=300))
    vae_2d.train()
    assert_png(save_latent_scatter(vae_2d, test_set, tmp_path / "sub" / "2d.png"))
    assert vae_2d.training
    vae_2d.eval()
    with pytest.raises(ValueError, match="two latent indices in 0..15"):
        save_latent_scatter(vae, test_set, tmp_path / "bad.png", dims=(0, 16))


def test_latent_scatter_without_labels_and_with_many_classes(ae, test_set, tmp_path) -> None:
    x = test_set.x[::10]
    assert_png(save_latent_scatter(ae, TensorData(x), tmp_path / "unlabelled.png"))
    assert_png(save_latent_scatter(ae, TensorData(x, torch.arange(len(x)) % 30), tmp_path / "colorbar.png"))


def test_costly_latents_are_those_whose_gain_is_below_their_kl() -> None:
    assert costly_latents([2.0, 1.0, 0.5, 0.0], [5.0, 0.5, 0.5, -0.1]) == [1, 3]
    assert costly_latents([1.0], [2.0]) == []
    with pytest.raises(ValueError, match="2 KL values but 3 gains"):
        costly_latents([1.0, 2.0], [1.0, 2.0, 3.0])


def test_latent_bars_with_and_without_gains(tmp_path) -> None:
    kl = [3.0, 2.5, 0.01, 1.0]
    assert_png(save_latent_bars(kl, tmp_path / "kl.png"), min_size=200)
    assert_png(save_latent_bars(kl, tmp_path / "gain.png", gain_per_latent=[9.0, 1.0, 0.0, 1.5]), min_size=200)


def test_pictures_imports_matplotlib_and_torchvision_only_inside_the_functions_that_draw() -> None:
    import zoo.pictures

    tree = ast.parse(Path(zoo.pictures.__file__).read_text())
    top_level = [alias.name if isinstance(node, ast.Import) else node.module
                 for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names]
    assert "torch" in top_level
    assert not [name for name in top_level if name.split(".")[0] in ("matplotlib", "torchvision", "PIL")]
