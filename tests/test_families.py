"""The bound, prior and posterior families (IWAE and relatives, VampPrior, flow posteriors) against
independent computations: torch.distributions densities, autograd Jacobians, hand-written bounds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch.testing import assert_close

import zoo
from zoo.cards import card_metrics
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.metrics import active_units, elbo_terms, importance_sampled_nll, reconstruction_gain
from zoo.training import TrainConfig


def tiny(name: str, **overrides):
    variant = zoo.get_variant(name)
    torch.manual_seed(0)
    return variant, variant.build(variant.make_config(variant.tiny_config(), **overrides))


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def independent_log_w(model, x, eps):
    """log p(x|z) + log N(z; 0, I) - log q(z|x) with torch.distributions, for draws z = mean + std * eps."""
    mean, logvar = model.encoder(x, None).chunk(2, dim=1)
    q = D.Independent(D.Normal(mean, (0.5 * logvar).exp()), 1)
    z = mean + (0.5 * logvar).exp() * eps
    logits = model.decoder(z.reshape(-1, z.shape[-1]), None).reshape(*z.shape[:-1], *x.shape[1:])
    log_px = D.Independent(D.Bernoulli(logits=logits), 3).log_prob(x.expand_as(logits))
    prior = D.Independent(D.Normal(torch.zeros_like(mean), torch.ones_like(mean)), 1)
    return log_px + prior.log_prob(z) - q.log_prob(z)


@pytest.mark.parametrize("bound, groups, k", [("iwae", 1, 5), ("iwae", 1, 1), ("miwae", 2, 3), ("ciwae", 1, 4),
                                              ("piwae", 3, 2)])
def test_iwae_bounds_match_their_definitions(bound, groups, k):
    variant, model = tiny("iwae", bound=bound, num_groups=groups, mc_samples=k, ciwae_beta=0.3)
    x = images()
    torch.manual_seed(7)
    out = variant.loss(model, x)
    torch.manual_seed(7)
    eps = torch.randn(groups * k, len(x), 4)
    log_w = independent_log_w(model, x, eps).reshape(groups, k, len(x))
    elbo = log_w.mean((0, 1))
    iwae_all = torch.logsumexp(log_w.reshape(groups * k, -1), 0) - math.log(groups * k)
    assert_close(out.terms["neg_elbo"], -elbo.mean(), rtol=1e-5, atol=1e-4)
    assert_close(out.terms["neg_iwae_bound"], -iwae_all.mean(), rtol=1e-5, atol=1e-4)
    # Jensen: for the same draws, the IWAE bound is at least the ELBO
    assert float(out.terms["neg_iwae_bound"].detach()) <= float(out.terms["neg_elbo"].detach()) + 1e-4
    expected = {"iwae": -iwae_all.mean(),
                "miwae": -(torch.logsumexp(log_w, 1) - math.log(k)).mean(),
                "ciwae": -(0.3 * elbo + 0.7 * iwae_all).mean(),
                "piwae": -iwae_all.mean()}[bound]
    assert_close(out.total, expected, rtol=1e-5, atol=1e-4)
    if k == 1:  # one importance sample: the IWAE bound is the (single-sample) ELBO
        assert_close(out.terms["neg_iwae_bound"], out.terms["neg_elbo"])


def test_piwae_gives_the_encoder_the_miwae_gradient_and_the_decoder_the_iwae_gradient():
    variant, model = tiny("iwae", bound="piwae", num_groups=2, mc_samples=3)
    x = images()
    optimizers = variant.configure_optimizers(model, TrainConfig(lr=0.0))
    torch.manual_seed(3)
    variant.train_step(model, x, optimizers, step=0)
    stepped = {name: p.grad.clone() for name, p in model.named_parameters()}
    torch.manual_seed(3)
    eps = torch.randn(6, len(x), 4)
    log_w = independent_log_w(model, x, eps).reshape(2, 3, len(x))
    miwae = (torch.logsumexp(log_w, 1) - math.log(3)).mean()
    iwae = (torch.logsumexp(log_w.reshape(6, -1), 0) - math.log(6)).mean()
    encoder, decoder = list(model.encoder.named_parameters()), list(model.decoder.named_parameters())
    enc = torch.autograd.grad(-miwae, [p for _, p in encoder], retain_graph=True)
    enc_iwae = torch.autograd.grad(-iwae, [p for _, p in encoder], retain_graph=True)
    dec = torch.autograd.grad(-iwae, [p for _, p in decoder])
    for (name, _), grad in zip(encoder, enc, strict=True):
        assert_close(stepped[f"encoder.{name}"], grad, rtol=1e-4, atol=1e-5)
    for (name, _), grad in zip(decoder, dec, strict=True):
        assert_close(stepped[f"decoder.{name}"], grad, rtol=1e-4, atol=1e-5)
    # the two bounds' encoder gradients differ, so the check above tells them apart
    assert not torch.allclose(enc[0], enc_iwae[0], rtol=1e-3, atol=1e-6)


def test_iwae_config_errors_say_what_to_set():
    variant = zoo.get_variant("iwae")
    with pytest.raises(ConfigError, match="num_groups=3 is M of MIWAE and PIWAE.*bound='miwae'"):
        variant.make_config(num_groups=3)
    with pytest.raises(ConfigError, match="must be one of iwae, miwae, ciwae, piwae, not 'dreg'"):
        variant.make_config(bound="dreg")


def test_iwae_eval_reports_the_bound_at_the_training_k():
    _, model = tiny("iwae", mc_samples=4)
    model.variant_name = "iwae"
    data = TensorData(images(10))
    metrics = zoo.evaluate(model.eval(), data, nll_samples=50)
    assert metrics["neg_iwae_bound"] == pytest.approx(importance_sampled_nll(model, data, num_samples=4)["nll"])
    assert metrics["nll"] <= metrics["neg_iwae_bound"] + 1.0 and metrics["neg_iwae_bound"] <= metrics["neg_elbo"] + 1.0


# -- VampPrior --------------------------------------------------------------------------------------------


def vamp_prior_reference(model):
    """The VampPrior as torch.distributions: a uniform mixture of q(z|u_k) at the hardtanh'd pseudo-inputs."""
    mean, logvar = model.encoder(F.hardtanh(model.pseudo_inputs, 0.0, 1.0), None).chunk(2, dim=1)
    k = len(mean)
    return D.MixtureSameFamily(D.Categorical(logits=torch.zeros(k)),
                               D.Independent(D.Normal(mean, (0.5 * logvar).exp()), 1))


def test_vamp_prior_log_prob_is_the_mixture_of_pseudo_input_posteriors():
    _, model = tiny("vamp-vae")
    z = torch.randn(3, 5, 4) * 2
    with torch.no_grad():
        assert_close(model.prior_log_prob(z).double(), vamp_prior_reference(model).log_prob(z).double(),
                     rtol=1e-5, atol=1e-5)
        assert model.latent_kl(model.encode(images())) is None


def test_vamp_loss_kl_is_the_monte_carlo_estimate_at_the_drawn_code():
    variant, model = tiny("vamp-vae")
    x = images()
    torch.manual_seed(5)
    out = variant.loss(model, x)
    assert "kl" not in out.terms and "kl_mc" in out.terms
    torch.manual_seed(5)
    mean, logvar = model.encoder(x, None).chunk(2, dim=1)
    q = D.Independent(D.Normal(mean, (0.5 * logvar).exp()), 1)
    z = mean + (0.5 * logvar).exp() * torch.randn(len(x), 4)
    kl = (q.log_prob(z) - vamp_prior_reference(model).log_prob(z)).mean()
    assert_close(out.terms["kl_mc"], kl, rtol=1e-5, atol=1e-5)
    assert_close(out.total, out.terms["reconstruction"] + out.terms["kl_mc"])


def test_metrics_ask_a_vamp_model_for_its_prior():
    _, model = tiny("vamp-vae")
    model.variant_name = "vamp-vae"
    model.eval()
    x = images(4)
    data = TensorData(x)
    nll = importance_sampled_nll(model, data, num_samples=20, batch_size=4, seed=0)["nll"]
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        mean, logvar = model.encoder(x, None).chunk(2, dim=1)
        z = mean + (0.5 * logvar).exp() * torch.randn(20, 4, 4, generator=generator)
        q = D.Independent(D.Normal(mean, (0.5 * logvar).exp()), 1)
        logits = model.decoder(z.reshape(-1, 4), None).reshape(20, 4, 1, 8, 8)
        log_px = D.Independent(D.Bernoulli(logits=logits), 3).log_prob(x.expand_as(logits))
        log_w = log_px + vamp_prior_reference(model).log_prob(z) - q.log_prob(z)
        expected = -(torch.logsumexp(log_w.double(), 0) - math.log(20)).mean()
    assert nll == pytest.approx(float(expected), rel=1e-5)
    terms = elbo_terms(model, data, num_samples=30)
    assert terms["neg_elbo"] == pytest.approx(terms["reconstruction"] + terms["kl"])
    units = active_units(model, data)
    assert "kl_per_latent" not in units and units["units"] == 4
    with pytest.raises(ConfigError, match="no per-unit KL.*replace_with='marginal'"):
        reconstruction_gain(model, data)


def test_vamp_samples_come_from_the_pseudo_input_components():
    _, model = tiny("vamp-vae", num_pseudo_inputs=1)
    model.eval()
    with torch.no_grad():
        samples = model.sample(3, generator=torch.Generator().manual_seed(0))
        only = model.prior_components()
        generator = torch.Generator().manual_seed(0)
        torch.randint(1, (3,), generator=generator)
        z = only.mean + only.stddev * torch.randn(3, 4, generator=generator)
        assert_close(samples, model.decode(z))


# -- flow posteriors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["planar-vae", "radial-vae", "iaf-vae"])
def test_flow_log_q_subtracts_the_log_determinant_of_the_jacobian(name):
    _, model = tiny(name, flow_length=3)
    x = images(3)
    with torch.no_grad():
        posterior = model.encode(x)
        z, log_q = posterior.sample_and_log_prob(generator=torch.Generator().manual_seed(0))
        z0 = posterior.base.sample(generator=torch.Generator().manual_seed(0))

    def flow(v):
        for transform in posterior.transforms:
            v = transform(v)
        return v

    jac = torch.autograd.functional.jacobian(flow, z0)  # (B, D, B, D); examples do not mix
    assert_close(flow(z0), z, rtol=1e-5, atol=1e-5)
    for i in range(len(x)):
        base = D.Independent(D.Normal(posterior.base.mean[i], posterior.base.stddev[i]), 1).log_prob(z0[i])
        expected = base - torch.linalg.slogdet(jac[i, :, i, :]).logabsdet
        assert_close(log_q[i], expected, rtol=1e-4, atol=1e-4)
        assert torch.count_nonzero(jac[i, :, (i + 1) % len(x), :]) == 0
    with pytest.raises(NotImplementedError, match="sample_and_log_prob"):
        posterior.log_prob(z)


# -- docs/families.md --------------------------------------------------------------------------------------


def test_families_page_compares_each_family_with_the_vae_on_the_same_digits(tmp_path):
    from zoo_model_cards.families import main, verdict

    assert (verdict(-1.0, 0.4), verdict(1.0, 0.4), verdict(-0.5, 0.4)) == ("agrees", "disagrees", "undecided")
    assert verdict(1.0, 0.4, "either") == "higher" and verdict(0.1, 0.4, "either") == "no difference"
    out = tmp_path / "families.md"
    out.write_text("old\n<!-- discussion -->\n## Why\n\nkept by hand\n<!-- /discussion -->\n")
    main(["--out", str(out), "--only", "vae-mnist", "iwae-mnist", "cvae-mnist", "ladder-vae-mnist", "vae-dsprites",
          "beta-vae-dsprites", "beta-tcvae-dsprites", "--nll-samples", "20", "--examples", "40"])
    text = out.read_text()
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert {"vae-mnist", "iwae-mnist", "cvae-mnist"} <= set(rows)
    assert "(-log p(x\\|y))" in rows["cvae-mnist"] and "(-log p(x\\|y))" not in rows["vae-mnist"]
    # A hierarchy's row gives each layer's size and active units (from its card).
    card = card_metrics(Path(zoo.get_checkpoint("ladder-vae-mnist").folder) / "README.md")
    ladder = next(line for line in text.splitlines() if line.startswith("| `ladder-vae-mnist` | `ladder-vae` |"))
    assert "| z1: 16 + z2: 8 | " in ladder and (f"| {int(card['active_units'])} (z1: {int(card['active_units_z1'])}, "
                                                f"z2: {int(card['active_units_z2'])}) |") in ladder
    comparison = [line for line in text.splitlines() if line.startswith("| `iwae-mnist` | Burda")]
    assert len(comparison) == 1 and any(f"**{v}**" in comparison[0] for v in ("agrees", "disagrees", "undecided"))
    assert "kept by hand" in text and "40 test digits" in text and text.count("<!-- discussion -->") == 1
    assert "| MLP FCD | confidence | centre spread |" in text
    dsprites = text.split("## The disentangling families side by side (dSprites)")[1].split("<!-- discussion -->")[0]
    assert {"vae-dsprites", "beta-vae-dsprites", "beta-tcvae-dsprites"} <= set(rows)
    one_seed, over_seeds = dsprites.split("### Across training seeds")  # the runs of docs/families-dsprites-seeds.json
    finding = [line for line in one_seed.splitlines() if line.startswith("- `beta-tcvae-dsprites`")]
    assert len(finding) == 1 and "`beta-vae-dsprites`'s" in finding[0] and "`vae-dsprites`'s" in finding[0]
    assert "| `beta-tcvae-dsprites` | 0, 1, 2 |" in over_seeds


def test_dsprites_seeds_are_compared_by_two_standard_errors_of_the_difference_of_means():
    from zoo_model_cards.families import compare_over_seeds, mean_and_spread, render_seeds, seed_values

    assert mean_and_spread([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_and_spread([4.0]) == (4.0, 0.0)
    # means 0.5 and 0.1, standard error sqrt(0.1^2 / 3 + 0.1^2 / 3) = 0.082: 0.4 is beyond two of them
    assert compare_over_seeds([0.4, 0.5, 0.6], [0.0, 0.1, 0.2]) == "above"
    assert compare_over_seeds([0.0, 0.1, 0.2], [0.4, 0.5, 0.6]) == "below"
    assert compare_over_seeds([0.1, 0.5, 0.9], [0.0, 0.1, 0.2]) == "within the spread"  # se 0.24 > diff / 2

    def card(mig: float) -> dict[str, float]:
        return {"reconstruction": 50.0, "mig": mig, "factor_vae_score": 0.5, "beta_vae_score": 0.6}

    rows = [{"name": "vae-dsprites", "card": card(0.0)}, {"name": "beta-tcvae-dsprites", "card": card(0.4)}]
    runs = {"vae-dsprites": {"1": card(0.1), "2": card(0.2)}, "beta-tcvae-dsprites": {"1": card(0.5), "2": card(0.6)}}
    values = seed_values(rows, runs)
    assert sorted(values["vae-dsprites"]) == [0, 1, 2] and values["beta-tcvae-dsprites"][0]["mig"] == 0.4
    text = render_seeds(values)
    assert ("| `beta-tcvae-dsprites` | 0, 1, 2 | 50.0 ± 0.0 (50.0, 50.0, 50.0) | 0.500 ± 0.100 (0.400, 0.500, "
            "0.600) |") in text
    assert ("- `beta-tcvae-dsprites`: against `vae-dsprites`: MIG above, FactorVAE score within the spread, "
            "beta-VAE score within the spread.") in text
    assert render_seeds(seed_values(rows, {})) == ""  # no other seeds run: no section


def test_the_kl_split_of_each_dsprites_card_sums_to_its_kl():
    """Chen et al.'s three terms, measured on the test images, add up to the card's closed-form KL up to the
    Monte Carlo noise of one draw per image."""
    from zoo_model_cards.families import measure_dsprites

    from zoo.data import load_dataset

    images = load_dataset("dsprites", "test").x
    for name in ("vae-dsprites", "beta-tcvae-dsprites", "factor-vae-dsprites"):
        row = measure_dsprites(name, images)
        split = row["mutual_information"] + row["total_correlation"] + row["dimension_kl"]
        assert split == pytest.approx(row["card"]["kl"], abs=0.5), name
        assert row["total_correlation"] > 0 and row["mutual_information"] > 0


# -- Hamiltonian VAE ---------------------------------------------------------------------------------------


def test_hvae_log_q_is_the_base_density_through_volume_preserving_tempered_leapfrog():
    """log q(z_K, rho_K) = log q0(z0) + log N(rho0; 0, I / beta0) - log|det J|, with the Jacobian of the whole
    dynamics from torch.autograd (leapfrog preserves volume; the tempering contributes (d / 2) log beta0)."""
    _, model = tiny("hvae", leapfrog_steps=3, step_size=0.2, beta_zero=0.4)
    x = images(1)
    posterior = model.encode(x)
    with torch.no_grad():
        z, log_q = posterior.sample_and_log_prob(generator=torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(0)
        z0 = posterior.base.sample(generator=generator)
        gamma0 = torch.randn(z0.shape, generator=generator)
    beta0 = float(posterior.betas[0].detach())
    rho0 = gamma0 / math.sqrt(beta0)

    def dynamics(state):
        zk, rho = posterior.dynamics(state[:4].unsqueeze(0), state[4:].unsqueeze(0))
        return torch.cat([zk[0], rho[0]])

    state = torch.cat([z0[0], rho0[0]])
    jac = torch.autograd.functional.jacobian(dynamics, state)
    end = dynamics(state)
    assert_close(end[:4], z[0], rtol=1e-5, atol=1e-5)
    log_det = torch.linalg.slogdet(jac).logabsdet
    assert log_det == pytest.approx(2 * math.log(beta0), abs=1e-4)  # d/2 log beta0 with d = 4
    q0 = D.Independent(D.Normal(posterior.base.mean[0], posterior.base.stddev[0]), 1).log_prob(z0[0])
    momentum = D.Independent(D.Normal(torch.zeros(4), torch.full((4,), beta0 ** -0.5)), 1).log_prob(rho0[0])
    unit = D.Independent(D.Normal(torch.zeros(4), torch.ones(4)), 1)
    assert_close(log_q[0], q0 + momentum - log_det - unit.log_prob(end[4:]), rtol=1e-4, atol=1e-4)
    assert (z - z0).abs().max() > 1e-3  # the dynamics moved the draw


def test_hvae_importance_weights_estimate_the_exact_likelihood_of_a_linear_gaussian_model():
    """A linear decoder with Gaussian noise has p(x) = N(x; b, W W^T + s^2 I): the HVAE's IS-NLL (momentum as an
    auxiliary variable) converges to it."""
    variant, model = tiny("hvae", hidden_dims=(), latent_dim=2, likelihood="gaussian", decoder_std=0.5,
                          leapfrog_steps=2, step_size=0.1)
    model.variant_name = "hvae"
    model.eval()
    linear = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1
    w, b = linear[0].weight.detach().double(), linear[0].bias.detach().double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    exact = D.MultivariateNormal(b, w @ w.T + 0.25 * torch.eye(64)).log_prob(x.flatten(1).double())
    estimate = importance_sampled_nll(model, TensorData(x), num_samples=4000, batch_size=3)
    assert estimate["nll"] == pytest.approx(float(-exact.mean()), abs=0.05)


# -- hyperspherical VAE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("m, kappa", [(3, 0.5), (5, 4.0), (16, 30.0), (16, 1.5)])
def test_vmf_density_and_kl_against_numerical_integration(m, kappa):
    """Over w = mu^T z the vMF density is C_m(k) e^{k w} (1 - w^2)^{(m-3)/2} |S^{m-2}|: it integrates to 1, and
    the KL to the uniform prior is its expectation of log q(z) + log |S^{m-1}|."""
    from zoo_plugins.svae import VonMisesFisher, log_sphere_area

    q = VonMisesFisher(F.normalize(torch.randn(1, m, dtype=torch.float64), dim=-1), torch.tensor([kappa]).double())
    w = torch.linspace(-1, 1, 400_001, dtype=torch.float64)[1:-1]
    log_c = q.log_normaliser()[0]
    density = torch.exp(log_c + kappa * w + (m - 3) / 2 * torch.log1p(-w ** 2) + log_sphere_area(m - 1))
    assert float(torch.trapezoid(density, w)) == pytest.approx(1.0, abs=1e-4)
    kl = torch.trapezoid(density * (log_c + kappa * w + log_sphere_area(m)), w)
    assert float(q.kl_to_uniform()[0]) == pytest.approx(float(kl), rel=1e-4, abs=1e-4)


def test_vmf_log_prob_matches_scipy_and_samples_have_its_mean_resultant_length():
    from scipy.stats import vonmises_fisher
    from zoo_plugins.svae import VonMisesFisher

    mu = F.normalize(torch.randn(1, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=-1)
    q = VonMisesFisher(mu, torch.tensor([10.0], dtype=torch.float64))
    z = q.sample(20_000, generator=torch.Generator().manual_seed(1))[:, 0]
    assert_close(z.norm(dim=-1), torch.ones(20_000, dtype=torch.float64))
    reference = vonmises_fisher(mu[0].numpy(), 10.0)
    assert_close(q.log_prob(z[:50, None])[:, 0], torch.from_numpy(reference.logpdf(z[:50].numpy())))
    w = z @ mu[0]
    expected = float(q.mean_resultant_length()[0])  # I_8(10) / I_7(10)
    assert float(w.mean()) == pytest.approx(expected, abs=4 * float(w.std()) / math.sqrt(len(w)))
    assert_close(z.mean(0), expected * mu[0], atol=0.02, rtol=0)


def test_scaled_bessel_gradient_is_the_derivative():
    from zoo_plugins.svae import log_bessel_iv

    kappa = torch.tensor([0.7, 3.0, 40.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: log_bessel_iv(7.0, k), (kappa,))


def test_svae_loss_kl_is_exact_and_metrics_use_the_uniform_prior():
    variant, model = tiny("svae")
    x = images()
    out = variant.loss(model, x)
    assert "kl" in out.terms and "kl_mc" not in out.terms
    posterior = model.encode(x)
    assert model.latent_kl(posterior) is None
    assert_close(out.terms["kl"], posterior.kl_to_uniform().mean())
    model.variant_name = "svae"
    z = torch.randn(7, 4)
    assert_close(model.prior_log_prob(z), torch.full((7,), -math.log(2 * math.pi ** 2)))  # |S^3| = 2 pi^2
    with torch.no_grad():
        drawn = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (5, 1, 8, 8)


def test_hvae_posterior_answers_without_autograd_and_in_inference_mode():
    """Evaluation turns autograd off and the explorer runs in inference mode; the leapfrog steps still need
    grad_z log p(x, z), and give the same codes in every mode."""
    _, model = tiny("hvae", step_size=0.3)
    model.eval()
    x = images(2)
    with torch.no_grad():
        plain = model.encode(x).mode()
        drawn = model.encode(x).sample_and_log_prob(3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        posterior = model.encode(x)
        assert_close(posterior.mode(), plain)
        again = posterior.sample_and_log_prob(3, generator=torch.Generator().manual_seed(0))
    assert_close(again[0], drawn[0])
    assert_close(again[1], drawn[1])
    assert (plain - model.encode(x).base.mean.detach()).abs().max() > 1e-4  # the dynamics moved the mean


@pytest.mark.parametrize("name", ["vamp-vae", "planar-vae", "iaf-vae", "hvae", "svae", "info-vae"])
def test_families_of_flat_latents_refuse_a_spatial_one_saying_why(name):
    with pytest.raises(ConfigError, match="flat.*: set latent_channels=0"):
        zoo.get_variant(name).make_config(architecture="conv", latent_channels=4)
    assert "flat_latent_only" not in zoo.get_variant(name).config_to_json(zoo.get_variant(name).default_config())


def test_families_page_sets_every_fitted_sampler_beside_the_own_priors():
    from zoo_model_cards.families import render_samplers, sampler_rows

    rows = sampler_rows()
    fitted = {(r["name"], r["sampler"]) for r in rows}
    assert {("ae-mnist", f"`{s}`") for s in ("gaussian", "gmm", "flow", "two-stage")} <= fitted
    assert {("rae-mnist", "`gmm`"), ("vq-vae-mnist", "`pixelcnn`"), ("vae-mnist", "its own prior")} <= fitted
    assert all(r["fcd"] is not None and r["fcd_mlp"] is not None and r["confidence"] is not None for r in rows)
    assert all(r["code_nll"] is None for r in rows if r["sampler"] in ("`two-stage`", "its own prior"))
    assert "| `vq-vae-mnist` | `pixelcnn` |" in render_samplers(rows)


def test_dsprites_seed_runs_are_merged_into_one_file_run_by_run(tmp_path, monkeypatch):
    from zoo_model_cards import dsprites_seeds

    calls = []

    def fake_run(name, seed):
        calls.append((name, seed))
        return {"mig": seed / 10}

    monkeypatch.setattr(dsprites_seeds, "run", fake_run)
    out = tmp_path / "seeds.json"
    dsprites_seeds.main(["--seeds", "1", "2", "--only", "vae-dsprites", "--out", str(out)])
    dsprites_seeds.main(["--seeds", "3", "--only", "beta-vae-dsprites", "--out", str(out)])
    assert calls == [("vae-dsprites", 1), ("vae-dsprites", 2), ("beta-vae-dsprites", 3)]
    assert dsprites_seeds.load_results(out) == {"vae-dsprites": {"1": {"mig": 0.1}, "2": {"mig": 0.2}},
                                                "beta-vae-dsprites": {"3": {"mig": 0.3}}}
    for argv in (["--seeds", "0"], ["--only", "vae-mnist"]):
        with pytest.raises(SystemExit):
            dsprites_seeds.main([*argv, "--out", str(out)])
