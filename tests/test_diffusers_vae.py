"""The autoencoders of latent diffusion, wrapped from diffusers: folders diffusers wrote load through local-dir:
and a real Hub server (standalone, a pipeline repo's vae/, fp16 variant files) with outputs bit-identical to
diffusers called directly; export back to diffusers; latent scaling; the training loss and the discriminator's
adaptive weight; fine-tuning on crops with a frozen encoder; image-quality numbers; life without the extra."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, VQModel
from PIL import Image
from safetensors.torch import save_file
from zoo_plugins.diffusers_vae import (
    AutoencoderKLConfig,
    AutoencoderKLVariant,
    FeatureDistance,
    KLModel,
    adaptive_weight,
    diffusers_kwargs,
    likelihood_nll,
)

import zoo
from zoo.config import replace_config
from zoo.crops import ImageCrops, read_images
from zoo.errors import CheckpointError
from zoo.hub import HubUnavailableError

FAMILIES = {"autoencoder-kl": AutoencoderKL, "autoencoder-tiny": AutoencoderTiny, "vq-model": VQModel}
ROOT = Path(__file__).resolve().parents[1]


def tiny_net(name: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A randomly initialised diffusers model of the variant's tiny config, made by diffusers itself."""
    config = replace_config(zoo.get_variant(name).tiny_config(), overrides) if overrides else (
        zoo.get_variant(name).tiny_config())
    torch.manual_seed(seed)
    return FAMILIES[name](**diffusers_kwargs(config)).eval()


def images(n: int = 3, channels: int = 1, size: int = 8, seed: int = 1) -> torch.Tensor:
    """Images in [-1, 1], as diffusers' models take them."""
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def assert_same_as_diffusers(model: torch.nn.Module, net: torch.nn.Module, x: torch.Tensor) -> None:
    """encode and decode of the zoo model are diffusers' own, bit for bit."""
    assert model.image_range == (-1.0, 1.0)
    posterior = model.encode(x)
    if isinstance(net, AutoencoderKL):
        dist = net.encode(x).latent_dist
        assert torch.equal(posterior.mean, dist.mean) and torch.equal(posterior.logvar, dist.logvar)
        z = dist.mean
    elif isinstance(net, AutoencoderTiny):
        z = net.encode(x).latents
        assert torch.equal(posterior.mode(), z)
    else:
        encoded = net.encode(x).latents
        assert torch.equal(posterior.encoded, encoded)
        quantized, _, (_, _, indices) = net.quantize(encoded)
        assert torch.equal(posterior.indices.reshape(-1), indices)
        torch.testing.assert_close(posterior.quantized, quantized, rtol=0, atol=1e-6)  # diffusers adds z + (q - z)
        z = encoded
    assert torch.equal(model.decode(z), net.decode(z).sample)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_folder_diffusers_saved_loads_with_its_outputs_bit_for_bit(name: str, tmp_path: Path) -> None:
    net = tiny_net(name)
    net.save_pretrained(tmp_path / "folder")
    model = zoo.load(f"local-dir:{tmp_path / 'folder'}")
    assert model.variant_name == name and not model.training
    assert_same_as_diffusers(model, net, images())
    state, reference = model.state_dict(), net.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


@pytest.mark.parametrize("name", FAMILIES)
def test_export_to_diffusers_reloads_with_diffusers_bit_for_bit(name: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = zoo.create(name, zoo.get_variant(name).tiny_config()).eval()
    model.save_pretrained(tmp_path / "out", format="diffusers")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors",
                                                               "README.md"}
    net = FAMILIES[name].from_pretrained(tmp_path / "out").eval()
    state, exported = model.state_dict(), net.state_dict()
    assert state.keys() == exported.keys() and all(torch.equal(state[k], exported[k]) for k in state)
    assert_same_as_diffusers(model, net, images())
    with pytest.raises(zoo.errors.ConfigError, match="saves as 'zoo' or 'diffusers', not 'onnx'"):
        model.save_pretrained(tmp_path / "x", format="onnx")


def test_the_cli_exports_a_zoo_folder_with_its_card(tmp_path: Path, capsys) -> None:
    from zoo.cli import main

    torch.manual_seed(0)
    model = zoo.create("autoencoder-tiny", zoo.get_variant("autoencoder-tiny").tiny_config())
    model.save_pretrained(tmp_path / "zoo", card="---\nbase_model: madebyollin/taesd\n---\n\n# fine-tuned\n")
    assert main(["export", str(tmp_path / "zoo"), "--format", "diffusers", "--out", str(tmp_path / "out")]) == 0
    assert "in diffusers's layout" in capsys.readouterr().out
    assert "base_model: madebyollin/taesd" in (tmp_path / "out" / "README.md").read_text()
    assert AutoencoderTiny.from_pretrained(tmp_path / "out") is not None


def test_weight_variants_and_pickles(tmp_path: Path) -> None:
    net = tiny_net("autoencoder-kl")
    only_fp16 = tmp_path / "fp16"
    net.half().save_pretrained(only_fp16, variant="fp16")
    assert {p.name for p in only_fp16.iterdir()} == {"config.json", "diffusion_pytorch_model.fp16.safetensors"}
    model = zoo.load(f"local-dir:{only_fp16}")  # the one variant file there is
    assert next(model.parameters()).dtype == torch.float32
    reference = AutoencoderKL.from_pretrained(only_fp16, variant="fp16", torch_dtype=torch.float32).eval()
    assert_same_as_diffusers(model, reference, images())
    both = tmp_path / "both"
    tiny_net("autoencoder-kl").save_pretrained(both)
    net.save_pretrained(both, variant="fp16")
    assert next(zoo.load(f"local-dir:{both}").parameters()).dtype == torch.float32
    with pytest.raises(CheckpointError, match="has no diffusion_pytorch_model.bf16.safetensors"):
        zoo.load(f"local-dir:{both}", weights_variant="bf16")
    pickled = tmp_path / "pickled"
    tiny_net("autoencoder-kl").save_pretrained(pickled, safe_serialization=False)
    assert (pickled / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(CheckpointError, match=r"only pickled weights \(diffusion_pytorch_model.bin\): ae-zoo never "
                                              r"unpickles.*use_safetensors=False"):
        zoo.load(f"local-dir:{pickled}")


@pytest.mark.parametrize("name", FAMILIES)
def test_each_config_has_every_argument_of_the_installed_diffusers_class(name: str) -> None:
    import inspect

    from zoo_plugins.diffusers_vae import TrainingSettings

    takes = set(inspect.signature(FAMILIES[name].__init__).parameters) - {"self"}
    own = {f.name for f in dataclasses.fields(TrainingSettings)}
    fields = {f.name for f in dataclasses.fields(zoo.get_variant(name).config_class)} - own
    assert takes <= fields, f"diffusers {FAMILIES[name].__name__} takes {sorted(takes - fields)} the zoo lacks"
    assert set(diffusers_kwargs(zoo.get_variant(name).tiny_config())) == takes


def test_a_diffusers_key_the_zoo_does_not_know_is_refused_and_a_foreign_one_ignored(tmp_path: Path) -> None:
    tiny_net("autoencoder-kl").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "made_up_by_a_newer_tool": 1}))
    assert zoo.load(f"local-dir:{tmp_path}").variant_name == "autoencoder-kl"
    older = OlderKLVariant()  # an ae-zoo from before diffusers' mid_block_add_attention
    with pytest.raises(zoo.errors.ConfigError, match="takes mid_block_add_attention, which this ae-zoo's"):
        older.config_from_diffusers(config, source="x")


class OlderKLVariant(AutoencoderKLVariant):
    config_class = dataclasses.make_dataclass("OlderKLConfig", [
        (f.name, f.type, f) for f in dataclasses.fields(AutoencoderKLConfig) if f.name != "mid_block_add_attention"])


def test_a_diffusers_class_no_variant_wraps_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "_diffusers_version": "0.42"}))
    with pytest.raises(zoo.errors.UnknownNameError, match="unknown diffusers class 'UNet2DModel'.*AutoencoderKL"):
        zoo.load(f"local-dir:{tmp_path}")


def test_the_full_sd1_vae_configuration_runs_a_64x64_image() -> None:
    sd1 = {"in_channels": 3, "out_channels": 3, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
           "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
           "latent_channels": 4, "sample_size": 512}
    torch.manual_seed(0)
    model = zoo.create("autoencoder-kl", **sd1).eval()
    assert sum(p.numel() for p in model.parameters()) == 83_653_863  # the SD 1.x VAE's size
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        z = model.encode(x).mode()
        out = model.decode(z)
    assert z.shape == (1, 4, 8, 8) and out.shape == x.shape and torch.isfinite(out).all()


# -- the Hub: standalone repos, a pipeline's vae/ folder, fp16 variant files, pickles --------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_hub_repos_in_diffusers_layout(name: str, olah, tmp_path: Path) -> None:
    net = tiny_net(name, seed=5)
    cls = FAMILIES[name].__name__
    standalone = tmp_path / "standalone"
    net.save_pretrained(standalone)
    repo = olah.repo(f"org/tiny-{cls}")
    sha = repo.commit_folder(standalone)
    model = zoo.load(f"hf-hub:org/tiny-{cls}")
    assert model.pretrained_info["revision"] == sha and model.pretrained_info["repo_id"] == f"org/tiny-{cls}"
    assert_same_as_diffusers(model, net, images())
    # a pipeline repo: the autoencoder in vae/, next to other components
    pipeline = olah.repo(f"org/tiny-pipeline-{cls}")
    pipeline.commit({"model_index.json": json.dumps({"_class_name": "StableDiffusionPipeline"}),
                     "unet/config.json": json.dumps({"_class_name": "UNet2DConditionModel"}),
                     "vae/config.json": standalone / "config.json",
                     "vae/diffusion_pytorch_model.safetensors": standalone / "diffusion_pytorch_model.safetensors"})
    assert_same_as_diffusers(zoo.load(f"hf-hub:org/tiny-pipeline-{cls}", subfolder="vae"), net, images())
    by_name = zoo.load(f"hf-hub:org/tiny-pipeline-{cls}/vae")
    assert by_name.pretrained_info["subfolder"] == "vae"
    assert_same_as_diffusers(by_name, net, images())
    with pytest.raises(HubUnavailableError, match="the repo has no config.json .*ORG/NAME/vae"):
        zoo.load(f"hf-hub:org/tiny-pipeline-{cls}")
    # only an fp16 variant file
    fp16 = tmp_path / "fp16"
    copy.deepcopy(net).half().save_pretrained(fp16, variant="fp16")
    olah.repo(f"org/tiny-{cls}-fp16").commit_folder(fp16)
    reference = FAMILIES[name].from_pretrained(fp16, variant="fp16", torch_dtype=torch.float32).eval()
    assert_same_as_diffusers(zoo.load(f"hf-hub:org/tiny-{cls}-fp16"), reference, images())
    # a cached fp16 file is not taken for the plain weights it was not asked for
    with pytest.raises(HubUnavailableError, match="holds only the fp16 weights .*weights_variant='fp16'"):
        zoo.load(f"hf-hub:org/tiny-{cls}-fp16", local_files_only=True)
    assert_same_as_diffusers(zoo.load(f"hf-hub:org/tiny-{cls}-fp16", weights_variant="fp16", local_files_only=True),
                             reference, images())
    both = tmp_path / "both"
    net.save_pretrained(both)
    copy.deepcopy(net).half().save_pretrained(both, variant="fp16")
    olah.repo(f"org/tiny-{cls}-both").commit_folder(both)
    zoo.load(f"hf-hub:org/tiny-{cls}-both", weights_variant="fp16")  # the fp16 file alone comes into the cache
    assert_same_as_diffusers(zoo.load(f"hf-hub:org/tiny-{cls}-both"), net, images())  # then the plain weights
    # cached now: offline it loads with no request
    assert_same_as_diffusers(zoo.load(f"hf-hub:org/tiny-pipeline-{cls}/vae", local_files_only=True), net, images())


def test_a_hub_repo_with_only_pickled_weights_is_refused_without_downloading_them(olah, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    tiny_net("autoencoder-kl").save_pretrained(pickled, safe_serialization=False)
    olah.repo("org/tiny-kl-pickled").commit_folder(pickled)
    with pytest.raises(HubUnavailableError, match="only pickled weights .*never unpickles"):
        zoo.load("hf-hub:org/tiny-kl-pickled")
    cache = Path(os.environ["HF_HOME"]) / "hub" / "models--org--tiny-kl-pickled"
    assert not list(cache.rglob("*.bin"))


# -- latents for a diffusion model ----------------------------------------------------------------------------


def test_latent_scaling_follows_the_pipelines_formulas() -> None:
    z = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sd = zoo.create("autoencoder-kl", zoo.get_variant("autoencoder-kl").tiny_config())
    torch.testing.assert_close(sd.to_diffusion_latent(z), z * 0.18215)  # StableDiffusionPipeline
    flux = zoo.create("autoencoder-kl", replace_config(sd.config, {"scaling_factor": 0.3611, "shift_factor": 0.1159}))
    torch.testing.assert_close(flux.to_diffusion_latent(z), (z - 0.1159) * 0.3611)  # FluxPipeline
    stats = zoo.create("autoencoder-kl", replace_config(sd.config, {"latents_mean": (0.5, -1.0),
                                                                    "latents_std": (2.0, 4.0)}))
    mean, std = torch.tensor([0.5, -1.0]).view(2, 1, 1), torch.tensor([2.0, 4.0]).view(2, 1, 1)
    torch.testing.assert_close(stats.to_diffusion_latent(z), (z - mean) * 0.18215 / std)  # SDXL-style statistics
    for model in (sd, flux, stats):
        torch.testing.assert_close(model.from_diffusion_latent(model.to_diffusion_latent(z)), z)
    taesd = zoo.create("autoencoder-tiny", zoo.get_variant("autoencoder-tiny").tiny_config())
    torch.testing.assert_close(taesd.latent_to_image(z), (z / 6 + 0.5).clamp(0, 1))
    torch.testing.assert_close(taesd.latent_from_image(taesd.latent_to_image(z.clamp(-2, 2))), z.clamp(-2, 2))


def test_fit_scaling_factor_gives_unit_variance_latents_and_eval_reports_them() -> None:
    torch.manual_seed(0)
    model = zoo.create("autoencoder-kl", zoo.get_variant("autoencoder-kl").tiny_config()).eval()
    x = torch.rand(40, 1, 8, 8)
    factor = model.fit_scaling_factor(x)
    with torch.no_grad():
        latent = model.to_diffusion_latent(model.encode(x * 2 - 1).mode())
    assert float(latent.pow(2).mean()) == pytest.approx(1.0, rel=1e-4) and factor == model.config.scaling_factor
    metrics = zoo.evaluate(model, zoo.data.TensorData(x), nll_samples=0)
    for c in range(2):
        channel = latent[:, c].double()
        assert metrics[f"latent_mean_{c}"] == pytest.approx(float(channel.mean()), abs=1e-5)
        assert metrics[f"latent_std_{c}"] == pytest.approx(float(channel.std(correction=0)), rel=1e-4)


def test_image_range_switch_takes_zero_one_images() -> None:
    torch.manual_seed(0)
    native = zoo.create("autoencoder-kl", zoo.get_variant("autoencoder-kl").tiny_config()).eval()
    unit = zoo.create("autoencoder-kl", replace_config(native.config, {"image_range": (0.0, 1.0)})).eval()
    unit.load_state_dict(native.state_dict())
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(unit.encode(x).mode(), native.encode(x * 2 - 1).mode())
        torch.testing.assert_close(unit(x), (native(x * 2 - 1) + 1) / 2)


# -- the loss --------------------------------------------------------------------------------------------------


def test_likelihoods_are_laplace_and_gaussian_densities() -> None:
    x, mean = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    laplace = torch.distributions.Laplace(mean, 1.0).log_prob(x).sum((1, 2, 3))
    gauss = torch.distributions.Normal(mean, 1.0).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(likelihood_nll(mean, x, "l1"), -laplace)
    torch.testing.assert_close(likelihood_nll(mean, x, "l2"), -gauss)


def test_kl_loss_terms_match_diffusers_posterior() -> None:
    torch.manual_seed(0)
    model = zoo.create("autoencoder-kl", zoo.get_variant("autoencoder-kl").tiny_config(), kl_weight=0.25).eval()
    x = torch.rand(3, 1, 8, 8)
    out = zoo.get_variant("autoencoder-kl").loss(model, x)
    with torch.no_grad():
        dist = model.net.encode(x * 2 - 1).latent_dist
        kl = dist.kl().mean()
        recon = (model.net.decode(dist.mean).sample - (x * 2 - 1)).abs().sum((1, 2, 3)).mean() + 64 * np.log(2)
    torch.testing.assert_close(out.terms["kl"], kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["reconstruction"], recon.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.total, out.terms["reconstruction"] + 0.25 * kl, rtol=1e-5, atol=1e-4)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer() -> None:
    layer = torch.nn.Parameter(torch.randn(4, 3))
    x = torch.randn(5, 3)
    rec, gen = (x @ layer.T).pow(2).sum(), -(x @ layer.T).sum()
    expected = torch.autograd.grad(rec, layer, retain_graph=True)[0].norm() / (
        torch.autograd.grad(gen, layer, retain_graph=True)[0].norm() + 1e-4)
    torch.testing.assert_close(adaptive_weight(rec, gen, layer), expected)


def test_the_discriminator_learns_only_its_own_loss_and_starts_at_disc_start() -> None:
    variant = zoo.get_variant("autoencoder-kl")
    config = replace_config(variant.tiny_config(), {"sample_size": 24, "disc_weight": 0.5, "disc_start": 1,
                                                    "disc_layers": 2, "disc_channels": 8})
    torch.manual_seed(0)
    model = zoo.create("autoencoder-kl", config).train()
    optimizers = variant.configure_optimizers(model, zoo.TrainConfig(lr=1e-2))
    x = torch.rand(4, 1, 24, 24)
    disc_before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    terms = variant.train_step(model, x, optimizers, step=0)  # before disc_start
    assert float(terms["discriminator"]) == 0.0 and float(terms["generator"]) == 0.0
    assert all(torch.equal(v, model.discriminator.state_dict()[k]) for k, v in disc_before.items())
    # from disc_start on: capture the gradients each optimiser steps with
    seen: dict[str, dict[str, torch.Tensor]] = {}
    for name, optimizer in optimizers.items():
        optimizer.register_step_pre_hook(lambda opt, args, kwargs, name=name: seen.__setitem__(
            name, {id(p): p.grad.clone() for g in opt.param_groups for p in g["params"] if p.grad is not None}))
    torch.manual_seed(1)
    terms = variant.train_step(model, x, optimizers, step=1)
    assert float(terms["discriminator"]) > 0 and float(terms["adaptive_weight"]) > 0
    disc_params = list(model.discriminator.parameters())
    assert {id(p) for p in disc_params} == set(seen["discriminator"])
    assert not set(seen["model"]) & {id(p) for p in disc_params}


def test_feature_distance_and_a_distance_callable_as_perceptual_terms() -> None:
    import timm

    torch.manual_seed(0)
    distance = FeatureDistance(timm.create_model("resnet18", pretrained=False, features_only=True))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(distance(x, x), torch.zeros(2))
    assert (distance(x, x.flip(-1)) > 0).all()
    model = zoo.create("autoencoder-kl", replace_config(zoo.get_variant("autoencoder-kl").tiny_config(),
                                                        {"perceptual_weight": 0.5}))
    calls = []

    def lpips_like(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # LPIPS's signature: (B, 1, 1, 1)
        calls.append(a.shape)
        return (a - b).abs().mean((1, 2, 3), keepdim=True)

    model.set_perceptual_network(lpips_like)
    out = zoo.get_variant("autoencoder-kl").loss(model, torch.rand(3, 1, 8, 8))
    assert calls == [(3, 1, 8, 8)] and "perceptual" in out.terms


# -- fine-tuning -------------------------------------------------------------------------------------------------


def photos(folder: Path, count: int, seed: int) -> Path:
    """RGB images of different sizes with smooth structure (stripes and gradients)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        h, w = rng.integers(24, 40, size=2)
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([(np.sin(xx / (2 + i % 4)) + 1) * 127, (np.cos(yy / (2 + i % 3)) + 1) * 127,
                          np.full((h, w), 40 * (i % 6))], -1).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
    return folder


def test_fine_tuning_on_crops_with_a_frozen_encoder(tmp_path: Path) -> None:
    train, held_out = photos(tmp_path / "train", 16, seed=0), photos(tmp_path / "held-out", 6, seed=1)
    config = replace_config(zoo.get_variant("autoencoder-kl").tiny_config(),
                            {"in_channels": 3, "out_channels": 3, "sample_size": 16})
    torch.manual_seed(0)
    parent = zoo.create("autoencoder-kl", config)
    result = zoo.finetune(parent, train, crop_size=16, freeze="encoder,quant_conv", epochs=6, batch_size=4,
                          lr=3e-3, patience=None, progress=False, nll_samples=0, out=tmp_path / "out")
    tuned = result.model
    for name, value in parent.state_dict().items():
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(tuned.state_dict()[name], value), name
    assert any(not torch.equal(tuned.state_dict()[k], v) for k, v in parent.state_dict().items()
               if k.startswith("decoder."))
    _, validation, _ = read_images(held_out, 3, 16)
    crops = ImageCrops(validation, 16, random=False)
    before, after = zoo.evaluate(parent, crops, nll_samples=0), zoo.evaluate(tuned, crops, nll_samples=0)
    assert after["reconstruction"] < before["reconstruction"] and after["psnr"] > before["psnr"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "random 16x16 crops for training" in card and "Frozen: encoder, quant_conv" in card
    assert zoo.load(f"local-dir:{tmp_path / 'out'}").latent_shape == tuned.latent_shape


def test_switching_on_a_discriminator_adds_it_without_reset_head(tmp_path: Path) -> None:
    config = replace_config(zoo.get_variant("autoencoder-kl").tiny_config(),
                            {"in_channels": 3, "out_channels": 3, "sample_size": 24})
    torch.manual_seed(0)
    parent = zoo.create("autoencoder-kl", config)
    result = zoo.finetune(parent, photos(tmp_path / "p", 8, seed=2), crop_size=24, disc_weight=0.1,
                          disc_layers=2, disc_channels=8, epochs=1, batch_size=4, progress=False, nll_samples=0)
    assert result.added_parameters and all(n.startswith("discriminator.") for n in result.added_parameters)
    assert not result.reset_parameters
    assert "New (not in the parent, initialised fresh):" in result.card and "`discriminator`" in result.card


# -- image quality -------------------------------------------------------------------------------------------------


class Identity(KLModel):
    """Reconstructs its input exactly (for the image-quality numbers)."""

    def forward(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        return x


def test_psnr_ssim_and_a_frechet_distance_with_a_supplied_network() -> None:
    from zoo.image_quality import reconstruction_frechet_distance, reconstruction_quality

    config = zoo.get_variant("autoencoder-kl").tiny_config()
    model = Identity(config)
    model.variant_name = "autoencoder-kl"
    data = zoo.data.TensorData(torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    perfect = reconstruction_quality(model, data)
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["psnr"] > 100
    noisy = zoo.create("autoencoder-kl", config).eval()
    quality = reconstruction_quality(noisy, data)
    with torch.no_grad():
        recon = ((noisy(data.x * 2 - 1) + 1) / 2).clamp(0, 1)
    mse = (recon - data.x).pow(2).flatten(1).mean(1)
    assert quality["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-5)
    assert quality["ssim"] < 1
    features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    torch.manual_seed(0)
    same = reconstruction_frechet_distance(model, data, features)
    assert same["frechet_distance"] == pytest.approx(0.0, abs=1e-9) and same["feature_network"] == "Sequential"
    assert reconstruction_frechet_distance(noisy, data, features)["frechet_distance"] > 0


# -- without the extra -----------------------------------------------------------------------------------------------

HIDE_DIFFUSERS = """
import importlib.abc, json, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Hide())
import zoo
from zoo.cli import main
assert main(["list", "autoencoder-*"]) == 0
try:
    zoo.create("autoencoder-kl")
except zoo.errors.MissingDependencyError as err:
    print("ERROR", err)
try:
    zoo.load("local-dir:" + sys.argv[1])
except zoo.errors.MissingDependencyError as err:
    print("ERROR", err)
print("IMPORTED", "diffusers" in sys.modules)
"""


def test_without_diffusers_the_variants_are_listed_and_say_what_to_install(tmp_path: Path) -> None:
    tiny_net("autoencoder-kl").save_pretrained(tmp_path / "kl")
    run = subprocess.run([sys.executable, "-c", HIDE_DIFFUSERS, str(tmp_path / "kl")], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "ZOO_STRICT_PLUGINS": "1"})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    listed = [line for line in lines if line.strip().startswith("autoencoder-kl ")]
    assert listed and "(needs diffusers: pip install 'ae-zoo[diffusers]')" in listed[0]
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(errors) == 2 and all("pip install 'ae-zoo[diffusers]'" in e for e in errors)
    assert lines[-1] == "IMPORTED False"


def test_discovery_does_not_import_diffusers() -> None:
    code = "import sys, zoo; zoo.list_variants(); print('diffusers' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr


def test_bf16_training_with_a_discriminator_and_diffusers_memory_savers() -> None:
    config = replace_config(zoo.get_variant("autoencoder-kl").tiny_config(),
                            {"sample_size": 24, "disc_weight": 0.5, "disc_start": 1, "disc_layers": 2,
                             "disc_channels": 8, "gradient_checkpointing": True, "tiling": True, "slicing": True})
    torch.manual_seed(0)
    model = zoo.create("autoencoder-kl", config)
    assert model.net.use_tiling and model.net.use_slicing and model.net.decoder.gradient_checkpointing
    convs: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: convs.add(out.dtype))
    data = torch.rand(16, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    result = zoo.train(model, data, precision="bf16", max_steps=4, batch_size=8, progress=False)
    assert torch.bfloat16 in convs and {p.dtype for p in model.parameters()} == {torch.float32}
    assert result.steps == 4 and all(np.isfinite(v) for v in result.history[-1].values())
    assert result.history[-1]["discriminator"] > 0  # on from step 1


def test_bundled_kl_f4_mnist_evaluates_in_the_zoo_and_exports_to_diffusers(tmp_path: Path) -> None:
    from zoo.cli import main

    model = zoo.load("kl-f4-mnist")
    assert model.latent_shape == (4, 7, 7) and model.image_range == (-1.0, 1.0)
    out, digits = tmp_path / "report", tmp_path / "digits.safetensors"
    # 10 test digits of each class: a quick report (the card test checks the card's numbers on all of them)
    save_file({"x": zoo.data.load_dataset("mnist", "test").x[::10].contiguous()}, digits)
    assert main(["eval", "kl-f4-mnist", "--data", str(digits), "--nll-samples", "0", "--elbo-samples", "1",
                 "--report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| `psnr` |" in text and "| `latent_std_0` |" in text and "## Per channel" in text
    assert {"reconstructions.png", "traversals.png", "interpolation-slerp.png"} <= {p.name for p in out.iterdir()}
    model.save_pretrained(tmp_path / "diffusers", format="diffusers")
    net = AutoencoderKL.from_pretrained(tmp_path / "diffusers").eval()
    assert net.config.scaling_factor == model.config.scaling_factor != 0.18215  # fitted, and exported
    x = zoo.data.load_dataset("mnist", "test").x[:4] * 2 - 1
    assert_same_as_diffusers(model, net, x)
