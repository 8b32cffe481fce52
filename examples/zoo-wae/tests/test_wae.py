"""The zoo's conformance kit plus the WAE's own loss checked against a direct computation."""

from __future__ import annotations

import pytest
import torch
from zoo_wae import WAEVariant

from zoo.testing import VariantConformance


class TestWAE(VariantConformance):
    @pytest.fixture
    def variant(self):
        return WAEVariant()


def test_the_loss_is_reconstruction_plus_lambda_times_the_zoos_mmd():
    from zoo.mmd import mmd2

    variant = WAEVariant()
    model = variant.build(variant.tiny_config())
    x = torch.rand(6, *model.config.input_shape, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    out = variant.loss(model, x)
    torch.manual_seed(3)
    z = model.encode(x)
    expected = mmd2(z, torch.randn_like(z), "imq", model.config.kernel_scale)
    torch.testing.assert_close(out.terms["mmd"], expected)
    torch.testing.assert_close(out.total, out.terms["reconstruction"] + model.config.mmd_weight * expected)


def test_config_values_are_checked():
    from zoo_wae import WAEConfig

    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="latent_dim must be at least 1, got 0"):
        WAEConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="mmd_weight must be at least 0"):
        WAEConfig(mmd_weight=-1.0)
