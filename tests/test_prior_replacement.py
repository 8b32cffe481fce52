"""The exact cost of a latent unit: the ELBO with q(z_i|x) replaced by the prior, against an independent
Monte-Carlo computation with torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

import zoo
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.metrics import prior_replacement_cost, reconstruction_gain


def test_prior_replacement_cost_is_the_change_of_the_negative_elbo():
    torch.manual_seed(0)
    model = zoo.create("vae", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,)).eval()
    x = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    draws = 4000
    out = prior_replacement_cost(model, TensorData(x), num_samples=draws)
    with torch.no_grad():
        mean, logvar = model.encoder(x, None).chunk(2, dim=1)
        q = D.Normal(mean, (0.5 * logvar).exp())
        kl = D.kl_divergence(q, D.Normal(torch.zeros_like(mean), torch.ones_like(mean)))  # (8, 3)
        generator = torch.Generator().manual_seed(123)  # random numbers of its own

        def nll(z):  # -log p(x|z) per draw and example, (draws, 8)
            logits = model.decoder(z.reshape(-1, 3), None).reshape(draws, 8, 1, 8, 8)
            return -D.Independent(D.Bernoulli(logits=logits), 3).log_prob(x.expand_as(logits))

        z = mean + q.scale * torch.randn(draws, 8, 3, generator=generator)
        base = nll(z)
        for i in range(3):
            swapped = z.clone()
            swapped[..., i] = torch.randn(draws, 8, generator=generator)
            gain = nll(swapped) - base
            change = gain.mean() - kl[:, i].mean()  # -ELBO without unit i's posterior minus -ELBO with it
            stderr = float(gain.mean(1).std() / math.sqrt(draws))
            assert out["change"][i] == pytest.approx(float(change), abs=6 * stderr + 0.05)
            assert out["kl_per_latent"][i] == pytest.approx(float(kl[:, i].mean()), rel=1e-5)
    assert out["costs_more"] == [i for i in range(3) if out["change"][i] < 0]


def test_prior_replacement_cost_refuses_a_prior_without_per_unit_kl():
    model = zoo.create("vamp-vae", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,), num_pseudo_inputs=4)
    with pytest.raises(ConfigError, match="no per-unit KL"):
        prior_replacement_cost(model, TensorData(torch.rand(2, 1, 8, 8)))


def test_the_proxy_and_the_exact_cost_rank_vae_mnist_units_alike():
    """reconstruction_gain is a proxy at the posterior mean; on vae-mnist it orders the units as the exact cost."""
    from zoo.data import load_dataset

    model = zoo.load("vae-mnist")
    data = load_dataset("mnist", "test")
    data = TensorData(data.x[::10], data.y[::10])
    exact = torch.tensor(prior_replacement_cost(model, data, num_samples=5)["gain"])
    proxy = torch.tensor(reconstruction_gain(model, data)["gain"])
    assert torch.equal(torch.argsort(exact)[-5:].sort().values, torch.argsort(proxy)[-5:].sort().values)
