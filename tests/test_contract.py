"""The model contract every tool relies on: spatial latents end to end, posterior kinds, capabilities,
variant metrics, parameter groups, freezing any module, and ``from_pretrained``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from zoo_plugins.autoencoders import Autoencoder
from zoo_plugins.cvae import CVAEConfig, CVAEVariant
from zoo_plugins.vae import VAEConfig, VAEModel, VAEVariant

import zoo
from zoo.data import TensorData, load_dataset
from zoo.distributions import PointMass, Posterior, as_posterior
from zoo.errors import ConfigError, UnknownNameError
from zoo.evaluation import evaluate, skipped
from zoo.metrics import active_units, importance_sampled_nll, log_importance_weights, reconstruction_gain
from zoo.model import ZooModel
from zoo.testing import VariantConformance
from zoo.training import TrainConfig
from zoo.variant import make_adam

SPATIAL = {"architecture": "conv", "hidden_dims": (8, 16), "latent_channels": 3}


class SpatialVAEVariant(VAEVariant):
    name = "spatial-vae-test"

    def tiny_config(self) -> VAEConfig:
        return VAEConfig(input_shape=(1, 8, 8), **SPATIAL)


class SpatialCVAEVariant(CVAEVariant):
    name = "spatial-cvae-test"

    def tiny_config(self) -> CVAEConfig:
        return CVAEConfig(input_shape=(1, 8, 8), num_classes=3, **SPATIAL)


class _Plugin:
    @zoo.hookimpl
    def zoo_register_variants(self, register: Any) -> None:
        register(SpatialVAEVariant())
        register(SpatialCVAEVariant())


@pytest.fixture(scope="module", autouse=True)
def spatial_plugin() -> Iterator[None]:
    zoo.register_plugin(_Plugin(), name="spatial-test-plugin")
    yield
    zoo.unregister_plugin("spatial-test-plugin")


class TestSpatialVAE(VariantConformance):
    @pytest.fixture(params=["spatial-vae-test", "spatial-cvae-test"])
    def variant(self, request: pytest.FixtureRequest) -> zoo.Variant:
        return zoo.get_variant(request.param)


# -- spatial latents ------------------------------------------------------------------------------


def test_a_conv_vae_with_latent_channels_has_a_spatial_latent_at_the_trunks_resolution() -> None:
    model = zoo.create("vae", architecture="conv", hidden_dims=(32, 64), latent_channels=4)
    assert model.latent_shape == (4, 7, 7)
    x = torch.rand(5, 1, 28, 28)
    posterior = model.encode(x)
    assert posterior.mean.shape == posterior.logvar.shape == (5, 4, 7, 7)
    assert model.decode(posterior.mode()).shape == x.shape
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
    with pytest.raises(ConfigError, match="needs architecture='conv'"):
        zoo.create("vae", latent_channels=4)


def test_spatial_kl_log_prob_and_importance_weights_match_torch_distributions() -> None:
    torch.manual_seed(0)
    model = zoo.create("spatial-vae-test", SpatialVAEVariant().tiny_config()).eval()
    x = torch.rand(4, 1, 8, 8)
    posterior = model.encode(x)
    q = Normal(posterior.mean.double(), posterior.stddev.double())
    torch.testing.assert_close(posterior.kl().double(), kl_divergence(q, Normal(0.0, 1.0)), rtol=1e-5, atol=1e-6)
    z = posterior.sample(2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(posterior.log_prob(z).double(), q.log_prob(z.double()).sum((-3, -2, -1)),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.prior_log_prob(z).double(), Normal(0.0, 1.0).log_prob(z.double()).sum(
        (-3, -2, -1)), rtol=1e-6, atol=1e-5)
    log_w = log_importance_weights(model, x, None, 3, generator=torch.Generator().manual_seed(2))
    z = posterior.sample(3, generator=torch.Generator().manual_seed(2))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.decode_logits(z), x.expand(3, -1, -1, -1, -1),
                                                               reduction="none").sum((-3, -2, -1))
    expected = -bce.double() + Normal(0.0, 1.0).log_prob(z.double()).sum((-3, -2, -1)) - q.log_prob(
        z.double()).sum((-3, -2, -1))
    torch.testing.assert_close(log_w, expected, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def trained_spatial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TensorData]:
    """A 4x7x7-latent conv VAE trained briefly on MNIST, saved and loaded back."""
    torch.manual_seed(0)
    model = zoo.create("vae", architecture="conv", hidden_dims=(16, 32), latent_channels=4)
    zoo.train(model, "mnist", epochs=1, max_steps=30, progress=False)
    folder = tmp_path_factory.mktemp("spatial") / "vae-4x7x7"
    model.save_pretrained(folder)
    return folder, load_dataset("mnist", "test")


def test_spatial_vae_evaluates_and_reports_per_channel(trained_spatial: tuple[Path, TensorData],
                                                       tmp_path: Path) -> None:
    from zoo.cli import main

    folder, test = trained_spatial
    out = tmp_path / "report"
    assert main(["eval", str(folder), "--data", "mnist", "--nll-samples", "5", "--report", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "reconstructions.png", "samples.png", "interpolation-linear.png", "interpolation-slerp.png",
            "traversals.png", "latent-scatter.png", "latent-bars.png"} <= files
    assert "manifold.png" not in files  # a 2-D manifold needs a flat 2-D latent
    text = (out / "report.md").read_text()
    assert "## Per channel" in text and "A unit is a channel of the 4x7x7 latent" in text
    assert "discrete" not in text
    assert "traversals of one channel per row at grid position (3, 3)" in text
    rows = re.findall(r"^\| (\d+) \| ([-\d.]+) \| ([-\d.]+) \| (yes)? \| [-\d.]+ \| (?:yes)? \| ([-\d.]+) \|$", text,
                      flags=re.M)
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    model = zoo.load(f"local-dir:{folder}")
    gain = reconstruction_gain(model, test)
    units = active_units(model, test)
    assert units["unit"] == gain["unit"] == "channel" and units["units"] == 4
    for (_, kl, g, _, var), kl_ref, g_ref, var_ref in zip(rows, gain["kl_per_latent"], gain["gain"],
                                                          units["mean_variance"], strict=True):
        assert abs(float(kl) - kl_ref) < 1e-3 and abs(float(g) - g_ref) < 1e-3 and abs(float(var) - var_ref) < 1e-4
    metrics = evaluate(model, test, nll_samples=5)
    # per-channel KL (summed over the 49 positions) adds up to the KL of the ELBO
    assert sum(units["kl_per_latent"]) == pytest.approx(metrics["kl"], rel=1e-4)


def test_spatial_vae_fine_tunes_with_a_frozen_encoder(trained_spatial: tuple[Path, TensorData],
                                                      tmp_path: Path) -> None:
    folder, test = trained_spatial
    parent = zoo.load(f"local-dir:{folder}")
    result = zoo.finetune(f"local-dir:{folder}", (test.x[:200], test.y[:200]), out=tmp_path / "ft",
                          freeze="encoder", epochs=1, batch_size=50, progress=False, nll_samples=5)
    tuned = result.model.state_dict()
    for key, value in parent.state_dict().items():
        assert torch.equal(tuned[key], value) == key.startswith("encoder."), key
    assert zoo.load(f"local-dir:{tmp_path / 'ft'}").latent_shape == (4, 7, 7)


def test_traversal_of_a_spatial_latent_moves_one_channel_at_one_position(trained_spatial, monkeypatch) -> None:
    from zoo.pictures import traversals

    folder, test = trained_spatial
    model = zoo.load(f"local-dir:{folder}")
    seen: list[torch.Tensor] = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda z, y=None: seen.append(z.clone()) or decode(z, y))
    images, order = traversals(model, test.x[0], dims=[1, 3], steps=3, span=1.0, position=(2, 5))
    assert images.shape == (6, 1, 28, 28) and sorted(order) == [1, 3]
    z = seen[0].reshape(2, 3, 4, 7, 7)
    base = model.encode(test.x[:1]).mode()[0]
    for row, channel in enumerate(order):
        moved = torch.zeros(4, 7, 7, dtype=torch.bool)
        moved[channel, 2, 5] = True
        for step, value in enumerate((-1.0, 0.0, 1.0)):
            assert torch.equal(z[row, step][~moved], base[~moved])
            assert float(z[row, step, channel, 2, 5]) == pytest.approx(value)
    with pytest.raises(ValueError, match="not on the 7x7 code grid"):
        traversals(model, test.x[0], position=(7, 0))


# -- posterior kinds and capabilities ------------------------------------------------------------------


def test_posterior_kinds_answer_the_same_questions() -> None:
    code = torch.randn(3, 5)
    point = as_posterior(code)
    assert isinstance(point, PointMass) and isinstance(point, Posterior) and not point.has_density
    assert torch.equal(point.mode(), code) and point.latent_shape == (5,) and point.shape == (3, 5)
    assert point.sample(2).shape == (2, 3, 5) and torch.equal(point.sample(2)[1], code)
    with pytest.raises(NotImplementedError, match="PointMass has no closed-form KL"):
        point.kl()
    with pytest.raises(NotImplementedError, match="PointMass has no density"):
        point.sample_and_log_prob()
    with pytest.raises(TypeError, match="must return a zoo.distributions.Posterior"):
        as_posterior([1, 2])
    assert isinstance(zoo.load("ae-mnist").encode(torch.rand(2, 1, 28, 28)), PointMass)


def test_declared_capabilities_of_the_built_ins() -> None:
    declared = {name: (v.variational, v.has_likelihood, v.generative, v.conditional)
                for name in zoo.list_variants() if not name.endswith("-test")
                for v in [zoo.get_variant(name)]}
    assert declared["vae"] == declared["beta-vae"] == declared["vae-gan"] == (True, True, True, False)
    assert declared["cvae"] == (True, True, True, True)
    assert declared["ae"] == declared["sae"] == (False, True, False, False)
    assert declared["vq-vae"] == (False, True, False, False)


def test_evaluate_takes_a_dataset_name_as_its_test_split() -> None:
    """A name means its test split and switches on that dataset's extras (a generative model on digits: the
    sample-quality numbers), as ``dataset=`` does."""
    torch.manual_seed(0)
    model = zoo.create("vae", hidden_dims=(32,), latent_dim=2)
    by_name = zoo.evaluate(model, "mnist", nll_samples=10)
    assert by_name == evaluate(model, load_dataset("mnist", "test"), dataset="mnist", nll_samples=10)
    assert {"nll", "fcd", "confidence"} <= set(by_name)


def test_evaluation_says_what_it_skipped_and_why() -> None:
    notes = skipped(zoo.load("ae-mnist"), "mnist")
    assert notes == [
        "negative ELBO, importance-sampled NLL, active units, per-latent KL: skipped, variant `ae` does not declare "
        "`variational` (has a posterior density and a prior density).",
        "prior samples and sample quality: skipped, variant `ae` does not declare `generative` (samples from a "
        "prior)."]
    assert skipped(zoo.load("vae-mnist"), "mnist") == []
    with pytest.raises(ConfigError, match="the importance-sampled NLL needs a model that has a posterior density"):
        importance_sampled_nll(zoo.load("ae-mnist"), load_dataset("digits", "test"))


class CodeNormVariant(VAEVariant):
    name = "code-norm-vae-test"
    metric_names = {"code_norm": "mean norm of the posterior means"}

    def metrics(self, model: torch.nn.Module, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        return {"code_norm": float(model.encode(data.x).mode().norm(dim=1).mean())}


class ClashingVariant(VAEVariant):
    name = "clashing-vae-test"
    metric_names = {"kl": "a second KL"}

    def metrics(self, model: torch.nn.Module, data: TensorData, *, seed: int = 0) -> dict[str, float]:
        return {"kl": 0.0}


def test_variant_metrics_reach_evaluation_and_card(tmp_path: Path) -> None:
    from zoo.cards import checkpoint_card

    class Plugin:
        @zoo.hookimpl
        def zoo_register_variants(self, register: Any) -> None:
            register(CodeNormVariant())
            register(ClashingVariant())

    zoo.register_plugin(Plugin(), name="metric-test-plugin")
    try:
        torch.manual_seed(0)
        data = TensorData(torch.rand(20, 1, 8, 8))
        model = zoo.create("code-norm-vae-test", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(8,))
        metrics = evaluate(model, data, nll_samples=2)
        with torch.no_grad():
            expected = float(model.encode(data.x).mean.norm(dim=1).mean())
        assert metrics["code_norm"] == pytest.approx(expected) and "neg_elbo" in metrics
        card = checkpoint_card(model, name="x", summary="", dataset="digits", dataset_label="d", metrics=metrics,
                               training={}, make_command="", eval_command="")
        assert "| mean norm of the posterior means |" in card
        clash = zoo.create("clashing-vae-test", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(8,))
        with pytest.raises(ConfigError, match="returns metric.* kl from metrics\\(\\), which the zoo already reports"):
            evaluate(clash, data, nll_samples=0)
    finally:
        zoo.unregister_plugin("metric-test-plugin")


# -- optimisers and freezing ---------------------------------------------------------------------


def test_make_adam_takes_parameter_groups_and_leaves_frozen_ones_out() -> None:
    model = zoo.create("vae", input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,))
    model.encoder.head.weight.requires_grad_(False)
    optimizer = make_adam([{"params": model.encoder.parameters()},
                           {"params": model.decoder.parameters(), "lr": 5e-5, "weight_decay": 0.1}],
                          TrainConfig(lr=1e-3))
    (encoder, decoder) = optimizer.param_groups
    assert encoder["lr"] == 1e-3 and decoder["lr"] == 5e-5 and decoder["weight_decay"] == 0.1
    assert all(p is not model.encoder.head.weight for p in encoder["params"])
    assert len(decoder["params"]) == len(list(model.decoder.parameters()))
    model.decoder.requires_grad_(False)
    only_encoder = make_adam([{"params": model.encoder.parameters()}, {"params": model.decoder.parameters()}],
                             TrainConfig())
    assert len(only_encoder.param_groups) == 1
    with pytest.raises(ConfigError, match="not a mix"):
        make_adam([next(model.parameters()), {"params": []}], TrainConfig())


def test_freeze_takes_any_top_level_module_or_a_list(tmp_path: Path) -> None:
    digits = load_dataset("digits", "train")
    vq = zoo.create("vq-vae", input_shape=(1, 8, 8), hidden_dims=(8, 16), embedding_dim=4, num_embeddings=8)
    result = zoo.finetune(vq, digits, freeze="encoder,codebook", epochs=1, batch_size=64, progress=False,
                          nll_samples=0)
    tuned = result.model
    assert torch.equal(tuned.codebook.weight, vq.codebook.weight)
    assert all(torch.equal(a, b) for a, b in zip(tuned.encoder.parameters(), vq.encoder.parameters(), strict=True))
    assert not torch.equal(tuned.decoder.net[0].weight, vq.decoder.net[0].weight)
    assert set(result.frozen_parameters) == {n for n, _ in vq.named_parameters() if not n.startswith("decoder.")}
    with pytest.raises(UnknownNameError) as err:
        zoo.finetune(vq, digits, freeze=["encoder", "codebok"], epochs=1, progress=False)
    message = str(err.value)
    assert message.startswith("unknown module 'codebok'. Did you mean: codebook")
    assert "Known modules: codebook, decoder, encoder. freeze takes the top-level modules of a VQVAEModel" in message


# -- from_pretrained ---------------------------------------------------------------------------------


def test_from_pretrained_takes_checkpoint_names_folders_and_refuses_another_class(tmp_path: Path) -> None:
    vae = VAEModel.from_pretrained("vae-mnist")
    assert isinstance(vae, VAEModel) and not vae.training and vae.pretrained_info["source"] == "bundled"
    assert isinstance(zoo.from_pretrained("ae-mnist"), Autoencoder)
    assert isinstance(ZooModel.from_pretrained("ae-mnist"), Autoencoder)  # the base class takes any model
    folder = tmp_path / "ae"
    zoo.load("ae-mnist").save_pretrained(folder)
    assert isinstance(Autoencoder.from_pretrained(folder, dtype=torch.float64), Autoencoder)
    with pytest.raises(ConfigError) as err:
        VAEModel.from_pretrained(str(folder))
    assert str(err.value).startswith(f"{folder} holds a model of class Autoencoder (variant 'ae'), not of class "
                                     f"VAEModel: load it with zoo.load(...) or Autoencoder.from_pretrained(...)")
    with pytest.raises(UnknownNameError, match="Did you mean: vae-mnist"):
        VAEModel.from_pretrained("vae-mnst")


# -- messages ------------------------------------------------------------------------------------------


def test_a_checkpoint_whose_bundled_folder_is_missing_says_so(tmp_path: Path, capsys) -> None:
    from zoo.cli import main

    class Plugin:
        @zoo.hookimpl
        def zoo_register_checkpoints(self, register: Any) -> None:
            register(zoo.CheckpointRef(name="not-made-yet", variant="vae", folder=tmp_path / "not-made-yet"))

    zoo.register_plugin(Plugin(), name="missing-folder-plugin")
    try:
        with pytest.raises(zoo.errors.CheckpointError) as err:
            zoo.load("not-made-yet")
        message = str(err.value)
        assert "plugin 'missing-folder-plugin'" in message and "missing" in message
        assert "names no Hub repo" in message and "zoo fetch" not in message
        assert main(["list", "not-made-yet"]) == 0
        line = next(line for line in capsys.readouterr().out.splitlines() if "not-made-yet" in line)
        assert "bundled folder missing" in line and "on the Hub" not in line
    finally:
        zoo.unregister_plugin("missing-folder-plugin")


def test_plugin_failure_warning_names_its_origin_once(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    class Broken:
        @zoo.hookimpl
        def zoo_register_variants(self, register: Any) -> None:
            raise RuntimeError("boom")

    monkeypatch.delenv("ZOO_STRICT_PLUGINS", raising=False)
    zoo.register_plugin(Broken(), name="broken-origin-plugin")
    try:
        messages = [r.getMessage() for r in caplog.records if "broken-origin-plugin" in r.getMessage()]
        assert messages == ["zoo plugin 'broken-origin-plugin' (registered in process) failed to load: "
                            "RuntimeError: boom"]
    finally:
        zoo.unregister_plugin("broken-origin-plugin")
