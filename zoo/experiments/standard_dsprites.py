"""The beta-disentanglement claim under the standard protocol, in one GPU run of under 10 minutes.

    python -m zoo.experiments.standard_dsprites --out docs/experiments

disentanglement_lib's unsupervised study trains each model 300,000 steps of batch 64 with Adam at 1e-4 on
all 737,280 dSprites images (64x64), 10 latents. Here every (beta, seed) model is trained at once
(:class:`zoo.experiments.ensemble.BetaVAEEnsemble`), its images rendered on the GPU
(:func:`zoo.dsprites.render`), and on CUDA the whole step (drawing the factors, rendering, forward,
backward, Adam) is captured once in a CUDA graph and replayed, so a step costs its kernels and no Python.
Training stops at ``--steps`` or at ``--time-limit`` seconds, whichever comes first, and the report says
which steps were reached. Then MIG (all five factors, 10,000 points) and the reconstruction BCE of the
1,000 dSprites test images are measured per model, and the verdict is the CPU experiment's
(:func:`zoo.experiments.beta_sweep.beta_verdict`): per-seed numbers, means, and the spread over seeds.

The network is the zoo's conv beta-VAE with the standard model's widths (32, 32, 64, 64), not its exact
layers (3x3 stride-2 convolutions in the encoder, 4x4 transposed ones in the decoder, no 256-unit layer).
On a CPU the same code runs eagerly (a few steps, for the tests).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from zoo.experiments.beta_sweep import BETAS, CLAIM, beta_verdict, measure
from zoo.experiments.ensemble import BetaVAEEnsemble
from zoo.experiments.report import ExperimentResult, seed_statistics

logger = logging.getLogger(__name__)

NAME = "beta-disentanglement-standard"
#: Three seeds per beta: the 12 models share one GPU run's time budget, so each added seed costs every model steps.
SEEDS = (0, 1, 2)
STANDARD_STEPS = 300_000
BATCH_SIZE = 64
LR = 1e-4
CONFIG = {"input_shape": (1, 64, 64), "architecture": "conv", "hidden_dims": (32, 32, 64, 64), "latent_dim": 10}
#: Steps between checks of the clock (each check waits for the GPU once).
CLOCK_EVERY = 500


def draw_batches(models: int, device: torch.device) -> Tensor:
    """(models, BATCH_SIZE, 1, 64, 64) dSprites images, factors uniform and independent, rendered on ``device``."""
    from zoo.dsprites import FACTOR_SIZES, render

    n = models * BATCH_SIZE
    factors = torch.stack([torch.randint(size, (n,), device=device) for size in FACTOR_SIZES], dim=1)
    return render(factors).view(models, BATCH_SIZE, 1, 64, 64)


def train(ensemble: BetaVAEEnsemble, device: torch.device, steps: int, time_limit: float,
          cuda_graph: bool = True) -> int:
    """Train until ``steps`` or ``time_limit`` seconds; the steps taken. On CUDA (unless ``cuda_graph`` is
    False) one step is captured in a CUDA graph after three eager warm-up steps (so at least three are
    taken) and replayed."""
    from zoo.losses import unit_range_checked

    def eager_step() -> None:
        ensemble.step(draw_batches(len(ensemble), device))

    start = time.monotonic()
    with unit_range_checked(draw_batches(1, device)):  # rendered images are binary: no check per step
        graphed = cuda_graph and device.type == "cuda"
        step_once, done = (_captured_step(ensemble, device), 3) if graphed else (eager_step, 0)  # warm-up: 3
        while done < steps:
            step_once()
            done += 1
            if done % CLOCK_EVERY == 0:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed = time.monotonic() - start
                if elapsed > time_limit:
                    logger.warning("time limit: stopped after %d of %d steps (%.0f s)", done, steps, elapsed)
                    break
                logger.info("step %d, %.0f s", done, elapsed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return done


def _captured_step(ensemble: BetaVAEEnsemble, device: torch.device) -> Callable[[], None]:
    """Three eager steps on a side stream (as CUDA graph capture requires), then one step captured: its
    replay draws fresh factors and noise from the CUDA generator each time."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            ensemble.step(draw_batches(len(ensemble), device))
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ensemble.step(draw_batches(len(ensemble), device))
    return graph.replay


def run(out: Path, *, betas: Sequence[float] = BETAS, seeds: Sequence[int] = SEEDS, steps: int = STANDARD_STEPS,
        time_limit: float = 420.0, device: str = "auto", mig_points: int = 10_000,
        cuda_graph: bool = True) -> ExperimentResult:
    """Train every (beta, seed) model together, measure each, write ``out/NAME`` and return the result."""
    import zoo
    from zoo.data import load_dataset
    from zoo.devices import resolve_device
    from zoo.disentanglement import DSpritesFactors

    if not {1.0, 4.0, 8.0} <= {float(b) for b in betas}:
        raise ValueError(f"the verdict compares beta = 4 and 8 with beta = 1: include them (got {list(betas)})")
    if len(set(seeds)) < 2:
        raise ValueError(f"the verdict weighs the spread over seeds: give at least two seeds (got {list(seeds)})")
    betas = tuple(sorted(float(b) for b in betas))
    target = resolve_device(device)
    runs = [(beta, seed) for beta in betas for seed in seeds]
    models = []
    for beta, seed in runs:
        torch.manual_seed(seed)  # a seed's initial weights are the same at every beta
        models.append(zoo.create("beta-vae", **CONFIG, beta=beta).to(target))
    ensemble = BetaVAEEnsemble(models, [beta for beta, _ in runs], LR,
                               capturable=cuda_graph and target.type == "cuda")
    torch.manual_seed(min(seeds))  # the stream of factors and noise
    started = time.monotonic()
    reached = train(ensemble, target, steps, time_limit, cuda_graph)
    seconds = time.monotonic() - started
    test, factors = load_dataset("dsprites", "test"), DSpritesFactors()
    per_seed: dict[str, list[float]] = {}
    for i, (beta, _) in enumerate(runs):
        for key, value in measure(ensemble.model(i), factors, test, mig_points).items():
            per_seed.setdefault(f"beta={beta:g}: {key}", []).append(value)
    numbers: dict[str, object] = {"steps reached": reached, "steps of the standard protocol": STANDARD_STEPS,
                                  "training seconds": round(seconds, 1), "device": describe(target),
                                  **seed_statistics(per_seed)}
    holds, verdict = beta_verdict(per_seed, reached, betas)
    method = (f"All of dSprites (737,280 images, 64x64, five factors), factors drawn uniformly for every batch; the "
              f"zoo's conv beta-VAE with widths {CONFIG['hidden_dims']} and 10 latents; Adam {LR:g}, batch "
              f"{BATCH_SIZE}, {reached:,} of the standard {STANDARD_STEPS:,} steps (stopped at --steps or at the "
              f"time limit of {time_limit:g} s), beta = {', '.join(f'{b:g}' for b in betas)} with seeds "
              f"{', '.join(map(str, seeds))}, all trained at once as one batched network (one Adam per model). "
              f"MIG over all five factors from {mig_points:,} random images (posterior means, 20 bins); "
              f"reconstruction BCE of the 1,000 dSprites test images.")
    result = ExperimentResult(NAME, CLAIM, numbers, holds, verdict, [], method)
    folder = Path(out) / NAME
    folder.mkdir(parents=True, exist_ok=True)
    result.write(folder)
    return result


def describe(device: torch.device) -> str:
    """The device in words, for the report (GPU timings mean nothing without the card's name)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.experiments.standard_dsprites", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/experiments", help="the report goes to OUT/" + NAME)
    parser.add_argument("--betas", type=float, nargs="+", default=list(BETAS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--steps", type=int, default=STANDARD_STEPS)
    parser.add_argument("--time-limit", type=float, default=420.0, help="seconds of training at most (default 420)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mig-points", type=int, default=10_000)
    parser.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                        help="run every step eagerly on CUDA too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(Path(args.out), betas=args.betas, seeds=args.seeds, steps=args.steps, time_limit=args.time_limit,
                 device=args.device, mig_points=args.mig_points, cuda_graph=args.cuda_graph)
    print(f"{result.status}: {result.verdict}")


if __name__ == "__main__":
    main()
