"""The evaluation classifiers ("judges"): two networks of different kinds, trained in this project on the
bundled MNIST ``fit`` rows, that read 28x28 digits for the sample-quality metrics.

- ``cnn``: a small CNN trained with random shifts of up to 2 pixels, so it reads a digit wherever it sits
  within those 2 pixels.
- ``mlp``: an MLP on the raw pixels trained without shifts, so it is position-sensitive: a digit moved
  off the test digits' centre looks unlike anything it was trained on (a test checks that its accuracy
  falls on shifted digits while the CNN's holds). It catches samples whose digits are jittered, which
  the CNN forgives.

Sample-quality metrics need judges that know digits and work offline, so the zoo ships them:
``python -m zoo_model_cards.make_classifier`` trains them (on ``fit``, early-stopped on ``val``) and
writes ``zoo/assets/``, with each one's test accuracy in its file's metadata. Each judge's 128-d
penultimate layer is a feature space of :func:`zoo.sample_quality.frechet_distance` ("Frechet
classifier distance", not the Inception FID).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

ASSETS = Path(__file__).parent / "assets"
FEATURES = 128


class DigitClassifier(nn.Module):
    """28x28 grey digits in [0, 1] -> 10 logits through a ``trunk`` whose output, the 128-d penultimate layer,
    is what ``features`` gives."""

    def __init__(self, trunk: nn.Module, dropout: float) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURES, 10))

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


def cnn_classifier() -> DigitClassifier:
    """The ``cnn`` judge: two conv blocks (32 and 64 channels) and a 128-unit layer."""
    return DigitClassifier(nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, FEATURES), nn.ReLU(),
    ), dropout=0.3)


def mlp_classifier() -> DigitClassifier:
    """The ``mlp`` judge: 784-512-128 on the raw pixels, no weight sharing across positions."""
    return DigitClassifier(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 512), nn.ReLU(), nn.Dropout(0.2),
                                         nn.Linear(512, FEATURES), nn.ReLU()), dropout=0.2)


@dataclass(frozen=True)
class Judge:
    """One evaluation classifier: how to build it, where its weights live, and how it was trained."""

    name: str
    build: Callable[[], DigitClassifier]
    weights: Path
    max_shift: int  # the random shifts it was trained with (pixels)
    description: str


JUDGES = {
    "cnn": Judge("cnn", cnn_classifier, ASSETS / "mnist-classifier.safetensors", 2,
                 "zoo's CNN classifier, trained with 2-pixel shifts"),
    "mlp": Judge("mlp", mlp_classifier, ASSETS / "mnist-mlp-classifier.safetensors", 0,
                 "zoo's position-sensitive MLP classifier, trained without shifts"),
}
#: The judge whose numbers carry the unsuffixed metric names (``fcd``, ``confidence``, ...).
DEFAULT_JUDGE = "cnn"


def get_judge(name: str) -> Judge:
    """The judge called ``name``; an unknown name is a ValueError that lists the judges."""
    if name not in JUDGES:
        raise ValueError(f"unknown evaluation classifier {name!r}; the zoo has {', '.join(sorted(JUDGES))}")
    return JUDGES[name]


def metric_suffix(name: str) -> str:
    """What a judge's metrics append to their names: nothing for the default judge, ``_NAME`` otherwise."""
    return "" if name == DEFAULT_JUDGE else f"_{name}"


@functools.lru_cache(maxsize=8)
def _load(name: str, device: str) -> tuple[DigitClassifier, dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    spec = get_judge(name)
    if not spec.weights.is_file():
        raise FileNotFoundError(f"the {name!r} evaluation classifier's weights are missing: {spec.weights} (rebuild "
                                f"them with `python -m zoo_model_cards.make_classifier --judge {name}`)")
    model = spec.build()
    model.load_state_dict(load_file(str(spec.weights)), strict=True)
    with safe_open(str(spec.weights), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return model.to(device).eval().requires_grad_(False), metadata


def mnist_classifier(device: torch.device | str = "cpu", judge: str = DEFAULT_JUDGE) -> DigitClassifier:
    """The bundled classifier ``judge`` in eval mode on ``device`` (loaded once per device)."""
    return _load(judge, str(torch.device(device)))[0]


def classifier_info(judge: str = DEFAULT_JUDGE) -> dict[str, str]:
    """What a judge's weights' metadata records: test accuracy, training data and command."""
    return _load(judge, "cpu")[1]


def check_mnist_shaped(images: Tensor) -> None:
    if tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"the MNIST classifier judges 28x28 grey images, got shape {tuple(images.shape[1:])}; "
                         "classifier-based metrics apply to MNIST models only")


@torch.no_grad()
def classify(images: Tensor, batch_size: int = 1000, judge: str = DEFAULT_JUDGE) -> tuple[Tensor, Tensor]:
    """(logits, features) of the bundled classifier ``judge`` for ``images`` (N, 1, 28, 28) in [0, 1], on CPU."""
    check_mnist_shaped(images)
    net = mnist_classifier(images.device, judge)
    logits, feats = [], []
    for start in range(0, len(images), batch_size):
        f = net.features(images[start:start + batch_size].float())
        feats.append(f.cpu())
        logits.append(net.head(f).cpu())
    return torch.cat(logits), torch.cat(feats)
