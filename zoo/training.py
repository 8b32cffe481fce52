"""Training: a ``Trainer`` that asks the variant for its optimisers and calls its ``train_step``.

The hot loop does what a hand-written loop does and nothing more: in-memory data is moved to the
device once and batched by tensor indexing, and checked once for Bernoulli losses' [0, 1] range
instead of at every step (:func:`zoo.losses.unit_range_checked`); loss terms are accumulated on the
device and read back only when the progress bar is refreshed (``refresh_every``) or a log row is
written (``log_every``), in one host sync each time (:class:`zoo.logs.RunningTerms`).

On the CPU, freed memory stays in the process during training (:mod:`zoo.allocator`), so steps do
not page-fault their buffers back in. Around the loop: mixed precision (``precision``;
:mod:`zoo.precision`, applied by the variant's ``train_step`` through :mod:`zoo.stepping`), several
processes under torchrun (:mod:`zoo.distributed`; ``batch_size`` is then the global batch), resumable
checkpoints (:mod:`zoo.checkpointing`) and logs (:mod:`zoo.logs`).
"""

from __future__ import annotations

import logging
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.allocator import release_free_memory, retain_freed_memory
from zoo.checkpointing import (
    STATE_NAME,
    TrainerState,
    load_checkpoint,
    read_train_config,
    rng_state,
    save_checkpoint,
)
from zoo.compiling import check_compile_mode
from zoo.config import check_fields, config_to_dict, replace_config
from zoo.data import TensorData, as_data, random_shift
from zoo.devices import resolve_device
from zoo.distributed import DEFAULT_TIMEOUT, World, setup
from zoo.errors import CheckpointError, CollectiveTimeoutError, ConfigError, DataError, OutOfMemoryError
from zoo.logs import RunLog, RunningTerms
from zoo.losses import unit_range_checked
from zoo.outputs import FolderLock, check_writable
from zoo.precision import autocast_factory, check_precision, make_scaler
from zoo.preflight import check_data
from zoo.registry import get_variant
from zoo.resuming import apply_changes, resume_changes
from zoo.samplers import drop_samplers
from zoo.stepping import StepContext
from zoo.variant import Variant

logger = logging.getLogger(__name__)

#: The term that fp16 runs add: 1 for a step the gradient scaler skipped (overflow), else 0; its mean
#: over a log row or an epoch is the share of skipped steps.
SKIPPED_TERM = "fp16_skipped"
#: The values of ``TrainConfig.finite_check``.
FINITE_CHECKS = ("auto", "step", "deferred")


@dataclass
class TrainConfig:
    """Settings of one training run (the model's own settings live in its config)."""

    epochs: int = 10
    #: The global batch: under torchrun each of N processes trains on batch_size // N of its rows.
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
    #: "fp32", "bf16" or "fp16": autocast to that dtype for the forward pass and the loss; weights,
    #: gradients and optimiser states stay float32; fp16 adds a gradient scaler (zoo.precision).
    precision: str = "fp32"
    #: Folder for the logs (CSV, JSONL, TensorBoard) and each epoch's picture grids (zoo.logs); None: none.
    log_dir: str | None = None
    #: Write a log row every this many steps: each term's mean over them, read in one host sync.
    log_every: int = 20
    #: CPU with glibc: keep freed memory in the process instead of page-faulting it back every step
    #: (zoo.allocator; about 1.5x faster for the 64x64 conv VAE). The process keeps its peak memory.
    retain_cpu_memory: bool = True
    #: Several processes (torchrun): seconds a process waits in a collective (gradient averaging, epoch means)
    #: for the others before the run fails, naming the ranks that did not answer (zoo.distributed).
    collective_timeout: float = DEFAULT_TIMEOUT
    #: torch.compile the variant's loss (forward and backward) with this mode: "default", "reduce-overhead"
    #: (CUDA graphs on a GPU), "max-autotune", "max-autotune-no-cudagraphs"; None: eager (zoo.compiling).
    #: Off by default: compiling costs seconds, and the gain depends on the model (docs/benchmarks.md).
    compile: str | None = None
    #: Where a non-finite loss is caught. "step": the loss is read on the host every step and the run stops at
    #: once. "deferred": no host read per step; the optimiser skips a non-finite step on the device (fused
    #: optimisers' found_inf) and the run stops at the next read of the terms (progress refresh, log row,
    #: checkpoint, epoch end) naming that step. "auto": deferred on a GPU where it applies (one process, no
    #: fp16 scaler, fused optimisers), else step. Either way the weights are the last good step's.
    finite_check: str = "auto"

    def __post_init__(self) -> None:
        # lr 0 and max_steps 0 are allowed: gradients without updates, or no step (diagnostics, baselines).
        check_fields(self, positive=("epochs", "batch_size", "refresh_every", "patience", "log_every",
                                     "collective_timeout"),
                     non_negative=("lr", "max_steps", "weight_decay", "seed", "max_shift", "checkpoint_every"))
        check_precision(self.precision)
        check_compile_mode(self.compile)
        if self.finite_check not in FINITE_CHECKS:
            raise ConfigError(f"finite_check must be one of {', '.join(map(repr, FINITE_CHECKS))}, "
                              f"not {self.finite_check!r}")


@dataclass
class TrainResult:
    """Per-epoch mean loss terms (``history``), validation terms if any, and the step count."""

    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    #: 1-based epoch whose weights the model ends with when validation selected them.
    best_epoch: int | None = None
    #: The step a resumed run continued from (None: a fresh run).
    resumed_from: int | None = None
    #: Settings a resumed run changed: {name: (checkpoint's value, this run's)} (:mod:`zoo.resuming`).
    resume_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: fp16: steps the gradient scaler skipped because their gradients overflowed (0 in fp32 and bf16).
    skipped_steps: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train a zoo model: ``Trainer(model, epochs=5).fit("mnist")``."""

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, *, variant: Variant | None = None,
                 **overrides: Any) -> None:
        self.variant = variant or get_variant(model.variant_name)
        self.config = cfg = replace_config(config or TrainConfig(), overrides, source="train config")
        self.device = resolve_device(cfg.device)
        self.world = setup(self.device, cfg.collective_timeout)
        if cfg.batch_size % self.world.size:
            raise ConfigError(f"batch_size {cfg.batch_size} is the global batch and must divide evenly among the "
                              f"{self.world.size} processes")
        if cfg.compile is not None and not self.variant.compilable:
            logger.warning("variant %r opts out of torch.compile (compilable = False): its loss runs eagerly",
                           self.variant.name)
        #: What the variant's train_step uses for precision, gradient averaging and compiling (zoo.stepping).
        self.context = StepContext(precision=cfg.precision, autocast=autocast_factory(cfg.precision, self.device),
                                   scaler=make_scaler(cfg.precision, self.device), world=self.world,
                                   compile_mode=cfg.compile if self.variant.compilable else None)
        drop_samplers(model)
        self.model = model.to(self.device)
        self.optimizers: dict[str, torch.optim.Optimizer] | None = None
        self.step = 0
        self._checkpoint = Path(cfg.checkpoint_dir) / STATE_NAME if cfg.checkpoint_dir else None
        self._best: dict[str, Tensor] | None = None  # weights of the best validation epoch so far
        self._skipped = torch.zeros((), device=self.device)  # fp16: steps the gradient scaler skipped

    @property
    def best_weights(self) -> dict[str, Tensor] | None:
        """A copy of the state dict of the best validation epoch so far (None before any validation):
        with ``keep_best=False`` the model ends on its last weights and these are the best ones."""
        return self._best

    def fit(self, train_data: Any, val_data: Any = None, *, resume: bool = False) -> TrainResult:
        """Train; with ``resume=True`` continue from ``checkpoint_dir``'s checkpoint exactly where it
        stopped (same data order, RNG streams, optimiser and scaler state, so the result matches an
        uninterrupted run bit for bit on the same machine and software)."""
        folder = self.config.checkpoint_dir or self.config.log_dir
        with FolderLock(folder) if folder is not None and self.world.is_main else nullcontext():
            return self._fit(train_data, val_data, resume=resume)

    def _fit(self, train_data: Any, val_data: Any, *, resume: bool) -> TrainResult:
        cfg, world = self.config, self.world
        seed_everything(cfg.seed + world.rank)  # each process draws its own noise; the data order is shared
        input_shape = getattr(self.model.config, "input_shape", None)
        train = as_data(train_data, input_shape).to(self.device)
        val = None if val_data is None else as_data(val_data, input_shape, split="val").to(self.device)
        if self.variant.conditional and train.y is None:
            raise DataError(f"variant {self.variant.name!r} is conditional and needs labels: pass (x, y) "
                            f"or a labelled dataset")
        if not self.variant.conditional:  # labels reach only conditional variants: no index op for them per step
            train, val = _without_labels(train), _without_labels(val)
        if val is not None and len(val) < world.size:
            raise DataError(f"{len(val)} validation examples are too few to share among {world.size} processes")
        check_data(self.variant, self.model, {"training data": train, "validation data": val})
        if self.optimizers is None:
            self.optimizers = self.variant.configure_optimizers(self.model, cfg)
        self.context.start_run(deferred_finite_check=self._defer_finite_check())
        if self._checkpoint is not None and world.is_main:
            check_writable(self._checkpoint.parent, self.model, copies=10, slack_mib=64, what="checkpoints")
        order = torch.Generator().manual_seed(cfg.seed)
        state, sums, self._best = TrainerState(), {}, None
        changes: dict[str, tuple[Any, Any]] = {}
        if resume:
            if self._checkpoint is None or not self._checkpoint.is_file():
                raise CheckpointError(f"nothing to resume: no {STATE_NAME} in {cfg.checkpoint_dir!r} "
                                      f"(set checkpoint_dir to the folder of the interrupted run)")
            changes = resume_changes(read_train_config(self._checkpoint), config_to_dict(cfg), self._checkpoint)
            state, order_state, sums, self._best = load_checkpoint(
                self._checkpoint, self.model, self.optimizers, self.device, scaler=self.context.scaler,
                rank=world.rank, world_size=world.size)
            order.set_state(order_state)
            self.step = state.step
            apply_changes(self.optimizers, changes, self.step, warn=world.is_main)
        resumed_from = self.step if resume else None
        self._skipped = torch.tensor(float(state.skipped_steps), device=self.device)
        world.broadcast(self.model)  # every process starts from rank 0's weights, as DDP does
        per_epoch = self._batches_per_epoch(train)
        total = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
        bar = _progress(total, self.variant.name, cfg.progress and world.is_main)
        if bar is not None:
            bar.update(self.step)
        log = None
        if cfg.log_dir is not None and world.is_main:
            log = RunLog(cfg.log_dir, resume=(self.step, state.epoch) if resume else None)
        retained = cfg.retain_cpu_memory and self.device.type == "cpu" and retain_freed_memory()
        try:
            with self.context.active(self.optimizers, self.variant.name), _range_checked_once(train, val):
                self._epochs(train, val, order, state, sums, bar, log)
        except RuntimeError as err:  # torch.OutOfMemoryError (CUDA) and the CPU allocator's are RuntimeErrors
            if not _out_of_memory(err):
                raise
            reason = (str(err).strip().splitlines() or [""])[0]
            raise OutOfMemoryError(f"out of memory at step {self.step} on {self.device} ({reason}): reduce "
                                   f"batch_size or the model's sizes (latent_dim, hidden_dims, mc_samples, "
                                   f"input_shape), or train on a device with more memory") from err
        except CollectiveTimeoutError as err:
            kept = (f"The checkpoints written so far in {cfg.checkpoint_dir} are intact: once the silent process's "
                    f"trouble is found, rerun with --resume (resume=True)" if cfg.checkpoint_dir
                    else "No checkpoints were kept (checkpoint_dir / --checkpoint-every keeps them)")
            raise CollectiveTimeoutError(f"{err} at step {self.step}; the run stops. {kept}. The wait is "
                                         f"collective_timeout (--collective-timeout).") from err
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
            if retained:
                release_free_memory()
        if self._best is not None and cfg.keep_best:
            self.model.load_state_dict(self._best)
        self.model.eval()
        skipped = int(self._skipped.item())
        if skipped:
            logger.warning("fp16: %d of %d steps were skipped: the gradient scaler found inf/NaN gradients and backed "
                           "its scale off; if this goes on, train in bf16 or fp32", skipped, self.step)
        return TrainResult(history=state.history, val_history=state.val_history, steps=self.step,
                           best_epoch=state.best_epoch, resumed_from=resumed_from, resume_changes=changes,
                           skipped_steps=skipped)

    def _epochs(self, train: TensorData, val: TensorData | None, order: torch.Generator, state: TrainerState,
                sums: dict[str, Tensor], bar: Any, log: RunLog | None) -> None:
        """Epochs until ``epochs``, ``max_steps`` or early stopping; validation, logs and a checkpoint after each."""
        cfg = self.config
        pictures = next(iter((train if val is None else val).batches(8, shuffle=False))) if log is not None else None
        while state.epoch < cfg.epochs and (cfg.max_steps is None or self.step < cfg.max_steps):
            self.model.train()
            start_of_epoch = order.get_state()
            terms = RunningTerms(self.world, sums, state.batch_in_epoch)
            complete = self._run_epoch(train, order, start_of_epoch, state, terms, bar, log)
            state.history.append(terms.means())
            sums = {}
            if not complete:  # max_steps inside the epoch: the checkpoint keeps the mid-epoch position
                break
            self.world.broadcast(self.model, buffers_only=True)  # rank 0's running statistics, as DDP keeps
            stop = False
            if val is not None:
                state.val_history.append(evaluate_loss(self.variant, self.model, val, cfg.batch_size,
                                                       world=self.world))
                if state.val_history[-1]["loss"] < state.best_loss:
                    state.best_loss, state.best_epoch = state.val_history[-1]["loss"], state.epoch + 1
                    self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                elif cfg.patience is not None and state.epoch + 1 - state.best_epoch >= cfg.patience:
                    stop = True
            if log is not None:
                log.epoch_row(state.epoch + 1, self.step, state.history[-1],
                              state.val_history[-1] if val is not None else None)
                log.pictures(self.model, self.variant, pictures, state.epoch + 1, cfg.seed)
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            self._save(state, order.get_state(), {}, log)
            if stop:
                break

    def _defer_finite_check(self) -> bool:
        """Whether the loss is checked on the device (``finite_check``): only where every optimiser takes a
        ``found_inf`` flag (torch's fused ones) and neither an fp16 scaler nor other processes need the step."""
        mode = self.config.finite_check
        why_not = ("an fp16 gradient scaler skips steps itself" if self.context.scaler is not None else
                   "several processes must agree on every step" if self.world.size > 1 else
                   next((f"optimiser {name!r} is not a fused one (it takes no found_inf flag)"
                         for name, opt in self.optimizers.items()
                         if not getattr(opt, "_step_supports_amp_scaling", False)), None))
        if mode == "deferred" and why_not:
            raise ConfigError(f"finite_check='deferred' does not apply here: {why_not}; use 'step' or 'auto'")
        return why_not is None and (mode == "deferred" or (mode == "auto" and self.device.type == "cuda"))

    def _save(self, state: TrainerState, order_state: Tensor, sums: dict[str, Tensor], log: RunLog | None) -> None:
        """Write the checkpoint (rank 0; every process hands over its RNG state) after the logs up to here."""
        if self._checkpoint is None:
            return
        rng = self.world.gather(rng_state())
        if log is not None:
            log.flush()
        if self.world.is_main:
            state.step = self.step
            state.skipped_steps = int(self._skipped.item())
            save_checkpoint(self._checkpoint, state, self.model, self.optimizers, order_state, sums, self._best,
                            config_to_dict(self.config), scaler=self.context.scaler, rng_states=rng)

    def _batches_per_epoch(self, train: TensorData) -> int:
        """Batches per epoch; with several processes a last batch with fewer rows than processes is dropped."""
        cfg = self.config
        n = train.num_batches(cfg.batch_size, cfg.drop_last)
        tail = len(train) % cfg.batch_size
        return n - 1 if not cfg.drop_last and 0 < tail < self.world.size else n

    def _run_epoch(self, train: TensorData, order: torch.Generator, start_of_epoch: Tensor, state: TrainerState,
                   terms: RunningTerms, bar: Any, log: RunLog | None) -> bool:
        """One epoch (from batch ``state.batch_in_epoch`` when resuming, until ``max_steps`` at most), its
        loss terms summed into ``terms``; whether the epoch ran to its end."""
        cfg = self.config
        per_epoch = self._batches_per_epoch(train)
        for i, batch in enumerate(train.batches(cfg.batch_size, generator=order, drop_last=cfg.drop_last)):
            if i == per_epoch:
                break  # several processes: a last batch too small to give each of them a row
            if i < state.batch_in_epoch:
                continue  # already trained on before the interruption
            batch = self.world.shard(batch)
            if cfg.max_shift:
                batch = (random_shift(batch[0], cfg.max_shift), *batch[1:])
            out = self.variant.train_step(self.model, batch, self.optimizers, step=self.step)
            skipped = self.context.end_step()
            if skipped is not None:  # fp16: shown and logged with the terms, counted for the result
                out = {**out, SKIPPED_TERM: skipped}
                self._skipped += skipped
            terms.add(out)
            self.step += 1
            if bar is not None:
                bar.update(1)
            log_row = cfg.log_dir is not None and self.step % cfg.log_every == 0
            if log_row or (cfg.progress and terms.count % cfg.refresh_every == 0):
                self._report(terms, state, bar, log, row=log_row)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                state.batch_in_epoch = i + 1
                self._report(terms, state, bar, log, row=cfg.log_dir is not None)
                self._save(state, start_of_epoch, terms.checkpoint_sums(), log)
            if cfg.max_steps is not None and self.step >= cfg.max_steps and i + 1 < per_epoch:
                self._report(terms, state, bar, log, row=cfg.log_dir is not None)
                return False
        self._report(terms, state, bar, log, row=cfg.log_dir is not None)
        return True

    def _report(self, terms: RunningTerms, state: TrainerState, bar: Any, log: RunLog | None, *, row: bool) -> None:
        """Read the running terms (every process takes part): refresh the progress bar and, with
        ``row``, log the mean of each term since the last row. A non-finite loss found on the device since the
        last read stops the run here (``finite_check``)."""
        self.context.raise_if_non_finite()
        means = terms.means()
        if row:
            window, n = terms.window()
            if log is not None and n:
                log.step_row(self.step, state.epoch + 1, n, window, self._learning_rates())
        if bar is not None:
            bar.set_postfix(_postfix(state.epoch, means), refresh=False)

    def _learning_rates(self) -> dict[str, float]:
        """``lr``, or ``lr_NAME`` for each of several optimisers (their first parameter group's)."""
        rates = {name: float(opt.param_groups[0]["lr"]) for name, opt in self.optimizers.items()}
        return {"lr": next(iter(rates.values()))} if len(rates) == 1 else {f"lr_{k}": v for k, v in rates.items()}


@torch.no_grad()
def evaluate_loss(variant: Variant, model: nn.Module, data: TensorData, batch_size: int = 500, *,
                  world: World | None = None) -> dict[str, float]:
    """The variant's loss terms averaged over ``data`` (eval mode, no gradients). With a ``world`` of
    several processes, each evaluates its share of every batch and the sums are all-reduced."""
    world = world or World()
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for batch in data.batches(batch_size, shuffle=False):
        batch = world.shard(batch)
        n = len(batch[0])
        if n == 0:
            continue
        count += n
        for key, value in variant.loss(model, batch).detached().items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
    model.train(was_training)
    if world.size > 1:
        device = next(model.parameters()).device
        *totals, count = world.sum(torch.tensor([*sums.values(), count], dtype=torch.float64, device=device)).tolist()
        sums = dict(zip(sums, totals, strict=True))
    return {k: v / count for k, v in sums.items()}


def train(model: nn.Module, data: Any, *, val_data: Any = None, **settings: Any) -> TrainResult:
    """Train ``model`` on ``data`` in place; ``settings`` are :class:`TrainConfig` fields.

    >>> zoo.train(model, "mnist", epochs=5, lr=1e-3)
    """
    return Trainer(model, **settings).fit(data, val_data)


def _without_labels(data: Any) -> Any:
    """In-memory data as images alone; a streamed source (dSprites, image crops) as it is."""
    return data.without_labels() if isinstance(data, TensorData) else data


def _range_checked_once(train: Any, val: Any) -> AbstractContextManager[object]:
    """Check the data's [0, 1] range once for the whole run (:func:`zoo.losses.unit_range_checked`)
    when all of it is in memory; a streamed source keeps the per-batch check."""
    datasets = [d for d in (train, val) if d is not None]
    if all(isinstance(d, TensorData) for d in datasets):
        return unit_range_checked(*(d.x for d in datasets))
    return nullcontext()


def _out_of_memory(err: RuntimeError) -> bool:
    """Whether torch ran out of memory: a CUDA OutOfMemoryError, or the CPU allocator's failure."""
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


def _postfix(epoch: int, means: dict[str, float]) -> dict[str, str]:
    """Epoch number and the running mean of each loss term."""
    return {"epoch": str(epoch + 1), **{k: f"{v:.4g}" for k, v in means.items()}}
