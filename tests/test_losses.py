"""Losses, posteriors and per-variant objectives, each checked against an independent computation.

The reference values come from ``torch.distributions``, ``torch.autograd.functional`` or formulas
written out here with plain tensor ops, never from the zoo code path under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

import zoo
from zoo.distributions import (
    LOGVAR_MAX,
    LOGVAR_MAX_FP16,
    LOGVAR_MIN,
    DiagonalGaussian,
    standard_normal_log_prob,
)
from zoo.errors import DataError
from zoo.losses import bernoulli_nll, check_unit_range, gaussian_nll, reconstruction_nll, squared_error

TINY = {"input_shape": (1, 6, 5), "latent_dim": 3, "hidden_dims": (16,)}
DIMS = (-3, -2, -1)


def num(value) -> float:
    """A Python float of a (possibly grad-requiring) scalar tensor."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_data(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=gen(seed))


def make(variant: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return zoo.create(variant, **{**TINY, **overrides})


def bernoulli_ref(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x; sigmoid(logits)) summed per example, with torch.distributions."""
    return -Bernoulli(logits=logits.double(), validate_args=False).log_prob(x.double()).sum(DIMS)


def gaussian_ref(mean: torch.Tensor, x: torch.Tensor, std: float) -> torch.Tensor:
    return -Normal(mean.double(), std).log_prob(x.double()).sum(DIMS)


def kl_ref(posterior_mean: torch.Tensor, posterior_logvar: torch.Tensor) -> torch.Tensor:
    q = Normal(posterior_mean.double(), (0.5 * posterior_logvar.double()).exp())
    return kl_divergence(q, Normal(0.0, 1.0)).sum(-1)


# -- DiagonalGaussian ------------------------------------------------------------------------------


def test_gaussian_kl_matches_torch_distributions():
    g = gen(1)
    mean = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3
    q = DiagonalGaussian(mean, logvar)
    kl = q.kl()
    assert kl.shape == (7, 5)
    assert kl.dtype == torch.float64
    expected = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(torch.zeros(()), torch.ones(())))
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl.sum(-1), kl_ref(mean, logvar), rtol=1e-12, atol=1e-12)
    assert (kl >= 0).all()


def test_kl_is_zero_for_the_prior_itself():
    q = DiagonalGaussian(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))
    assert torch.equal(q.kl(), torch.zeros(2, 4, dtype=torch.float64))


def test_stddev_and_variance_follow_logvar():
    logvar = torch.tensor([[-4.0, -1.0, 0.0, 0.5, 3.0]], dtype=torch.float64)
    q = DiagonalGaussian(torch.zeros_like(logvar), logvar)
    expected_std = torch.tensor([[math.exp(-2.0), math.exp(-0.5), 1.0, math.exp(0.25), math.exp(1.5)]],
                                dtype=torch.float64)
    torch.testing.assert_close(q.stddev, expected_std)
    torch.testing.assert_close(q.variance, expected_std**2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_extreme_logvar_is_clamped_to_finite_values(dtype):
    mean = torch.zeros(2, 3, dtype=dtype)
    logvar = torch.tensor([[1e4, -1e4, 0.0], [float("inf"), -float("inf"), 1e30]]).to(dtype)
    q = DiagonalGaussian(mean, logvar)
    top = LOGVAR_MAX_FP16 if dtype == torch.float16 else LOGVAR_MAX
    assert num(q.logvar.max()) == top and num(q.logvar.min()) == LOGVAR_MIN
    for value in (q.stddev, q.variance, q.kl(), q.sample(1000, generator=gen(0)),
                  q.log_prob(torch.zeros(2, 3, dtype=dtype))):
        assert torch.isfinite(value).all()
    if dtype != torch.float16:  # exp(-20) is below float16's smallest subnormal
        assert (q.stddev > 0).all()
    # the clamped posterior is exactly the Gaussian with logvar at the clamp bounds
    clamped = torch.tensor([[top, LOGVAR_MIN, 0.0], [top, LOGVAR_MIN, top]])
    torch.testing.assert_close(q.kl().double(), kl_divergence(
        Normal(torch.zeros(2, 3, dtype=torch.float64), (0.5 * clamped.double()).exp()), Normal(0.0, 1.0)),
        rtol=1e-5, atol=1e-5)


def test_half_precision_kl_and_log_prob_are_computed_in_float32():
    mean = torch.randn(4, 3, generator=gen(2)).half()
    logvar = torch.full((4, 3), 15.0).half()  # exp(15) overflows float16: clamped to LOGVAR_MAX_FP16
    q = DiagonalGaussian(mean, logvar)
    kl = q.kl()
    assert kl.dtype == torch.float32 and torch.isfinite(kl).all()
    std = math.exp(LOGVAR_MAX_FP16 / 2)
    expected = kl_divergence(Normal(mean.float(), std), Normal(0.0, 1.0))
    torch.testing.assert_close(kl, expected, rtol=1e-4, atol=1e-3)
    assert torch.isfinite(q.variance).all() and torch.isfinite(q.sample(1000, generator=gen(1))).all()
    lp = q.log_prob(torch.zeros(4, 3).half())
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()


def test_log_prob_matches_independent_normal():
    g = gen(3)
    mean = torch.randn(6, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(6, 4, generator=g, dtype=torch.float64)
    q = DiagonalGaussian(mean, logvar)
    ref = Independent(Normal(mean, (0.5 * logvar).exp()), 1)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z), rtol=1e-12, atol=1e-12)
    # leading Monte-Carlo sample dims broadcast against the batch
    zk = torch.randn(5, 6, 4, generator=g, dtype=torch.float64)
    assert q.log_prob(zk).shape == (5, 6)
    torch.testing.assert_close(q.log_prob(zk), ref.log_prob(zk), rtol=1e-12, atol=1e-12)


def test_standard_normal_log_prob_matches_torch():
    z = torch.randn(3, 5, 2, generator=gen(4), dtype=torch.float64)
    expected = Independent(Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)),
                           1).log_prob(z)
    torch.testing.assert_close(standard_normal_log_prob(z), expected, rtol=1e-12, atol=1e-12)


def test_gaussian_sample_is_reparameterised_with_the_right_moments():
    mean = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([[0.0, 2.0, -3.0]], dtype=torch.float64, requires_grad=True)
    q = DiagonalGaussian(mean, logvar)
    z = q.sample(40_000, generator=gen(5))
    assert z.shape == (40_000, 1, 3)
    sd = (0.5 * logvar.detach()).exp()
    stderr = sd / math.sqrt(40_000)
    assert ((z.mean(0) - mean).abs() < 5 * stderr).all()
    torch.testing.assert_close(z.std(0), sd, rtol=0.03, atol=0.0)
    z.sum().backward()  # gradients flow to both parameters (reparameterisation)
    torch.testing.assert_close(mean.grad, torch.full_like(mean, 40_000.0))
    assert logvar.grad.abs().min() > 0
    # the same generator seed gives the same draw
    assert torch.equal(q.sample(3, generator=gen(9)), q.sample(3, generator=gen(9)))


def test_monte_carlo_kl_agrees_with_analytic_kl():
    """mean over samples of log q(z|x) - log p(z) estimates KL(q || p) without bias."""
    g = gen(6)
    mean = torch.randn(3, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.7
    q = DiagonalGaussian(mean, logvar)
    k = 100_000
    z = q.sample(k, generator=g)
    log_ratio = q.log_prob(z) - standard_normal_log_prob(z)  # (K, B)
    estimate = log_ratio.mean(0)
    stderr = log_ratio.std(0) / math.sqrt(k)
    analytic = kl_ref(mean, logvar)
    assert ((estimate - analytic).abs() < 5 * stderr).all(), (estimate, analytic, stderr)
    torch.testing.assert_close(q.kl().sum(-1), analytic)


# -- reconstruction likelihoods -------------------------------------------------------------------


def test_gaussian_nll_with_monte_carlo_dims_matches_normal_log_prob():
    g = gen(7)
    x = torch.randn(3, 2, 4, 5, generator=g)
    mean = torch.randn(6, 3, 2, 4, 5, generator=g)
    for std in (0.1, 1.0, 2.5):
        nll = gaussian_nll(mean, x, std)
        assert nll.shape == (6, 3)
        torch.testing.assert_close(nll.double(), gaussian_ref(mean, x, std), rtol=1e-5, atol=1e-4)
    # with the constant: a perfect reconstruction still costs D * (log std + 0.5 log 2 pi)
    d = 2 * 4 * 5
    torch.testing.assert_close(gaussian_nll(x, x, 0.5).double(),
                               torch.full((3,), d * (math.log(0.5) + 0.5 * math.log(2 * math.pi)),
                                          dtype=torch.float64))


def test_bernoulli_nll_with_monte_carlo_dims_matches_bernoulli_log_prob():
    g = gen(8)
    x = (torch.rand(3, 2, 4, 5, generator=g) > 0.5).float()
    logits = torch.randn(6, 3, 2, 4, 5, generator=g) * 4
    nll = bernoulli_nll(logits, x)
    assert nll.shape == (6, 3)
    # binary targets: torch.distributions validates the support
    expected = -Bernoulli(logits=logits.double()).log_prob(x.double().expand(6, -1, -1, -1, -1)).sum(DIMS)
    torch.testing.assert_close(nll.double(), expected, rtol=1e-5, atol=1e-4)
    # soft targets in [0, 1]: cross-entropy written out with log-sigmoids
    xs = torch.rand(3, 2, 4, 5, generator=g)
    written_out = -(xs * nn.functional.logsigmoid(logits.double())
                    + (1 - xs) * nn.functional.logsigmoid(-logits.double())).sum(DIMS)
    torch.testing.assert_close(bernoulli_nll(logits, xs).double(), written_out, rtol=1e-5, atol=1e-4)
    # no sample dim: one value per example
    assert bernoulli_nll(logits[0], x).shape == (3,)


def test_squared_error_and_dispatch():
    g = gen(9)
    x = torch.rand(4, 1, 3, 3, generator=g)
    out = torch.randn(2, 4, 1, 3, 3, generator=g)
    expected = ((out.double() - x.double()) ** 2).flatten(2).sum(-1)
    torch.testing.assert_close(squared_error(out, x).double(), expected)
    torch.testing.assert_close(reconstruction_nll(out, x, "mse").double(), expected)
    torch.testing.assert_close(reconstruction_nll(out, x, "gaussian", 0.3).double(),
                               gaussian_ref(out, x, 0.3), rtol=1e-5, atol=1e-4)
    with pytest.raises(zoo.errors.ConfigError, match="bernoulli"):
        reconstruction_nll(out, x, "poisson")
    with pytest.raises(zoo.errors.ConfigError, match="positive"):
        gaussian_nll(out, x, 0.0)


@pytest.mark.parametrize("bad", [255.0, -0.5, 1.0001])
def test_check_unit_range_rejects_data_outside_unit_interval(bad):
    x = torch.rand(2, 1, 4, 4, generator=gen(10))
    x[1, 0, 2, 3] = bad
    with pytest.raises(DataError) as info:
        check_unit_range(x)
    message = str(info.value)
    assert "[0, 1]" in message
    assert "255" in message and ("gaussian" in message or "mse" in message)  # says how to fix it
    with pytest.raises(DataError):
        bernoulli_nll(torch.zeros(2, 1, 4, 4), x)
    check_unit_range(x.clamp(0, 1))  # in range: no error
    check_unit_range(torch.tensor([0.0, 1.0]))


def test_vae_loss_rejects_pixels_in_0_255():
    model = make("vae")
    x = unit_data(4, *TINY["input_shape"]) * 255
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        zoo.get_variant("vae").loss(model, x)
    # the Gaussian decoder takes unbounded data
    gaussian = make("vae", likelihood="gaussian")
    assert torch.isfinite(zoo.get_variant("vae").loss(gaussian, x).total)


# -- VAE and beta-VAE ------------------------------------------------------------------------------


def vae_reference(model, x, seed: int, k: int, y=None):
    """Independent negative ELBO terms: posterior from encode, z drawn from the global RNG after
    ``torch.manual_seed(seed)``, likelihoods and KL from torch.distributions."""
    cfg = model.config
    torch.manual_seed(seed)
    with torch.no_grad():
        q = model.encode(x, y)
        eps = torch.randn(k, *q.mean.shape)
        std = (0.5 * q.logvar).exp()
        per_sample = []
        for i in range(k):  # one decoder call per sample: no reliance on the batched (K, B, D) path
            out = model.decode_logits(q.mean + std * eps[i], y)
            if cfg.likelihood == "bernoulli":
                per_sample.append(bernoulli_ref(out, x))
            else:
                per_sample.append(gaussian_ref(out, x, cfg.decoder_std))
        recon = torch.stack(per_sample).mean(0).mean()
        kl = kl_ref(q.mean, q.logvar).mean()
    return recon, kl


@pytest.mark.parametrize(("likelihood", "k"), [("bernoulli", 1), ("bernoulli", 5), ("gaussian", 3)])
def test_vae_loss_matches_independent_elbo(likelihood, k):
    model = make("vae", likelihood=likelihood, mc_samples=k, decoder_std=0.4)
    x = unit_data(6, *TINY["input_shape"], seed=11)
    if likelihood == "bernoulli":
        x = (x > 0.5).float()
    torch.manual_seed(123)
    out = zoo.get_variant("vae").loss(model, x)
    recon, kl = vae_reference(model, x, seed=123, k=k)
    terms = {k_: num(v) for k_, v in out.detached().items()}
    assert terms["reconstruction"] == pytest.approx(num(recon), rel=1e-5, abs=1e-5)
    assert terms["kl"] == pytest.approx(num(kl), rel=1e-5, abs=1e-6)
    assert terms["neg_elbo"] == pytest.approx(num(recon + kl), rel=1e-5, abs=1e-5)
    assert num(out.total) == pytest.approx(num(recon + kl), rel=1e-5, abs=1e-5)


def test_vae_loss_accepts_x_y_batches_and_backpropagates():
    model = make("vae")
    x = unit_data(5, *TINY["input_shape"])
    torch.manual_seed(0)
    out = zoo.get_variant("vae").loss(model, (x, torch.zeros(5, dtype=torch.long)))
    out.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_reconstruction_variance_shrinks_with_mc_samples():
    x = unit_data(4, *TINY["input_shape"], seed=12)
    variant = zoo.get_variant("vae")
    model = make("vae", seed=3)
    spreads = {}
    for k in (1, 64):
        model.config.mc_samples = k
        values = []
        for seed in range(24):
            torch.manual_seed(seed)
            with torch.no_grad():
                values.append(num(variant.loss(model, x).terms["reconstruction"]))
        spreads[k] = torch.tensor(values, dtype=torch.float64).var()
    # the variance of a K-sample mean is var/K; allow generous slack for 24 seeds
    assert spreads[64] < spreads[1] / 12, spreads
    assert spreads[1] > 0


def test_mc_reconstruction_converges_for_a_linear_gaussian_decoder():
    """Decoder f(z) = W z + b (one Linear layer), Gaussian likelihood with fixed sigma:
    E_q[-log N(x; Wz + b, s^2 I)] = -log N(x; W mu + b, s^2 I) + tr(W diag(var) W^T) / (2 s^2)."""
    model = make("vae", seed=4, likelihood="gaussian", decoder_std=0.5, hidden_dims=(16,))
    linear = nn.Linear(TINY["latent_dim"], 30)
    with torch.no_grad():
        linear.weight.normal_(0, 0.4, generator=gen(13))
        linear.bias.uniform_(-0.2, 0.2, generator=gen(14))
    model.decoder.net = nn.Sequential(linear, nn.Unflatten(1, TINY["input_shape"]))
    x = unit_data(3, *TINY["input_shape"], seed=15)
    model.config.mc_samples = 20_000
    torch.manual_seed(0)
    with torch.no_grad():
        estimate = num(zoo.get_variant("vae").loss(model, x).terms["reconstruction"])
        q = model.encode(x)
    w, b, s = linear.weight.double(), linear.bias.double(), 0.5
    mu, var = q.mean.double(), q.logvar.double().exp()
    at_mean = gaussian_ref((mu @ w.T + b).reshape(3, *TINY["input_shape"]), x, s)
    trace = (var[:, None, :] * w[None] ** 2).sum((1, 2))
    closed_form = num((at_mean + trace / (2 * s * s)).mean())
    assert estimate == pytest.approx(closed_form, rel=5e-3)


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    dst.load_state_dict(src.state_dict(), strict=True)


def test_beta_vae_with_beta_one_is_exactly_the_vae():
    vae = make("vae", seed=5, mc_samples=2)
    beta_vae = make("beta-vae", seed=99, mc_samples=2, beta=1.0)
    copy_weights(vae, beta_vae)
    x = unit_data(5, *TINY["input_shape"], seed=16)
    torch.manual_seed(7)
    a = zoo.get_variant("vae").loss(vae, x, step=10)
    torch.manual_seed(7)
    b = zoo.get_variant("beta-vae").loss(beta_vae, x, step=10)
    assert torch.equal(a.total, b.total)
    for name in ("reconstruction", "kl", "neg_elbo"):
        assert torch.equal(a.terms[name], b.terms[name])


def vae_terms(x, seed, step=0):
    """reconstruction and KL of the plain VAE with the weights of the shared seed."""
    vae = make("vae", seed=6)
    torch.manual_seed(seed)
    out = zoo.get_variant("vae").loss(vae, x, step=step)
    return vae, num(out.terms["reconstruction"]), num(out.terms["kl"])


def beta_total(vae, x, seed, step, **cfg):
    model = make("beta-vae", seed=1, **cfg)
    copy_weights(vae, model)
    torch.manual_seed(seed)
    return num(zoo.get_variant("beta-vae").loss(model, x, step=step).total)


def test_beta_weighs_the_kl():
    x = unit_data(5, *TINY["input_shape"], seed=17)
    vae, recon, kl = vae_terms(x, seed=8)
    assert kl > 0
    assert beta_total(vae, x, 8, step=0, beta=4.0) == pytest.approx(recon + 4 * kl, rel=1e-6)
    assert beta_total(vae, x, 8, step=123, beta=0.25) == pytest.approx(recon + 0.25 * kl, rel=1e-6)


def test_capacity_schedule():
    x = unit_data(5, *TINY["input_shape"], seed=18)
    vae, recon, kl = vae_terms(x, seed=9)
    cap, steps, beta = 2 * kl + 6.0, 1000, 3.0
    cfg = {"beta": beta, "capacity_max": cap, "capacity_steps": steps}
    # halfway: C = cap / 2 > kl, so the penalty is beta * (C/2 - kl)
    assert beta_total(vae, x, 9, step=steps // 2, **cfg) == pytest.approx(recon + beta * abs(kl - cap / 2),
                                                                          rel=1e-6)
    assert beta_total(vae, x, 9, step=0, **cfg) == pytest.approx(recon + beta * kl, rel=1e-6)
    # after the schedule the capacity stays at its maximum
    for step in (steps, 5 * steps):
        total = beta_total(vae, x, 9, step=step, **cfg)
        assert total == pytest.approx(recon + beta * abs(kl - cap), rel=1e-6)
    # a capacity below the KL: beta * (kl - C)
    small = {"beta": beta, "capacity_max": kl / 2, "capacity_steps": steps}
    assert beta_total(vae, x, 9, step=steps, **small) == pytest.approx(recon + beta * kl / 2, rel=1e-6)


def test_kl_warm_up():
    x = unit_data(5, *TINY["input_shape"], seed=19)
    vae, recon, kl = vae_terms(x, seed=10)
    cfg = {"beta": 4.0, "warmup_steps": 200}
    assert beta_total(vae, x, 10, step=0, **cfg) == pytest.approx(recon, rel=1e-6)
    assert beta_total(vae, x, 10, step=100, **cfg) == pytest.approx(recon + 2.0 * kl, rel=1e-6)
    assert beta_total(vae, x, 10, step=50, **cfg) == pytest.approx(recon + 1.0 * kl, rel=1e-6)
    assert beta_total(vae, x, 10, step=200, **cfg) == pytest.approx(recon + 4.0 * kl, rel=1e-6)
    assert beta_total(vae, x, 10, step=10_000, **cfg) == pytest.approx(recon + 4.0 * kl, rel=1e-6)


def test_evaluation_sees_the_loss_after_the_schedules_whatever_the_step():
    """Validation calls the loss at step 0: in eval mode a warm-up's weight is beta and the capacity its
    maximum, so early stopping compares epochs on the objective the schedules end at, not on recon alone."""
    x = unit_data(5, *TINY["input_shape"], seed=20)
    vae = make("vae", seed=6).eval()
    torch.manual_seed(11)
    terms = zoo.get_variant("vae").loss(vae, x).terms
    recon_eval, kl_eval = num(terms["reconstruction"]), num(terms["kl"])
    for cfg, expected in (({"beta": 4.0, "warmup_steps": 200}, recon_eval + 4.0 * kl_eval),
                          ({"beta": 3.0, "capacity_max": kl_eval / 2, "capacity_steps": 1000},
                           recon_eval + 3.0 * kl_eval / 2)):
        model = make("beta-vae", seed=1, **cfg)
        copy_weights(vae, model)
        model.eval()
        torch.manual_seed(11)
        assert num(zoo.get_variant("beta-vae").loss(model, x, step=0).total) == pytest.approx(expected, rel=1e-6)
        model.train()
        torch.manual_seed(11)
        assert num(zoo.get_variant("beta-vae").loss(model, x, step=0).total) != pytest.approx(expected, rel=1e-3)


# -- contractive autoencoder -----------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_contractive_penalty_matches_autograd_jacobian(architecture):
    hidden = (8, 6) if architecture == "conv" else (16,)
    model = make("cae", seed=7, architecture=architecture, hidden_dims=hidden)
    variant = zoo.get_variant("cae")
    x = unit_data(4, *TINY["input_shape"], seed=20)
    code, frob = variant.jacobian_penalty(model, x)
    assert frob.shape == (4,)
    torch.testing.assert_close(code, model.encode(x).mode())
    expected = []
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda xi: model.code(xi[None])[0], x[i])
        assert jac.shape == (TINY["latent_dim"], *TINY["input_shape"])
        expected.append(jac.pow(2).sum())
    torch.testing.assert_close(frob, torch.stack(expected), rtol=1e-5, atol=1e-7)
    # the loss weighs the batch mean of the penalty
    out = variant.loss(model, x)
    recon = num(bernoulli_ref(model.decode_logits(model.code(x)), x).mean())
    assert num(out.terms["jacobian_frobenius2"]) == pytest.approx(num(torch.stack(expected).mean()), rel=1e-5)
    assert num(out.total) == pytest.approx(recon + model.config.contractive_weight * num(frob.mean()),
                                             rel=1e-5)


def test_contractive_penalty_is_differentiable():
    model = make("cae", seed=8).double()
    x = unit_data(3, *TINY["input_shape"], seed=21).double()
    _, frob = zoo.get_variant("cae").jacobian_penalty(model, x)
    frob.sum().backward()
    # every encoder parameter shapes the Jacobian except the output bias (a constant shift of the code)
    grads = {name: p.grad for name, p in model.encoder.named_parameters() if name != "head.bias"}
    assert grads and all(g is not None and num(g.abs().sum()) > 0 for g in grads.values()), grads.keys()
    # and the gradient is right: finite differences on one weight
    weight = model.encoder.trunk.layers[1].weight
    analytic = num(weight.grad[0, 0])
    h = 1e-5
    with torch.no_grad():
        weight[0, 0] += h
        up = num(zoo.get_variant("cae").jacobian_penalty(model, x)[1].sum())
        weight[0, 0] -= 2 * h
        down = num(zoo.get_variant("cae").jacobian_penalty(model, x)[1].sum())
        weight[0, 0] += h
    assert analytic == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-8)


def test_contractive_loss_trains_without_touching_input_grads():
    model = make("cae", seed=9)
    x = unit_data(3, *TINY["input_shape"], seed=22)
    out = zoo.get_variant("cae").loss(model, x)
    out.total.backward()
    assert x.grad is None
    assert all(p.grad is not None for p in model.parameters())


# -- sparse autoencoder ----------------------------------------------------------------------------


def test_sparsity_penalty_matches_hooked_activations():
    model = make("sae", seed=10, hidden_dims=(12, 7), sparsity_target=0.1, sparsity_weight=0.3)
    variant = zoo.get_variant("sae")
    x = unit_data(9, *TINY["input_shape"], seed=23)
    captured: list[torch.Tensor] = []
    sigmoids = [m for m in model.encoder.modules() if isinstance(m, nn.Sigmoid)]
    assert len(sigmoids) == 2
    sigmoids.append(model.code_activation)
    assert isinstance(model.code_activation, nn.Sigmoid)
    handles = [m.register_forward_hook(lambda _m, _i, out: captured.append(out.detach())) for m in sigmoids]
    try:
        with torch.no_grad():
            model.encode(x)  # the plain forward path, not the one the loss uses
    finally:
        for handle in handles:
            handle.remove()
    assert [a.shape[1] for a in captured] == [12, 7, TINY["latent_dim"]]
    rho = 0.1
    expected = 0.0
    for act in captured:
        rho_hat = act.double().mean(0)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        expected += num(kl.sum())
    out = variant.loss(model, x)
    assert num(out.terms["sparsity_kl"]) == pytest.approx(expected, rel=1e-5)
    recon = num(bernoulli_ref(model.decode_logits(model.code(x)), x).mean())
    assert num(out.terms["reconstruction"]) == pytest.approx(recon, rel=1e-5)
    assert num(out.total) == pytest.approx(recon + 0.3 * expected, rel=1e-5)


def test_sparsity_penalty_vanishes_at_the_target():
    variant = zoo.get_variant("sae")
    hidden = [torch.full((5, 3), 0.2), torch.full((5, 2, 2, 2), 0.2)]
    assert num(variant.sparsity_penalty(hidden, 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert num(variant.sparsity_penalty(hidden, 0.05)) > 0


# -- denoising autoencoder -------------------------------------------------------------------------


def dae_and_ae(**dae_cfg):
    dae = make("dae", seed=11, **dae_cfg)
    ae = make("ae", seed=12, likelihood="mse")
    copy_weights(dae, ae)
    return dae, ae


def test_denoising_without_corruption_is_the_plain_autoencoder():
    dae, ae = dae_and_ae(noise_std=0.0, mask_prob=0.0)
    x = unit_data(5, *TINY["input_shape"], seed=24)
    dae.train()
    ae.train()
    a = zoo.get_variant("dae").loss(dae, x)
    b = zoo.get_variant("ae").loss(ae, x)
    assert torch.equal(a.total, b.total)
    expected = ((x.double() - ae(x).double()) ** 2).sum(DIMS).mean()
    assert num(b.total) == pytest.approx(num(expected), rel=1e-6)


def test_denoising_corrupts_in_training_mode_only():
    dae, ae = dae_and_ae(noise_std=0.3)
    x = unit_data(5, *TINY["input_shape"], seed=25)
    variant = zoo.get_variant("dae")
    clean = num(zoo.get_variant("ae").loss(ae, x).total)
    dae.train()
    torch.manual_seed(0)
    noisy_loss = num(variant.loss(dae, x).total)
    assert noisy_loss != pytest.approx(clean, rel=1e-4)
    # the training loss is ||x - f(g(x~))||^2 with x~ = clip(x + 0.3 eps), eps from the same seed
    torch.manual_seed(0)
    x_tilde = (x + 0.3 * torch.randn(x.shape)).clamp(0, 1)
    with torch.no_grad():
        expected = ((x.double() - dae(x_tilde).double()) ** 2).sum(DIMS).mean()
    assert noisy_loss == pytest.approx(num(expected), rel=1e-6)
    # eval mode: no corruption, equal to the clean autoencoder loss whatever the RNG state
    dae.eval()
    torch.manual_seed(1)
    assert num(variant.loss(dae, x).total) == pytest.approx(clean, rel=1e-6)


def test_masking_noise_zeroes_inputs():
    dae, _ = dae_and_ae(noise_std=0.0, mask_prob=0.5)
    x = unit_data(5, *TINY["input_shape"], seed=26) * 0.5 + 0.25
    variant = zoo.get_variant("dae")
    x_tilde = variant.corrupt(x, dae.config, generator=gen(3))
    dropped = x_tilde == 0
    assert torch.equal(x_tilde[~dropped], x[~dropped])
    assert 0.35 < dropped.float().mean() < 0.65
    torch.manual_seed(4)
    keep = torch.rand(x.shape) >= 0.5
    with torch.no_grad():
        expected = ((x.double() - dae(x * keep).double()) ** 2).sum(DIMS).mean()
    dae.train()
    torch.manual_seed(4)
    assert num(variant.loss(dae, x).total) == pytest.approx(num(expected), rel=1e-6)


# -- conditional VAE -------------------------------------------------------------------------------


def test_cvae_sample_uses_the_one_hot_label():
    model = make("cvae", seed=13, num_classes=4).eval()
    n, latent = 5, TINY["latent_dim"]
    for label in (0, 3):
        samples = model.sample(n, y=label, generator=gen(42))
        assert samples.shape == (n, *TINY["input_shape"])
        z = torch.randn((n, latent), generator=gen(42))
        one_hot = torch.zeros(n, 4)
        one_hot[:, label] = 1.0
        torch.testing.assert_close(samples, model.decode(z, one_hot), rtol=0, atol=0)
        torch.testing.assert_close(samples, torch.sigmoid(model.decoder(z, one_hot)), rtol=0, atol=0)
        labels = torch.full((n,), label)
        torch.testing.assert_close(model.sample(n, y=labels, generator=gen(42)), samples, rtol=0, atol=0)
    first, last = (model.sample(n, y=label, generator=gen(42)) for label in (0, 3))
    assert not torch.allclose(first, last)
    # one label per row
    labels = torch.tensor([2, 0, 3, 1, 2])
    one_hot = torch.zeros(n, 4)
    one_hot[torch.arange(n), labels] = 1.0
    z = torch.randn((n, latent), generator=gen(7))
    torch.testing.assert_close(model.sample(n, y=labels, generator=gen(7)), model.decode(z, one_hot),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="0..3"):
        model.sample(2, y=4)


def test_cvae_loss_with_several_mc_samples_matches_per_sample_decoding():
    model = make("cvae", seed=14, num_classes=3, mc_samples=4)
    x = (unit_data(6, *TINY["input_shape"], seed=27) > 0.5).float()
    y = torch.tensor([0, 1, 2, 2, 0, 1])
    one_hot = torch.zeros(6, 3)
    one_hot[torch.arange(6), y] = 1.0
    torch.manual_seed(5)
    out = zoo.get_variant("cvae").loss(model, (x, y))
    recon, kl = vae_reference(model, x, seed=5, k=4, y=one_hot)
    assert num(out.terms["reconstruction"]) == pytest.approx(num(recon), rel=1e-5)
    assert num(out.terms["kl"]) == pytest.approx(num(kl), rel=1e-5)
    with pytest.raises(DataError, match="conditional"):
        zoo.get_variant("cvae").loss(model, x)


def test_unit_range_checked_skips_the_per_batch_check_only_for_data_in_range():
    inside, outside = unit_data(4, 1, 4, 4), unit_data(4, 1, 4, 4) * 255
    with zoo.losses.unit_range_checked(inside, inside.clamp(0.5, 1)) as skipped:
        assert skipped
        check_unit_range(outside)  # skipped: the caller vouched for its data
    with pytest.raises(DataError):
        check_unit_range(outside)  # the block is over
    with zoo.losses.unit_range_checked(inside, outside) as skipped:
        assert not skipped
        with pytest.raises(DataError):
            check_unit_range(outside)
