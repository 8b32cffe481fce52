"""beta-TCVAE's KL decomposition against sums written out with torch.distributions, and FactorVAE's
discriminator, objectives and gradient routing."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal
from torch.testing import assert_close

import zoo
from zoo.distributions import DiagonalGaussian
from zoo.errors import ConfigError
from zoo.total_correlation import kl_decomposition, stratified_log_weights


def posterior_and_draws(batch: int = 6, dim: int = 3, seed: int = 0) -> tuple[DiagonalGaussian, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    posterior = DiagonalGaussian(torch.randn(batch, dim, generator=gen, dtype=torch.float64),
                                 torch.randn(batch, dim, generator=gen, dtype=torch.float64) * 0.5)
    return posterior, posterior.sample(generator=gen)


def paper_weight(i: int, m: int, batch: int, n: int) -> float:
    """Chen et al.'s stratified weight of example m for the draw of example i: 1/N for itself, (N - M + 1) /
    (N (M - 1)) for the next one, 1 / (M - 1) for the others."""
    if m == i:
        return 1 / n
    if m == (i + 1) % batch:
        return (n - batch + 1) / (n * (batch - 1))
    return 1 / (batch - 1)


@pytest.mark.parametrize("estimator", ["mws", "mss", "full"])
def test_decomposition_matches_the_sums_written_out(estimator):
    posterior, z = posterior_and_draws()
    batch, dim = z.shape
    n = batch if estimator == "full" else 1000
    got = kl_decomposition(z, posterior, n, estimator)
    std = posterior.stddev

    def weight(i, m):
        if estimator == "mws":
            return 1 / (batch * n)
        return 1 / batch if estimator == "full" else paper_weight(i, m, batch, n)

    for i in range(batch):
        log_q_given_x = float(Normal(posterior.mean[i], std[i]).log_prob(z[i]).sum())
        q = sum(weight(i, m) * float(Normal(posterior.mean[m], std[m]).log_prob(z[i]).sum().exp())
                for m in range(batch))
        marginals = [sum(weight(i, m) * float(Normal(posterior.mean[m, j], std[m, j]).log_prob(z[i, j]).exp())
                         for m in range(batch)) for j in range(dim)]
        log_p = float(Normal(0.0, 1.0).log_prob(z[i]).sum())
        assert float(got["mutual_information"][i]) == pytest.approx(log_q_given_x - math.log(q), rel=1e-9)
        assert float(got["total_correlation"][i]) == pytest.approx(math.log(q) - sum(map(math.log, marginals)),
                                                                   rel=1e-9, abs=1e-9)
        assert float(got["dimension_kl"][i]) == pytest.approx(sum(map(math.log, marginals)) - log_p, rel=1e-9)


def test_the_three_terms_sum_to_log_q_minus_log_p_for_every_estimator():
    posterior, z = posterior_and_draws(batch=16, dim=5, seed=3)
    exact = posterior.log_prob(z) - Normal(0.0, 1.0).log_prob(z).sum(-1)
    for estimator, n in (("mws", 500), ("mss", 500), ("full", 16)):
        assert_close(sum(kl_decomposition(z, posterior, n, estimator).values()), exact)


def test_stratified_weights_sum_to_one_and_put_1_over_n_on_the_diagonal():
    weights = stratified_log_weights(7, 100, torch.zeros(())).exp()
    assert_close(weights.sum(1), torch.ones(7))
    assert_close(weights.diagonal(), torch.full((7,), 0.01))
    assert_close(weights[6, 0], torch.tensor((100 - 7 + 1) / (100 * 6)))


def test_total_correlation_is_near_zero_for_independent_codes_and_large_for_dependent_ones():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    logvar = torch.full_like(u, math.log(0.01))
    independent = DiagonalGaussian(u, logvar)
    dependent = DiagonalGaussian(torch.stack([u[:, 0], u[:, 0]], dim=1), logvar)
    tc_independent = kl_decomposition(independent.mean, independent, 2000, "full")["total_correlation"].mean()
    tc_dependent = kl_decomposition(dependent.mean, dependent, 2000, "full")["total_correlation"].mean()
    assert abs(float(tc_independent)) < 0.15
    assert float(tc_dependent) > 1.0


def test_estimator_errors_say_what_to_set():
    posterior, z = posterior_and_draws()
    with pytest.raises(ValueError, match="dataset_size \\(3\\) must be the number of training examples"):
        kl_decomposition(z, posterior, 3)
    with pytest.raises(ValueError, match="estimator must be one of"):
        kl_decomposition(z, posterior, 100, "exact")


def test_beta_tcvae_loss_is_recon_plus_weighted_terms_and_alpha_beta_gamma_1_is_the_elbo():
    variant = zoo.get_variant("beta-tcvae")
    x = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.manual_seed(0)
    model = variant.build(variant.make_config(variant.tiny_config(), alpha=0.5, beta=6.0, gamma=2.0))
    torch.manual_seed(1)
    out = variant.loss(model, x)
    torch.manual_seed(1)
    posterior = model.encode(x)
    z = posterior.sample()
    recon = model.reconstruction_nll(x, z).mean()
    parts = kl_decomposition(z, posterior, 1000, "mss")
    assert_close(out.total, recon + 0.5 * parts["mutual_information"].mean() + 6.0 * parts["total_correlation"].mean()
                 + 2.0 * parts["dimension_kl"].mean())
    assert set(out.terms) >= {"mutual_information", "total_correlation", "dimension_kl", "kl", "neg_elbo"}

    ones = variant.build(variant.make_config(variant.tiny_config(), alpha=1.0, beta=1.0, gamma=1.0))
    torch.manual_seed(2)
    out = variant.loss(ones, x)
    torch.manual_seed(2)
    posterior = ones.encode(x)
    z = posterior.sample()
    q = torch.distributions.Normal(posterior.mean, posterior.stddev)
    mc_kl = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)
    assert_close(out.total, (ones.reconstruction_nll(x, z) + mc_kl).mean())


def test_beta_tcvae_config_errors():
    variant = zoo.get_variant("beta-tcvae")
    with pytest.raises(ConfigError, match="estimator must be 'mss' or 'mws'"):
        variant.make_config(estimator="full")
    with pytest.raises(ConfigError, match="mc_samples must be 1"):
        variant.make_config(mc_samples=4)
    model = variant.build(variant.make_config(variant.tiny_config(), dataset_size=4))
    with pytest.raises(ConfigError, match="larger than dataset_size=4"):
        variant.loss(model, torch.rand(8, 1, 8, 8))


def test_permuted_codes_keep_each_marginal_and_break_the_pairing():
    from zoo_plugins.disentangling import permute_dims

    torch.manual_seed(0)
    z = torch.arange(200.0).reshape(100, 2)
    shuffled = permute_dims(z)
    for j in range(2):
        assert torch.equal(shuffled[:, j].sort().values, z[:, j])
    assert not torch.equal(shuffled[:, 1] - shuffled[:, 0], z[:, 1] - z[:, 0])


def make_factor_vae():
    variant = zoo.get_variant("factor-vae")
    torch.manual_seed(0)
    return variant, variant.build(variant.make_config(variant.tiny_config(), tc_weight=10.0))


def test_factor_vae_terms_against_an_independent_computation():
    variant, model = make_factor_vae()
    x = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.manual_seed(5)
    terms = variant.objectives(model, x)
    torch.manual_seed(5)
    posterior = model.encode(x)
    z = posterior.sample()
    order = torch.rand(z.shape).argsort(dim=0)
    logit = model.discriminator(z)
    d_real = torch.sigmoid(logit)
    d_fake = torch.sigmoid(model.discriminator(z.gather(0, order)))
    kl = torch.distributions.kl_divergence(Normal(posterior.mean, posterior.stddev), Normal(0.0, 1.0)).sum(-1)
    neg_elbo = (model.reconstruction_nll(x, z) + kl).mean()
    assert_close(terms["total_correlation"], torch.log(d_real / (1 - d_real)).mean())
    assert_close(terms["discriminator"], -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean()))
    assert_close(terms["vae"], neg_elbo + 10.0 * terms["total_correlation"])


def test_factor_vae_routes_each_objective_to_its_own_network():
    variant, model = make_factor_vae()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=0.0))
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    torch.manual_seed(7)
    variant.train_step(model, (x,), optimizers, step=0)
    routed = {name: [p.grad.clone() for p in params] for name, params in variant.networks(model).items()}
    torch.manual_seed(7)
    terms = variant.objectives(model, x)
    for name, params in variant.networks(model).items():
        expected = torch.autograd.grad(terms[name], params, retain_graph=True)
        for got, want in zip(routed[name], expected, strict=True):
            assert_close(got, want)
    # The VAE's objective reaches the discriminator too (through gamma TC): routing is what keeps it out.
    leak = torch.autograd.grad(terms["vae"], list(model.discriminator.parameters()), retain_graph=True)
    assert any(g.abs().sum() > 0 for g in leak)


def test_factor_vae_optimisers_follow_kim_and_mnih():
    variant, model = make_factor_vae()
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=1e-3))
    assert set(optimizers) == {"vae", "discriminator"}
    (group,) = optimizers["discriminator"].param_groups
    assert (group["lr"], group["betas"]) == (1e-4, (0.5, 0.9))
    assert {id(p) for p in group["params"]} == {id(p) for p in model.discriminator.parameters()}
    assert optimizers["vae"].param_groups[0]["lr"] == 1e-3


def test_factor_vae_discriminator_learns_to_see_dependent_codes():
    """Trained on codes whose two dimensions are equal, the discriminator's TC estimate turns clearly positive."""
    from zoo_plugins.disentangling import permute_dims

    _, model = make_factor_vae()
    optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        u = torch.randn(128, 1, generator=gen)
        codes = torch.cat([u, u, torch.randn(128, 2, generator=gen)], dim=1)
        real, fake = model.tc_logits(codes), model.tc_logits(permute_dims(codes))
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + torch.nn.functional.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    u = torch.randn(1000, 1, generator=gen)
    dependent = torch.cat([u, u, torch.randn(1000, 2, generator=gen)], dim=1)
    with torch.no_grad():
        assert float(model.tc_logits(dependent).mean()) > 1.0
