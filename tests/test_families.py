"""The bound, prior and posterior families (IWAE and relatives, VampPrior, flow posteriors) against
independent computations: torch.distributions densities, autograd Jacobians, hand-written bounds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch.testing import assert_close

import zoo
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
    out = tmp_path / "families.md"
    out.write_text("old\n<!-- discussion -->\n## Why\n\nkept by hand\n<!-- /discussion -->\n")
    main(["--out", str(out), "--only", "vae-mnist", "iwae-mnist", "cvae-mnist", "--nll-samples", "20",
          "--examples", "40"])
    text = out.read_text()
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert {"vae-mnist", "iwae-mnist", "cvae-mnist"} <= set(rows)
    assert "(-log p(x\\|y))" in rows["cvae-mnist"] and "(-log p(x\\|y))" not in rows["vae-mnist"]
    comparison = [line for line in text.splitlines() if line.startswith("| `iwae-mnist` | Burda")]
    assert len(comparison) == 1 and any(f"**{v}**" in comparison[0] for v in ("agrees", "disagrees", "undecided"))
    assert "kept by hand" in text and "40 test digits" in text and text.count("<!-- discussion -->") == 1
