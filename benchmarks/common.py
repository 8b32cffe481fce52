"""What the benchmark scripts share: medians, the machine line, timing zoo.train, the benchmarks page.

``docs/benchmarks.md`` is written by more than one script: ``bench.py`` writes its head (the MLP
table) and every other script its own section between ``<!-- NAME -->`` and ``<!-- /NAME -->``;
:func:`write_doc` replaces one part and keeps the others.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import zoo

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
_SECTION = re.compile(r"<!-- (?P<name>[\w-]+) -->\n.*?<!-- /(?P=name) -->\n", re.DOTALL)


def hand_loop_epochs(model: torch.nn.Module, x: torch.Tensor, epochs: int, lr: float, batch_size: int, *,
                     fused: bool = False, precision: str = "fp32") -> list[float]:
    """The loop as the PyTorch examples write it (default Adam, shuffled index batches, ``model.loss``):
    the wall time of each epoch. On ``x``'s device; ``fused`` takes Adam's fused kernel and
    ``precision="bf16"`` computes the loss under bf16 autocast, as the zoo's options do."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=fused or None)  # None: torch's default step
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for idx in torch.randperm(len(x), device=x.device).split(batch_size):
            with autocast(x.device, precision):
                loss = model.loss(x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        synchronize(x.device)
        times.append(time.perf_counter() - start)
    return times


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on ``device``, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device | str) -> None:
    """Wait for the GPU's queued work (a no-op on the CPU), so a clock read after it times that work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def in_fresh_process(module: str, function: str, threads: int, kwargs: dict[str, Any]) -> Any:
    """``benchmarks/MODULE.FUNCTION(**kwargs)`` in a new Python process (``threads`` torch threads), its
    JSON result returned. Every timed run starts from the same process state: training with the zoo
    changes its process's allocator settings (zoo.allocator), which would speed up a hand-written loop
    run after it in the same process, and any run leaves caches and a heap shaped by it."""
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import torch; torch.set_num_threads({threads}); "
            f"import {module}; print(json.dumps({module}.{function}(**json.loads(sys.argv[1]))))")
    out = run_checked([sys.executable, "-c", code, json.dumps(kwargs)], f"{module}.{function}({kwargs})")
    return json.loads(out.splitlines()[-1])


def run_checked(command: list[str], what: str) -> str:
    """Run ``command`` and return its stdout; if it fails, raise with the end of its stderr."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed in its process:\n{done.stderr[-3000:]}")
    return done.stdout


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_ratios(reference: list[list[float]], other: list[list[float]]) -> list[float]:
    """Per run, the reference side's median time over the other side's (above 1: the other is faster).

    The two sides of a run ran next to each other, so a ratio within a run is immune to the machine's
    speed drifting over minutes (shared hosts, clocks), which a ratio of overall medians is not;
    the benchmarks report the median of these ratios and their range."""
    return [median(r) / median(o) for r, o in zip(reference, other, strict=True)]


def machine(threads: int, device: torch.device | None = None) -> str:
    """The machine and software the numbers were taken on (and the GPU, for a CUDA device)."""
    gpu = f", {torch.cuda.get_device_name(device)}" if device is not None and device.type == "cuda" else ""
    return (f"{platform.machine()} {platform.processor()} {threads} cores{gpu}, "
            f"torch {torch.__version__}, python {platform.python_version()}")


class EpochTimer:
    """Times each epoch (or each run of ``steps_per_epoch`` steps) of zoo.train by wrapping the
    variant's train_step (no change to the loop; on a GPU, the queued work is waited for at each mark)."""

    def __init__(self, steps_per_epoch: int, device: torch.device | str = "cpu") -> None:
        self.steps_per_epoch, self.count, self.marks = steps_per_epoch, 0, [time.perf_counter()]
        self.device = device

    def wrap(self, variant: zoo.Variant) -> None:
        inner: Callable[..., Any] = type(variant).train_step

        def timed(v: zoo.Variant, *args: Any, **kwargs: Any) -> Any:
            out = inner(v, *args, **kwargs)
            self.count += 1
            if self.count % self.steps_per_epoch == 0:
                synchronize(self.device)
                self.marks.append(time.perf_counter())
            return out

        variant.train_step = timed.__get__(variant)

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]


def publish(result: dict[str, Any], out: Path, table: str, section: str, quick: bool) -> None:
    """Write ``result`` as JSON to ``out`` and, unless a quick run, ``table`` as ``section`` of the benchmarks
    page; print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not quick:
        write_doc(table, section)
    print(table)


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
