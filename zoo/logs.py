"""Training logs in ``TrainConfig.log_dir``: loss terms per logged step and per epoch, as CSV and JSONL
(and TensorBoard events when ``tensorboard`` is installed), and picture grids of every epoch.

- ``steps.csv`` / ``steps.jsonl``: a row every ``log_every`` steps, at every checkpoint and at the end
  of every epoch (and of the run): ``step``, ``epoch`` (1-based), ``window`` (how many steps the row
  averages), ``wall_time`` (Unix seconds), each loss term's mean over those steps (and over the
  processes), and ``lr`` (``lr_NAME`` per optimiser when a variant has several). The training loop
  keeps the terms summed on the device and reads them once per row: one host sync (and one
  all-reduce) every ``log_every`` steps, never one per step. Weighting each row by ``window`` gives
  the epoch means of ``TrainResult.history``.
- ``epochs.csv`` / ``epochs.jsonl``: a row per completed epoch: ``epoch``, ``step``, ``wall_time``,
  ``train_TERM`` (the epoch's means) and ``val_TERM`` (validation, when there is validation data).
- TensorBoard events in the same folder (``train/TERM``, ``lr``, ``epoch/train_TERM``,
  ``epoch/val_TERM``) when the ``tensorboard`` package is installed (``pip install 'ae-zoo[tensorboard]'``).
- ``reconstructions/epoch-NNNN.png`` (8 fixed inputs above their reconstructions) and, for generative
  variants, ``samples/epoch-NNNN.png`` (64 prior samples, or 8 per class, from a fixed seed).

The CSV's columns are its first row's keys. Every row is flushed when written. A fresh run replaces
these files; a resumed run appends, after dropping the rows that the interrupted run wrote past the
checkpoint it resumes from, so no step or epoch appears twice. Rows at every checkpoint make a resumed
run's windows line up with an uninterrupted run's.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.distributed import World
from zoo.folder import atomic_write
from zoo.variant import Batch, Variant, split_batch

#: Pictures per epoch: reconstructions of this many inputs; this many prior samples (per class: PER_CLASS).
RECONSTRUCTIONS, SAMPLES, PER_CLASS = 8, 64, 8


class RunningTerms:
    """One epoch's loss terms summed on the device, read at most once per step: one host sync, and one
    all-reduce that averages them over the processes (every process must read at the same steps)."""

    def __init__(self, world: World, sums: dict[str, Tensor] | None = None, count: int = 0) -> None:
        self.world = world
        self.sums = dict(sums or {})
        self.count = count
        self._keys: list[str] | None = None  # the terms, in order, once a step has been added
        self._vector: Tensor | None = None  # their sums, one float32 vector (self.sums holds views into it)
        self._read: tuple[int, dict[str, float]] | None = None
        self._window_start = (self.totals(), count)  # a resumed epoch's window starts at the checkpoint

    def add(self, terms: dict[str, Tensor]) -> None:
        """Add one step's terms (float32 sums, whatever the precision of the terms): two operations per step
        whatever the number of terms (one stack, one in-place add) once the terms are known."""
        if list(terms) == self._keys:
            self._vector += torch.stack(list(terms.values()))
        else:  # the first step, or a term that was not there before: start the vector anew from the sums
            for key, value in terms.items():
                self.sums[key] = self.sums[key] + value if key in self.sums else value.to(torch.float32, copy=True)
            self._keys = list(self.sums)
            device = next(iter(terms.values())).device  # a resumed epoch's sums come from the checkpoint on the CPU
            self._vector = torch.stack([v.to(device=device, dtype=torch.float32) for v in self.sums.values()])
            self.sums = dict(zip(self._keys, self._vector.unbind(), strict=True))  # views: they follow the vector
        self.count += 1

    def totals(self) -> dict[str, float]:
        """Each term summed over the epoch so far (averaged over the processes)."""
        if self._read is None or self._read[0] != self.count:
            values = self.world.mean(torch.stack(list(self.sums.values()))).tolist() if self.sums else []
            self._read = (self.count, dict(zip(self.sums, values, strict=True)))
        return self._read[1]

    def means(self) -> dict[str, float]:
        """Each term's mean over the epoch so far."""
        return {k: v / max(self.count, 1) for k, v in self.totals().items()}

    def window(self) -> tuple[dict[str, float], int]:
        """Each term's mean over the steps since the last call, and how many steps that is."""
        totals, (start, begun) = self.totals(), self._window_start
        self._window_start = (totals, self.count)
        n = self.count - begun
        return ({k: (v - start.get(k, 0.0)) / n for k, v in totals.items()} if n else {}), n

    def checkpoint_sums(self) -> dict[str, Tensor]:
        """The sums as float32 tensors for a checkpoint (averaged over the processes: every process
        resumes from them)."""
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.totals().items()}


class RunLog:
    """The log files of one run (written by rank 0 only). ``resume`` is (step, completed epochs) of the
    checkpoint a resumed run starts from; None for a fresh run."""

    def __init__(self, folder: str | Path, *, resume: tuple[int, int] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.steps, self.epochs = _Table(self.folder / "steps"), _Table(self.folder / "epochs")
        if resume is None:
            self._clear()
        else:
            self.steps.keep(lambda row: row["step"] <= resume[0])
            self.epochs.keep(lambda row: row["epoch"] <= resume[1])
        self.board = _tensorboard(self.folder, purge_step=None if resume is None else resume[0] + 1)

    def step_row(self, step: int, epoch: int, window: int, terms: dict[str, float], lrs: dict[str, float]) -> None:
        self.steps.append({"step": step, "epoch": epoch, "window": window, "wall_time": round(time.time(), 3),
                           **terms, **lrs})
        if self.board is not None:
            for key, value in terms.items():
                self.board.add_scalar(f"train/{key}", value, step)
            for key, value in lrs.items():
                self.board.add_scalar(key, value, step)

    def epoch_row(self, epoch: int, step: int, train: dict[str, float], val: dict[str, float] | None) -> None:
        values = {f"train_{k}": v for k, v in train.items()} | {f"val_{k}": v for k, v in (val or {}).items()}
        self.epochs.append({"epoch": epoch, "step": step, "wall_time": round(time.time(), 3), **values})
        if self.board is not None:
            for key, value in values.items():
                self.board.add_scalar(f"epoch/{key}", value, step)

    def pictures(self, model: nn.Module, variant: Variant, batch: Batch, epoch: int, seed: int) -> None:
        """Reconstructions of ``batch`` and (generative variants) samples from ``seed``, as epoch PNGs."""
        from zoo.pictures import class_rows, prior_samples, reconstruction_rows, save_grid

        name = f"epoch-{epoch:04d}.png"
        x, y = split_batch(batch)
        save_grid(reconstruction_rows(model, x[:RECONSTRUCTIONS], None if y is None else y[:RECONSTRUCTIONS]),
                  self.folder / "reconstructions" / name, nrow=RECONSTRUCTIONS)
        if variant.generative:
            images = (class_rows(model, model.num_classes, PER_CLASS, seed) if variant.conditional
                      else prior_samples(model, SAMPLES, seed=seed))
            save_grid(images, self.folder / "samples" / name, nrow=PER_CLASS)

    def flush(self) -> None:
        """Push TensorBoard's buffered events to disk (the tables are flushed row by row)."""
        if self.board is not None:
            self.board.flush()

    def close(self) -> None:
        self.steps.close()
        self.epochs.close()
        if self.board is not None:
            self.board.close()

    def _clear(self) -> None:
        """A fresh run: remove what an earlier run wrote here."""
        self.steps.clear()
        self.epochs.clear()
        for pattern in ("events.out.tfevents.*", "reconstructions/epoch-*.png", "samples/epoch-*.png"):
            for path in self.folder.glob(pattern):
                path.unlink()


class _Table:
    """Rows kept as ``STEM.jsonl`` and ``STEM.csv`` side by side, appended and flushed one by one."""

    def __init__(self, stem: Path) -> None:
        self.jsonl, self.csv = stem.with_suffix(".jsonl"), stem.with_suffix(".csv")
        self._files: tuple[Any, Any] | None = None
        self._writer: csv.DictWriter | None = None

    def rows(self) -> list[dict[str, Any]]:
        """The rows written so far; a line torn by a kill mid-write is left out."""
        if not self.jsonl.is_file():
            return []
        rows = []
        for line in self.jsonl.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def keep(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite both files with only the rows ``predicate`` keeps."""
        rows = [row for row in self.rows() if predicate(row)]
        if not rows:
            self.clear()
            return
        atomic_write(self.jsonl, lambda p: p.write_text("".join(json.dumps(row) + "\n" for row in rows)))

        def write_csv(path: Path) -> None:
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]), extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.csv, write_csv)

    def clear(self) -> None:
        self.jsonl.unlink(missing_ok=True)
        self.csv.unlink(missing_ok=True)

    def append(self, row: dict[str, Any]) -> None:
        if self._files is None:
            columns = _csv_header(self.csv) or list(row)
            fresh = not self.csv.is_file() or self.csv.stat().st_size == 0
            self._files = (self.jsonl.open("a"), self.csv.open("a", newline=""))
            self._writer = csv.DictWriter(self._files[1], fieldnames=columns, extrasaction="ignore")
            if fresh:
                self._writer.writeheader()
        jsonl, csv_file = self._files
        jsonl.write(json.dumps(row) + "\n")
        self._writer.writerow(row)
        jsonl.flush()
        csv_file.flush()

    def close(self) -> None:
        if self._files is not None:
            for f in self._files:
                f.close()
            self._files = None


def _csv_header(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return next(csv.reader(f), None)


def _tensorboard(folder: Path, purge_step: int | None) -> Any:
    """A SummaryWriter on ``folder`` when tensorboard is installed, else None. ``purge_step`` hides the
    events an interrupted run wrote from that step on (TensorBoard's own resume mechanism)."""
    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    _wait_for_a_later_second(folder)
    return SummaryWriter(str(folder), purge_step=purge_step)


def _wait_for_a_later_second(folder: Path) -> None:
    """Sleep (under a second) until the clock is past the second of every event file in ``folder``.

    TensorBoard reads a folder's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<counter>``: a resumed run's file created in the same
    second as the interrupted run's would be ordered by pid or counter as *strings* (``10`` before
    ``9``), and its events, purge included, could be read before the ones they replace.
    """
    seconds = [int(part) for p in folder.glob("events.out.tfevents.*")
               if (part := p.name.split(".")[3]).isdigit()]
    if seconds and (wait := max(seconds) + 1 - time.time()) > 0:
        time.sleep(wait)
