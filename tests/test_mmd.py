"""The MMD estimator against the U-statistic written out, and the WAE-MMD and InfoVAE-MMD losses term by term."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import zoo
from zoo.errors import ConfigError
from zoo.mmd import mmd2


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_the_unbiased_u_statistic_written_out(kernel):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen) + 0.5
    c = 2.0 * 3 * 0.7 ** 2

    def k(u, v):
        d2 = float(((u - v) ** 2).sum())
        return c / (c + d2) if kernel == "imq" else math.exp(-d2 / c)

    n = 6
    aa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    bb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    ab = sum(k(a[i], b[j]) for i in range(n) for j in range(n)) / (n * n)
    assert float(mmd2(a, b, kernel, 0.7)) == pytest.approx(aa + bb - 2 * ab, rel=1e-5)


def test_mmd_separates_distributions_and_is_unbiased_near_zero_for_equal_ones():
    gen = torch.Generator().manual_seed(1)
    prior = torch.randn(400, 4, generator=gen)
    assert abs(float(mmd2(torch.randn(400, 4, generator=gen), prior))) < 0.01
    assert float(mmd2(torch.randn(400, 4, generator=gen) + 3.0, prior)) > 0.1
    with pytest.raises(ValueError, match="two samples of one size n >= 2"):
        mmd2(prior[:1], prior[:1])


def test_wae_mmd_loss_is_reconstruction_plus_lambda_mmd():
    variant = zoo.get_variant("wae-mmd")
    model = variant.build(variant.tiny_config())
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(4)
    out = variant.loss(model, x)
    torch.manual_seed(4)
    code = model.encode(x).mode()
    recon = ((model.decode(code) - x) ** 2).flatten(1).sum(1).mean()  # mse: squared error per example
    mmd = mmd2(code, torch.randn_like(code))
    assert_close(out.terms["mmd"], mmd)
    assert_close(out.total, recon + 10.0 * mmd)


def test_info_vae_weighs_kl_and_mmd_apart_and_alpha_0_lambda_1_is_the_vae():
    variant = zoo.get_variant("info-vae")
    torch.manual_seed(0)
    model = variant.build(variant.make_config(variant.tiny_config(), alpha=0.3, info_lambda=50.0, kernel="rbf"))
    x = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.manual_seed(5)
    out = variant.loss(model, x)
    torch.manual_seed(5)
    mean, logvar = model.encoder(x, None).chunk(2, dim=1)
    z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    recon = torch.nn.functional.binary_cross_entropy_with_logits(model.decoder(z, None), x, reduction="none")
    recon = recon.flatten(1).sum(1).mean()
    mmd = mmd2(z, torch.randn_like(z), "rbf")
    assert_close(out.total, recon + 0.7 * kl + 49.3 * mmd, rtol=1e-5, atol=1e-4)
    vae = zoo.get_variant("vae")
    plain = variant.make_config(variant.tiny_config(), alpha=0.0, info_lambda=1.0)
    torch.manual_seed(0)
    model = variant.build(plain)
    torch.manual_seed(6)
    info = variant.loss(model, x)
    torch.manual_seed(6)
    assert_close(info.total, vae.loss(model, x).total)


@pytest.mark.parametrize("name", ["wae-mmd", "info-vae"])
def test_a_batch_of_one_scores_its_reconstruction_alone(name):
    variant = zoo.get_variant(name)
    model = variant.build(variant.tiny_config())
    out = variant.loss(model, torch.rand(1, 1, 8, 8))
    assert float(out.terms["mmd"]) == 0.0 and torch.isfinite(out.total)


def test_info_vae_refuses_negative_weights():
    with pytest.raises(ConfigError, match="alpha <= 1 and alpha \\+ lambda >= 1"):
        zoo.get_variant("info-vae").make_config(alpha=0.0, info_lambda=0.5)


def test_an_unknown_kernel_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="kernel must be one of imq, rbf, not 'laplace'"):
        zoo.get_variant("wae-mmd").make_config(kernel="laplace")
    with pytest.raises(ConfigError, match="not 'laplace'"):
        mmd2(torch.randn(3, 2), torch.randn(3, 2), "laplace")
