"""Experiment 2: reconstruction only, KL only, or both: the three latent spaces of the lecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data import TensorData, load_dataset
from zoo.experiments.loop import train_with_loss, weighted_elbo
from zoo.experiments.report import ExperimentResult, paired_difference, seed_statistics

CLAIM = ("With the reconstruction term alone, a 2-D latent space separates the digits but spreads them over "
         "an arbitrary region with gaps between classes; with the KL term alone every code sits on the prior "
         "and carries nothing about the digit; with both, classes stay apart inside a compact region around "
         "the origin.")

SETTINGS = {"reconstruction only": (1.0, 0.0), "KL only": (0.0, 1.0), "reconstruction + KL": (1.0, 1.0)}
SEEDS = (0, 1, 2, 3, 4)
TRAIN_RECONSTRUCTION = "reconstruction NLL on the training digits (nats)"


@torch.no_grad()
def latent_summary(model: torch.nn.Module, test: TensorData) -> dict[str, float]:
    """Spread of the test means, how well 5-NN recovers the label from them, and the loss terms."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    posterior = model.encode(test.x)
    mu = posterior.mode()
    knn = cross_val_score(KNeighborsClassifier(5), mu.numpy(), test.y.numpy(), cv=5)
    return {"mean |mu|": float(mu.norm(dim=1).mean()),
            "5-NN label accuracy from mu": float(np.mean(knn)),
            "KL (nats)": float(posterior.kl().sum(1).mean()),
            "reconstruction NLL (nats)": float(model.reconstruction_nll(test.x, mu).mean())}


@torch.no_grad()
def training_reconstruction(model: torch.nn.Module, fit: TensorData) -> float:
    """The reconstruction NLL of the training digits at their posterior means: beside the test digits' one, the
    generalisation gap."""
    return float(model.reconstruction_nll(fit.x, model.encode(fit.x).mode()).mean())


def run(out: Path, quick: bool = False) -> ExperimentResult:
    import zoo
    from zoo.pictures import save_latent_scatter

    epochs, hidden, seeds = (10, (256,), SEEDS[:2]) if quick else (40, (512, 256), SEEDS)
    fit, test = load_dataset("mnist", "fit"), load_dataset("mnist", "test")
    per_seed: dict[str, list[float]] = {}
    pictures = []
    for i, (label, (a, b)) in enumerate(SETTINGS.items()):
        for seed in seeds:
            torch.manual_seed(seed)  # the initial weights too, whatever ran before
            model = zoo.create("vae", latent_dim=2, hidden_dims=hidden)
            train_with_loss(model, fit, weighted_elbo(a, b), epochs=epochs, seed=seed)
            summary = {**latent_summary(model, test), TRAIN_RECONSTRUCTION: training_reconstruction(model, fit)}
            for key, value in summary.items():
                per_seed.setdefault(f"{label}: {key}", []).append(value)
            if seed == seeds[0]:
                file = f"scatter-{i}.png"
                save_latent_scatter(model, test, out / file, title=f"{label}: test means (seed {seed})")
                pictures.append((file, f"{label}: posterior means of the 1,000 test digits, coloured by label, "
                                       f"seed {seed}"))
    numbers = seed_statistics(per_seed)
    recon, kl, both = SETTINGS
    acc = {k: numbers[f"{k}: 5-NN label accuracy from mu"] for k in SETTINGS}
    spread = {k: numbers[f"{k}: mean |mu|"] for k in SETTINGS}
    holds = acc[kl] < 0.3 < min(acc[recon], acc[both]) and spread[recon] > spread[both] > spread[kl]
    verdict = (f"Means over {len(seeds)} seeds. 5-NN label accuracy from the 2-D means: {acc[recon]:.2f} "
               f"(reconstruction only), {acc[kl]:.2f} (KL only; chance is 0.10), {acc[both]:.2f} (both). Mean "
               f"distance of the means from the origin: {spread[recon]:.2f}, {spread[kl]:.3f}, {spread[both]:.2f}. "
               + reconstruction_finding(per_seed, recon, both))
    method = (f"Three MLP VAEs with a 2-D latent (784-{'-'.join(map(str, hidden))}-2), trained {epochs} epochs "
              f"each on the `mnist` `fit` rows with Adam 1e-3, batch 128, on loss = a * reconstruction + b * KL "
              f"with (a, b) = (1, 0), (0, 1), (1, 1); each setting with seeds {', '.join(map(str, seeds))} (the seed "
              "sets the initial weights, the batch order and the draws of z). Measured on the 1,000 test digits: "
              "5-fold cross-validated 5-nearest-neighbour accuracy of the label from the posterior means, their "
              "mean norm, and both loss terms; and the reconstruction NLL of the 3,500 training digits, for the "
              "generalisation gap. Each number is the mean over seeds, with its standard deviation and the "
              "per-seed values; the pictures show the first seed.")
    return ExperimentResult("loss-terms", CLAIM, numbers, holds, verdict, pictures, method, quick)


def reconstruction_finding(per_seed: dict[str, list[float]], recon: str, both: str) -> str:
    """Why "reconstruction only" may reconstruct the test digits no better than "both": the paired differences
    over seeds on the test and the training digits, and what they say."""
    test_key, train_key = "reconstruction NLL (nats)", TRAIN_RECONSTRUCTION
    test_diff, test_se = paired_difference(per_seed[f"{recon}: {test_key}"], per_seed[f"{both}: {test_key}"])
    train_diff, train_se = paired_difference(per_seed[f"{recon}: {train_key}"], per_seed[f"{both}: {train_key}"])
    numbers = (f"Reconstruction NLL, reconstruction only minus both (paired over seeds): {test_diff:+.1f} ± "
               f"{test_se:.1f} nats on the test digits, {train_diff:+.1f} ± {train_se:.1f} on the training digits.")
    if abs(test_diff) <= 2 * test_se:
        numbers += " On the test digits the two are within two standard errors, so one seed can put either first."
        if train_diff < -2 * train_se:
            numbers += (" On the training digits reconstruction only is better, as its loss asks: without the KL "
                        "term it fits the digits it was trained on more closely than it generalises (its gap "
                        f"between training and test digits is {test_diff - train_diff:.1f} nats larger).")
        return numbers
    if test_diff > 0 and train_diff < test_diff - 2 * np.hypot(test_se, train_se):
        return numbers + (" Without the KL term the model fits its training digits relatively better than it "
                          "fits unseen ones (a larger generalisation gap): the KL term acts as a regulariser on "
                          "the codes, and with 3,500 digits that matters more than the reconstruction weight.")
    if test_diff > 0:
        return numbers + (" Reconstruction only is worse on training and test digits alike: an optimisation "
                          "effect (the unpenalised codes spread far from the origin, see mean |mu|), not overfitting.")
    return numbers + " Reconstruction only reconstructs better, as its loss asks."
