"""Each experiment's quick run: it writes its report, and the direction of its effect shows."""

from __future__ import annotations

import json

import pytest

from zoo.cli import main
from zoo.errors import UnknownNameError
from zoo.experiments import EXPERIMENTS, run_experiment


def check_written(result, folder):
    text = (folder / "README.md").read_text()
    assert result.claim in text and result.verdict in text and "## Numbers" in text
    assert json.loads((folder / "results.json").read_text())["numbers"] == pytest.approx(result.numbers)
    for file, _ in result.pictures:
        assert (folder / file).stat().st_size > 500, file


def test_latent_holes_vae_prior_samples_look_like_digits_ae_ones_do_not(tmp_path):
    result = run_experiment("latent-holes", tmp_path, quick=True)
    n = result.numbers
    assert n["vae-mnist, z ~ N(0, I): classifier confidence"] > n["ae-mnist, z ~ N(0, I): classifier confidence"]
    assert (n["vae-mnist, z ~ N(0, I): Frechet classifier distance"]
            < n["ae-mnist, z ~ N(0, I): Frechet classifier distance"])
    assert result.holds is True
    for sampler in ("gaussian", "gmm", "flow", "two-stage"):  # ae-mnist's bundled ex-post samplers, a row each
        key = f"ae-mnist, z ~ {sampler} sampler fitted to its training codes: Frechet classifier distance"
        assert n[key] < n["ae-mnist, z ~ N(0, I): Frechet classifier distance"], sampler
    check_written(result, tmp_path / "latent-holes")


def test_loss_terms_kl_only_carries_no_label_and_reconstruction_spreads(tmp_path):
    result = run_experiment("loss-terms", tmp_path, quick=True)
    n = result.numbers
    assert n["KL only: 5-NN label accuracy from mu"] < 0.2  # chance is 0.1
    assert n["reconstruction only: 5-NN label accuracy from mu"] > n["KL only: 5-NN label accuracy from mu"] + 0.15
    assert n["reconstruction + KL: 5-NN label accuracy from mu"] > n["KL only: 5-NN label accuracy from mu"] + 0.15
    assert n["reconstruction only: mean |mu|"] > n["reconstruction + KL: mean |mu|"] > n["KL only: mean |mu|"]
    assert n["KL only: KL (nats)"] < 0.1 < n["reconstruction + KL: KL (nats)"]
    check_written(result, tmp_path / "loss-terms")


def test_posterior_collapse_noise_makes_the_latent_inactive(tmp_path):
    result = run_experiment("posterior-collapse", tmp_path, quick=True)
    n = result.numbers
    assert n["A. no noise (control): Var_x E[z] (active if > 0.01)"] > 0.01
    assert n["A. no noise (control): gain (nats)"] > n["A. no noise (control): KL (nats)"]
    # the direction on a short run: the noisy latent's KL, gain and activity all fall by an order of magnitude
    for key in ("KL (nats)", "gain (nats)", "Var_x E[z] (active if > 0.01)"):
        assert n[f"B. noise on the latent: {key}"] < 0.1 * n[f"A. no noise (control): {key}"], key
    assert n["B. noise on the latent: gain (nats)"] < n["B. noise on the latent: KL (nats)"]
    assert n["C. then noise removed: KL (nats)"] > n["B. noise on the latent: KL (nats)"]
    check_written(result, tmp_path / "posterior-collapse")


def test_importance_sampling_has_lower_variance_than_prior_sampling(tmp_path):
    result = run_experiment("importance-sampling", tmp_path, quick=True)
    n = result.numbers
    for k in (10, 100):
        assert n[f"K={k}: variance, prior proposal"] > 10 * n[f"K={k}: variance, q(z|x) proposal"]
        assert n[f"K={k}: mean log p(x), q(z|x) proposal"] > n[f"K={k}: mean log p(x), prior proposal"]
    assert result.holds is True


def test_vae_gan_samples_are_sharper(tmp_path):
    result = run_experiment("vae-vs-vae-gan", tmp_path, quick=True)
    assert result.numbers["vae-gan-mnist: sharpness"] > result.numbers["vae-mnist: sharpness"]
    check_written(result, tmp_path / "vae-vs-vae-gan")


def test_cvae_generates_the_requested_classes(tmp_path):
    result = run_experiment("cvae-classes", tmp_path, quick=True)
    assert result.numbers["overall accuracy on the requested label"] > 0.9
    assert min(result.numbers[f"digit {k}"] for k in range(10)) > 0.5
    assert result.holds is True


@pytest.mark.slow
def test_beta_sweep_reconstruction_worsens_with_beta(tmp_path):
    result = run_experiment("beta-disentanglement", tmp_path, quick=True)
    bce = [result.numbers[f"beta={b}: reconstruction BCE (nats)"] for b in (1, 2, 4, 8)]
    assert bce[0] < bce[-1]
    assert all(0 <= result.numbers[f"beta={b}: MIG"] <= 1 for b in (1, 2, 4, 8))
    assert {"beta-TCVAE (beta=6): MIG", "FactorVAE (gamma=10): MIG"} <= set(result.numbers)
    # Nothing disentangles in 60 steps: the run says that it cannot decide, and why.
    assert max(result.numbers[f"beta={b}: MIG"] for b in (1, 2, 4, 8)) < 0.05
    assert result.holds is None and result.verdict.startswith("Undecided: budget.")
    check_written(result, tmp_path / "beta-disentanglement")


def test_unknown_experiment_names_the_close_match():
    with pytest.raises(UnknownNameError, match="Did you mean: latent-holes"):
        run_experiment("latent-hole")


def test_cli_lists_every_experiment_with_its_claim(capsys):
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out
