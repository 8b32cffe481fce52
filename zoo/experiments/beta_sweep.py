"""Experiment 3: a larger beta gives more disentangled but blurrier models (dSprites); beta-TCVAE and
FactorVAE, which penalise only the total correlation, at the same budget beside them."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.data import load_dataset
from zoo.experiments.report import ExperimentResult

CLAIM = ("Raising beta in a beta-VAE trades reconstruction for disentanglement: on dSprites, MIG rises and "
         "reconstruction gets worse as beta goes from 1 to 8.")
BETAS = (1.0, 2.0, 4.0, 8.0)
#: The total-correlation penalties, trained as their dSprites checkpoints' recipes set them: (label, recipe).
TC_MODELS = (("beta-TCVAE (beta=6)", "beta-tcvae-dsprites"), ("FactorVAE (gamma=10)", "factor-vae-dsprites"))
#: Below this MIG for every beta (the low end of the published scores of trained models, roughly 0.05 to 0.4),
#: no model disentangled anything, and the run cannot speak to the claim: "undecided: budget".
MIG_FLOOR = 0.05


def run(out: Path, quick: bool = False) -> ExperimentResult:
    from zoo_model_cards.recipes import DSPRITES_CONFIG, DSPRITES_TRAIN, RECIPES

    import zoo
    from zoo.disentanglement import DSpritesFactors, mig, posterior_mean
    from zoo.metrics import reconstruction_errors
    from zoo.pictures import reconstruction_rows, save_grid

    steps, mig_points = (60, 1000) if quick else (400, 10_000)
    test = load_dataset("dsprites", "test")
    numbers: dict[str, float] = {}
    pictures = []
    runs = [(f"beta={beta:g}", f"beta{beta:g}", "beta-vae", {"beta": beta}) for beta in BETAS]
    runs += [(label, RECIPES[name].variant, RECIPES[name].variant, RECIPES[name].config) for label, name in TC_MODELS]
    for label, file_label, variant, settings in runs:
        torch.manual_seed(DSPRITES_TRAIN["seed"])  # each model's initial weights too, whatever ran before
        model = zoo.create(variant, **{**DSPRITES_CONFIG, **settings})
        zoo.train(model, "dsprites", **{**DSPRITES_TRAIN, "max_steps": steps}, progress=False)
        model.cpu().eval()
        numbers[f"{label}: MIG"] = mig(DSpritesFactors(), posterior_mean(model), num_points=mig_points)["mig"]
        numbers[f"{label}: reconstruction BCE (nats)"] = reconstruction_errors(model, test)["bce"]
        file = f"reconstructions-{file_label}.png"
        save_grid(reconstruction_rows(model, test.x[:8]), out / file, nrow=8)
        pictures.append((file, f"{label.replace('=', ' = ')}: 8 test images (top) and their reconstructions"))
    migs = [numbers[f"beta={b:g}: MIG"] for b in BETAS]
    bces = [numbers[f"beta={b:g}: reconstruction BCE (nats)"] for b in BETAS]
    blurrier = all(b1 < b2 for b1, b2 in zip(bces, bces[1:], strict=False))
    disentangled = migs[-1] > migs[0] and migs[2] > migs[0]
    mig_says = "is higher at beta = 4 and 8 than at beta = 1" if disentangled else "does NOT rise with beta in this run"
    holds: bool | None = blurrier and disentangled
    budget = ""
    if max(migs) < MIG_FLOOR:
        holds = None
        budget = (f"Undecided: budget. No beta reached MIG {MIG_FLOOR} (the low end of published scores for trained "
                  f"models) in {steps} steps, so nothing was disentangled at any beta and the run cannot speak to "
                  "the claim; the bundled dSprites checkpoints train 4,000 steps (docs/families.md) and the standard "
                  "protocol 300,000. ")
    verdict = (f"{budget}MIG for beta = 1, 2, 4, 8: {', '.join(f'{m:.3f}' for m in migs)}; reconstruction BCE: "
               f"{', '.join(f'{b:.1f}' for b in bces)}. Reconstruction {'worsens' if blurrier else 'does NOT worsen'} "
               f"monotonically with beta; MIG {mig_says} after only {steps} steps (the standard protocol trains "
               f"300,000). {tc_verdict(numbers)}")
    method = (f"The `beta-vae-dsprites` architecture (conv 64x64, 10 latents), batch 64, Adam 5e-4, seed 0, {steps} "
              f"steps on random dSprites batches for each beta, and for beta-TCVAE and FactorVAE with the settings of "
              f"their dSprites checkpoints. MIG over all five factors from {mig_points:,} "
              "random images (posterior means, 20 bins); reconstruction BCE of the deterministic reconstruction of "
              "the 1,000 dSprites test images.")
    return ExperimentResult("beta-disentanglement", CLAIM, numbers, holds, verdict, pictures, method, quick)


def tc_verdict(numbers: dict[str, float]) -> str:
    """Whether the total-correlation penalties beat the beta-VAE (beta = 4) and the VAE on MIG, in words."""
    vae, beta4 = numbers["beta=1: MIG"], numbers["beta=4: MIG"]
    parts = []
    for label, _ in TC_MODELS:
        value = numbers[f"{label}: MIG"]
        above = [name for name, other in (("the VAE", vae), ("beta = 4", beta4)) if value > other]
        parts.append(f"{label} {value:.3f} ({'above ' + ' and '.join(above) if above else 'above neither'})")
    return (f"Penalising only the total correlation, at the same budget: MIG of {'; '.join(parts)}, against "
            f"{vae:.3f} for the VAE and {beta4:.3f} for beta = 4.")
