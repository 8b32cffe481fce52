"""Disentanglement metrics against synthetic encoders whose answer is known, and MIG against a hand computation.

The synthetic data set's observations are its factor indices as floats, so an "encoder" is a plain
function of the factors: a perfect code, a 45-degree mixing of factor pairs, pure noise, a code with
one factor copied twice.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

import zoo
from zoo.disentanglement import (
    CHEN_MIG_FACTORS,
    DSpritesFactors,
    beta_vae_score,
    disentanglement_scores,
    factor_vae_score,
    mig,
)
from zoo.dsprites import FACTOR_NAMES, FACTOR_SIZES

SMALL_SIZES = (3, 6, 10, 8, 8)
SCALES = torch.tensor([0.5, 2.0, -1.0, 0.3, 1.5])
BETA = {"num_train": 300, "num_eval": 200}
FACTOR = {"num_variance": 1000, "num_train": 300, "num_eval": 200}


class Synthetic:
    """Uniform independent factors; the observation of a combination is its index vector as floats."""

    def __init__(self, sizes: tuple[int, ...] = SMALL_SIZES, names: tuple[str, ...] = FACTOR_NAMES) -> None:
        self.factor_sizes = sizes
        self.factor_names = names[:len(sizes)]

    def sample_factors(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.stack([torch.randint(size, (n,), generator=generator) for size in self.factor_sizes], dim=1)

    def observations(self, factors: Tensor) -> Tensor:
        return factors.double()


def disentangled(x: Tensor) -> Tensor:
    """Latent i = an affine function of factor i, plus two dead (constant) latents."""
    dead = torch.tensor([0.7, -1.3], dtype=x.dtype).expand(len(x), 2)
    return torch.cat([x * SCALES.to(x.dtype) + 0.25, dead], dim=1)


def standardised(x: Tensor, sizes: tuple[int, ...] = SMALL_SIZES) -> Tensor:
    k = torch.tensor(sizes, dtype=x.dtype)
    return (x - (k - 1) / 2) / torch.sqrt((k**2 - 1) / 12)  # mean 0, std 1 under the uniform factor


def entangled(x: Tensor) -> Tensor:
    """Factor pairs (0, 1) and (2, 3) rotated by 45 degrees after standardising; factor 4 left alone."""
    s = standardised(x)
    r = 1 / math.sqrt(2)
    return torch.stack([r * (s[:, 0] + s[:, 1]), r * (s[:, 0] - s[:, 1]),
                        r * (s[:, 2] + s[:, 3]), r * (s[:, 2] - s[:, 3]), s[:, 4]], dim=1)


class Noise:
    """Ignores its input: 7 standard normal latents from its own seeded generator."""

    def __init__(self, seed: int = 123) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.randn(len(x), 7, generator=self.generator)


class Recording:
    """Wraps a representation and keeps every observation and code it saw, in order."""

    def __init__(self, represent) -> None:
        self.represent, self.inputs, self.codes = represent, [], []

    def __call__(self, x: Tensor) -> Tensor:
        z = self.represent(x)
        self.inputs.append(x)
        self.codes.append(z)
        return z


def entropy(*columns: np.ndarray) -> float:
    """Plug-in joint entropy (nats) of discrete columns, from counts of their distinct rows."""
    _, counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def equal_width_bins(z: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin numbers 0..num_bins-1 of equal-width bins over z's range (the maximum in the last bin)."""
    return np.clip(np.floor((z - z.min()) / (z.max() - z.min()) * num_bins), 0, num_bins - 1)


def test_a_disentangled_code_scores_one_on_every_metric_and_its_dead_latents_are_pruned():
    data = Synthetic()
    result = mig(data, disentangled, num_points=2000)
    info = np.array(result["normalized_mutual_info"])
    assert info.shape == (7, 5)
    # every factor has at most 20 values, so its 20-bin code keeps them apart: I(z_i; v_i) = H(v_i) exactly
    assert np.allclose(np.diag(info[:5]), 1.0)
    assert np.all(info[5:] == 0)  # constant latents carry no information
    assert result["mig"] > 0.95 and min(result["per_factor_gap"].values()) > 0.9

    factor = factor_vae_score(data, disentangled, **FACTOR)
    assert factor["num_active_dims"] == 5 and factor["active_dims"] == [0, 1, 2, 3, 4]
    assert factor["eval_accuracy"] == 1.0 and factor["train_accuracy"] == 1.0

    beta = beta_vae_score(data, disentangled, **BETA)
    assert beta["eval_accuracy"] > 0.95 and beta["train_accuracy"] > 0.95


def test_a_rotation_of_factor_pairs_scores_clearly_lower():
    data = Synthetic()
    perfect, mixed = mig(data, disentangled, num_points=2000), mig(data, entangled, num_points=2000)
    assert mixed["mig"] < 0.4 and mixed["mig"] < perfect["mig"] - 0.5
    gaps = mixed["per_factor_gap"]
    assert max(gaps[name] for name in ("shape", "scale", "orientation", "pos_x")) < 0.3  # the mixed four
    assert gaps["pos_y"] > 0.9  # the one left alone

    # Fixing a factor of a mixed pair shrinks both latents of the pair alike, so each of them gets votes from
    # two factors and the majority vote loses about half of them: about (4 * 0.5 + 1) / 5 = 0.6.
    score = factor_vae_score(data, entangled, **FACTOR)["eval_accuracy"]
    assert 0.45 < score < 0.8 < factor_vae_score(data, disentangled, **FACTOR)["eval_accuracy"]


def test_a_noise_code_scores_chance():
    data = Synthetic()
    assert mig(data, Noise(), num_points=2000)["mig"] < 0.05
    assert factor_vae_score(data, Noise(), **FACTOR)["eval_accuracy"] < 0.35  # chance: 1/5
    assert beta_vae_score(data, Noise(), **BETA)["eval_accuracy"] < 0.35


def test_a_factor_copied_to_two_latents_has_no_gap():
    def duplicated(x: Tensor) -> Tensor:
        return torch.cat([x[:, :1], 2 * x[:, :1] + 1, x], dim=1)  # shape twice (latents 0, 1, 2)

    result = mig(Synthetic(), duplicated, num_points=2000)
    info = np.array(result["normalized_mutual_info"])
    assert np.allclose(info[:3, 0], 1.0)  # all three copies know shape completely...
    assert abs(result["per_factor_gap"]["shape"]) < 1e-9  # ...so its top two are equal
    assert all(result["per_factor_gap"][name] > 0.9 for name in FACTOR_NAMES[1:])


def test_mig_matches_a_hand_computation_from_entropies():
    data = Synthetic(sizes=(3, 4))

    def code(x: Tensor) -> Tensor:  # two latents, each mixing both factors; no value sits on a bin edge
        return torch.stack([x[:, 0] + 0.37 * x[:, 1], x[:, 1] ** 1.5 - 0.8 * x[:, 0]], dim=1)

    recording = Recording(code)
    result = mig(data, recording, num_points=500, num_bins=5)
    factors = torch.cat(recording.inputs).numpy()
    codes = torch.cat(recording.codes).numpy()
    assert factors.shape == (500, 2)

    bins = [equal_width_bins(codes[:, j], 5) for j in range(2)]
    expected = np.array([[(entropy(b) + entropy(v) - entropy(b, v)) / entropy(v) for v in factors.T] for b in bins])
    assert np.allclose(result["normalized_mutual_info"], expected, atol=1e-12)
    assert expected.min() > 0.05 and expected.max() < 0.95  # a case where the binning and the gap both matter
    gaps = np.abs(expected[0] - expected[1])  # two latents: the gap is their difference
    assert np.allclose(list(result["per_factor_gap"].values()), gaps, atol=1e-12)
    assert math.isclose(result["mig"], gaps.mean(), abs_tol=1e-12)


def test_a_perfect_code_of_a_factor_with_more_values_than_bins_scores_below_one():
    data = Synthetic(sizes=FACTOR_SIZES)  # orientation has 40 values, the positions 32: more than 20 bins
    recording = Recording(disentangled)
    result = mig(data, recording, num_points=3000)
    factors = torch.cat(recording.inputs).numpy()
    info = np.diag(np.array(result["normalized_mutual_info"])[:5])
    for i, size in enumerate(FACTOR_SIZES):
        binned = np.minimum(np.floor(factors[:, i] * 20 / (size - 1)), 19)  # where value m of a perfect code falls
        assert math.isclose(info[i], entropy(binned) / entropy(factors[:, i]), rel_tol=1e-9)
    assert np.allclose(info[:2], 1.0) and np.all(info[2:] < 0.9)

    chen = mig(data, disentangled, num_points=3000, factors=CHEN_MIG_FACTORS)  # the same points, shape left out
    assert chen["factors"] == list(CHEN_MIG_FACTORS)
    assert chen["per_factor_gap"] == {name: result["per_factor_gap"][name] for name in CHEN_MIG_FACTORS}
    assert math.isclose(chen["mig"], np.mean([result["per_factor_gap"][n] for n in CHEN_MIG_FACTORS]))
    for unknown in (["colour"], [7], []):
        with pytest.raises(ValueError, match="factors"):
            mig(data, disentangled, num_points=100, factors=unknown)


def test_factor_vae_and_mig_do_not_depend_on_the_scale_of_each_latent():
    class NoisyCode:  # latent i = factor i + noise of std 0.3, then latent i times scale i
        def __init__(self, scales: list[float]) -> None:
            self.scales, self.generator = torch.tensor(scales), torch.Generator().manual_seed(5)

        def __call__(self, x: Tensor) -> Tensor:
            return (x.float() + 0.3 * torch.randn(x.shape, generator=self.generator)) * self.scales

    data = Synthetic()
    scales = [100.0, 1.0, 0.05, 1.0, 1.0]  # all latents stay above the pruning threshold (std 0.05)
    unit = factor_vae_score(data, NoisyCode([1.0] * 5), **FACTOR)
    assert unit["eval_accuracy"] > 0.9 and unit["num_active_dims"] == 5
    # without the global-variance normalisation the 0.05 latent would win most votes
    assert factor_vae_score(data, NoisyCode(scales), **FACTOR) == unit
    assert mig(data, NoisyCode(scales), num_points=1000)["mig"] == pytest.approx(
        mig(data, NoisyCode([1.0] * 5), num_points=1000)["mig"])


def test_pruning_follows_the_standard_deviation_threshold_and_no_active_latent_scores_zero():
    def with_small_latents(x: Tensor) -> Tensor:
        wiggle = (x[:, :1] - 1) / 0.8165  # shape, standardised: std 1
        return torch.cat([disentangled(x)[:, :5], 0.04 * wiggle, 0.06 * wiggle], dim=1)

    data = Synthetic()
    result = factor_vae_score(data, with_small_latents, **FACTOR)
    assert result["active_dims"] == [0, 1, 2, 3, 4, 6]  # std 0.04 pruned, std 0.06 kept
    assert factor_vae_score(data, with_small_latents, **FACTOR, min_std=0.1)["num_active_dims"] == 5

    no_threshold = factor_vae_score(data, disentangled, **FACTOR, min_std=0.0)
    assert no_threshold["active_dims"] == [0, 1, 2, 3, 4]  # constant latents stay out: their ratio would be 0/0
    assert no_threshold["eval_accuracy"] == 1.0

    constant = factor_vae_score(data, lambda x: torch.zeros(len(x), 3), **FACTOR)
    assert constant["num_active_dims"] == 0 and constant["eval_accuracy"] == 0.0


def test_the_same_seed_gives_the_same_numbers():
    data = Synthetic()
    small = {"num_variance": 200, "num_train": 50, "num_eval": 30}
    assert factor_vae_score(data, Noise(), **small, seed=3) == factor_vae_score(data, Noise(), **small, seed=3)
    assert beta_vae_score(data, Noise(), num_train=50, num_eval=30, seed=3) == beta_vae_score(
        data, Noise(), num_train=50, num_eval=30, seed=3)
    assert mig(data, entangled, num_points=300, seed=3) == mig(data, entangled, num_points=300, seed=3)
    assert mig(data, entangled, num_points=300, seed=3) != mig(data, entangled, num_points=300, seed=4)


def test_all_scores_of_an_untrained_conv_vae_on_dsprites():
    torch.manual_seed(0)
    model = zoo.create("vae", input_shape=(1, 64, 64), architecture="conv", hidden_dims=(8, 8, 16, 16), latent_dim=6)
    result = disentanglement_scores(model, fraction=0.001)
    assert set(result["scores"]) == {"beta_vae", "factor_vae", "mig"}
    assert all(0.0 <= value <= 1.0 for value in result["scores"].values())
    assert result["beta_vae"]["num_train"] == 10 and result["factor_vae"]["num_variance"] == 10
    assert result["mig"]["num_points"] == 10 and result["mig"]["factors"] == list(FACTOR_NAMES)
    dsprites = DSpritesFactors()
    factors = dsprites.sample_factors(4, torch.Generator().manual_seed(0))
    assert factors.dtype == torch.int64 and (factors < torch.tensor(FACTOR_SIZES)).all()
    assert dsprites.observations(factors).shape == (4, 1, 64, 64)
    with pytest.raises(ValueError, match="not both"):
        disentanglement_scores(model, quick=True, fraction=0.5)


def test_dsprites_with_fixed_factors_is_a_data_set_of_the_others():
    from zoo.dsprites import render

    data = DSpritesFactors({"shape": 1, "orientation": 5}, size=32)
    assert data.factor_names == ("scale", "pos_x", "pos_y") and data.factor_sizes == (6, 32, 32)
    factors = data.sample_factors(20, torch.Generator().manual_seed(0))
    full = torch.stack([torch.full((20,), 1), factors[:, 0], torch.full((20,), 5), factors[:, 1], factors[:, 2]], 1)
    assert torch.equal(data.observations(factors), render(full, 32))
    perfect = mig(data, lambda x: _centroid_code(x), num_points=2000)  # position read off the pixels
    assert perfect["factors"] == ["scale", "pos_x", "pos_y"] and perfect["per_factor_gap"]["pos_x"] > 0.6
    with pytest.raises(ValueError, match="factor 'shape' takes indices 0 to 2, not 3"):
        DSpritesFactors({"shape": 3})


def test_dsprites_with_a_band_of_positions_sees_the_band_as_its_grid():
    from zoo.dsprites import render

    data = DSpritesFactors({"shape": 0, "orientation": 0}, size=32, ranges={"pos_x": (12, 19), "pos_y": (16, 16)})
    assert data.factor_names == ("scale", "pos_x") and data.factor_sizes == (6, 8)
    factors = data.sample_factors(50, torch.Generator().manual_seed(0))
    assert factors[:, 1].max() == 7
    full = torch.stack([torch.zeros(50, dtype=torch.long), factors[:, 0], torch.zeros(50, dtype=torch.long),
                        factors[:, 1] + 12, torch.full((50,), 16)], 1)
    assert torch.equal(data.observations(factors), render(full, 32))
    perfect = mig(data, lambda x: _centroid_code(x), num_points=2000)
    assert perfect["factors"] == ["scale", "pos_x"] and perfect["per_factor_gap"]["pos_x"] > 0.6
    with pytest.raises(ValueError, match="both fixed and given a range"):
        DSpritesFactors({"pos_x": 1}, ranges={"pos_x": (0, 3)})


def _centroid_code(x: Tensor) -> Tensor:
    """A code of (mean column, mean row, lit area) of each image: position and scale, each in its own latent."""
    grid = torch.arange(x.shape[-1], dtype=torch.float32)
    area = x.sum((1, 2, 3))
    return torch.stack([(x.sum((1, 2)) * grid).sum(1) / area, (x.sum((1, 3)) * grid).sum(1) / area, area], 1)
