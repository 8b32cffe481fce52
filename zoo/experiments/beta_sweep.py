"""Experiment 3: a larger beta gives more disentangled but blurrier models (dSprites)."""

from __future__ import annotations

from pathlib import Path

from zoo.data import load_dataset
from zoo.experiments.report import ExperimentResult

CLAIM = ("Raising beta in a beta-VAE trades reconstruction for disentanglement: on dSprites, MIG rises and "
         "reconstruction gets worse as beta goes from 1 to 8.")
BETAS = (1.0, 2.0, 4.0, 8.0)


def run(out: Path, quick: bool = False) -> ExperimentResult:
    from zoo_model_cards.recipes import DSPRITES_CONFIG, DSPRITES_TRAIN

    import zoo
    from zoo.disentanglement import DSpritesFactors, mig, posterior_mean
    from zoo.metrics import reconstruction_errors
    from zoo.pictures import reconstruction_rows, save_grid

    steps, mig_points = (60, 1000) if quick else (400, 10_000)
    test = load_dataset("dsprites", "test")
    numbers: dict[str, float] = {}
    pictures = []
    for beta in BETAS:
        model = zoo.create("beta-vae", **DSPRITES_CONFIG, beta=beta)
        zoo.train(model, "dsprites", **{**DSPRITES_TRAIN, "max_steps": steps}, progress=False)
        model.cpu().eval()
        numbers[f"beta={beta:g}: MIG"] = mig(DSpritesFactors(), posterior_mean(model), num_points=mig_points)["mig"]
        numbers[f"beta={beta:g}: reconstruction BCE (nats)"] = reconstruction_errors(model, test)["bce"]
        file = f"reconstructions-beta{beta:g}.png"
        save_grid(reconstruction_rows(model, test.x[:8]), out / file, nrow=8)
        pictures.append((file, f"beta = {beta:g}: 8 test images (top) and their reconstructions"))
    migs = [numbers[f"beta={b:g}: MIG"] for b in BETAS]
    bces = [numbers[f"beta={b:g}: reconstruction BCE (nats)"] for b in BETAS]
    blurrier = all(b1 < b2 for b1, b2 in zip(bces, bces[1:], strict=False))
    disentangled = migs[-1] > migs[0] and migs[2] > migs[0]
    mig_says = "is higher at beta = 4 and 8 than at beta = 1" if disentangled else "does NOT rise with beta in this run"
    verdict = (f"MIG for beta = 1, 2, 4, 8: {', '.join(f'{m:.3f}' for m in migs)}; reconstruction BCE: "
               f"{', '.join(f'{b:.1f}' for b in bces)}. Reconstruction {'worsens' if blurrier else 'does NOT worsen'} "
               f"monotonically with beta; MIG {mig_says} after only {steps} steps (the standard protocol trains "
               "300,000).")
    method = (f"The `beta-vae-dsprites` architecture (conv 64x64, 10 latents), batch 64, Adam 5e-4, seed 0, {steps} "
              f"steps on random dSprites batches for each beta. MIG over all five factors from {mig_points:,} "
              "random images (posterior means, 20 bins); reconstruction BCE of the deterministic reconstruction of "
              "the 1,000 dSprites test images.")
    return ExperimentResult("beta-disentanglement", CLAIM, numbers, blurrier and disentangled, verdict, pictures,
                            method, quick)
