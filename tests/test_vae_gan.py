"""VAE-GAN: each network's gradient is exactly the gradient of its own objective (Larsen et al.)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

import zoo


def make_model():
    torch.manual_seed(0)
    variant = zoo.get_variant("vae-gan")
    return variant, zoo.create("vae-gan", variant.tiny_config())


def independent_objectives(model, x):
    """The three objectives written out from the paper, reusing the RNG order of one forward pass."""
    posterior = model.encode(x)
    mean, std = posterior.mean, posterior.stddev
    z = mean + std * torch.randn(mean.shape)
    z_p = torch.randn_like(mean)
    x_tilde, x_p = torch.sigmoid(model.decoder(z)), torch.sigmoid(model.decoder(z_p))
    d_x, f_x = model.discriminator(x)
    d_tilde, f_tilde = model.discriminator(x_tilde)
    d_p, _ = model.discriminator(x_p)
    standard = Independent(Normal(torch.zeros_like(mean), torch.ones_like(std)), 1)
    prior = kl_divergence(Independent(Normal(mean, std), 1), standard).mean()
    llike = -Independent(Normal(f_tilde, 1.0), 1).log_prob(f_x).mean()
    # Discriminator minimises the binary cross-entropy: real -> 1, reconstructions and samples -> 0.
    bce = (F.binary_cross_entropy_with_logits(d_x, torch.ones_like(d_x))
           + F.binary_cross_entropy_with_logits(d_tilde, torch.zeros_like(d_tilde))
           + F.binary_cross_entropy_with_logits(d_p, torch.zeros_like(d_p)))
    l_gan = -bce
    gamma = model.config.gamma
    return {"encoder": prior + llike, "decoder": gamma * llike - l_gan, "discriminator": bce}


def zero_lr_optimizers(model):
    nets = {"encoder": model.encoder, "decoder": model.decoder, "discriminator": model.discriminator}
    return nets, {name: torch.optim.SGD(net.parameters(), lr=0.0) for name, net in nets.items()}


def test_each_network_receives_only_its_own_gradient():
    variant, model = make_model()
    x = torch.rand(8, *model.config.input_shape, generator=torch.Generator().manual_seed(1))
    nets, optimizers = zero_lr_optimizers(model)

    torch.manual_seed(123)
    variant.train_step(model, (x,), optimizers, step=0)
    routed = {name: [p.grad.clone() for p in net.parameters()] for name, net in nets.items()}

    torch.manual_seed(123)
    objectives = independent_objectives(model, x)
    for name, net in nets.items():
        expected = torch.autograd.grad(objectives[name], list(net.parameters()), retain_graph=True)
        for got, want in zip(routed[name], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_summing_the_losses_would_route_wrong_gradients():
    """The known bug (all backward passes before any step) gives different decoder gradients, so the
    test above can tell correct routing from the naive one."""
    variant, model = make_model()
    x = torch.rand(8, *model.config.input_shape, generator=torch.Generator().manual_seed(1))
    nets, optimizers = zero_lr_optimizers(model)
    torch.manual_seed(123)
    variant.train_step(model, (x,), optimizers, step=0)
    routed = [p.grad.clone() for p in model.decoder.parameters()]

    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    objectives = independent_objectives(model, x)
    sum(objectives.values()).backward()
    naive = [p.grad for p in model.decoder.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(routed, naive, strict=True))


def test_three_optimisers_each_own_one_network():
    variant, model = make_model()
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=1e-3))
    assert set(optimizers) == {"encoder", "decoder", "discriminator"}
    owned = {name: {id(p) for g in opt.param_groups for p in g["params"]} for name, opt in optimizers.items()}
    assert owned["encoder"] == {id(p) for p in model.encoder.parameters()}
    assert owned["decoder"] == {id(p) for p in model.decoder.parameters()}
    assert owned["discriminator"] == {id(p) for p in model.discriminator.parameters()}


def test_a_step_changes_all_three_networks():
    variant, model = make_model()
    x = torch.rand(8, *model.config.input_shape, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=1e-2))
    variant.train_step(model, (x,), optimizers, step=0)
    for prefix in ("encoder.", "decoder.", "discriminator."):
        changed = [k for k, v in model.state_dict().items() if k.startswith(prefix) and not torch.equal(v, before[k])]
        assert changed, f"no {prefix} parameter changed"


def test_non_saturating_generator_loss_differs_only_for_the_decoder():
    variant, model = make_model()
    x = torch.rand(8, *model.config.input_shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    minimax = variant.objectives(model, (x,))
    model.config.generator_loss = "non_saturating"
    torch.manual_seed(5)
    saturating_free = variant.objectives(model, (x,))
    torch.testing.assert_close(minimax["encoder"], saturating_free["encoder"])
    torch.testing.assert_close(minimax["discriminator"], saturating_free["discriminator"])
    assert not torch.allclose(minimax["decoder"], saturating_free["decoder"])


def test_discriminator_learning_rate_scale():
    variant = zoo.get_variant("vae-gan")
    model = zoo.create("vae-gan", variant.tiny_config(), discriminator_lr_scale=0.1)
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=2e-3))
    assert [g["lr"] for g in optimizers["encoder"].param_groups] == [2e-3]
    assert [g["lr"] for g in optimizers["decoder"].param_groups] == [2e-3]
    assert [g["lr"] for g in optimizers["discriminator"].param_groups] == [pytest.approx(2e-4)]
