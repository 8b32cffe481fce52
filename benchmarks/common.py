"""What the benchmark scripts share: medians, the machine line, timing zoo.train, the benchmarks page.

``docs/benchmarks.md`` is written by more than one script: ``bench.py`` writes its head (the MLP
table) and every other script its own section between ``<!-- NAME -->`` and ``<!-- /NAME -->``;
:func:`write_doc` replaces one part and keeps the others.
"""

from __future__ import annotations

import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import zoo

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_SECTION = re.compile(r"<!-- (?P<name>[\w-]+) -->\n.*?<!-- /(?P=name) -->\n", re.DOTALL)


def hand_loop_epochs(model: torch.nn.Module, x: torch.Tensor, epochs: int, lr: float,
                     batch_size: int) -> list[float]:
    """The loop as the PyTorch examples write it (default Adam, shuffled index batches, ``model.loss``):
    the wall time of each epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for idx in torch.randperm(len(x)).split(batch_size):
            loss = model.loss(x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine(threads: int) -> str:
    """The machine and software the numbers were taken on."""
    return (f"{platform.machine()} {platform.processor()} {threads} cores, "
            f"torch {torch.__version__}, python {platform.python_version()}")


class EpochTimer:
    """Times each epoch (or each run of ``steps_per_epoch`` steps) of zoo.train by wrapping the
    variant's train_step (no change to the loop)."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch, self.count, self.marks = steps_per_epoch, 0, [time.perf_counter()]

    def wrap(self, variant: zoo.Variant) -> None:
        inner: Callable[..., Any] = type(variant).train_step

        def timed(v: zoo.Variant, *args: Any, **kwargs: Any) -> Any:
            out = inner(v, *args, **kwargs)
            self.count += 1
            if self.count % self.steps_per_epoch == 0:
                self.marks.append(time.perf_counter())
            return out

        variant.train_step = timed.__get__(variant)

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]


def write_doc(body: str, section: str | None = None, path: Path = DOC) -> None:
    """Write ``body`` into the benchmarks page: as the named section (replacing its old text, or
    appended), or with ``section=None`` as the page's head, keeping every named section after it."""
    text = path.read_text() if path.exists() else ""
    sections = {m["name"]: m[0] for m in _SECTION.finditer(text)}
    if section is None:
        head = body
    else:
        head = _SECTION.sub("", text).rstrip("\n") + "\n"
        sections[section] = f"<!-- {section} -->\n{body.rstrip()}\n<!-- /{section} -->\n"
    path.write_text("\n".join([head, *sections.values()]))
