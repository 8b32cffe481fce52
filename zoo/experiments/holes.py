"""Experiment 1: a plain autoencoder's latent space has holes; a VAE's does not."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.data import load_dataset
from zoo.experiments.report import ExperimentResult
from zoo.pictures import save_grid
from zoo.sample_quality import classifier_confidence, frechet_distance, sharpness

CLAIM = ("Decoding random points from N(0, I) through a plain autoencoder gives images that are no digit in "
         "particular (its latent space has holes), while a VAE, whose KL term fills N(0, I), decodes them to "
         "digits.")


@torch.no_grad()
def decode(model: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    return model.decode(z).float().clamp(0, 1)


@torch.no_grad()
def fitted_gaussian_codes(model: torch.nn.Module, x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Samples from a Gaussian with the mean and covariance of the autoencoder's codes of ``x``."""
    codes = model.encode(x).mode().double()
    mean, cov = codes.mean(0), torch.cov(codes.T) + 1e-6 * torch.eye(codes.shape[1], dtype=torch.float64)
    factor = torch.linalg.cholesky(cov)
    return (mean + torch.randn(n, codes.shape[1], generator=generator, dtype=torch.float64) @ factor.T).float()


def run(out: Path, quick: bool = False) -> ExperimentResult:
    import zoo
    from zoo.classifier import classify

    n = 500 if quick else 5000
    test = load_dataset("mnist", "test").x
    train = load_dataset("mnist", "train").x
    ae, vae = zoo.load("ae-mnist").eval(), zoo.load("vae-mnist").eval()
    generator = torch.Generator().manual_seed(0)
    images = {
        "ae-mnist, z ~ N(0, I)": decode(ae, torch.randn(n, *ae.latent_shape, generator=generator)),
        "ae-mnist, z ~ Gaussian fitted to its training codes": decode(
            ae, fitted_gaussian_codes(ae, train, n, generator)),
        "vae-mnist, z ~ N(0, I)": decode(vae, torch.randn(n, *vae.latent_shape, generator=generator)),
    }
    _, real = classify(test)
    numbers: dict[str, float] = {"test digits: classifier confidence": classifier_confidence(test)}
    pictures = []
    for i, (label, x) in enumerate(images.items()):
        _, feats = classify(x)
        numbers[f"{label}: classifier confidence"] = classifier_confidence(x)
        numbers[f"{label}: Frechet classifier distance"] = frechet_distance(real, feats)
        numbers[f"{label}: sharpness"] = sharpness(x)
        file = f"samples-{i}.png"
        save_grid(x[:64], out / file, nrow=8)
        pictures.append((file, f"64 decoded samples: {label}"))
    ae_key, fit_key, vae_key = images
    holds = (numbers[f"{vae_key}: classifier confidence"] > numbers[f"{ae_key}: classifier confidence"]
             and numbers[f"{vae_key}: Frechet classifier distance"] < numbers[f"{ae_key}: Frechet classifier distance"])
    fit_conf, vae_conf = numbers[f"{fit_key}: classifier confidence"], numbers[f"{vae_key}: classifier confidence"]
    fit_fcd, vae_fcd = (numbers[f"{fit_key}: Frechet classifier distance"],
                        numbers[f"{vae_key}: Frechet classifier distance"])
    fitted = ("a Gaussian fitted to the AE's own codes decodes to digits almost as well as the VAE's prior "
              if fit_conf > 0.95 * vae_conf else "even a Gaussian fitted to the AE's own codes decodes worse "
              "than the VAE's prior ")
    verdict = (f"Prior samples through the VAE get classifier confidence {vae_conf:.3f} and Frechet classifier "
               f"distance {vae_fcd:.1f}; through the plain AE {numbers[f'{ae_key}: classifier confidence']:.3f} "
               f"and {numbers[f'{ae_key}: Frechet classifier distance']:.1f}. But {fitted}(confidence "
               f"{fit_conf:.3f}, distance {fit_fcd:.1f}): much of the AE's failure is that its codes are not "
               "distributed as N(0, I), which nothing in its loss asks for; the VAE's KL term is what makes the "
               "prior itself a usable sampling distribution.")
    method = (f"Bundled `ae-mnist` (32-d code) and `vae-mnist` (16-d latent). {n} codes per row of the table, seed 0; "
              "decoded images judged by zoo's MNIST classifier (confidence = mean top-class probability; Frechet "
              "distance in its 128-d feature space against the 1,000 test digits; not the Inception FID).")
    return ExperimentResult("latent-holes", CLAIM, numbers, holds, verdict, pictures, method, quick)
