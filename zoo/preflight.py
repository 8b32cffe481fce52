"""Checks of the training and validation data against the model, before the first step.

Each check names which data is wrong (the training or the validation data) and how to fix it, and runs
before any weight changes, instead of failing inside a layer at the first step or, for validation
data, at the end of the first epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.data import TensorData
from zoo.errors import DataError
from zoo.losses import in_unit_range
from zoo.variant import Variant


def check_data(variant: Variant, model: nn.Module, datasets: dict[str, Any]) -> None:
    """Check every in-memory dataset of ``datasets`` ({"training data": ..., "validation data": ...};
    streamed sources and None are skipped): its labels (:func:`check_labels`), then its value range
    (:func:`check_range`)."""
    for what, data in datasets.items():
        if isinstance(data, TensorData):
            check_labels(variant, model, data, what)
    for what, data in datasets.items():
        if isinstance(data, TensorData):
            check_range(variant, model, data, what)


def check_labels(variant: Variant, model: nn.Module, data: TensorData, what: str) -> None:
    """A conditional model's labels must lie in 0..num_classes-1: a DataError naming the setting otherwise."""
    classes = getattr(model.config, "num_classes", None)
    if not variant.conditional or data.y is None or not isinstance(classes, int) or len(data.y) == 0:
        return
    lo, hi = int(data.y.min()), int(data.y.max())
    if lo < 0 or hi >= classes:
        fix = (f"create the model with num_classes={hi + 1} (--set num_classes={hi + 1})" if lo >= 0
               else "labels are class indices 0, 1, ...: renumber them")
        raise DataError(f"the {what} has labels {lo}..{hi} but the model has num_classes={classes}, so labels must "
                        f"lie in 0..{classes - 1}: {fix}")


def check_range(variant: Variant, model: nn.Module, data: TensorData, what: str) -> None:
    """Data outside [0, 1]: run the variant's loss once, without gradients and without using up random
    numbers, on the two rows holding the smallest and the largest value. A likelihood that needs [0, 1]
    (Bernoulli) refuses them now, and the error says which data it was; others accept them."""
    if len(data) == 0 or in_unit_range(data.x):
        return
    flat = data.x.flatten(1)
    rows = torch.stack([flat.amin(1).argmin(), flat.amax(1).argmax()])
    batch = (data.x[rows],) if data.y is None else (data.x[rows], data.y[rows])
    devices = [data.x.device] if data.x.device.type == "cuda" else []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            variant.loss(model, batch)
    except DataError as err:
        raise DataError(f"the {what}: {err}") from None
    finally:
        model.train(was_training)
