"""The training loop's own cost: microseconds per step of ``zoo.train`` against a hand-written loop with the
same fused Adam, on an overhead-bound model and on the MLP VAE of ``bench.py``; where the zoo's time goes.

    python benchmarks/bench_overhead.py           # results/bench_overhead.json and its section of docs/benchmarks.md
    python benchmarks/bench_overhead.py --quick   # fewer repetitions (a smoke run; writes no page)
    python benchmarks/bench_overhead.py --device cuda --reps 2   # on a GPU: results/bench_overhead-cuda.json

Workloads (issue 19): **tiny**, a VAE 64-32-(2x2) / 2-32-64 on scikit-learn's 8x8 digits (train rows), batch
16: so little arithmetic per step that every Python operation shows; **mlp**, the MLP VAE of ``bench.py``
(784-512-256-16) on the bundled MNIST train rows, batch 128. Each side runs in a fresh process with one
torch thread, from the same initial weights; the clock runs from step ``WARMUP`` to the last step (setup,
the first steps and, for the compiled sides, compilation excluded). The sides: ``zoo.train``; the loop a user
writes around the same model (``model.encode``, the reparameterised sample, ``model.decode_logits``, BCE +
analytic KL, ``Adam(fused=True)``, shuffled index batches); and both with the loss through ``torch.compile``
(``TrainConfig.compile="default"``; the hand loop compiles the same loss function). Ratios are per run
(the sides of a run are adjacent in time), then the median over runs. Both loops drop the last, smaller
batch of each epoch (``drop_last``), so the compiled sides keep one batch shape.

On a GPU (``--device cuda``) the data, the model and the shuffling live on the GPU on both sides, the clock
waits for the GPU's queued work at both marks, and the compiled sides use ``mode="reduce-overhead"`` (CUDA
graphs: the zoo's ``TrainConfig.compile="reduce-overhead"``); issue 19 asks that compiled side for 2x the
eager hand loop on the MLP VAE (the table's "zoo compiled / hand" column).

The profile (CPU runs) is cProfile over the zoo's tiny run and the hand loop's,
each function's own time put into the part of the loop it belongs to, in microseconds per step. The counts
(CPU runs; ``--counts-only`` redoes them alone, in seconds) are the tensor operations dispatched and the Python
function calls per step of each side; ``--instructions`` (valgrind, about 15 minutes) counts the CPU
instructions each eager step executes on the tiny workload: numbers that do not drift with the machine's speed, as
times do.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import in_fresh_process, machine, median, publish, run_ratios, synchronize
from torch.utils._python_dispatch import TorchDispatchMode

import zoo
from zoo.data import TensorData, load_dataset

HERE = Path(__file__).resolve().parent
WARMUP = 50
WORKLOADS = {
    "tiny": {"data": "digits", "config": {"input_shape": (1, 8, 8), "hidden_dims": (32,), "latent_dim": 2},
             "batch_size": 16, "steps": 1000},
    "mlp": {"data": "mnist", "config": {"latent_dim": 16, "hidden_dims": (512, 256)}, "batch_size": 128,
            "steps": 250},
}
SIDES = ("zoo", "hand", "zoo_compiled", "hand_compiled")


def setup(workload: str, device: str = "cpu") -> tuple[torch.nn.Module, TensorData, dict[str, Any]]:
    spec = WORKLOADS[workload]
    torch.manual_seed(0)
    return zoo.create("vae", **spec["config"]).to(device), load_dataset(spec["data"], "train").to(device), spec


def compile_mode(device: str) -> str:
    """The compiled sides' torch.compile mode: CUDA graphs on a GPU, inductor's default on the CPU."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def hand_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The VAE's negative ELBO as a user writes it around the model's own encoder and decoder."""
    posterior = model.encode(x)
    mu, logvar = posterior.mean, posterior.logvar
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    logits = model.decode_logits(z)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(1)
    return (recon + kl).mean()


def hand_side(workload: str, compiled: bool = False, profiler: cProfile.Profile | None = None,
              device: str = "cpu", steps: int | None = None) -> float:
    """Microseconds per step of the hand-written loop (steps WARMUP to the end, profiled with ``profiler``;
    ``steps`` instead of the workload's)."""
    model, data, spec = setup(workload, device)
    x, steps, batch = data.x, steps or spec["steps"], spec["batch_size"]
    loss_fn = torch.compile(hand_loss, mode=compile_mode(device)) if compiled else hand_loss
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    step, start = 0, None
    while step < steps:
        for idx in torch.randperm(len(x), device=x.device).split(batch):
            if len(idx) < batch:
                continue  # drop_last, as the zoo side: one batch shape, no recompiling mid-run
            if step == WARMUP:
                synchronize(device)
                start = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
            loss = loss_fn(model, x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    synchronize(device)
    end = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    return (end - start) / (steps - WARMUP) * 1e6


def zoo_side(workload: str, compiled: bool = False, profiler: cProfile.Profile | None = None,
             device: str = "cpu", steps: int | None = None) -> float:
    """Microseconds per step of ``zoo.train`` (steps WARMUP to the end, timed inside the variant's train_step;
    profiled with ``profiler``; ``steps`` instead of the workload's)."""
    model, data, spec = setup(workload, device)
    steps = steps or spec["steps"]
    variant = zoo.get_variant("vae")
    marks: dict[int, float] = {}
    inner = type(variant).train_step

    def timed(self: Any, model: Any, batch: Any, optimizers: Any, *, step: int) -> Any:
        if step == WARMUP:
            synchronize(device)
            marks[WARMUP] = time.perf_counter()
            if profiler is not None:
                profiler.enable()
        return inner(self, model, batch, optimizers, step=step)

    variant.train_step = timed.__get__(variant)
    try:
        zoo.train(model, data, epochs=10_000, max_steps=steps, batch_size=spec["batch_size"], lr=1e-3,
                  progress=False, device=device, drop_last=True, compile=compile_mode(device) if compiled else None)
        synchronize(device)
        end = time.perf_counter()
    finally:
        if profiler is not None:
            profiler.disable()
        del variant.train_step
    return (end - marks[WARMUP]) / (steps - WARMUP) * 1e6


def side(name: str, workload: str, device: str = "cpu") -> float:
    """One timed run of one side, meant for a fresh process."""
    compiled = name.endswith("_compiled")
    return (zoo_side if name.startswith("zoo") else hand_side)(workload, compiled, device=device)


# -- where the time goes ---------------------------------------------------------------------------
#: (part of the loop, substrings of "file:function" that belong to it), first match wins; the rest of a
#: step's time is the model's forward pass and its loss.
PARTS = [
    ("backward (autograd engine)", ["run_backward", "gaussian_draw.py:backward", "autograd/function.py:wrapper"]),
    ("optimiser step (fused Adam and its Python wrapper)", ["torch/optim/", "torch._fused_adam_", "torch._foreach_",
                                                            "_group_tensors_by_device", "_get_value"]),
    ("record_function hooks that torch.optim opens per step", ["profiler"]),
    ("zero_grad", ["zero_grad"]),
    ("finite-loss check (one host read)", ["ensure_finite", "method 'item'"]),
    ("term dictionaries and running sums", ["zoo/logs.py", "detached"]),
    ("step context (autocast, precision, gradient averaging)", ["zoo/stepping.py", "zoo/precision.py",
                                                                "zoo/distributed.py", "contextlib.py"]),
    ("the loop itself: batches (index ops), counters, reports", ["zoo/training.py", "zoo/data.py", "__len__",
                                                                 "randperm", "method 'split'", "get_state",
                                                                 "bench_overhead.py:hand_side"]),
    ("the benchmark's timing wrapper around train_step", ["bench_overhead.py:timed"]),
]
FORWARD = "the model's forward pass and its loss"


def profile_side(name: str, workload: str = "tiny") -> dict[str, float]:
    """cProfile of one side's steps WARMUP to the end: microseconds per step in each part of the loop (each
    function's own time, not cumulative)."""
    profiler = cProfile.Profile()
    (zoo_side if name == "zoo" else hand_side)(workload, profiler=profiler)
    steps = WORKLOADS[workload]["steps"] - WARMUP
    parts: dict[str, float] = {}
    for (file, _, function), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():
        where = f"{file}:{function}"
        part = next((p for p, keys in PARTS if any(k in where for k in keys)), FORWARD)
        parts[part] = parts.get(part, 0.0) + own / steps * 1e6
    return parts


class OperationCounter(TorchDispatchMode):
    """Counts the tensor operations dispatched while it is active (the forward's, autograd's backward ones and
    the optimiser's), each operator once however it is implemented underneath."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))

    def enable(self) -> None:
        self.__enter__()

    def disable(self) -> None:
        self.__exit__(None, None, None)


def count_side(name: str, workload: str = "tiny") -> dict[str, float]:
    """Tensor operations and Python function calls per step of one side, steps WARMUP to the end: counts, not
    times, so they do not move with this machine's speed. Two runs: the operations under
    :class:`OperationCounter`, the calls under cProfile."""
    run = zoo_side if name == "zoo" else hand_side
    steps = WORKLOADS[workload]["steps"] - WARMUP
    counter = OperationCounter()
    run(workload, profiler=counter)
    profiler = cProfile.Profile()
    run(workload, profiler=profiler)
    calls = sum(numbers[1] for numbers in pstats.Stats(profiler).stats.values())
    return {"operations": counter.count / steps, "python_calls": calls / steps}


#: Per workload, the two run lengths whose difference :func:`instructions_per_step` counts (imports and setup
#: cancel out). The tiny workload only: an MLP VAE step takes over ten seconds under valgrind, and its time is
#: the matrix products' (the same on both sides), not the loop's.
INSTRUCTION_STEPS = {"tiny": (WARMUP + 100, WARMUP + 600)}


def instructions_per_step(name: str, workload: str = "tiny") -> float:
    """CPU instructions per eager step of one side: valgrind's cachegrind counts every instruction a fresh
    process executes, for a run of each of the workload's lengths in :data:`INSTRUCTION_STEPS`, and the
    difference over the steps between them leaves imports and setup out. Unlike a time, the count does not move
    with this shared machine's speed (it swings 2x within minutes; the VM exposes no hardware counters to
    ``perf``), though it weighs every instruction alike (cache misses and stalls are not in it).
    ``PYTHONHASHSEED`` is fixed so that both runs hash, and so branch, alike."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    totals = []
    short, long = INSTRUCTION_STEPS[workload]
    for steps in (short, long):
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import torch; torch.set_num_threads(1); "
                f"import bench_overhead as b; b.{name}_side({workload!r}, steps={steps})")
        with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
            command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                       f"--log-file={log.name}", sys.executable, "-c", code]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            if done.returncode != 0:
                raise RuntimeError(f"{name} side under cachegrind failed:\n{done.stderr[-3000:]}")
            totals.append(int(re.search(r"I\s+refs:\s+([\d,]+)", log.read()).group(1).replace(",", "")))
    return (totals[1] - totals[0]) / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, no page written")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--instructions", action="store_true",
                        help="count the CPU instructions per step of the eager sides on the tiny workload under "
                             "valgrind into the saved results and the page, keeping the rest (about 15 minutes)")
    parser.add_argument("--counts-only", action="store_true",
                        help="recount the operations and calls per step (CPU) into the saved results and the page, "
                             "keeping the timed runs there (seconds instead of minutes)")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and (args.counts_only or args.instructions):
        parser.error("--counts-only and --instructions recount the CPU's saved results; run without --device cuda")
    out = HERE / "results" / ("bench_overhead-cuda.json" if cuda else "bench_overhead.json")
    if args.counts_only or args.instructions:
        result = json.loads(out.read_text())
        if args.counts_only:
            result["counts"] = counts()
        if args.instructions:
            result["instructions"] = {w: {s: instructions_per_step(s, w) for s in ("zoo", "hand")}
                                      for w in INSTRUCTION_STEPS}
        publish(result, out, markdown(result), "overhead", quick=False)
        return
    reps = 2 if args.quick else args.reps
    result: dict[str, Any] = {"machine": machine(os.cpu_count() or 1, torch.device(args.device)), "warmup": WARMUP,
                              "workloads": WORKLOADS, "reps": reps, "device": args.device,
                              "compile_mode": compile_mode(args.device)}
    for workload in WORKLOADS:
        times: dict[str, list[float]] = {s: [] for s in SIDES}
        for rep in range(reps):
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for s in order:
                times[s].append(in_fresh_process("bench_overhead", "side", 1,
                                                 {"name": s, "workload": workload, "device": args.device}))
            print(workload, rep, {s: round(times[s][-1], 1) for s in SIDES}, flush=True)
        runs = {s: [[t] for t in times[s]] for s in SIDES}
        ratios = run_ratios(runs["hand"], runs["zoo"])
        result[workload] = {
            "us_per_step": {s: median(times[s]) for s in SIDES}, "runs": times,
            "zoo_vs_hand": median(ratios),
            "zoo_vs_hand_range": [min(ratios), max(ratios)],
            "zoo_compiled_vs_zoo": median(run_ratios(runs["zoo"], runs["zoo_compiled"])),
            "hand_compiled_vs_hand": median(run_ratios(runs["hand"], runs["hand_compiled"])),
            "zoo_compiled_vs_hand_compiled": median(run_ratios(runs["hand_compiled"], runs["zoo_compiled"])),
        }
    if not cuda:  # cProfile and the counts are about the Python side: the CPU's
        result["profile"] = {s: in_fresh_process("bench_overhead", "profile_side", 1, {"name": s})
                             for s in ("zoo", "hand")}
        result["counts"] = counts()
    publish(result, out, markdown(result), "overhead-cuda" if cuda else "overhead", args.quick)


def counts() -> dict[str, dict[str, float]]:
    """:func:`count_side` of both sides, each in a fresh process."""
    return {s: in_fresh_process("bench_overhead", "count_side", 1, {"name": s}) for s in ("zoo", "hand")}


def markdown(r: dict[str, Any]) -> str:
    cuda = r.get("device") == "cuda"
    mode = r.get("compile_mode", "default")
    lines = [
        "## The training loop's own cost (issue 19)" + (", on a GPU" if cuda else ""), "",
        f"Machine: {r['machine']} (1 torch thread). Produced by `python benchmarks/bench_overhead.py"
        f"{' --device cuda' if cuda else ''}` (medians of {r['reps']} runs per side, each in a fresh process, sides "
        f"alternating; raw numbers in `benchmarks/results/bench_overhead{'-cuda' if cuda else ''}.json`). Clock from "
        f"step {r['warmup']} to the last: setup and compilation excluded. Hand: the loop a user writes around the same "
        "model with `Adam(fused=True)`. Compiled: the loss through `torch.compile` (the zoo's "
        f"`TrainConfig.compile=\"{mode}\"`; the hand loop compiles its own loss function with the same mode).", "",
        "| workload | zoo (us/step) | hand (us/step) | zoo / hand throughput | zoo compiled (us/step) "
        "| hand compiled (us/step) | compile speed-up, zoo | compile speed-up, hand | zoo compiled / hand |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, spec in WORKLOADS.items():
        w = r[name]
        us = w["us_per_step"]
        low, high = w["zoo_vs_hand_range"]
        against_hand = median(run_ratios([[t] for t in w["runs"]["hand"]], [[t] for t in w["runs"]["zoo_compiled"]]))
        lines.append(f"| {name} (batch {spec['batch_size']}, {spec['steps']} steps) | {us['zoo']:.0f} "
                     f"| {us['hand']:.0f} | {w['zoo_vs_hand']:.3f}x ({low:.3f} to {high:.3f}) "
                     f"| {us['zoo_compiled']:.0f} | {us['hand_compiled']:.0f} | {w['zoo_compiled_vs_zoo']:.3f}x "
                     f"| {w['hand_compiled_vs_hand']:.3f}x | {against_hand:.3f}x |")
    if cuda:
        return "\n".join(lines) + "\n"
    zoo_parts, hand_parts = r["profile"]["zoo"], r["profile"]["hand"]
    lines += ["", "Where a step's time goes on the tiny workload (cProfile, own time per function summed by part "
              "of the loop, microseconds per step; cProfile's own cost inflates every Python call alike):", "",
              "| part of the loop | zoo | hand |", "| --- | --- | --- |"]
    for part in sorted(set(zoo_parts) | set(hand_parts), key=lambda p: -zoo_parts.get(p, 0.0)):
        lines.append(f"| {part} | {zoo_parts.get(part, 0.0):.1f} | {hand_parts.get(part, 0.0):.1f} |")
    lines.append(f"| total | {sum(zoo_parts.values()):.1f} | {sum(hand_parts.values()):.1f} |")
    if "counts" in r:
        zoo_counts, hand_counts = r["counts"]["zoo"], r["counts"]["hand"]
        lines += ["", "What a step does on the tiny workload, counted rather than timed (so the same on any day of "
                  "this machine; `--counts-only` recounts them): tensor operations dispatched (forward, backward, "
                  "optimiser and the loop's own) and Python function calls (cProfile's count), per step:", "",
                  "| per step | zoo | hand | zoo - hand |", "| --- | --- | --- | --- |"]
        for key, label in (("operations", "tensor operations"), ("python_calls", "Python function calls")):
            zoo_n, hand_n = zoo_counts[key], hand_counts[key]
            lines.append(f"| {label} | {zoo_n:,.1f} | {hand_n:,.1f} | {zoo_n - hand_n:+,.1f} "
                         f"({(zoo_n - hand_n) / hand_n:+.1%}) |")
    if "instructions" in r:
        lines += ["", "CPU instructions executed per eager step, counted by valgrind's cachegrind (`--instructions`; a "
                  "run of the longer length less one of the shorter, each in a fresh process: imports and setup "
                  "cancel out). A count weighs every instruction alike (cache misses and stalls are not in it), but "
                  "unlike a time it is the same on any day of this machine:", "",
                  "| workload (steps counted) | zoo | hand | zoo - hand |", "| --- | --- | --- | --- |"]
        for name, sides in r["instructions"].items():
            short, long = INSTRUCTION_STEPS[name]
            zoo_n, hand_n = sides["zoo"], sides["hand"]
            lines.append(f"| {name} ({long} - {short}) | {zoo_n:,.0f} | {hand_n:,.0f} | {zoo_n - hand_n:+,.0f} "
                         f"({(zoo_n - hand_n) / hand_n:+.1%}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
