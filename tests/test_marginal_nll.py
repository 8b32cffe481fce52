"""A conditional model's marginal likelihood -log p(x) = -log (1/C) sum_y p(x|y), beside its -log p(x|y)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

import zoo
from zoo.data import TensorData
from zoo.errors import ConfigError
from zoo.metrics import importance_sampled_nll, marginal_nll


def test_marginal_nll_sums_the_label_out_of_each_class_likelihood():
    torch.manual_seed(0)
    model = zoo.create("cvae", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,), num_classes=3).eval()
    x = (torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    marginal = marginal_nll(model, TensorData(x, torch.zeros(5, dtype=torch.long)), num_samples=90)
    assert marginal["samples_per_class"] == 30  # 90 draws stratified over 3 labels
    log_p = []
    with torch.no_grad():
        for c in range(3):  # log p(x|c) with the draws the metric makes: one generator per class, seeded 0
            y = torch.full((5,), c)
            posterior = model.encode(x, y)
            eps = torch.randn((30, 5, 3), generator=torch.Generator().manual_seed(0))
            z = posterior.mean + posterior.stddev * eps
            q = D.Independent(D.Normal(posterior.mean, posterior.stddev), 1)
            prior = D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1)
            log_w = -model.reconstruction_nll(x, z, y) + prior.log_prob(z) - q.log_prob(z)
            log_p.append(torch.logsumexp(log_w.double(), 0) - math.log(30))
    per_class = -torch.stack(log_p, 1)
    expected = -(torch.logsumexp(-per_class, 1) - math.log(3))
    assert marginal["nll"] == pytest.approx(float(expected.mean()), rel=1e-5)
    conditional = importance_sampled_nll(model, TensorData(x, torch.zeros(5, dtype=torch.long)), num_samples=30)
    assert conditional["nll"] == pytest.approx(float(per_class[:, 0].mean()), rel=1e-5)
    # -log of a mean lies between the best class's NLL and that plus log C
    assert (expected >= per_class.min(1).values - 1e-9).all()
    assert (expected <= per_class.min(1).values + math.log(3) + 1e-9).all()


def test_marginal_nll_needs_a_conditional_model():
    model = zoo.create("vae", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,)).eval()
    with pytest.raises(ConfigError, match="marginal NLL over labels needs a model that takes labels y"):
        marginal_nll(model, TensorData(torch.rand(2, 1, 8, 8)), num_samples=5)


def test_a_conditional_card_labels_its_nll_as_given_the_label():
    from zoo.cards import metric_names

    cvae, vae = zoo.load("cvae-mnist"), zoo.load("vae-mnist")
    assert metric_names(cvae)["nll"].startswith("conditional NLL -log p(x|y)")
    assert "K = 1000" in metric_names(cvae)["nll"] and metric_names(vae)["nll"].startswith("NLL -log p(x)")
    assert "-log (1/C) sum_y p(x|y)" in metric_names(cvae)["nll_marginal"]
