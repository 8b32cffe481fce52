"""Sample quality of MNIST models, judged by the bundled evaluation classifiers (:mod:`zoo.classifier`).

Every classifier-based number is reported once per judge: the ``cnn`` (trained with 2-pixel shifts) under
the plain name (``fcd``), the position-sensitive ``mlp`` (trained without shifts) with a suffix
(``fcd_mlp``). Two judges of different kinds keep a number from resting on one network's blind spots:
the CNN forgives a jittered digit, the MLP does not.

- :func:`frechet_distance`: the Frechet distance between Gaussians fitted to two sets of features.
  With the classifier's 128-d penultimate features it is a "Frechet classifier distance" in the
  spirit of the Frechet LeNet distance: **not** the Inception FID, and not comparable with FID
  numbers published for other data or networks; lower is closer to real test digits.
- :func:`sharpness`: the mean variance of the Laplacian-filtered image, a standard blur measure
  (blurry images have little high-frequency energy); compare it with real digits' value.
- :func:`conditional_accuracy`: how often the classifier recognises the requested label in a
  conditional model's samples.
- :func:`classifier_confidence`: the mean top-class probability of samples (samples from holes in a
  latent space look like no digit in particular).
- :func:`centre_spread`: how far the digits' centres of mass scatter, in pixels; a model trained on
  shifted digits draws samples that scatter more than the test digits do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zoo.classifier import DEFAULT_JUDGE, JUDGES, check_mnist_shaped, classify, metric_suffix
from zoo.contract import has, require, sample_images

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64.

    The symmetric form of the matrix square root keeps every step on positive semi-definite
    matrices, so it needs no complex arithmetic (unlike ``scipy.linalg.sqrtm(S_a @ S_b)``, which it
    equals in exact arithmetic)."""
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


def sharpness(images: Tensor) -> float:
    """Mean over images of the variance of their Laplacian (per channel, valid region)."""
    x = images.float()
    kernel = LAPLACIAN.to(x.device).expand(x.shape[1], 1, 3, 3)
    return float(F.conv2d(x, kernel, groups=x.shape[1]).flatten(1).var(1).mean())


def centres_of_mass(images: Tensor) -> Tensor:
    """(N, 2) intensity-weighted mean (row, column) of each image's pixels (summed over channels), in pixels
    from the top-left pixel's centre; a blank image's centre is the image's centre."""
    mass = images.float().sum(1)
    height, width = mass.shape[1:]
    rows = torch.arange(height, dtype=mass.dtype, device=mass.device)
    cols = torch.arange(width, dtype=mass.dtype, device=mass.device)
    total = mass.sum((1, 2))[:, None]
    moments = torch.stack([mass.sum(2) @ rows, mass.sum(1) @ cols], 1)
    middle = torch.tensor([(height - 1) / 2, (width - 1) / 2], dtype=mass.dtype, device=mass.device)
    return torch.where(total > 0, moments / total.clamp_min(1e-12), middle)


def centre_spread(images: Tensor) -> float:
    """The standard deviation of the images' centres of mass along each axis, averaged over the two axes
    (pixels): how much the digits' positions scatter."""
    return float(centres_of_mass(images).std(0).mean())


def classifier_confidence(images: Tensor, judge: str = DEFAULT_JUDGE) -> float:
    """Mean top-class probability the classifier ``judge`` gives ``images``."""
    return mean_confidence(classify(images, judge=judge)[0])


def mean_confidence(logits: Tensor) -> float:
    """Mean top-class probability of a judge's ``logits`` (for images already classified)."""
    return float(logits.softmax(1).max(1).values.mean())


@torch.no_grad()
def draw_samples(model: nn.Module, n: int, *, y: Tensor | int | None = None, seed: int = 0,
                 batch_size: int = 1000, sampler: str | None = None) -> Tensor:
    """``n`` samples of ``model`` (labels ``y`` per sample or one label for conditional models; or through the
    fitted ex-post ``sampler``), on CPU."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        k = min(batch_size, n - start)
        labels = y[start:start + k].to(device) if isinstance(y, Tensor) else y
        out.append(sample_images(model, k, y=labels, generator=generator, sampler=sampler).float().clamp(0, 1).cpu())
    return torch.cat(out)


def balanced_labels(n: int, num_classes: int) -> Tensor:
    """``n`` labels cycling through the classes: every class equally often (to within one)."""
    return torch.arange(n) % num_classes


def sample_quality(model: nn.Module, real: Tensor, num_samples: int = 5000, seed: int = 0,
                   sampler: str | None = None) -> dict[str, float]:
    """Per judge, the Frechet classifier distance of ``num_samples`` samples (from the prior, or through the
    fitted ex-post ``sampler``) to the ``real`` images and the classifier's mean confidence on the samples
    (``fcd``, ``confidence``; ``fcd_mlp``, ``confidence_mlp``); the samples' sharpness and centre spread, and
    the real images' for comparison.

    Conditional models are sampled with balanced labels, so their samples match the class mix of a
    balanced test set."""
    check_mnist_shaped(real)
    classes = model.num_classes if has(model, "conditional") and sampler is None else 0
    samples = draw_samples(model, num_samples, y=balanced_labels(num_samples, classes) if classes else None,
                           seed=seed, sampler=sampler)
    metrics = {"sharpness": sharpness(samples), "sharpness_real": sharpness(real),
               "centre_spread": centre_spread(samples), "centre_spread_real": centre_spread(real)}
    for judge in JUDGES:
        logits, fake_features = classify(samples, judge=judge)
        _, real_features = classify(real, judge=judge)
        suffix = metric_suffix(judge)
        metrics[f"fcd{suffix}"] = frechet_distance(real_features, fake_features)
        metrics[f"confidence{suffix}"] = mean_confidence(logits)
    return metrics


def conditional_accuracy(model: nn.Module, per_class: int = 500, seed: int = 0) -> dict[str, Any]:
    """Per judge, the accuracy of the classifier on the labels a conditional model was asked for, overall
    (``conditional_accuracy``, ``conditional_accuracy_mlp``) and per class (``per_class``, ``per_class_mlp``),
    on one set of samples."""
    require(model, "conditional", "the conditional accuracy")
    classes = model.num_classes
    labels = balanced_labels(per_class * classes, classes)
    samples = draw_samples(model, len(labels), y=labels, seed=seed)
    result: dict[str, Any] = {}
    for judge in JUDGES:
        correct = (classify(samples, judge=judge)[0].argmax(1) == labels).float()
        suffix = metric_suffix(judge)
        result[f"conditional_accuracy{suffix}"] = float(correct.mean())
        result[f"per_class{suffix}"] = [float(correct[labels == k].mean()) for k in range(classes)]
    return result
