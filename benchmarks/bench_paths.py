"""Speed of the zoo's conv and three-optimiser training paths against hand-written PyTorch loops.

    python benchmarks/bench_paths.py           # writes benchmarks/results/bench_paths.json and its
                                               # section of docs/benchmarks.md, prints a table
    python benchmarks/bench_paths.py --quick   # fewer images, steps and repetitions (a smoke run)

Workloads (issue "Benchmarks", the "Also" part), float32, CPU, torch.set_num_threads(<cores>) (``--threads``):

- Conv VAE 64x64: ``zoo.create("vae", **DSPRITES_CONFIG)`` (4 stride-2 convolutions 16-32-64-64 each
  way, 10 latents, Bernoulli), Adam lr 5e-4, batch 64, on dSprites images rendered once into memory
  (``zoo.dsprites.sample_subset``; rendering is outside the timed loops). Against the same layers
  written as a plain ``nn.Module`` with default Adam and ``randperm(...).split(64)`` batches, and
  the same loop with the zoo's two speed-ups (fused Adam, freed memory kept: zoo.allocator), so
  what is left between it and the zoo is the zoo's own overhead; all start from the same weights.
  Samples/s of the median epoch (the first epoch of each run is not counted), and the negative
  ELBO on held-out images after training.
- VAE-GAN step: the ``vae-gan-mnist`` recipe (conv 28x28, feature-wise likelihood at the
  discriminator's first layer, gamma 1, non-saturating generator loss, discriminator at 0.1x the lr),
  batch 64, lr 2e-4, on the bundled MNIST ``train`` rows. Against Larsen et al.'s three losses
  written by hand over the same networks (the zoo model's encoder, decoder and discriminator
  modules), three default Adams, and each network's gradient taken with
  ``loss.backward(inputs=<its parameters>, retain_graph=True)`` before any of the three steps. Steps/s
  of the median chunk of steps (the first chunk of each run is not counted).

Before timing, each workload checks that both sides compute the same thing: the same loss on the same
batch, weights and noise (and for VAE-GAN the same gradient for every parameter of every network).
The two sides alternate over several runs, each run in a fresh process (common.in_fresh_process),
each side first in every other run. The results are medians and the ratio zoo / hand-written: the
median of each run's own ratio (the machine's speed drifts over minutes; within a run the two sides
are next to each other in time). Absolute times depend on the machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import EpochTimer, hand_loop_epochs, in_fresh_process, machine, median, publish, run_ratios
from torch import Tensor, nn
from zoo_model_cards.recipes import DSPRITES_CONFIG, RECIPES

import zoo
from zoo.allocator import retain_freed_memory
from zoo.data import TensorData, load_dataset
from zoo.dsprites import sample_subset
from zoo.training import TrainConfig, evaluate_loss

HERE = Path(__file__).resolve().parent
VAE_LR, VAE_BATCH = 5e-4, 64
GAN = RECIPES["vae-gan-mnist"]
GAN_LR, GAN_BATCH = GAN.train["lr"], GAN.train["batch_size"]
EVAL_BATCH = 500


@dataclass(frozen=True)
class Sizes:
    """How much each workload runs: full or ``--quick``."""

    runs: int
    vae_train: int  # rendered dSprites images trained on
    vae_test: int  # held-out rendered images for the test loss
    vae_epochs: int  # per run, the first not counted
    gan_chunk: int  # steps per timed chunk
    gan_chunks: int  # per run, the first not counted


FULL = Sizes(runs=7, vae_train=1024, vae_test=1000, vae_epochs=4, gan_chunk=8, gan_chunks=4)
QUICK = Sizes(runs=2, vae_train=256, vae_test=500, vae_epochs=3, gan_chunk=2, gan_chunks=3)


# -- conv VAE 64x64 -------------------------------------------------------------------------------
class HandConvVAE(nn.Module):
    """zoo's conv VAE for 64x64 images (DSPRITES_CONFIG), written out as a tutorial would."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),  # 32x32
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),  # 16x16
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 8x8
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),  # 4x4
            nn.Flatten(), nn.Linear(64 * 4 * 4, 2 * 10))  # mean and log-variance of 10 latents
        self.dec = nn.Sequential(
            nn.Linear(10, 64 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # 8x8
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16x16
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),  # 32x32
            nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1), nn.ReLU(),  # 64x64
            nn.Conv2d(16, 1, 3, padding=1))  # Bernoulli logits

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO: BCE summed per image + analytic KL, averaged over the batch."""
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(1)
        return (recon + kl).mean()


def dsprites_images(sizes: Sizes) -> tuple[Tensor, Tensor]:
    """(train, test) images, rendered once: disjoint rows of one fixed random subset."""
    subset = sample_subset(sizes.vae_train + sizes.vae_test, seed=0)
    images = subset.images(torch.arange(len(subset)))
    return images[:sizes.vae_train], images[sizes.vae_train:]


def check_conv_vae(x: Tensor) -> None:
    """Same layers, same initial weights (same seed) and the same loss on one batch and noise."""
    torch.manual_seed(0)
    model = zoo.create("vae", **DSPRITES_CONFIG)
    torch.manual_seed(0)
    hand = HandConvVAE()
    zoo_params, hand_params = list(model.parameters()), list(hand.parameters())
    assert sum(p.numel() for p in zoo_params) == sum(p.numel() for p in hand_params), "parameter counts differ"
    assert [p.shape for p in zoo_params] == [p.shape for p in hand_params], "layer shapes differ"
    assert all(torch.equal(a, b) for a, b in zip(zoo_params, hand_params, strict=True)), "initial weights differ"
    torch.manual_seed(1)
    zoo_loss = zoo.get_variant("vae").loss(model, (x[:VAE_BATCH],)).total
    torch.manual_seed(1)
    hand_loss = hand.loss(x[:VAE_BATCH])
    torch.testing.assert_close(zoo_loss, hand_loss, rtol=1e-5, atol=1e-3)


def zoo_vae_epochs(x: Tensor, epochs: int, seed: int) -> tuple[list[float], nn.Module]:
    torch.manual_seed(seed)
    model = zoo.create("vae", **DSPRITES_CONFIG)
    variant = zoo.get_variant("vae")
    timer = EpochTimer(-(-len(x) // VAE_BATCH))
    timer.wrap(variant)
    try:
        zoo.train(model, TensorData(x), epochs=epochs, batch_size=VAE_BATCH, lr=VAE_LR, seed=seed, progress=False,
                  device="cpu")
    finally:
        del variant.train_step
    return timer.epochs(), model


def hand_vae_epochs(x: Tensor, epochs: int, seed: int, *, tuned: bool = False) -> tuple[list[float], HandConvVAE]:
    """The loop as the PyTorch examples write it: default Adam, shuffled index batches. ``tuned``: with
    the zoo's two speed-ups, fused Adam and freed memory kept in the process (zoo.allocator)."""
    torch.manual_seed(seed)
    model = HandConvVAE()
    if tuned:
        retain_freed_memory()
    return hand_loop_epochs(model, x, epochs, lr=VAE_LR, batch_size=VAE_BATCH, fused=tuned), model


@torch.no_grad()
def hand_test_loss(model: HandConvVAE, x: Tensor) -> float:
    """Mean negative ELBO over ``x`` in batches of EVAL_BATCH (the batches zoo's evaluate_loss uses)."""
    return sum(float(model.loss(b)) * len(b) for b in x.split(EVAL_BATCH)) / len(x)


def conv_side_run(side: str, data: str, epochs: int, seed: int) -> dict:
    """One timed run of one side ("zoo", "hand" or "hand_tuned"), meant for a fresh process
    (common.in_fresh_process): its epoch times and its held-out loss."""
    with np.load(data, allow_pickle=False) as arrays:
        train, test = torch.from_numpy(arrays["train"]), torch.from_numpy(arrays["test"])
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if side == "zoo":
        times, model = zoo_vae_epochs(train, epochs, seed)
    else:
        times, model = hand_vae_epochs(train, epochs, seed, tuned=side == "hand_tuned")
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults  # the training run, first epoch included
    torch.manual_seed(10_000 + seed)  # the same test noise for every side
    if side == "zoo":
        loss = evaluate_loss(zoo.get_variant("vae"), model, TensorData(test), EVAL_BATCH)["neg_elbo"]
    else:
        loss = hand_test_loss(model, test)
    return {"epoch_times": times, "test_neg_elbo": loss,
            "page_faults_per_step": faults / (epochs * -(-len(train) // VAE_BATCH))}


def conv_vae(sizes: Sizes, threads: int) -> dict:
    train, test = dsprites_images(sizes)
    check_conv_vae(train)
    sides = ["zoo", "hand", "hand_tuned"]
    times: dict[str, list[list[float]]] = {side: [] for side in sides}
    losses: dict[str, list[float]] = {side: [] for side in sides}
    faults: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dsprites.npz"
        np.savez(data, train=train.numpy(), test=test.numpy())
        for run in range(sizes.runs):  # the sides in turn, the one that goes first rotating
            for side in sides[run % len(sides):] + sides[:run % len(sides)]:
                out = in_fresh_process("bench_paths", "conv_side_run", threads, {
                    "side": side, "data": str(data), "epochs": sizes.vae_epochs, "seed": run})
                times[side].append(out["epoch_times"][1:])  # the first epoch pays one-time costs on every side
                losses[side].append(out["test_neg_elbo"])
                faults[side].append(out["page_faults_per_step"])
    n, ratios = len(train), run_ratios(times["hand"], times["zoo"])
    tuned_ratios = run_ratios(times["hand_tuned"], times["zoo"])
    return {"zoo_samples_per_s": n / median(sum(times["zoo"], [])),
            "hand_samples_per_s": n / median(sum(times["hand"], [])),
            "hand_tuned_samples_per_s": n / median(sum(times["hand_tuned"], [])),
            "throughput_ratio": median(ratios), "throughput_ratio_per_run": ratios,
            "vs_hand_tuned_ratio": median(tuned_ratios), "vs_hand_tuned_ratio_per_run": tuned_ratios,
            "zoo_test_neg_elbo": median(losses["zoo"]), "hand_test_neg_elbo": median(losses["hand"]),
            **{f"{side}_page_faults_per_step": median(faults[side]) for side in sides},
            "train_images": n, "test_images": len(test), "epochs_per_run": sizes.vae_epochs, "runs": sizes.runs}


# -- VAE-GAN --------------------------------------------------------------------------------------
def hand_gan_losses(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Larsen et al.'s objectives of (encoder, decoder, discriminator), set as the recipe sets them."""
    cfg = GAN.config
    mu, logvar = model.encoder(x).chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    x_tilde = torch.sigmoid(model.decoder(z))
    x_p = torch.sigmoid(model.decoder(torch.randn_like(mu)))
    d_x, feat_x = model.discriminator(x)  # features of the discriminator's layer cfg["feature_layer"]
    d_tilde, feat_tilde = model.discriminator(x_tilde)
    d_p, _ = model.discriminator(x_p)
    prior = 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(1).mean()
    llike = (0.5 * (feat_x - feat_tilde).pow(2) + 0.5 * math.log(2 * math.pi)).sum(1).mean()  # -log N(., I)
    real, fake = torch.ones_like(d_x), torch.zeros_like(d_x)
    bce = F.binary_cross_entropy_with_logits
    discriminator = bce(d_x, real) + bce(d_tilde, fake) + bce(d_p, fake)
    generator = bce(d_tilde, real) + bce(d_p, real)  # non-saturating: -log D(Dec(.))
    return prior + llike, cfg["gamma"] * llike + generator, discriminator


def hand_gan_optimizers(model: nn.Module, lr: float) -> list[torch.optim.Optimizer]:
    """Three default Adams; the discriminator's at the recipe's fraction of the lr."""
    return [torch.optim.Adam(model.encoder.parameters(), lr=lr), torch.optim.Adam(model.decoder.parameters(), lr=lr),
            torch.optim.Adam(model.discriminator.parameters(), lr=lr * GAN.config["discriminator_lr_scale"])]


def hand_gan_gradients(model: nn.Module, x: Tensor, opts: list[torch.optim.Optimizer]) -> None:
    """Each network's gradient of its own objective only (in ``.grad``), no weight changed yet."""
    losses = hand_gan_losses(model, x)
    nets = (model.encoder, model.decoder, model.discriminator)
    for i, (loss, net, opt) in enumerate(zip(losses, nets, opts, strict=True)):
        opt.zero_grad()
        loss.backward(inputs=list(net.parameters()), retain_graph=i < len(nets) - 1)


def check_vae_gan(x: Tensor) -> None:
    """The same three objectives on one batch, weights and noise, and the same gradient for every parameter."""
    torch.manual_seed(0)
    model = zoo.create("vae-gan", **GAN.config)
    hand = copy.deepcopy(model)
    variant = zoo.get_variant("vae-gan")
    torch.manual_seed(1)
    terms = variant.objectives(model, (x,))
    torch.manual_seed(1)
    losses = hand_gan_losses(hand, x)
    for name, loss in zip(("encoder", "decoder", "discriminator"), losses, strict=True):
        torch.testing.assert_close(terms[name], loss, rtol=1e-5, atol=1e-4, msg=f"{name} objective differs")
    frozen = variant.configure_optimizers(model, TrainConfig(lr=0.0))  # lr 0: gradients, no change
    torch.manual_seed(1)
    variant.train_step(model, (x,), frozen, step=0)
    torch.manual_seed(1)
    hand_gan_gradients(hand, x, hand_gan_optimizers(hand, 0.0))
    for (name, p), q in zip(model.named_parameters(), hand.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name} differs")


def zoo_gan_chunks(data: TensorData, chunk: int, chunks: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = zoo.create("vae-gan", **GAN.config)
    variant = zoo.get_variant("vae-gan")
    timer = EpochTimer(chunk)
    timer.wrap(variant)
    try:
        zoo.train(model, data, epochs=1, max_steps=chunk * chunks, batch_size=GAN_BATCH, lr=GAN_LR, seed=seed,
                  progress=False, device="cpu")
    finally:
        del variant.train_step
    return timer.epochs()


def hand_gan_chunks(x: Tensor, chunk: int, chunks: int, seed: int) -> list[float]:
    """The same networks (zoo's modules, the same initial weights), the loss and the update by hand."""
    torch.manual_seed(seed)
    model = zoo.create("vae-gan", **GAN.config)
    opts = hand_gan_optimizers(model, GAN_LR)
    batches = torch.randperm(len(x)).split(GAN_BATCH)[:chunk * chunks]
    assert len(batches) == chunk * chunks, "more steps than one epoch holds"
    marks = [time.perf_counter()]
    for i, idx in enumerate(batches):
        hand_gan_gradients(model, x[idx], opts)
        for opt in opts:
            opt.step()
        if (i + 1) % chunk == 0:
            marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]


def gan_side_run(side: str, chunk: int, chunks: int, seed: int) -> list[float]:
    """One timed run of one side ("zoo" or "hand"), meant for a fresh process: the time of each chunk."""
    train = load_dataset("mnist", "train")
    if side == "zoo":
        return zoo_gan_chunks(train, chunk, chunks, seed)
    return hand_gan_chunks(train.x, chunk, chunks, seed)


def vae_gan(sizes: Sizes, threads: int) -> dict:
    check_vae_gan(load_dataset("mnist", "train").x[:GAN_BATCH])
    times: dict[str, list[list[float]]] = {"zoo": [], "hand": []}
    for run in range(sizes.runs):
        for side in ("zoo", "hand") if run % 2 == 0 else ("hand", "zoo"):
            chunks = in_fresh_process("bench_paths", "gan_side_run", threads, {
                "side": side, "chunk": sizes.gan_chunk, "chunks": sizes.gan_chunks, "seed": run})
            times[side].append(chunks[1:])  # the first chunk pays one-time costs on both sides
    ratios = run_ratios(times["hand"], times["zoo"])
    return {"zoo_steps_per_s": sizes.gan_chunk / median(sum(times["zoo"], [])),
            "hand_steps_per_s": sizes.gan_chunk / median(sum(times["hand"], [])),
            "step_ratio": median(ratios), "step_ratio_per_run": ratios, "batch_size": GAN_BATCH,
            "steps_per_chunk": sizes.gan_chunk, "chunks_per_run": sizes.gan_chunks, "runs": sizes.runs}


# -- report ---------------------------------------------------------------------------------------
def spread(ratio: float, per_run: list[float]) -> str:
    return f"{ratio:.3f}x (runs: {min(per_run):.3f} to {max(per_run):.3f})"


def markdown(r: dict) -> str:
    v, g = r["conv_vae"], r["vae_gan"]
    rows = [
        ("conv VAE 64x64 training throughput (samples/s, median epoch)", f"{v['zoo_samples_per_s']:.1f}",
         f"{v['hand_samples_per_s']:.1f}", spread(v["throughput_ratio"], v["throughput_ratio_per_run"])),
        ("conv VAE: the hand-written loop with fused Adam and the zoo's allocator setting (samples/s); "
         "ratio: zoo / this loop", "", f"{v['hand_tuned_samples_per_s']:.1f}",
         spread(v["vs_hand_tuned_ratio"], v["vs_hand_tuned_ratio_per_run"])),
        ("conv VAE: minor page faults per training step (mean over a run, its first epoch included; the "
         "hand-written loop with the zoo's speed-ups in brackets)", f"{v['zoo_page_faults_per_step']:.0f}",
         f"{v['hand_page_faults_per_step']:.0f} ({v['hand_tuned_page_faults_per_step']:.0f})", ""),
        (f"conv VAE test negative ELBO after {v['epochs_per_run']} epochs of {v['train_images']} images "
         f"({v['test_images']} held-out images)", f"{v['zoo_test_neg_elbo']:.2f}",
         f"{v['hand_test_neg_elbo']:.2f}", ""),
        (f"VAE-GAN training steps/s (batch {g['batch_size']}, median chunk of {g['steps_per_chunk']} steps)",
         f"{g['zoo_steps_per_s']:.3f}", f"{g['hand_steps_per_s']:.3f}",
         spread(g["step_ratio"], g["step_ratio_per_run"])),
    ]
    lines = ["## Conv VAE 64x64 and VAE-GAN", "",
             f"Machine: {r['machine']}. Produced by `python benchmarks/bench_paths.py` (medians of {v['runs']} "
             "alternating runs, each in a fresh process; a ratio is the median of the runs' own ratios, with "
             "their range; raw numbers in `benchmarks/results/bench_paths.json`). Conv VAE: the "
             f"`vae-dsprites` architecture on pre-rendered dSprites images, batch {VAE_BATCH}, Adam lr {VAE_LR:g}; "
             "hand-written: the same layers as a plain `nn.Module`, default Adam. VAE-GAN: the `vae-gan-mnist` "
             f"recipe, batch {GAN_BATCH}, lr {GAN_LR:g}; hand-written: Larsen et al.'s three losses over the same "
             "networks, three default Adams, `backward(inputs=...)` per network. Both sides are checked to compute "
             "the same losses (and, for VAE-GAN, gradients) before timing. Ratio: zoo speed / hand-written speed.", "",
             "| measure | zoo | hand-written | ratio |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads (default: the cores; fewer when other work shares them, "
                             "whose contention otherwise dominates the times)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_paths.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    result = {"machine": f"{machine(os.cpu_count() or 1)}, {args.threads} torch threads", "quick": args.quick,
              "conv_vae": conv_vae(sizes, args.threads), "vae_gan": vae_gan(sizes, args.threads)}
    publish(result, args.out, markdown(result), "paths", args.quick)


if __name__ == "__main__":
    main()
