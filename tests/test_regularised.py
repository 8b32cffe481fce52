"""The regularised autoencoder (RAE-L2, RAE-GP) and the adversarial autoencoder, term by term against
independent computations, and the AAE's gradient routing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import zoo
from zoo.errors import ConfigError


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def tiny(name: str, **settings):
    variant = zoo.get_variant(name)
    torch.manual_seed(0)
    return variant, variant.build(variant.make_config(variant.tiny_config(), **settings))


def test_rae_l2_is_reconstruction_plus_code_and_decoder_weight_penalties():
    variant, model = tiny("rae", embedding_weight=0.3, reg_weight=0.01, regularizer="l2")
    x = images()
    out = variant.loss(model, x)
    code = model.code(x)
    recon = F.binary_cross_entropy_with_logits(model.decoder(code), x, reduction="none").flatten(1).sum(1).mean()
    weights = sum(float((p.detach() ** 2).sum()) for p in model.decoder.parameters())
    assert_close(out.terms["embedding"], 0.5 * (code ** 2).sum(1).mean())
    assert float(out.terms["regularizer"].detach()) == pytest.approx(weights, rel=1e-5)
    assert_close(out.total, recon + 0.3 * 0.5 * (code ** 2).sum(1).mean() + 0.01 * out.terms["regularizer"])


def test_rae_gp_penalises_the_gradient_of_the_summed_decoded_image():
    variant, model = tiny("rae", regularizer="gp", reg_weight=0.5)
    x = images()
    out = variant.loss(model, x)
    codes = model.code(x).detach()
    by_jacobian = [torch.autograd.functional.jacobian(lambda z: model.decode(z.unsqueeze(0)).flatten(), c).sum(0)
                   for c in codes]  # d/dz sum_i f_i(z) = column sums of the Jacobian
    expected = torch.stack([(g ** 2).sum() for g in by_jacobian]).mean()
    assert_close(out.terms["regularizer"], expected, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # evaluation measures the same penalty
        assert_close(variant.loss(model, x).terms["regularizer"], expected, rtol=1e-4, atol=1e-6)
    out.total.backward()  # the penalty's graph reaches the decoder's weights
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_rae_refuses_an_unknown_regularizer():
    with pytest.raises(ConfigError, match="rae regularizer must be one of l2, gp, none, not 'sn'"):
        zoo.create("rae", regularizer="sn")


def test_aae_objectives_against_an_independent_computation():
    variant, model = tiny("aae", adversarial_weight=0.7)
    x = images()
    torch.manual_seed(3)
    terms = variant.objectives(model, x)
    torch.manual_seed(3)
    code = model.code(x)
    prior = torch.randn_like(code)
    d_code, d_prior = torch.sigmoid(model.discriminator(code)), torch.sigmoid(model.discriminator(prior))
    recon = model.reconstruction_nll(x, code).mean()
    assert_close(terms["generator"], -torch.log(d_code).mean())
    assert_close(terms["discriminator"], -torch.log(d_prior).mean() - torch.log(1 - d_code).mean())
    assert_close(terms["encoder"], recon - 0.7 * torch.log(d_code).mean())
    assert_close(terms["decoder"], recon)


def test_aae_gives_each_network_only_its_own_objectives_gradient():
    variant, model = tiny("aae", adversarial_weight=0.7)
    x = images()
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=0.0))
    assert set(optimizers) == {"autoencoder", "discriminator"}
    torch.manual_seed(5)
    variant.train_step(model, (x,), optimizers, step=0)
    routed = {name: [p.grad.clone() for p in params] for name, params in variant.networks(model).items()}
    torch.manual_seed(5)
    terms = variant.objectives(model, x)
    for name, params in variant.networks(model).items():
        for got, want in zip(routed[name], torch.autograd.grad(terms[name], params, retain_graph=True), strict=True):
            assert_close(got, want)
    # The encoder's adversarial term reaches the discriminator too: routing is what keeps it out.
    leak = torch.autograd.grad(terms["encoder"], list(model.discriminator.parameters()), retain_graph=True)
    assert any(g.abs().sum() > 0 for g in leak)


def test_aae_discriminator_learning_rate_scale():
    variant, model = tiny("aae", discriminator_lr_scale=0.1)
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=1e-3))
    assert optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert optimizers["autoencoder"].param_groups[0]["lr"] == 1e-3
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)


# -- MS-SSIM VAE ------------------------------------------------------------------------------------------------


def test_ms_ssim_vae_loss_is_weighted_dissimilarity_plus_kl():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    variant, model = tiny("ms-ssim-vae", ssim_weight=100.0)
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(2)
    out = variant.loss(model, x)
    torch.manual_seed(2)
    posterior = model.encode(x)
    decoded = model.decode(posterior.sample())
    similarity = multiscale_structural_similarity_index_measure(decoded, x, kernel_size=3, betas=(0.5, 0.5),
                                                                data_range=1.0, reduction="none")
    q = torch.distributions.Normal(posterior.mean, posterior.stddev)
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean()
    assert_close(out.total, 100.0 * (1 - similarity).mean() + kl)
    assert_close(out.terms["ms_ssim"], similarity.mean())


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    from zoo_plugins.msssim import ms_ssim

    _, model = tiny("ms-ssim-vae")
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert_close(ms_ssim(model, x, x), torch.ones(3))
    assert (ms_ssim(model, x, noisy) < 0.95).all()


def test_ms_ssim_vae_refuses_scales_the_image_cannot_hold():
    with pytest.raises(ConfigError, match="3 scales with a 11-pixel window need images larger than 40 pixels"):
        zoo.create("ms-ssim-vae", kernel_size=11)
    with pytest.raises(ConfigError, match="likelihood='bernoulli'"):
        zoo.create("ms-ssim-vae", likelihood="gaussian")


def test_aae_trains_with_its_encoder_frozen():
    """A network frozen whole (fine-tuning's --freeze encoder) is left out of the per-network gradients."""
    variant, model = tiny("aae")
    model.encoder.requires_grad_(False)
    before = [p.clone() for p in model.encoder.parameters()]
    decoder = [p.clone() for p in model.decoder.parameters()]
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=1e-2))
    variant.train_step(model, (images(),), optimizers, step=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.encoder.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(decoder, model.decoder.parameters(), strict=True))
