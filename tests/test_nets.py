"""Architectures: MLP, conv and timm encoders for any (C, H, W) and latent size, conditional inputs."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.errors import ConfigError


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 17, 23), (2, 5, 64), (1, 1, 1)])
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_vae_reconstructs_any_input_shape(shape, architecture):
    model = zoo.create("vae", input_shape=shape, latent_dim=3, hidden_dims=(8, 16), architecture=architecture)
    x = torch.rand(4, *shape)
    assert model(x).shape == (4, *shape)
    posterior = model.encode(x)
    assert posterior.mean.shape == (4, 3) and posterior.logvar.shape == (4, 3)
    assert model.sample(5).shape == (5, *shape)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_conditional_inputs_change_the_output(architecture):
    model = zoo.create("cvae", input_shape=(1, 12, 12), latent_dim=2, hidden_dims=(8,), num_classes=4,
                       architecture=architecture).eval()
    z = torch.zeros(3, 2)
    assert not torch.allclose(model.decode(z, torch.tensor([0, 0, 0])), model.decode(z, torch.tensor([3, 3, 3])))
    x = torch.rand(3, 1, 12, 12)
    assert not torch.allclose(model.encode(x, 0).mean, model.encode(x, 2).mean)


def test_timm_encoder_backbone_builds_without_download():
    model = zoo.create("cvae", input_shape=(1, 28, 28), latent_dim=6, hidden_dims=(16, 8), num_classes=10,
                       architecture="timm:resnet18")
    import timm.models.resnet

    assert isinstance(model.encoder.trunk, timm.models.resnet.ResNet)
    assert model.encoder.trunk.conv1.in_channels == 1 + 10  # image channel + one-hot label planes
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 7])
    assert model(x, y).shape == (2, 1, 28, 28)
    out = zoo.get_variant("cvae").loss(model, (x, y))
    out.total.backward()
    assert model.encoder.trunk.conv1.weight.grad.abs().sum() > 0


def test_unknown_architecture_and_activation_are_clear_errors():
    with pytest.raises(ConfigError, match="timm:MODEL"):
        zoo.create("ae", architecture="transformer")
    with pytest.raises(ConfigError, match="unknown activation 'relux'"):
        zoo.create("ae", activation="relux")


def test_logvar_is_clamped_so_extreme_encoders_stay_finite():
    model = zoo.create("vae", input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(4,))
    with torch.no_grad():
        model.encoder.head.bias.fill_(1e4)
    posterior = model.encode(torch.rand(2, 1, 4, 4))
    assert torch.isfinite(posterior.stddev).all()
    assert torch.isfinite(posterior.kl()).all()
