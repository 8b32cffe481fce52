"""The evaluation classifier and the sample-quality metrics, each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import zoo
from zoo.classifier import classifier_info, classify
from zoo.data import load_dataset
from zoo.sample_quality import (
    balanced_labels,
    classifier_confidence,
    conditional_accuracy,
    frechet_distance,
    sample_quality,
    sharpness,
)


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root of S_a S_b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_frechet_distance_matches_scipy_sqrtm():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 8, generator=gen) @ torch.randn(8, 8, generator=gen)
    b = torch.randn(1500, 8, generator=gen) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a.double().numpy(), b.double().numpy()), rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    a = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1))
    assert abs(frechet_distance(a, a)) < 1e-6
    # a pure mean shift by d adds exactly ||d||^2
    shift = torch.full((16,), 0.5)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-6)


def numpy_laplacian_variance(image: np.ndarray) -> float:
    h, w = image.shape
    out = np.zeros((h - 2, w - 2))
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            out[i - 1, j - 1] = image[i - 1, j] + image[i + 1, j] + image[i, j - 1] + image[i, j + 1] - 4 * image[i, j]
    return float(out.var(ddof=1))


def test_sharpness_is_the_laplacian_variance_and_falls_with_blur():
    from torchvision.transforms.functional import gaussian_blur

    x = load_dataset("mnist", "test").x[:20]
    expected = np.mean([numpy_laplacian_variance(img[0].double().numpy()) for img in x])
    assert sharpness(x) == pytest.approx(expected, rel=1e-5)
    assert sharpness(gaussian_blur(x, 5, 1.5)) < 0.5 * sharpness(x)
    assert sharpness(torch.full((4, 1, 28, 28), 0.3)) == pytest.approx(0.0, abs=1e-10)


def test_bundled_classifier_reaches_97_percent_on_test_as_its_metadata_says():
    test = load_dataset("mnist", "test")
    logits, features = classify(test.x)
    accuracy = float((logits.argmax(1) == test.y).float().mean())
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(float(classifier_info()["test_accuracy"]), abs=1e-4)
    assert features.shape == (len(test), 128)
    assert classifier_info()["command"] == "python -m zoo_model_cards.make_classifier"


def test_classifier_refuses_images_that_are_not_28x28_grey():
    with pytest.raises(ValueError, match=r"28x28 grey images, got shape \(1, 64, 64\)"):
        classify(torch.zeros(2, 1, 64, 64))


def test_real_digits_score_better_than_noise():
    test = load_dataset("mnist", "test")
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert classifier_confidence(test.x) > 0.95 > classifier_confidence(noise)
    _, real = classify(test.x[::2])
    _, other_real = classify(test.x[1::2])
    _, fake = classify(noise)
    assert frechet_distance(real, other_real) < 0.1 * frechet_distance(real, fake)


def test_conditional_accuracy_of_cvae_mnist_and_its_per_class_numbers():
    model = zoo.load("cvae-mnist")
    result = conditional_accuracy(model, per_class=50, seed=0)
    assert result["conditional_accuracy"] > 0.9
    assert len(result["per_class"]) == 10
    assert result["conditional_accuracy"] == pytest.approx(np.mean(result["per_class"]))
    with pytest.raises(ValueError, match="conditional accuracy needs a model that takes labels y"):
        conditional_accuracy(zoo.load("vae-mnist"))


def test_balanced_labels_cover_every_class_equally():
    assert torch.bincount(balanced_labels(50, 10)).tolist() == [5] * 10


def test_vae_gan_samples_are_sharper_than_vae_samples():
    test = load_dataset("mnist", "test")
    vae = sample_quality(zoo.load("vae-mnist"), test.x, num_samples=500)
    gan = sample_quality(zoo.load("vae-gan-mnist"), test.x, num_samples=500)
    assert gan["sharpness"] > vae["sharpness"]
    assert vae["sharpness_real"] == gan["sharpness_real"]
