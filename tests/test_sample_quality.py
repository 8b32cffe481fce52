"""The evaluation classifiers and the sample-quality metrics, each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import zoo
from zoo.classifier import JUDGES, classifier_info, classify
from zoo.data import load_dataset, random_shift
from zoo.sample_quality import (
    balanced_labels,
    centre_spread,
    centres_of_mass,
    classifier_confidence,
    conditional_accuracy,
    draw_samples,
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


@pytest.mark.parametrize(("judge", "floor"), [("cnn", 0.97), ("mlp", 0.93)])
def test_bundled_classifiers_reach_their_test_accuracy_as_their_metadata_says(judge, floor):
    test = load_dataset("mnist", "test")
    logits, features = classify(test.x, judge=judge)
    accuracy = float((logits.argmax(1) == test.y).float().mean())
    assert accuracy >= floor
    assert accuracy == pytest.approx(float(classifier_info(judge)["test_accuracy"]), abs=1e-4)
    assert features.shape == (len(test), 128)
    assert classifier_info(judge)["judge"] == judge
    assert classifier_info(judge)["command"] == f"python -m zoo_model_cards.make_classifier --judge {judge}"


def test_the_mlp_judge_is_position_sensitive_and_the_cnn_is_not():
    """Test digits moved by up to 2 pixels (the numbers `make_classifier --report` prints): the MLP, trained without
    shifts, loses over 20 points of accuracy; the CNN, trained with them, loses at most one."""
    from zoo_model_cards.make_classifier import position_report

    report = position_report()
    test = load_dataset("mnist", "test")
    for judge, accuracy in report.items():  # the unshifted column is the plain test accuracy
        read = classify(test.x, judge=judge)[0].argmax(1)
        assert accuracy["test"] == pytest.approx(float((read == test.y).float().mean()))
    mlp, cnn = report["mlp"], report["cnn"]
    assert mlp["test shifted by up to 2 px"] < mlp["test"] - 0.2
    assert cnn["test shifted by up to 2 px"] > cnn["test"] - 0.01


def test_an_unknown_judge_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown evaluation classifier 'resnet'; the zoo has cnn, mlp"):
        classify(torch.zeros(1, 1, 28, 28), judge="resnet")


def test_centres_of_mass_match_scipy_and_shifts_spread_them():
    from scipy import ndimage

    test = load_dataset("mnist", "test").x
    expected = np.array([ndimage.center_of_mass(image[0].double().numpy()) for image in test[:200]])
    np.testing.assert_allclose(centres_of_mass(test[:200]).numpy(), expected, atol=1e-4)
    assert centres_of_mass(torch.zeros(1, 1, 28, 28)).tolist() == [[13.5, 13.5]]  # blank: the image's centre
    # a shift by a whole pixel moves every centre by one and leaves the spread as it was (digits clear of the
    # right edge, so that nothing wraps round)
    clear = test[test[..., -1].sum((1, 2)) == 0]
    moved = torch.roll(clear, 1, dims=3)
    torch.testing.assert_close(centres_of_mass(moved), centres_of_mass(clear) + torch.tensor([0.0, 1.0]),
                               rtol=0, atol=1e-3)
    assert centre_spread(moved) == pytest.approx(centre_spread(clear), abs=1e-4)
    # independent uniform shifts in {-2..2} add a variance of 2 per axis
    shifted = random_shift(test, 2, generator=torch.Generator().manual_seed(0))
    assert centre_spread(shifted) == pytest.approx((centre_spread(test) ** 2 + 2) ** 0.5, abs=0.1)


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
    for suffix in ("", "_mlp"):
        assert len(result[f"per_class{suffix}"]) == 10
        assert result[f"conditional_accuracy{suffix}"] == pytest.approx(np.mean(result[f"per_class{suffix}"]))
    labels = balanced_labels(500, 10)
    read = classify(draw_samples(model, 500, y=labels, seed=0), judge="mlp")[0].argmax(1)
    assert result["conditional_accuracy_mlp"] == pytest.approx(float((read == labels).float().mean()))
    with pytest.raises(ValueError, match="conditional accuracy needs a model that takes labels y"):
        conditional_accuracy(zoo.load("vae-mnist"))


def test_sample_quality_reports_every_judge_on_the_same_samples():
    test = load_dataset("mnist", "test").x
    model = zoo.load("vae-mnist")
    quality = sample_quality(model, test, num_samples=300, seed=3)
    samples = draw_samples(model, 300, seed=3)
    for judge in JUDGES:
        suffix = "" if judge == "cnn" else f"_{judge}"
        logits, features = classify(samples, judge=judge)
        assert quality[f"fcd{suffix}"] == pytest.approx(frechet_distance(classify(test, judge=judge)[1], features))
        assert quality[f"confidence{suffix}"] == pytest.approx(float(logits.softmax(1).max(1).values.mean()))
    assert quality["centre_spread"] == pytest.approx(centre_spread(samples))
    assert quality["centre_spread_real"] == pytest.approx(centre_spread(test))


def test_balanced_labels_cover_every_class_equally():
    assert torch.bincount(balanced_labels(50, 10)).tolist() == [5] * 10


def test_vae_gan_samples_are_sharper_than_vae_samples():
    test = load_dataset("mnist", "test")
    vae = sample_quality(zoo.load("vae-mnist"), test.x, num_samples=500)
    gan = sample_quality(zoo.load("vae-gan-mnist"), test.x, num_samples=500)
    assert gan["sharpness"] > vae["sharpness"]
    assert vae["sharpness_real"] == gan["sharpness_real"]
