"""Sample quality of MNIST models, judged by the bundled evaluation classifier (:mod:`zoo.classifier`).

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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zoo.classifier import check_mnist_shaped, classify
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


def classifier_confidence(images: Tensor) -> float:
    """Mean top-class probability the classifier gives ``images``."""
    return _mean_confidence(classify(images)[0])


def _mean_confidence(logits: Tensor) -> float:
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
    """Frechet classifier distance of ``num_samples`` samples (from the prior, or through the fitted ex-post
    ``sampler``) to the ``real`` images, their sharpness and the real images' sharpness, and the classifier's
    mean confidence on the samples.

    Conditional models are sampled with balanced labels, so their samples match the class mix of a
    balanced test set."""
    check_mnist_shaped(real)
    classes = model.num_classes if has(model, "conditional") and sampler is None else 0
    samples = draw_samples(model, num_samples, y=balanced_labels(num_samples, classes) if classes else None,
                           seed=seed, sampler=sampler)
    logits, fake_features = classify(samples)
    _, real_features = classify(real)
    return {"fcd": frechet_distance(real_features, fake_features), "sharpness": sharpness(samples),
            "sharpness_real": sharpness(real), "confidence": _mean_confidence(logits)}


def conditional_accuracy(model: nn.Module, per_class: int = 500, seed: int = 0) -> dict[str, Any]:
    """Accuracy of the classifier on the labels a conditional model was asked for: overall and per class."""
    require(model, "conditional", "the conditional accuracy")
    classes = model.num_classes
    labels = balanced_labels(per_class * classes, classes)
    logits, _ = classify(draw_samples(model, len(labels), y=labels, seed=seed))
    correct = (logits.argmax(1) == labels).float()
    per_label = [float(correct[labels == k].mean()) for k in range(classes)]
    return {"conditional_accuracy": float(correct.mean()), "per_class": per_label}
