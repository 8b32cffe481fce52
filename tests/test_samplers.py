"""Ex-post samplers: each density against an independent computation, and the sampler as part of the model
(sampling, saving, strict loading, cards, the CLI, the plugin route)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch.testing import assert_close

import zoo
from zoo.cli import main
from zoo.errors import ConfigError, UnknownNameError
from zoo.samplers import FittedSampler, Sampler, get_sampler


def banana(n: int, seed: int = 0) -> torch.Tensor:
    """2-d codes on a bent curve, plus a little noise: far from Gaussian."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(n, generator=gen)
    return torch.stack([t, t.pow(2) - 1 + 0.1 * torch.randn(n, generator=gen)], dim=1) * 3.0 + 5.0


def fitted(name: str, codes: torch.Tensor, seed: int = 0, **settings):
    sampler = get_sampler(name)
    config = sampler.make_config(settings)
    module = sampler.build(config, (codes.shape[1],))
    torch.manual_seed(seed)
    sampler.fit(module, codes, config, torch.Generator().manual_seed(seed))
    return module.eval().requires_grad_(False)


def test_gaussian_is_the_codes_mean_and_covariance_and_scores_as_scipy():
    codes = banana(500)
    module = fitted("gaussian", codes)
    mean, cov = codes.double().numpy().mean(0), np.cov(codes.double().numpy().T)
    assert_close(module.mean.double(), torch.from_numpy(mean), rtol=1e-5, atol=1e-5)
    assert_close((module.scale_tril @ module.scale_tril.T).double(), torch.from_numpy(cov), rtol=1e-4, atol=1e-4)
    points = codes[:10]
    expected = multivariate_normal(mean, cov).logpdf(points.double().numpy())
    assert_close(module.log_prob(points).double(), torch.from_numpy(expected), rtol=1e-4, atol=1e-4)


def test_gmm_scores_as_the_mixture_written_out_and_draws_its_moments():
    codes = banana(1000)
    module = fitted("gmm", codes, num_components=3)
    w, mu = module.weights.double().numpy(), module.means.double().numpy()
    cov = (module.scale_trils @ module.scale_trils.transpose(1, 2)).double().numpy()
    points = codes[:20].double().numpy()
    by_hand = logsumexp([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(points) for k in range(3)], axis=0)
    assert_close(module.log_prob(codes[:20]).double(), torch.from_numpy(by_hand), rtol=1e-4, atol=1e-4)
    draws = module.sample(40_000, torch.Generator().manual_seed(1)).double()
    mean = (w[:, None] * mu).sum(0)
    second = sum(w[k] * (cov[k] + np.outer(mu[k], mu[k])) for k in range(3)) - np.outer(mean, mean)
    assert_close(draws.mean(0), torch.from_numpy(mean), atol=0.1, rtol=0)
    assert_close(torch.cov(draws.T), torch.from_numpy(second), atol=0.3, rtol=0.05)
    assert float(module.log_prob(codes).mean()) > float(fitted("gaussian", codes).log_prob(codes).mean())


def test_flow_density_is_the_base_density_times_the_jacobian_of_the_whole_map():
    codes = banana(600)
    module = fitted("flow", codes, num_flows=2, hidden_dims=(16,), epochs=2)
    x = codes[:3]

    def to_base(point):  # standardise, then every transform forward
        u = (point - module.code_mean) / module.code_std
        for transform in module.transforms:
            u = transform(u.unsqueeze(0)).squeeze(0)
        return u

    for point, log_p in zip(x, module.log_prob(x), strict=True):
        jac = torch.autograd.functional.jacobian(to_base, point)
        base = torch.distributions.Normal(0.0, 1.0).log_prob(to_base(point)).sum()
        assert float(log_p) == pytest.approx(float(base + torch.linalg.slogdet(jac).logabsdet), abs=1e-4)


def test_flow_draws_invert_the_transforms_and_fit_better_than_a_gaussian():
    codes, held_out = banana(2000), banana(500, seed=1)
    module = fitted("flow", codes, num_flows=3, hidden_dims=(32, 32), epochs=30)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    draws = module.sample(5, generator)
    u = (draws - module.code_mean) / module.code_std
    for transform in module.transforms:
        u = transform(u)
    assert_close(u, base, rtol=1e-4, atol=1e-4)
    gaussian = fitted("gaussian", codes)
    assert float(module.log_prob(held_out).mean()) > float(gaussian.log_prob(held_out).mean()) + 0.3


def test_two_stage_loss_is_the_negative_elbo_with_a_learned_gamma():
    codes = banana(400)
    module = fitted("two-stage", codes, hidden_dims=(16,), epochs=1)
    module.log_gamma.fill_(math.log(0.3))
    x = (codes[:6] - module.code_mean) / module.code_std
    torch.manual_seed(3)
    got = module.negative_elbo(x)
    torch.manual_seed(3)
    mean, logvar = module.encoder(x).chunk(2, dim=-1)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    u = mean + q.stddev * torch.randn_like(mean)
    likelihood = torch.distributions.Normal(module.decoder(u), math.sqrt(0.3)).log_prob(x).sum(-1)
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert_close(got, -likelihood + kl)


def test_two_stage_learns_a_small_gamma_on_codes_near_a_curve():
    """Dai & Wipf: on data near a lower-dimensional manifold the learned decoder variance gamma falls."""
    module = fitted("two-stage", banana(1000), hidden_dims=(64, 64), epochs=200, batch_size=100)
    assert float(module.log_gamma.exp()) < 0.2
    assert module.log_prob(banana(5)) is None


# -- the sampler as part of a model -----------------------------------------------------------------------------


def tiny_ae():
    torch.manual_seed(0)
    model = zoo.create("ae", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,))
    images = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return model.eval(), images


def test_a_fitted_sampler_samples_reproducibly_and_saves_and_loads_bit_for_bit(tmp_path):
    model, images = tiny_ae()
    fitted_gmm = model.fit_sampler("gmm", images, num_components=2)
    assert fitted_gmm.record["codes"] == 200 and fitted_gmm.record["config"]["num_components"] == 2
    assert not any(p.requires_grad for p in fitted_gmm.parameters())
    first = model.sample(6, generator=torch.Generator().manual_seed(4), sampler="gmm")
    again = model.sample(6, generator=torch.Generator().manual_seed(4), sampler="gmm")
    assert first.shape == (6, 1, 8, 8) and torch.equal(first, again)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["_zoo"]["samplers"]["gmm"]["config"]["num_components"] == 2
    card = (tmp_path / "m" / "README.md").read_text()
    assert "## Ex-post samplers" in card and "- `gmm` (num_components=2" in card and "200 examples" in card
    loaded = zoo.load(f"local-dir:{tmp_path / 'm'}")
    assert {k for k in loaded.state_dict() if k.startswith("samplers.")} == {
        "samplers.gmm.weights", "samplers.gmm.means", "samplers.gmm.scale_trils"}
    assert torch.equal(loaded.sample(6, generator=torch.Generator().manual_seed(4), sampler="gmm"), first)


def test_sampler_errors_name_what_to_do(tmp_path):
    model, images = tiny_ae()
    with pytest.raises(UnknownNameError, match="Did you mean: gmm"):
        model.fit_sampler("gmn", images)
    with pytest.raises(UnknownNameError, match=r"this model has: none.*Fit it first"):
        model.sample(2, sampler="gmm")
    with pytest.raises(ConfigError, match="num_componentz"):
        model.fit_sampler("gmm", images, num_componentz=3)
    with pytest.raises(NotImplementedError, match="fit an ex-post sampler"):
        model.sample(2)
    model.fit_sampler("gaussian", images)
    with pytest.raises(ValueError, match="draws codes without labels"):
        model.sample(2, y=1, sampler="gaussian")
    cvae = zoo.create("cvae", input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), num_classes=3)
    with pytest.raises(ConfigError, match="conditional"):
        cvae.fit_sampler("gaussian", images)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["_zoo"]["samplers"]["gaussian"]["sampler"] = "gausian"
    path.write_text(json.dumps(config))
    with pytest.raises(UnknownNameError, match="Did you mean: gaussian"):
        zoo.load(f"local-dir:{tmp_path / 'm'}")


def test_fitting_leaves_the_callers_random_state_alone():
    model, images = tiny_ae()
    torch.manual_seed(11)
    model.fit_sampler("two-stage", images, hidden_dims=(8,), epochs=1)
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(3))


def test_training_drops_fitted_samplers_with_a_warning(caplog):
    model, images = tiny_ae()
    model.fit_sampler("gaussian", images)
    with caplog.at_level(logging.WARNING, logger="zoo.samplers"):
        zoo.train(model, images, epochs=1, batch_size=100, progress=False)
    assert len(model.samplers) == 0
    assert "dropping the fitted sampler(s) gaussian" in caplog.text


def test_cli_fits_a_sampler_saves_it_and_samples_through_it(tmp_path, capsys):
    model, images = tiny_ae()
    model.save_pretrained(tmp_path / "ae")
    from torchvision.utils import save_image

    folder = tmp_path / "images"
    (folder / "digits").mkdir(parents=True)  # an image folder holds one sub-folder per class
    for i in range(40):
        save_image(images[i], folder / "digits" / f"{i}.png")
    assert main(["fit-sampler", str(tmp_path / "ae"), "gaussian", "--data", str(folder),
                 "--out", str(tmp_path / "fitted")]) == 0
    assert "fitted `gaussian`" in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "fitted"), "--sampler", "gaussian", "--n", "4",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["sample", str(tmp_path / "ae"), "--sampler", "gaussian", "--out", str(tmp_path / "t.png")]) == 2
    assert "Fit it first" in capsys.readouterr().err
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("gaussian", "gmm", "flow", "two-stage"))
    assert main(["info", "gmm"]) == 0
    assert '"num_components": 10' in capsys.readouterr().out


# -- the plugin route -------------------------------------------------------------------------------------------


@dataclass
class BoxConfig:
    margin: float = 0.0


class BoxCodes(FittedSampler):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("low", torch.zeros(dim))
        self.register_buffer("high", torch.ones(dim))

    def sample(self, n, generator=None):
        return self.low + (self.high - self.low) * torch.rand(n, len(self.low), generator=generator)


class BoxSampler(Sampler):
    name = "box"
    description = "uniform in the codes' bounding box"
    config_class = BoxConfig

    def build(self, config, latent_shape):
        return BoxCodes(math.prod(latent_shape))

    def fit(self, sampler, codes, config, generator):
        sampler.low.copy_(codes.min(0).values - config.margin)
        sampler.high.copy_(codes.max(0).values + config.margin)


class BoxPlugin:
    @zoo.hookimpl
    def zoo_register_samplers(self, register):
        register(BoxSampler())


def test_a_plugin_registers_a_sampler_that_fits_saves_and_loads(tmp_path):
    zoo.register_plugin(BoxPlugin(), name="box-plugin")
    try:
        assert "box" in zoo.list_samplers()
        model, images = tiny_ae()
        model.fit_sampler("box", images, margin=0.5)
        codes = model.samplers["box"].sample(100, torch.Generator().manual_seed(0))
        assert (codes >= model.samplers["box"].low).all() and (codes <= model.samplers["box"].high).all()
        model.save_pretrained(tmp_path / "m")
        loaded = zoo.load(f"local-dir:{tmp_path / 'm'}")
        assert torch.equal(loaded.samplers["box"].low, model.samplers["box"].low)
    finally:
        zoo.unregister_plugin("box-plugin")


def test_a_sampler_with_a_bad_name_is_refused_at_registration(monkeypatch):
    monkeypatch.delenv("ZOO_STRICT_PLUGINS", raising=False)
    class Bad(BoxSampler):
        name = "Bad Name"

    class BadPlugin:
        @zoo.hookimpl
        def zoo_register_samplers(self, register):
            register(Bad())

    zoo.register_plugin(BadPlugin(), name="bad-sampler-plugin")
    try:
        from zoo.plugins import get_registry

        assert "Bad Name" not in get_registry().samplers
        assert any("lower-case words" in f.error for f in get_registry().failures)
    finally:
        zoo.unregister_plugin("bad-sampler-plugin")


# -- PixelCNN over discrete code grids --------------------------------------------------------------------------


def tiny_pixelcnn(shape=(1, 2, 2), vocabulary=2, seed=0):
    """A PixelCNN over a (1, 2, 2) grid of two code vectors (0.0 and 1.0), fitted briefly to random grids."""
    gen = torch.Generator().manual_seed(seed)
    codes = (torch.rand(300, math.prod(shape), generator=gen) < torch.tensor([0.2, 0.7, 0.5, 0.9])).float()
    sampler = get_sampler("pixelcnn")
    config = sampler.make_config({"channels": 8, "layers": 1, "epochs": 3, "max_vocabulary": 4})
    module = sampler.build(config, shape)
    torch.manual_seed(seed)
    sampler.fit(module, codes, config, torch.Generator().manual_seed(seed))
    return module.eval().requires_grad_(False), codes


def test_pixelcnn_is_a_normalised_distribution_over_every_grid():
    module, codes = tiny_pixelcnn()
    assert int(module.vocabulary_size) == 2
    grids = torch.tensor([[(k >> b) & 1 for b in range(4)] for k in range(16)], dtype=torch.float32)
    assert float(module.log_prob(grids).exp().sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(module.vocabulary[module.symbols(codes)].reshape(len(codes), -1), codes)


def test_pixelcnn_draws_grids_with_the_probabilities_it_scores():
    module, _ = tiny_pixelcnn()
    grids = torch.tensor([[(k >> b) & 1 for b in range(4)] for k in range(16)], dtype=torch.float32)
    draws = module.sample(20_000, torch.Generator().manual_seed(1))
    index = (draws * torch.tensor([1, 2, 4, 8])).sum(1).long()
    frequencies = torch.bincount(index, minlength=16).float() / len(draws)
    assert_close(frequencies, module.log_prob(grids).exp(), atol=0.015, rtol=0)


def random_pixelcnn_and_grids(count):
    """An unfitted PixelCNN (random weights, 3 layers) over 5x5 grids of 4 symbols, and ``count`` random grids."""
    sampler = get_sampler("pixelcnn")
    torch.manual_seed(0)
    module = sampler.build(sampler.make_config({"channels": 8, "layers": 3}), (1, 5, 5))
    module.vocabulary_size.fill_(4)
    return module, torch.randint(0, 4, (count, 5, 5), generator=torch.Generator().manual_seed(0))


def test_pixelcnn_logits_at_a_position_see_only_the_symbols_before_it():
    module, symbols = random_pixelcnn_and_grids(1)
    base = module.logits(symbols)
    for position in (0, 7, 12, 24):
        changed = symbols.clone()
        changed.view(-1)[position] = (changed.view(-1)[position] + 1) % 4
        moved = (module.logits(changed) - base).abs().amax(1).view(-1) > 0
        assert not moved[:position + 1].any(), position  # itself and everything before it: unchanged


def test_pixelcnn_logits_of_the_top_rows_alone_are_those_of_the_whole_grid():
    """What ``sample`` relies on to compute each row's logits from the rows down to it only: the same numbers,
    bit for bit, as from the whole grid."""
    module, symbols = random_pixelcnn_and_grids(50)
    whole = module.logits(symbols)
    for row in range(5):
        assert torch.equal(module.logits(symbols[:, :row + 1])[:, :, row], whole[:, :, row]), row


def test_pixelcnn_gives_a_vq_vae_samples_and_refuses_a_flat_latent():
    torch.manual_seed(0)
    vq = zoo.create("vq-vae", input_shape=(1, 8, 8), hidden_dims=(8,), embedding_dim=3, num_embeddings=6).eval()
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    vq.fit_sampler("pixelcnn", images, channels=8, layers=1, epochs=1)
    drawn = vq.sample(3, generator=torch.Generator().manual_seed(0), sampler="pixelcnn")
    assert drawn.shape == (3, 1, 8, 8)
    model, images = tiny_ae()
    with pytest.raises(ConfigError, match="pixelcnn models a grid of discrete codes"):
        model.fit_sampler("pixelcnn", images)


def test_a_malformed_sampler_record_is_a_config_error_naming_it(tmp_path):
    model, images = tiny_ae()
    model.fit_sampler("gaussian", images)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["_zoo"]["samplers"]["gaussian"] = "gaussian"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"_zoo.samplers.gaussian must be a sampler record"):
        zoo.load(f"local-dir:{tmp_path / 'm'}")
