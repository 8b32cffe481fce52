"""Speed of fine-tuning a latent-diffusion autoencoder through the zoo against the same step written directly
with diffusers' ``AutoencoderKL`` and a plain PyTorch loop.

    python benchmarks/bench_diffusers.py            # CPU, a tiny config; writes benchmarks/results/bench_diffusers.json
                                                    # and its section of docs/benchmarks.md
    python benchmarks/bench_diffusers.py --quick    # fewer steps and runs (a smoke run)
    python benchmarks/bench_diffusers.py --device cuda --precision bf16   # the SD 1.x VAE at 256 and 512 pixels

The step (both sides): the decoder of an AutoencoderKL fine-tuned with its encoder and quant_conv frozen,
as users fine-tune a latent-diffusion VAE, on a fixed set of images; loss = -log Laplace(x | decode(z), 1)
summed per image + 1e-6 KL, z ~ q(z|x), mean over the batch. The zoo side is ``zoo.Trainer`` with the
``autoencoder-kl`` variant (fused Adam over the trainable parameters); the direct side builds
``diffusers.AutoencoderKL`` from the same weights, sets ``requires_grad_(False)`` on encoder and quant_conv,
and runs the loop a diffusers user writes: ``vae.encode(x).latent_dist``, ``.sample()``, ``vae.decode(z).sample``,
the loss, ``zero_grad``, ``backward``, ``step`` with a default Adam. Before timing, both sides are checked to
compute the same loss on the same batch, weights and noise. Runs alternate sides, each in a fresh process
(common.in_fresh_process); a ratio is the median of the runs' own ratios (zoo speed / direct speed).

On CUDA (``--device cuda``) the workload is the full SD 1.x VAE configuration with random weights at 256x256
and 512x512: encode and decode images/s, fine-tuning steps/s against the direct loop, peak memory, and the
largest power-of-two batch that fits for a fine-tuning step. Every GPU number is recorded with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import autocast, in_fresh_process, machine, median, publish, run_ratios, synchronize

import zoo
from zoo.data import TensorData

HERE = Path(__file__).resolve().parent
KL_WEIGHT = 1e-6
LR = 1e-4
TINY = {"in_channels": 3, "out_channels": 3, "block_out_channels": (32, 64), "latent_channels": 4,
        "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2,
        "sample_size": 32}
SD1 = {"in_channels": 3, "out_channels": 3, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
       "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
       "latent_channels": 4, "sample_size": 512}
FROZEN = ("encoder.", "quant_conv.")


@dataclass(frozen=True)
class Sizes:
    runs: int
    images: int
    batch: int
    chunk: int  # steps per timed chunk
    chunks: int  # per run, the first not counted


FULL = Sizes(runs=7, images=256, batch=16, chunk=8, chunks=4)
QUICK = Sizes(runs=2, images=64, batch=16, chunk=2, chunks=3)


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (low-frequency noise upsampled), as the zoo's data are."""
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def zoo_model(config: dict[str, Any], seed: int, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(seed)
    model = zoo.create("autoencoder-kl", kl_weight=KL_WEIGHT, **config).to(device)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(FROZEN))
    return model


def direct_model(config: dict[str, Any], seed: int, device: str = "cpu") -> torch.nn.Module:
    """diffusers' AutoencoderKL with the zoo model's initial weights, encoder and quant_conv frozen."""
    from diffusers import AutoencoderKL
    from zoo_plugins.diffusers_vae import diffusers_kwargs

    reference = zoo_model(config, seed, device)
    vae = AutoencoderKL(**diffusers_kwargs(reference.config)).to(device)
    vae.load_state_dict(reference.state_dict())
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return vae.train()


def direct_loss(vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The loss as a diffusers user writes it, for images x in [0, 1]."""
    x = x * 2 - 1
    posterior = vae.encode(x).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    nll = ((x - reconstruction).abs() + math.log(2.0)).flatten(1).sum(1)
    return (nll + KL_WEIGHT * posterior.kl()).mean()


def check_same_loss(config: dict[str, Any], x: torch.Tensor) -> None:
    """Both sides compute the same loss on the same batch, weights and noise."""
    model, vae = zoo_model(config, 0).train(), direct_model(config, 0)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        ours = zoo.get_variant("autoencoder-kl").loss(model, x).total
    with torch.random.fork_rng():
        torch.manual_seed(1)
        theirs = direct_loss(vae, x)
    ours, theirs = ours.detach(), theirs.detach()
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-3), (float(ours), float(theirs))


def zoo_chunks(config: dict[str, Any], x: torch.Tensor, sizes: Sizes, seed: int, device: str = "cpu",
               precision: str = "fp32") -> list[float]:
    from common import EpochTimer

    model = zoo_model(config, seed, device)
    variant = zoo.get_variant("autoencoder-kl")
    timer = EpochTimer(sizes.chunk, device)
    timer.wrap(variant)
    try:
        zoo.train(model, TensorData(x), epochs=1000, max_steps=sizes.chunk * sizes.chunks, batch_size=sizes.batch,
                  lr=LR, seed=seed, progress=False, device=device, precision=precision)
    finally:
        del variant.train_step
    return timer.epochs()


def direct_chunks(config: dict[str, Any], x: torch.Tensor, sizes: Sizes, seed: int, device: str = "cpu",
                  precision: str = "fp32") -> list[float]:
    vae = direct_model(config, seed, device)
    optimizer = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=LR)
    x = x.to(device)
    marks, step = [time.perf_counter()], 0
    while step < sizes.chunk * sizes.chunks:
        for idx in torch.randperm(len(x), device=x.device).split(sizes.batch):
            with autocast(x.device, precision):
                loss = direct_loss(vae, x[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % sizes.chunk == 0:
                synchronize(device)
                marks.append(time.perf_counter())
            if step == sizes.chunk * sizes.chunks:
                break
    return [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]


def side_run(side: str, quick: bool, seed: int) -> list[float]:
    """One timed CPU run of one side, meant for a fresh process: the time of each chunk of steps."""
    sizes = QUICK if quick else FULL
    x = images(sizes.images, TINY["sample_size"])
    return (zoo_chunks if side == "zoo" else direct_chunks)(TINY, x, sizes, seed)


def cpu_benchmark(sizes: Sizes, quick: bool, threads: int) -> dict:
    check_same_loss(TINY, images(4, TINY["sample_size"], seed=9))
    times: dict[str, list[list[float]]] = {"zoo": [], "direct": []}
    for run in range(sizes.runs):
        for side in ("zoo", "direct") if run % 2 == 0 else ("direct", "zoo"):
            chunks = in_fresh_process("bench_diffusers", "side_run", threads,
                                      {"side": side, "quick": quick, "seed": run})
            times[side].append(chunks[1:])  # the first chunk pays one-time costs on both sides
    ratios = run_ratios(times["direct"], times["zoo"])
    return {"zoo_steps_per_s": sizes.chunk / median(sum(times["zoo"], [])),
            "direct_steps_per_s": sizes.chunk / median(sum(times["direct"], [])),
            "step_ratio": median(ratios), "step_ratio_per_run": ratios, "batch_size": sizes.batch,
            "image_size": TINY["sample_size"], "steps_per_chunk": sizes.chunk, "chunks_per_run": sizes.chunks,
            "runs": sizes.runs}


# -- CUDA: the full SD 1.x VAE ---------------------------------------------------------------------------------


def gpu_benchmark(precision: str, quick: bool) -> dict:
    """The SD 1.x VAE (random weights) at 256 and 512 pixels on the current GPU: encode/decode images/s,
    fine-tuning steps/s (zoo and direct, in this process, alternating), peak memory, largest batch."""
    device = "cuda"
    sizes = Sizes(runs=2 if quick else 3, images=32, batch=4, chunk=3 if quick else 5, chunks=3)
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "precision": precision}
    for size in (256, 512):
        x = images(sizes.images, size).to(device)
        row = coder_throughput(zoo_model(SD1, 0, device).eval(), x, sizes.batch, precision)
        zoo_times, direct_times = [], []
        for run in range(sizes.runs):
            torch.cuda.reset_peak_memory_stats()
            first, second = (zoo_chunks, direct_chunks) if run % 2 == 0 else (direct_chunks, zoo_chunks)
            a = first(SD1, x, sizes, run, device, precision)[1:]
            b = second(SD1, x, sizes, run, device, precision)[1:]
            zoo_run, direct_run = (a, b) if first is zoo_chunks else (b, a)
            zoo_times.append(zoo_run)
            direct_times.append(direct_run)
        ratios = run_ratios(direct_times, zoo_times)
        row.update(zoo_steps_per_s=sizes.chunk / median(sum(zoo_times, [])),
                   direct_steps_per_s=sizes.chunk / median(sum(direct_times, [])), step_ratio=median(ratios),
                   step_ratio_per_run=ratios, batch_size=sizes.batch,
                   peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30,
                   largest_batch=largest_batch(size, precision))
        result[f"{size}px"] = row
    return result


@torch.no_grad()
def coder_throughput(model: torch.nn.Module, x: torch.Tensor, batch: int, precision: str) -> dict[str, float]:
    """Images/s of encode (to the latent's mode) and of decode (of random latents), after one warm-up batch."""
    latents = torch.randn(len(x), *model.latent_shape[:1], x.shape[-2] // 8, x.shape[-1] // 8, device=x.device)
    out = {}
    for what, inputs, run in (("encode", x * 2 - 1, lambda b: model.encode(b).mode()),
                              ("decode", latents, model.decode)):
        with autocast(x.device, precision):
            run(inputs[:batch])
            synchronize(x.device)
            start = time.perf_counter()
            for chunk in inputs.split(batch):
                run(chunk)
            synchronize(x.device)
        out[f"{what}_images_per_s"] = len(x) / (time.perf_counter() - start)
    return out


def largest_batch(size: int, precision: str) -> int:
    """The largest power-of-two batch for which one fine-tuning step of the SD 1.x VAE fits in GPU memory."""
    model = zoo_model(SD1, 0, "cuda").train()
    variant = zoo.get_variant("autoencoder-kl")
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=LR))
    fits, batch = 0, 1
    while batch <= 1024:
        try:
            x = images(batch, size).cuda()
            with autocast(torch.device("cuda"), precision):
                out = variant.loss(model, x)
            out.total.backward()
            optimizers["model"].step()
            optimizers["model"].zero_grad(set_to_none=True)
            fits, batch = batch, batch * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


# -- report ------------------------------------------------------------------------------------------------------


def markdown(r: dict) -> str:
    c = r["cpu"]
    lines = ["## Fine-tuning a latent-diffusion VAE (autoencoder-kl)", "",
             f"Machine: {r['machine']}. Produced by `python benchmarks/bench_diffusers.py` (medians of {c['runs']} "
             "alternating runs, each in a fresh process; raw numbers in `benchmarks/results/bench_diffusers.json`). "
             f"An AutoencoderKL with block widths {TINY['block_out_channels']}, {c['image_size']}x{c['image_size']} "
             f"RGB images, batch {c['batch_size']}, encoder and quant_conv frozen, Laplace NLL + {KL_WEIGHT:g} KL, "
             f"lr {LR:g}. Direct: diffusers' `AutoencoderKL` with the same weights and the loop a diffusers user "
             "writes (default Adam); both sides are checked to compute the same loss before timing.", "",
             "| measure | zoo | direct diffusers loop | ratio (zoo / direct) |", "| --- | --- | --- | --- |",
             f"| fine-tuning steps/s (median chunk of {c['steps_per_chunk']} steps) | {c['zoo_steps_per_s']:.2f} | "
             f"{c['direct_steps_per_s']:.2f} | {c['step_ratio']:.3f}x (runs: {min(c['step_ratio_per_run']):.3f} to "
             f"{max(c['step_ratio_per_run']):.3f}) |"]
    gpu = r.get("gpu")
    if gpu is None:
        lines += ["", "The CUDA part (`--device cuda`: the SD 1.x VAE at 256 and 512 pixels) has not been run: no "
                      "GPU was available when these numbers were taken."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_diffusers.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        result = {"machine": machine(os.cpu_count() or 1, torch.device("cuda")), "quick": args.quick,
                  "gpu": gpu_benchmark(args.precision, args.quick)}
        out = args.out.with_name(f"bench_diffusers_gpu_{args.precision}.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    result = {"machine": f"{machine(os.cpu_count() or 1)}, {args.threads} torch threads", "quick": args.quick,
              "cpu": cpu_benchmark(QUICK if args.quick else FULL, args.quick, args.threads)}
    publish(result, args.out, markdown(result), "diffusers", args.quick)


if __name__ == "__main__":
    main()
