"""Each experiment's quick run: it writes its report, and the direction of its effect shows."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch

import zoo
from zoo.cli import main
from zoo.errors import UnknownNameError
from zoo.experiments import EXPERIMENTS, run_experiment


def check_written(result, folder):
    text = (folder / "README.md").read_text()
    assert result.claim in text and result.verdict in text and "## Numbers" in text
    stored = json.loads((folder / "results.json").read_text())["numbers"]
    assert stored.keys() == result.numbers.keys()
    for key, value in result.numbers.items():  # numbers, per-seed lists of numbers, or words
        assert stored[key] == (value if isinstance(value, str) else pytest.approx(value)), key
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
    key = "reconstruction only: reconstruction NLL (nats)"
    per_seed = n[f"{key}, per seed"]
    assert len(per_seed) == 2 and n[key] == pytest.approx(np.mean(per_seed))
    assert n[f"{key}, sd over seeds"] == pytest.approx(np.std(per_seed, ddof=1))
    assert "paired over seeds" in result.verdict
    assert n["KL only: 5-NN label accuracy from mu"] < 0.2  # chance is 0.1
    assert n["reconstruction only: 5-NN label accuracy from mu"] > n["KL only: 5-NN label accuracy from mu"] + 0.15
    assert n["reconstruction + KL: 5-NN label accuracy from mu"] > n["KL only: 5-NN label accuracy from mu"] + 0.15
    assert n["reconstruction only: mean |mu|"] > n["reconstruction + KL: mean |mu|"] > n["KL only: mean |mu|"]
    assert n["KL only: KL (nats)"] < 0.1 < n["reconstruction + KL: KL (nats)"]
    check_written(result, tmp_path / "loss-terms")


def test_posterior_collapse_noise_makes_the_latent_inactive_and_remedies_reopen_it(tmp_path):
    result = run_experiment("posterior-collapse", tmp_path, quick=True)
    n = result.numbers
    control, noisy = "784-256-8, no noise (control)", "784-256-8, 10 noisy epochs, seed 0"
    assert n[f"{control}: Var_x E[z] (active if > 0.01)"] > 0.01
    assert n[f"{control}: gain (nats)"] > n[f"{control}: KL (nats)"]
    # the direction on a short run: the noisy latent's KL, gain and activity all fall by an order of magnitude
    for key in ("KL (nats)", "gain (nats)", "Var_x E[z] (active if > 0.01)"):
        assert n[f"{noisy}: after the noise: {key}"] < 0.1 * n[f"{control}: {key}"], key
    assert n[f"{noisy}: after the noise: gain (nats)"] < n[f"{noisy}: after the noise: KL (nats)"]
    # every remedy is measured; free bits and the warm-up, which let the latent carry information without paying
    # its KL, open it further than the plain ELBO in the same epochs
    plain = n[f"{noisy}, plain ELBO: Var_x E[z] at the end"]
    for remedy in ("free bits 0.5 nats", "KL warm-up over 20 epochs"):
        assert n[f"{noisy}, {remedy}: Var_x E[z] at the end"] > 2 * plain, remedy
    assert "784-256-8 after 10 noisy epochs, collapsed in " in result.verdict and "; KL weight 0.5 " in result.verdict
    check_written(result, tmp_path / "posterior-collapse")


def test_weighted_elbo_free_bits_and_schedules_against_the_terms_written_out():
    from zoo.experiments.loop import LinearWarmup, weighted_elbo

    torch.manual_seed(0)
    model = zoo.create("vae", latent_dim=4, hidden_dims=(32,))
    x = torch.rand(16, 1, 28, 28)

    def terms(seed: int):
        torch.manual_seed(seed)
        posterior = model.encode(x)
        recon = model.reconstruction_nll(x, posterior.sample()).mean()
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(posterior.mean, posterior.stddev), torch.distributions.Normal(0.0, 1.0))
        return recon, kl

    recon, kl = terms(1)
    torch.manual_seed(1)
    torch.testing.assert_close(weighted_elbo()(model, x), recon + kl.sum(1).mean())
    floor = float(kl.detach().mean(0).max()) / 2  # some latents below the floor, at least one above
    torch.manual_seed(1)
    torch.testing.assert_close(weighted_elbo(free_bits=floor)(model, x), recon + kl.mean(0).clamp_min(floor).sum())
    warmup = LinearWarmup(4)
    warmup.advance(0)  # one epoch of four done: the KL weighs 0.25
    torch.manual_seed(1)
    torch.testing.assert_close(weighted_elbo(kl_weight=warmup)(model, x), recon + 0.25 * kl.sum(1).mean())
    warmup.advance(9)
    assert warmup() == 1.0


def test_importance_sampling_has_lower_variance_than_prior_sampling(tmp_path):
    result = run_experiment("importance-sampling", tmp_path, quick=True)
    n = result.numbers
    for k in (10, 100):
        assert n[f"K={k}: variance, prior proposal"] > 10 * n[f"K={k}: variance, q(z|x) proposal"]
        assert n[f"K={k}: mean log p(x), q(z|x) proposal"] > n[f"K={k}: mean log p(x), prior proposal"]
    assert result.holds is True


def test_vae_vs_vae_gan_rows_share_one_encoder_and_decoder_and_differ_where_they_should(tmp_path):
    from zoo.experiments.vae_gan_sharpness import ALGORITHM_1, NON_SATURATING, VAE, row_settings

    models = {label: zoo.create(variant, **config) for label, (variant, config) in row_settings().items()}
    shapes = {label: [(name, p.shape) for name, p in m.named_parameters() if name.startswith(("encoder", "decoder"))]
              for label, m in models.items()}
    assert shapes[VAE] == shapes[ALGORITHM_1] == shapes[NON_SATURATING]
    assert models[ALGORITHM_1].config.generator_loss == "minimax"
    assert models[NON_SATURATING].config.generator_loss == "non_saturating"
    assert models[VAE].config.likelihood == "bernoulli" and not hasattr(models[VAE], "discriminator")
    result = run_experiment("vae-vs-vae-gan", tmp_path, quick=True)
    for label in (VAE, ALGORITHM_1, NON_SATURATING):
        for key in ("sharpness", "fcd", "fcd_mlp", "confidence", "centre_spread"):
            assert np.isfinite(result.numbers[f"{label}: {key}"]), (label, key)
    assert "per seed" in result.verdict and "MLP judge" in result.verdict
    check_written(result, tmp_path / "vae-vs-vae-gan")


def test_cvae_generates_the_requested_classes(tmp_path):
    result = run_experiment("cvae-classes", tmp_path, quick=True)
    for judge in ("cnn", "mlp"):
        own = result.numbers[f"{judge}: its own accuracy on real test digits"]
        assert result.numbers[f"{judge}: overall accuracy on the requested label"] > 0.9 * own, judge
        assert min(result.numbers[f"{judge}: digit {k}"] for k in range(10)) > 0.5, judge
    # trained without shifts, its samples sit where the test digits do
    assert result.numbers["samples' centre spread (px)"] < 2 * result.numbers["test digits' centre spread (px)"]
    assert result.holds is True


@pytest.mark.slow
def test_beta_sweep_reconstruction_worsens_with_beta(tmp_path):
    result = run_experiment("beta-disentanglement", tmp_path, quick=True)
    bce = [result.numbers[f"beta={b}: reconstruction BCE (nats)"] for b in (1, 2, 4, 8)]
    assert bce[0] < bce[-1]
    assert all(0 <= result.numbers[f"beta={b}: MIG"] <= 1 for b in (1, 2, 4, 8))
    assert {"beta-TCVAE (beta=6): MIG", "FactorVAE (gamma=10): MIG"} <= set(result.numbers)
    # the protocol's free factors are the two positions (one scale, orientation 0), each with its two best latents
    assert {key.removeprefix("beta=1: MIG gap of ") for key in result.numbers
            if key.startswith("beta=1: MIG gap of ") and "," not in key} == {"pos_x", "pos_y"}
    assert "beta=8: pos_y: second latent's normalised MI, per seed" in result.numbers
    for b in (1, 8):  # every setting with two seeds: the mean, the spread and each seed's number
        per_seed = result.numbers[f"beta={b}: MIG, per seed"]
        assert len(per_seed) == 2 and result.numbers[f"beta={b}: MIG"] == pytest.approx(sum(per_seed) / 2)
        assert result.numbers[f"beta={b}: MIG, sd over seeds"] == pytest.approx(statistics.stdev(per_seed))
    # Nothing disentangles in 150 steps: the run says that it cannot decide, and why.
    assert max(result.numbers[f"beta={b}: MIG"] for b in (1, 2, 4, 8)) < 0.05
    assert result.holds is None and result.verdict.startswith("Undecided: budget.")
    check_written(result, tmp_path / "beta-disentanglement")


@pytest.mark.slow
def test_beta_protocols_report_each_protocol_and_each_factors_two_best_latents(tmp_path):
    from zoo.experiments.beta_protocols import PROTOCOLS

    result = run_experiment("beta-protocols", tmp_path, quick=True)
    names = {"squares": ("scale", "pos_x", "pos_y"), "one position factor": ("scale", "pos_x"),
             "unequal ranges": ("pos_x", "pos_y"), "ellipses": ("scale", "pos_x", "pos_y"),
             "conv net": ("scale", "pos_x", "pos_y")}
    assert [p.name for p in PROTOCOLS] == list(names)
    for protocol, factors in names.items():
        for beta in (1, 8):
            row = f"{protocol}, beta={beta}: "
            assert len(result.numbers[row + "MIG, per seed"]) == 2
            gaps = [key.removeprefix(row + "MIG gap of ") for key in result.numbers if key.startswith(row + "MIG gap")]
            assert {gap for gap in gaps if "," not in gap} == set(factors)
            for factor in factors:  # the gap is the best latent's share minus the second's, seed by seed
                best = result.numbers[f"{row}{factor}: best latent's normalised MI, per seed"]
                second = result.numbers[f"{row}{factor}: second latent's normalised MI, per seed"]
                gap = result.numbers[f"{row}MIG gap of {factor}, per seed"]
                assert all(b >= s for b, s in zip(best, second, strict=True))
                assert gap == pytest.approx([b - s for b, s in zip(best, second, strict=True)])
        assert result.numbers[f"{protocol}, beta=1: reconstruction BCE (nats)"] > 0
    # 100 steps disentangle nothing on any protocol: the run says it cannot decide, and why
    assert result.holds is None and result.verdict.startswith("Undecided: budget.")
    check_written(result, tmp_path / "beta-protocols")


def test_the_protocols_verdict_needs_a_rise_beyond_the_spread_above_the_floor():
    from zoo.experiments.beta_protocols import PROTOCOLS, protocols_verdict

    def numbers(mig1, mig8, bce=(3.0, 15.0)):
        out = {}
        for p in PROTOCOLS:
            for beta, mig, error in ((1, mig1, bce[0]), (8, mig8, bce[1])):
                out[f"{p.name}, beta={beta}: MIG"] = mig
                out[f"{p.name}, beta={beta}: reconstruction BCE (nats)"] = [error] * 3
        return out

    holds, text = protocols_verdict(numbers([0.05, 0.06, 0.07], [0.20, 0.22, 0.25]), 6000)
    assert holds is True and text.startswith("The effect shows on: squares, one position factor, unequal ranges,")
    assert "one position factor: MIG 0.060 -> 0.223, difference +0.163 ± 0.009" in text
    assert protocols_verdict(numbers([0.05, 0.06, 0.07], [0.20, 0.22, 0.25], bce=(15.0, 3.0)), 6000)[0] is None
    holds, text = protocols_verdict(numbers([0.10, 0.30, 0.11], [0.35, 0.12, 0.40]), 6000)
    assert holds is None and text.startswith("Undecided: seeds. No protocol shows the effect beyond the spread")
    holds, text = protocols_verdict(numbers([0.30, 0.31, 0.32], [0.10, 0.12, 0.11]), 6000)
    assert holds is False and text.startswith("No protocol tried shows the effect")
    holds, text = protocols_verdict(numbers([0.01, 0.02, 0.03], [0.02, 0.03, 0.04]), 100)
    assert holds is None and text.startswith("Undecided: budget. On no protocol does either beta's MIG lie above 0.05")


def test_unknown_experiment_names_the_close_match():
    with pytest.raises(UnknownNameError, match="Did you mean: latent-holes"):
        run_experiment("latent-hole")


def test_cli_lists_every_experiment_with_its_claim(capsys):
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out


def test_the_beta_verdict_weighs_the_rise_in_mig_against_the_spread_over_seeds():
    from zoo.experiments.beta_sweep import beta_verdict

    def numbers(migs: dict[float, list[float]], bces=(10.0, 11.0, 12.0, 13.0)):
        bce = {f"beta={b:g}: reconstruction BCE (nats)": [value] * 3 for b, value in zip(migs, bces, strict=True)}
        return {**{f"beta={b:g}: MIG": m for b, m in migs.items()}, **bce}

    clear = {1.0: [0.10, 0.12, 0.11], 2.0: [0.2] * 3, 4.0: [0.30, 0.33, 0.31], 8.0: [0.35, 0.36, 0.40]}
    holds, text = beta_verdict(numbers(clear), 6000)
    assert holds is True and text.startswith("MIG rises with beta beyond the spread over seeds. Means over 3 seeds")
    assert "beta = 4 minus beta = 1, paired over seeds: +0.203 ± 0.003" in text
    assert beta_verdict(numbers(clear, bces=(10.0, 12.0, 11.0, 13.0)), 6000)[0] is False  # sharper at beta = 4
    noisy = {1.0: [0.10, 0.30, 0.11], 2.0: [0.2] * 3, 4.0: [0.30, 0.12, 0.31], 8.0: [0.35, 0.12, 0.40]}
    holds, text = beta_verdict(numbers(noisy), 6000)
    assert holds is None and text.startswith("Undecided: seeds. MIG is higher at beta = 4 and 8 than at beta = 1 "
                                             "on average, but not by two standard errors over 3 seeds.")
    only_8 = {**noisy, 8.0: [0.45, 0.50, 0.46]}  # beta = 8 clear of the spread, beta = 4 within it
    holds, text = beta_verdict(numbers(only_8), 6000)
    assert holds is None and "but by more than two standard errors over 3 seeds only at beta = 8." in text
    falling = {1.0: [0.30] * 3, 2.0: [0.2] * 3, 4.0: [0.10, 0.12, 0.11], 8.0: [0.10] * 3}
    assert beta_verdict(numbers(falling), 6000)[1].startswith("MIG does NOT rise with beta")
    flat = {b: [0.01, 0.02, 0.03] for b in (1.0, 2.0, 4.0, 8.0)}
    holds, text = beta_verdict(numbers(flat), 150)
    assert holds is None and text.startswith("Undecided: budget. No beta's MIG lies above 0.05 (the low end")
