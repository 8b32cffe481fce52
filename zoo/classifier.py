"""The evaluation classifier: a small CNN trained in this project on the bundled MNIST ``train`` rows.

Sample-quality metrics need a judge that knows digits and that works offline, so the zoo ships its
own: ``python -m zoo_model_cards.make_classifier`` trains it (on ``fit``, early-stopped on ``val``)
and writes ``zoo/assets/mnist-classifier.safetensors``, with its test accuracy in the file's
metadata. Its 128-d penultimate layer is the feature space of :func:`zoo.sample_quality.frechet_distance`
("Frechet classifier distance", not the Inception FID).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS = Path(__file__).parent / "assets" / "mnist-classifier.safetensors"
FEATURES = 128


class MnistClassifier(nn.Module):
    """28x28 grey digits in [0, 1] -> 10 logits; ``features`` gives the 128-d penultimate layer."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, FEATURES), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, 10))

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


@functools.lru_cache(maxsize=4)
def _load(device: str) -> tuple[MnistClassifier, dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"the evaluation classifier's weights are missing: {WEIGHTS} (rebuild them with "
                                "`python -m zoo_model_cards.make_classifier`)")
    model = MnistClassifier()
    model.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    with safe_open(str(WEIGHTS), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return model.to(device).eval().requires_grad_(False), metadata


def mnist_classifier(device: torch.device | str = "cpu") -> MnistClassifier:
    """The bundled classifier in eval mode on ``device`` (loaded once per device)."""
    return _load(str(torch.device(device)))[0]


def classifier_info() -> dict[str, str]:
    """What the weights' metadata records: test accuracy, training data and command."""
    return _load("cpu")[1]


def check_mnist_shaped(images: Tensor) -> None:
    if tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"the MNIST classifier judges 28x28 grey images, got shape {tuple(images.shape[1:])}; "
                         "classifier-based metrics apply to MNIST models only")


@torch.no_grad()
def classify(images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(logits, features) of the bundled classifier for ``images`` (N, 1, 28, 28) in [0, 1], on CPU."""
    check_mnist_shaped(images)
    net = mnist_classifier(images.device)
    logits, feats = [], []
    for start in range(0, len(images), batch_size):
        f = net.features(images[start:start + batch_size].float())
        feats.append(f.cpu())
        logits.append(net.head(f).cpu())
    return torch.cat(logits), torch.cat(feats)
