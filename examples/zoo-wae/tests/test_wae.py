"""The zoo's conformance kit plus the WAE's own loss checked against a direct computation."""

from __future__ import annotations

import pytest
import torch
from zoo_wae import WAEVariant, imq_mmd

from zoo.testing import VariantConformance


class TestWAE(VariantConformance):
    @pytest.fixture
    def variant(self):
        return WAEVariant()


def test_imq_mmd_matches_the_u_statistic_written_out():
    gen = torch.Generator().manual_seed(0)
    z, p = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen)
    c = 2.0 * 3
    k = lambda a, b: c / (c + ((a - b) ** 2).sum())  # noqa: E731
    n = 6
    zz = sum(k(z[i], z[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(p[i], p[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    zp = sum(k(z[i], p[j]) for i in range(n) for j in range(n)) / (n * n)
    torch.testing.assert_close(imq_mmd(z, p), zz + pp - 2 * zp)


def test_mmd_is_small_for_prior_samples_and_large_for_shifted_codes():
    gen = torch.Generator().manual_seed(1)
    prior = torch.randn(400, 4, generator=gen)
    assert abs(float(imq_mmd(torch.randn(400, 4, generator=gen), prior))) < 0.01
    assert float(imq_mmd(torch.randn(400, 4, generator=gen) + 3.0, prior)) > 0.1


def test_config_values_are_checked():
    from zoo_wae import WAEConfig

    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="latent_dim must be at least 1, got 0"):
        WAEConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="mmd_weight must be at least 0"):
        WAEConfig(mmd_weight=-1.0)
