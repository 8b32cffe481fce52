"""Training: a ``Trainer`` that asks the variant for its optimisers and calls its ``train_step``.

The hot loop does what a hand-written loop does and nothing more: in-memory data is moved to the
device once and batched by tensor indexing; loss terms are accumulated on the device and read back
only when the progress bar is refreshed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.checkpointing import STATE_NAME, TrainerState, check_writable, load_checkpoint, save_checkpoint
from zoo.config import config_to_dict, replace_config
from zoo.data import TensorData, as_data, random_shift
from zoo.errors import CheckpointError
from zoo.registry import get_variant
from zoo.variant import Variant

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run (the model's own settings live in its config)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    max_steps: int | None = None
    drop_last: bool = False
    progress: bool = True
    refresh_every: int = 20
    #: With validation data: stop after this many epochs without a better validation loss (None: never).
    patience: int | None = None
    #: With validation data: end with the weights of the epoch with the best validation loss.
    keep_best: bool = True
    #: Augmentation: shift each training image by up to this many pixels (0: off).
    max_shift: int = 0
    #: Folder for the resumable training checkpoint (written at every epoch end); None: no checkpoints.
    checkpoint_dir: str | None = None
    #: Also write the checkpoint every this many optimiser steps (0: only at epoch ends).
    checkpoint_every: int = 0


@dataclass
class TrainResult:
    """Per-epoch mean loss terms (``history``), validation terms if any, and the step count."""

    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    #: 1-based epoch whose weights the model ends with when validation selected them.
    best_epoch: int | None = None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train a zoo model: ``Trainer(model, epochs=5).fit("mnist")``."""

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, *, variant: Variant | None = None,
                 **overrides: Any) -> None:
        self.variant = variant or get_variant(model.variant_name)
        self.config = replace_config(config or TrainConfig(), overrides, source="train config")
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.optimizers: dict[str, torch.optim.Optimizer] | None = None
        self.step = 0
        self._checkpoint = Path(self.config.checkpoint_dir) / STATE_NAME if self.config.checkpoint_dir else None
        self._best: dict[str, Tensor] | None = None  # weights of the best validation epoch so far

    @property
    def best_weights(self) -> dict[str, Tensor] | None:
        """A copy of the state dict of the best validation epoch so far (None before any validation):
        with ``keep_best=False`` the model ends on its last weights and these are the best ones."""
        return self._best

    def fit(self, train_data: Any, val_data: Any = None, *, resume: bool = False) -> TrainResult:
        """Train; with ``resume=True`` continue from ``checkpoint_dir``'s checkpoint exactly where it
        stopped (same data order, RNG streams and optimiser state, so the result matches an
        uninterrupted run bit for bit on the same machine and software)."""
        cfg = self.config
        seed_everything(cfg.seed)
        input_shape = getattr(self.model.config, "input_shape", None)
        train = as_data(train_data, input_shape).to(self.device)
        val = None if val_data is None else as_data(val_data, input_shape, split="val").to(self.device)
        if self.variant.conditional and train.y is None:
            from zoo.errors import DataError

            raise DataError(f"variant {self.variant.name!r} is conditional and needs labels: pass (x, y) "
                            f"or a labelled dataset")
        if self.optimizers is None:
            self.optimizers = self.variant.configure_optimizers(self.model, cfg)
        if self._checkpoint is not None:
            check_writable(self._checkpoint.parent, self.model)
        order = torch.Generator().manual_seed(cfg.seed)
        state, sums, self._best = TrainerState(), {}, None
        if resume:
            if self._checkpoint is None or not self._checkpoint.is_file():
                raise CheckpointError(f"nothing to resume: no {STATE_NAME} in {cfg.checkpoint_dir!r} "
                                      f"(set checkpoint_dir to the folder of the interrupted run)")
            state, order_state, sums, self._best = load_checkpoint(self._checkpoint, self.model, self.optimizers,
                                                                   self.device)
            order.set_state(order_state)
            self.step = state.step
        per_epoch = train.num_batches(cfg.batch_size, cfg.drop_last)
        total = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
        bar = _progress(total, self.variant.name, cfg.progress)
        if bar is not None:
            bar.update(self.step)
        while state.epoch < cfg.epochs and (cfg.max_steps is None or self.step < cfg.max_steps):
            self.model.train()
            start_of_epoch = order.get_state()
            means, complete = self._run_epoch(train, order, start_of_epoch, state, sums, bar)
            state.history.append(means)
            sums = {}
            if not complete:  # max_steps inside the epoch: the checkpoint keeps the mid-epoch position
                break
            stop = False
            if val is not None:
                state.val_history.append(evaluate_loss(self.variant, self.model, val, cfg.batch_size))
                if state.val_history[-1]["loss"] < state.best_loss:
                    state.best_loss, state.best_epoch = state.val_history[-1]["loss"], state.epoch + 1
                    self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                elif cfg.patience is not None and state.epoch + 1 - state.best_epoch >= cfg.patience:
                    stop = True
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            self._save(state, order.get_state(), {})
            if stop:
                break
        if self._best is not None and cfg.keep_best:
            self.model.load_state_dict(self._best)
        if bar is not None:
            bar.close()
        self.model.eval()
        return TrainResult(history=state.history, val_history=state.val_history, steps=self.step,
                           best_epoch=state.best_epoch)

    def _save(self, state: TrainerState, order_state: Tensor, sums: dict[str, Tensor]) -> None:
        if self._checkpoint is not None:
            state.step = self.step
            save_checkpoint(self._checkpoint, state, self.model, self.optimizers, order_state, sums, self._best,
                            config_to_dict(self.config))

    def _run_epoch(self, train: TensorData, order: torch.Generator, start_of_epoch: Tensor, state: TrainerState,
                   sums: dict[str, Tensor], bar: Any) -> tuple[dict[str, float], bool]:
        """One epoch (from batch ``state.batch_in_epoch`` when resuming, until ``max_steps`` at most):
        the mean of each loss term over its batches, and whether the epoch ran to its end."""
        cfg = self.config
        count, complete = state.batch_in_epoch, True
        per_epoch = train.num_batches(cfg.batch_size, cfg.drop_last)
        for i, batch in enumerate(train.batches(cfg.batch_size, generator=order, drop_last=cfg.drop_last)):
            if i < state.batch_in_epoch:
                continue  # already trained on before the interruption
            if cfg.max_shift:
                batch = (random_shift(batch[0], cfg.max_shift), *batch[1:])
            terms = self.variant.train_step(self.model, batch, self.optimizers, step=self.step)
            for key, value in terms.items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            count += 1
            self.step += 1
            if bar is not None:
                bar.update(1)
                if count % cfg.refresh_every == 0:
                    bar.set_postfix(_postfix(state.epoch, sums, count), refresh=False)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                state.batch_in_epoch = i + 1
                self._save(state, start_of_epoch, sums)
            if cfg.max_steps is not None and self.step >= cfg.max_steps and i + 1 < per_epoch:
                complete = False
                break
        if bar is not None:
            bar.set_postfix(_postfix(state.epoch, sums, count))
        return {k: float(v) / max(count, 1) for k, v in sums.items()}, complete


@torch.no_grad()
def evaluate_loss(variant: Variant, model: nn.Module, data: TensorData, batch_size: int = 500) -> dict[str, float]:
    """The variant's loss terms averaged over ``data`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for batch in data.batches(batch_size, shuffle=False):
        n = len(batch[0])
        for key, value in variant.loss(model, batch).detached().items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
    model.train(was_training)
    return {k: v / len(data) for k, v in sums.items()}


def train(model: nn.Module, data: Any, *, val_data: Any = None, **settings: Any) -> TrainResult:
    """Train ``model`` on ``data`` in place; ``settings`` are :class:`TrainConfig` fields.

    >>> zoo.train(model, "mnist", epochs=5, lr=1e-3)
    """
    return Trainer(model, **settings).fit(data, val_data)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


def _postfix(epoch: int, sums: dict[str, Tensor], count: int) -> dict[str, str]:
    """Epoch number and the running mean of each loss term (one host sync per refresh)."""
    return {"epoch": str(epoch + 1), **{k: f"{float(v) / max(count, 1):.4g}" for k, v in sums.items()}}
