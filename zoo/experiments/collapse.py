"""Experiment 4: posterior collapse of one latent, caused by noise injected into it, and what
happens when the noise is removed."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.data import TensorData, load_dataset
from zoo.experiments.loop import train_with_loss, weighted_elbo
from zoo.experiments.report import ExperimentResult
from zoo.metrics import active_units, reconstruction_gain

CLAIM = ("When a latent carries only noise to the decoder, the decoder learns to ignore it: its reconstruction "
         "gain falls below its KL, the optimiser then closes the posterior onto the prior and the unit goes "
         "inactive (posterior collapse). When the noise is removed, the unit recovers.")

NOT_RECOVERED = (" (the second half of the claim does not hold in this run: a collapsed unit gets almost no "
                 "gradient towards carrying information again)")
LATENT = 0
NOISE_STD = 3.0


def latent_state(model: torch.nn.Module, test: TensorData) -> dict[str, float]:
    gain = reconstruction_gain(model, test)
    units = active_units(model, test)
    return {"gain (nats)": gain["gain"][LATENT], "KL (nats)": gain["kl_per_latent"][LATENT],
            "Var_x E[z] (active if > 0.01)": units["mean_variance"][LATENT],
            "active units (all latents)": float(units["active_units"])}


def run(out: Path, quick: bool = False) -> ExperimentResult:
    import zoo
    from zoo.pictures import save_latent_bars

    epochs, hidden = (10, (256,)) if quick else (40, (512, 256))
    fit, test = load_dataset("mnist", "fit"), load_dataset("mnist", "test")
    stages: dict[str, dict[str, float]] = {}
    pictures = []
    control = train_with_loss(zoo.create("vae", latent_dim=8, hidden_dims=hidden), fit, weighted_elbo(),
                              epochs=epochs, seed=0)
    model = train_with_loss(zoo.create("vae", latent_dim=8, hidden_dims=hidden), fit,
                            weighted_elbo(noise_dim=LATENT, noise_std=NOISE_STD), epochs=epochs, seed=0)
    stages["A. no noise (control)"] = latent_state(control, test)
    stages["B. noise on the latent"] = latent_state(model, test)

    def bars(trained: torch.nn.Module, file: str, label: str) -> None:
        gain = reconstruction_gain(trained, test)
        save_latent_bars(gain["kl_per_latent"], out / file, gain_per_latent=gain["gain"],
                         title=f"per-latent KL and gain, {label}")
        pictures.append((file, f"per-latent KL and reconstruction gain, {label} (latent {LATENT} is the noisy one)"))

    bars(model, "latents-0.png", "with noise")
    train_with_loss(model, fit, weighted_elbo(), epochs=epochs, seed=1)  # the same model, noise removed
    stages["C. then noise removed"] = latent_state(model, test)
    bars(model, "latents-1.png", "noise removed")
    numbers = {f"{stage}: {key}": value for stage, state in stages.items() for key, value in state.items()}
    a, b, c = stages.values()
    collapsed = b["gain (nats)"] < b["KL (nats)"] + 0.05 and b["Var_x E[z] (active if > 0.01)"] < 0.01
    recovered = c["Var_x E[z] (active if > 0.01)"] > 0.01 and c["gain (nats)"] > c["KL (nats)"]
    verdict = (f"Latent {LATENT} without noise: gain {a['gain (nats)']:.2f} nats vs KL {a['KL (nats)']:.2f}. "
               f"With noise (std {NOISE_STD}) on its way to the decoder: gain {b['gain (nats)']:.3f} vs KL "
               f"{b['KL (nats)']:.3f}, Var_x E[z] {b['Var_x E[z] (active if > 0.01)']:.4f}: "
               f"{'collapsed' if collapsed else 'NOT collapsed'}. After {epochs} more epochs without noise: gain "
               f"{c['gain (nats)']:.3f} vs KL {c['KL (nats)']:.3f}, Var_x E[z] "
               f"{c['Var_x E[z] (active if > 0.01)']:.4f}: {'recovered' if recovered else 'NOT recovered'}"
               f"{'' if recovered else NOT_RECOVERED}.")
    method = (f"MLP VAEs (784-{'-'.join(map(str, hidden))}-8) on the `mnist` `fit` rows (Adam 1e-3, batch 128). "
              f"A: {epochs} epochs, plain "
              f"ELBO. B: {epochs} epochs with N(0, {NOISE_STD}^2) noise added to latent {LATENT} between the "
              f"encoder's sample and the decoder. C: B's model trained {epochs} more epochs on the plain ELBO. "
              "Gain: test reconstruction NLL of the decoded posterior mean with the latent set to its prior mean, "
              "minus with it kept; KL: its mean KL on the test digits.")
    return ExperimentResult("posterior-collapse", CLAIM, numbers, collapsed and recovered, verdict, pictures,
                            method, quick)
