"""The ladder VAE against independent computations (torch.distributions in the model's own layers z1, z2), and the
latent groups of the contract: per-group KL, per-group active units, traversals per group."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D
from torch import nn
from torch.testing import assert_close

import zoo
from zoo.cards import metric_names
from zoo.contract import LatentGroup, group_kl, latent_groups
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.metrics import active_units, elbo_terms, log_importance_weights
from zoo.pictures import traversals


def tiny_ladder(**overrides):
    variant = zoo.get_variant("ladder-vae")
    torch.manual_seed(0)
    model = zoo.create("ladder-vae", **{**vars(variant.tiny_config()), **overrides})
    return variant, model.double()


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.5).double()


def layer_distributions(model, x, z2):
    """q(z2|x), the bottom-up estimate N(mu_hat1, .), p(z1|z2) and q(z1|x, z2) as torch.distributions, the last
    from the normalised product of the estimate's and the prior's densities (Sonderby et al.'s precision weighting
    written out independently)."""
    d1 = model.encoder.trunk(x)
    mu_hat1, logvar_hat1 = model.encoder.head(d1).chunk(2, dim=1)
    mu_hat2, logvar_hat2 = model.top_encoder(d1).chunk(2, dim=1)
    mu_p, logvar_p = model.top_down(z2).chunk(2, dim=-1)
    precision = 1 / logvar_hat1.exp() + 1 / logvar_p.exp()
    mu_q = (mu_hat1 / logvar_hat1.exp() + mu_p / logvar_p.exp()) / precision
    return (D.Normal(mu_hat2, (0.5 * logvar_hat2).exp()), D.Normal(mu_hat1, (0.5 * logvar_hat1).exp()),
            D.Normal(mu_p, (0.5 * logvar_p).exp()), D.Normal(mu_q, precision.rsqrt()))


def test_bottom_posterior_is_the_normalised_product_of_estimate_and_top_down_prior():
    _, model = tiny_ladder()
    x = images()
    posterior = model.encode(x)
    z2 = posterior.top.sample(generator=torch.Generator().manual_seed(0))
    _, estimate, prior, q1 = layer_distributions(model, x, z2)
    # The product of two Gaussian densities is the combined Gaussian times a constant in z1: test at several z1.
    log_ratio = torch.stack([(estimate.log_prob(z1) + prior.log_prob(z1) - q1.log_prob(z1)).sum(-1)
                             for z1 in torch.randn(5, *z2.shape[:-1], 4, dtype=torch.float64)])
    assert_close(log_ratio, log_ratio[:1].expand_as(log_ratio))
    # The model's q(u1|x, z2) is q(z1|x, z2) in the standardised coordinates u1 = (z1 - mu_p) / sigma_p.
    bottom = posterior.bottom(z2)
    assert_close(bottom.mean, (q1.mean - prior.mean) / prior.stddev)
    assert_close(bottom.stddev, q1.stddev / prior.stddev)


def test_layer_kls_are_torch_distributions_kls_at_the_same_draw():
    variant, model = tiny_ladder()
    x = images()
    posterior = model.encode(x)
    code = posterior.sample(3, generator=torch.Generator().manual_seed(4))  # (K, B, D1 + D2)
    q2, _, prior, q1 = layer_distributions(model, x, code[..., 4:])
    kl = group_kl(model, posterior, code)
    assert_close(kl["z1"], D.kl_divergence(q1, prior).sum(-1).mean(0))
    assert_close(kl["z2"], D.kl_divergence(q2, D.Normal(0.0, 1.0)).sum(-1))
    # The loss is the negative ELBO with these terms at its own draw.
    torch.manual_seed(7)
    out = variant.loss(model, x)
    torch.manual_seed(7)
    drawn = model.encode(x).sample()
    q2, _, prior, q1 = layer_distributions(model, x, drawn[..., 4:])
    expected_kl1 = D.kl_divergence(q1, prior).sum(-1).mean()
    assert_close(out.terms["kl_z1"], expected_kl1)
    assert_close(out.terms["kl"], expected_kl1 + D.kl_divergence(q2, D.Normal(0.0, 1.0)).sum(-1).mean())
    assert_close(out.total, out.terms["reconstruction"] + out.terms["kl"])


def test_importance_weights_are_the_models_own_in_its_layers():
    """log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x, z2) - log q(z2|x), written in z1 with
    torch.distributions, equals the zoo's weight in the standardised code (the Jacobians cancel)."""
    _, model = tiny_ladder()
    x = images()
    with torch.no_grad():
        zoo_log_w = log_importance_weights(model, x, None, 4, generator=torch.Generator().manual_seed(3))
        code = model.encode(x).sample(4, generator=torch.Generator().manual_seed(3))
        z1, z2 = model.layers(code)
        q2, _, prior, q1 = layer_distributions(model, x, z2)
        logits = model.decoder(z1.reshape(-1, 4)).reshape(*z1.shape[:-1], 1, 8, 8)
        log_px = D.Independent(D.Bernoulli(logits=logits), 3).log_prob(x.expand_as(logits))
        log_w = (log_px + prior.log_prob(z1).sum(-1) + D.Normal(0.0, 1.0).log_prob(z2).sum(-1)
                 - q1.log_prob(z1).sum(-1) - q2.log_prob(z2).sum(-1))
    assert_close(zoo_log_w, log_w, rtol=1e-6, atol=1e-5)


def test_the_kl_per_layer_estimates_the_monte_carlo_kl():
    """E_z2[KL of layer 1 given z2] + KL of layer 2 = E_q[log q(u1, z2|x) - log N(u1, z2; 0, I)]: the same KL by two
    estimators, within four standard errors over 20,000 draws."""
    _, model = tiny_ladder()
    x = images(2)
    with torch.no_grad():
        posterior = model.encode(x)
        code, log_q = posterior.sample_and_log_prob(20_000, generator=torch.Generator().manual_seed(5))
        monte_carlo = log_q - model.prior_log_prob(code)  # (K, B)
        layer = model.group_kl(posterior, code)
    mean, stderr = monte_carlo.mean(0), monte_carlo.std(0) / math.sqrt(len(monte_carlo))
    assert ((layer["z1"] + layer["z2"] - mean).abs() < 4 * stderr).all()


def test_samples_decode_the_top_down_prior():
    _, model = tiny_ladder()
    with torch.no_grad():
        images_ = model.sample(5, generator=torch.Generator().manual_seed(2))
        draw = torch.randn(5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        mu_p, logvar_p = model.top_down(draw[:, 4:]).chunk(2, dim=-1)
        z1 = mu_p + (0.5 * logvar_p).exp() * draw[:, :4]
        assert_close(images_, torch.sigmoid(model.decoder(z1)))


def test_groups_partition_the_code_and_metrics_report_them():
    _, model = tiny_ladder()
    model.variant_name = "ladder-vae"
    groups = latent_groups(model)
    assert [(g.name, g.units) for g in groups] == [("z1", range(4)), ("z2", range(4, 6))]
    data = TensorData(images(12), None)
    terms = elbo_terms(model, data, num_samples=3)
    assert terms["kl"] == pytest.approx(terms["kl_z1"] + terms["kl_z2"])
    activity = active_units(model, data, threshold=0.0)
    assert activity["groups"] == {"z1": {"active_units": 4, "units": 4}, "z2": {"active_units": 2, "units": 2}}
    metrics = zoo.evaluate(model, data, nll_samples=5)
    assert metrics["active_units_z1"] + metrics["active_units_z2"] == metrics["active_units"]
    assert set(metrics) <= set(metric_names(model))
    assert "latent group z2" in metric_names(model)["active_units_z2"]


def test_a_model_of_one_group_is_group_z_with_its_whole_kl():
    variant = zoo.get_variant("vae")
    model = zoo.create("vae", **vars(variant.tiny_config()))
    posterior = model.encode(images().float())
    assert [(g.name, g.units) for g in latent_groups(model)] == [("z", range(4))]
    assert_close(group_kl(model, posterior)["z"], model.example_kl(posterior))
    assert "active_units_z" not in zoo.evaluate(model, TensorData(images().float(), None), nll_samples=2)


class Declares(nn.Module):
    """A model that only declares a latent and its groups."""

    def __init__(self, groups, units: int = 5) -> None:
        super().__init__()
        self.latent_shape = (units,)
        self.latent_groups = groups


def test_group_declarations_are_checked():
    with pytest.raises(ConfigError, match=r"cover the 5 latent units once, in order \(0..4\); got a: 0..2, b: 2..4"):
        latent_groups(Declares([LatentGroup("a", range(3)), LatentGroup("b", range(2, 5))]))
    with pytest.raises(ConfigError, match="distinct lower-case words"):
        latent_groups(Declares([LatentGroup("a", range(2)), LatentGroup("a", range(2, 5))]))
    with pytest.raises(ConfigError, match="distinct lower-case words"):
        latent_groups(Declares([LatentGroup("Top layer", range(5))]))


def test_closed_form_unit_kls_are_summed_within_declared_groups():
    variant = zoo.get_variant("vae")
    model = zoo.create("vae", **vars(variant.tiny_config()))
    model.latent_groups = (LatentGroup("low", range(3)), LatentGroup("high", range(3, 4)))
    posterior = model.encode(images().float())
    kl = group_kl(model, posterior)
    per_unit = model.latent_kl(posterior)
    assert_close(kl["low"], per_unit[:, :3].sum(-1))
    assert_close(kl["high"], per_unit[:, 3])


def test_traversals_keep_to_a_group_and_a_top_unit_moves_the_bottom_layer():
    _, model = tiny_ladder()
    model.variant_name = "ladder-vae"
    data = TensorData(images(20).float(), None)
    model = model.float()
    pictures, order = traversals(model, data.x[:1], steps=3, data=data, group="z2")
    assert sorted(order) == [4, 5] and pictures.shape == (6, 1, 8, 8)
    # A row of the top layer changes the image: the decoder sees z2 only through z1 = mu_p(z2) + sigma_p(z2) u1.
    assert (pictures[0] - pictures[2]).abs().max() > 1e-4
    _, bottom = traversals(model, data.x[:1], steps=3, data=data, group="z1", dims=2)
    assert len(bottom) == 2 and set(bottom) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="no latent group 'z3': this model's groups are z1, z2"):
        traversals(model, data.x[:1], data=data, group="z3")
    with pytest.raises(ValueError, match=r"latent unit indices of group z2 \(4..5\), got \[1\]"):
        traversals(model, data.x[:1], data=data, group="z2", dims=[1])


def test_warm_up_weighs_the_kl_in_training_only():
    variant, model = tiny_ladder(warmup_steps=100)
    x = images()
    model.train()
    torch.manual_seed(3)
    early = variant.loss(model, x, step=25)
    assert_close(early.total, early.terms["reconstruction"] + 0.25 * early.terms["kl"])
    torch.manual_seed(3)
    late = variant.loss(model, x, step=100)
    assert_close(late.total, late.terms["neg_elbo"])
    model.eval()  # validation and zoo eval: the negative ELBO at any step
    evaluated = variant.loss(model, x, step=25)
    assert_close(evaluated.total, evaluated.terms["neg_elbo"])
