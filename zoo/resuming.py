"""What a resumed run does with the training settings it is given, setting by setting.

A checkpoint stores the run's ``TrainConfig`` (``train_config``). A resumed run compares its own
settings with it:

- **must match** (:data:`MUST_MATCH`): ``batch_size``, ``seed``, ``drop_last``, ``max_shift``. They fix
  the data order and what "batch 12 of epoch 3" means; another value would silently train on other
  batches than the ones the checkpoint stopped between. A difference is a ConfigError before any step.
- **applied from the resume step, with a warning** (:data:`NOTED`): ``lr`` and ``weight_decay`` (set in
  every optimiser's parameter groups, keeping each group's ratio to the run's ``lr``, e.g. VAE-GAN's
  discriminator scale), ``precision``, ``patience``, ``keep_best``. They are listed in
  ``TrainResult.resume_changes``, and ``zoo train`` writes them into the card.
- **applied silently**: everything else (``epochs`` and ``max_steps`` extend or end the run; the device,
  progress, logging and checkpoint cadence are about this invocation).

``zoo train --resume`` takes every setting it is not given from the checkpoint (:func:`inherited`),
so ``--resume`` alone continues the run exactly as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ConfigError

logger = logging.getLogger("zoo.training")

MUST_MATCH = ("batch_size", "seed", "drop_last", "max_shift")
NOTED = ("lr", "weight_decay", "precision", "patience", "keep_best")
#: What ``zoo train --resume`` takes from the checkpoint when the command line does not say.
INHERITED = (*MUST_MATCH, *NOTED, "epochs", "checkpoint_every")


def inherited(checkpoint: Path) -> dict[str, Any]:
    """The settings of :data:`INHERITED` that ``checkpoint`` was written with ({} when there is none)."""
    from zoo.checkpointing import read_train_config

    if not checkpoint.is_file():
        return {}
    saved = read_train_config(checkpoint)
    return {key: saved[key] for key in INHERITED if key in saved}


def resume_changes(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> dict[str, tuple[Any, Any]]:
    """{setting: (checkpoint's value, this run's)} for the :data:`NOTED` settings that differ; a ConfigError
    for a :data:`MUST_MATCH` one that does."""
    for key in MUST_MATCH:
        if key in saved and saved[key] != current[key]:
            raise ConfigError(f"{key}={current[key]!r} differs from the checkpoint's {key}={saved[key]!r} "
                              f"({checkpoint}): it fixes the data order the interrupted run was in the middle of; "
                              f"resume with the same value (or leave it out), or start a new run in another folder")
    return {key: (saved[key], current[key]) for key in NOTED if key in saved and saved[key] != current[key]}


def apply_changes(optimizers: dict[str, torch.optim.Optimizer], changes: dict[str, tuple[Any, Any]],
                  step: int, *, warn: bool = True) -> None:
    """Set a changed ``lr``/``weight_decay`` in the restored optimisers; with ``warn``, log every change."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            if "lr" in changes:
                old, new = changes["lr"]
                group["lr"] = group["lr"] * new / old
            if "weight_decay" in changes and group.get("weight_decay") == changes["weight_decay"][0]:
                group["weight_decay"] = changes["weight_decay"][1]
    for key, (old, new) in changes.items() if warn else ():
        logger.warning("%s changed on resume at step %d: %r -> %r (the checkpoint's value is replaced from here on)",
                       key, step, old, new)


def describe(step: int, changes: dict[str, tuple[Any, Any]]) -> str:
    """"resumed at step 10 (lr 0.002 -> 0.5)", for a card."""
    listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
    return f"resumed at step {step}" + (f" ({listed})" if listed else "")
