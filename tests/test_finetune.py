"""Fine-tuning (``zoo.finetune`` / ``zoo finetune``): adaptation, reset_head, freezing, files, cards, resume.

Every run is a few optimiser steps on digits drawn from the bundled models' priors (fast, no dataset
parsing), with few importance samples for the validation NLL.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
import zoo.finetuning  # importing the module must not shadow the function zoo.finetune
from zoo.cards import front_matter
from zoo.cli import main
from zoo.data import as_data
from zoo.errors import ConfigError, DataError, UnknownNameError
from zoo.finetuning import DEFAULT_LR, finetune
from zoo.folder import FOLDER_FILES
from zoo.training import TrainConfig, Trainer

FAST = {"progress": False, "nll_samples": 2}
CVAE_LABEL_WEIGHTS = ["decoder.net.0.weight", "encoder.trunk.layers.1.weight"]  # the one-hot label's inputs


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """120 digit-like images (1, 28, 28) in [0, 1]: vae-mnist prior samples, seeded."""
    with torch.no_grad():
        return zoo.load("vae-mnist").sample(120, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def rgb_folder(digits: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of the digits as 32x32 RGB PNGs: both size and channels differ from vae-mnist's."""
    folder = tmp_path_factory.mktemp("rgb-digits")
    for i, image in enumerate(digits):
        grey = Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8))
        grey.convert("RGB").resize((32, 32), Image.BILINEAR).save(folder / f"{i:03d}.png")
    return folder


def state(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def test_finetune_is_exported_and_not_shadowed_by_its_module():
    assert zoo.finetune is finetune and callable(zoo.finetune)


def test_image_folder_is_adapted_frozen_encoder_kept_and_both_folders_written(rgb_folder, tmp_path, monkeypatch):
    optimised: set[int] = set()
    fit = Trainer.fit

    def spy(self, *args, **kwargs):
        result = fit(self, *args, **kwargs)
        optimised.update(id(p) for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"])
        return result

    monkeypatch.setattr(Trainer, "fit", spy)
    out = tmp_path / "ft"
    result = zoo.finetune("vae-mnist", rgb_folder, out=out, freeze="encoder", epochs=2, batch_size=32, **FAST)
    parent = zoo.load("vae-mnist")

    for folder in (out, out / "last"):
        assert all((folder / name).is_file() for name in FOLDER_FILES), folder
    loaded = zoo.load(f"local-dir:{out}")
    assert all(torch.equal(v, state(result.model)[k]) for k, v in state(loaded).items())
    assert front_matter(out / "README.md")["base_model"] == "vae-mnist"
    card = (out / "README.md").read_text()
    for said in ("resized 32x32 -> 28x28", "RGB -> grey"):
        assert any(said in note for note in result.adaptations) and said in card
    assert "zoo.finetune('vae-mnist'" in card and "| neg_elbo |" in card and "freeze='encoder'" in card
    assert result.sizes == {"fit": 108, "val": 12} and result.train.steps == 8

    # the frozen encoder is bit for bit the parent's and was never given to the optimiser; the decoder learnt
    assert all(torch.equal(v, state(parent, "encoder.")[k]) for k, v in state(loaded, "encoder.").items())
    assert any(not torch.equal(v, state(parent, "decoder.")[k]) for k, v in state(loaded, "decoder.").items())
    assert result.frozen_parameters == [n for n, _ in parent.encoder.named_parameters(prefix="encoder")]
    assert optimised == {id(p) for p in result.model.decoder.parameters()}
    assert all(p.requires_grad for p in result.model.parameters())  # frozen only while fine-tuning


def test_cvae_with_another_number_of_classes_needs_reset_head(digits, tmp_path):
    labels = torch.arange(len(digits)) % 12
    with pytest.raises(ConfigError) as err:
        zoo.finetune("cvae-mnist", (digits, labels), max_steps=0, **FAST)
    message = str(err.value)
    assert "num_classes: 10 in cvae-mnist, 12 in the data" in message and "reset_head=True" in message
    assert "--reset-head" in message

    parent = state(zoo.load("cvae-mnist"))
    untrained = zoo.finetune("cvae-mnist", (digits, labels), reset_head=True, max_steps=0, **FAST)
    assert untrained.reset_parameters == CVAE_LABEL_WEIGHTS
    assert untrained.model.config.num_classes == 12
    weights = state(untrained.model)
    assert weights["encoder.trunk.layers.1.weight"].shape == (512, 28 * 28 + 12)
    assert all(torch.equal(v, parent[k]) for k, v in weights.items() if k not in CVAE_LABEL_WEIGHTS)

    out = tmp_path / "cvae12"
    trained = zoo.finetune("cvae-mnist", (digits, labels), reset_head=True, max_steps=3, out=out, **FAST)
    loaded = zoo.load(f"local-dir:{out}")
    assert loaded.config.num_classes == 12 and loaded.sample(2, y=11).shape == (2, 1, 28, 28)
    assert trained.train.steps == 3 and "`encoder.trunk.layers.1.weight`" in (out / "README.md").read_text()


class Payload:
    """Unpickling this would create a file: proof that a refused .pt file ran nothing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_npz_and_safetensors_files_and_pt_pickles_refused(digits, tmp_path):
    from safetensors.torch import save_file

    npz = tmp_path / "digits.npz"
    np.savez(npz, x=(digits[:, 0].numpy() * 255).round().astype(np.uint8), y=np.arange(len(digits)) % 10)
    assert as_data(npz, (1, 28, 28)).x.shape == (120, 1, 28, 28)
    result = zoo.finetune("vae-mnist", npz, max_steps=1, **FAST)
    assert result.adaptations == ["uint8 pixels 0-255 scaled to [0, 1] (divided by 255)"]
    assert result.data == f"{npz}: 120 examples of shape (28, 28), uint8, 10 classes"

    tensors = tmp_path / "digits.safetensors"
    save_file({"x": digits.contiguous(), "y": torch.arange(len(digits)) % 10}, str(tensors))
    result = zoo.finetune("cvae-mnist", tensors, max_steps=1, **FAST)
    assert result.adaptations == [] and result.train.steps == 1

    evil, marker = tmp_path / "evil.pt", tmp_path / "executed"
    torch.save({"x": digits, "extra": Payload(marker)}, evil)
    for attempt in (lambda: zoo.finetune("vae-mnist", evil, **FAST), lambda: as_data(evil)):
        with pytest.raises(DataError, match=r"a \.pt file is a pickle, and ae-zoo never unpickles data.*save_file"):
            attempt()
    assert not marker.exists()


def test_lower_default_lr_config_overrides_and_unknown_keys(digits):
    assert TrainConfig().lr > DEFAULT_LR
    with pytest.raises(UnknownNameError, match="Did you mean: epochs"):
        zoo.finetune("vae-mnist", digits, epocs=1)
    parent = zoo.create("beta-vae", hidden_dims=(32,), latent_dim=4)
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        zoo.finetune(parent, digits, config_overrides={"betta": 2.0})

    result = zoo.finetune(parent, digits, beta=2.0, config_overrides={"warmup_steps": 10}, max_steps=0, **FAST)
    assert (result.model.config.beta, result.model.config.warmup_steps) == (2.0, 10)
    assert parent.config.beta == 4.0  # the parent is untouched
    assert result.reset_parameters == [] and all(torch.equal(v, state(parent)[k])
                                                 for k, v in state(result.model).items())
    assert result.base_model is None and "- `lr`: 0.0001" in result.card


def test_resume_continues_to_the_uninterrupted_result(digits, tmp_path):
    settings = {"batch_size": 32, "checkpoint_every": 0, **FAST}
    zoo.finetune("vae-mnist", digits, out=tmp_path / "a", epochs=1, **settings)
    resumed = zoo.finetune("vae-mnist", digits, out=tmp_path / "a", epochs=2, resume=True, **settings)
    straight = zoo.finetune("vae-mnist", digits, out=tmp_path / "b", epochs=2, **settings)
    assert (tmp_path / "a" / "checkpoints" / "trainer-state.safetensors").is_file()
    assert resumed.train.steps == straight.train.steps == 8
    assert all(torch.equal(v, state(straight.model)[k]) for k, v in state(resumed.model).items())


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_finetune(rgb_folder, tmp_path):
    out = tmp_path / "cli"
    argv = ["finetune", "vae-mnist", "--data", str(rgb_folder), "--epochs", "1", "--max-steps", "3", "--out",
            str(out), "--no-progress", "--nll-samples", "2"]
    code, stdout, stderr = run(argv)
    assert code == 0, stderr
    assert all((out / name).is_file() for name in FOLDER_FILES)
    assert "RGB -> grey" in stdout and "validation (12 examples)" in stdout
    card = (out / "README.md").read_text()
    assert front_matter(out / "README.md")["base_model"] == "vae-mnist"
    assert f"zoo finetune vae-mnist --data {rgb_folder}" in card

    code, _, stderr = run(["finetune", "vae-mnist", "--data", str(rgb_folder), "--out", str(out),
                           "--set", "latent_dimm=3"])
    assert code == 2 and "did you mean 'latent_dim'" in stderr


# -- which data is scaled by 255 (issue 14, item 8) -----------------------------------------------------------

def test_float_data_slightly_above_1_is_an_error_naming_the_range() -> None:
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2
    with pytest.raises(DataError) as info:
        zoo.finetune("vae-mnist", x, max_steps=0, **FAST)
    message = str(info.value)
    assert f"pixel values span {float(x.min()):.4g}..{float(x.max()):.4g} (float32, not whole numbers)" in message
    assert "not 8-bit images (integers 0-255)" in message and "[0, 1]" in message


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.int16, torch.float32, torch.float64])
def test_8_bit_images_are_scaled_whatever_their_dtype(dtype: torch.dtype) -> None:
    from zoo.finetuning import adapt_images

    pixels = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    x, notes = adapt_images(pixels.to(dtype), (1, 28, 28))
    assert torch.equal(x, pixels.float() / 255.0)
    assert notes == [f"{str(dtype).removeprefix('torch.')} pixels 0-255 scaled to [0, 1] (divided by 255)"]


def test_data_in_the_unit_range_and_binary_integers_are_kept_as_they_are() -> None:
    from zoo.finetuning import adapt_images

    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(adapt_images(x, (1, 28, 28))[0], x) and adapt_images(x, (1, 28, 28))[1] == []
    binary = (x > 0.5).long()
    assert torch.equal(adapt_images(binary, (1, 28, 28))[0], binary.float())


@pytest.mark.parametrize(("values", "expected"), [
    (torch.full((2, 1, 28, 28), 300.0), "pixel values span 300..300"),
    (torch.full((2, 1, 28, 28), 1000, dtype=torch.int32), "pixel values span 1000..1000"),
    (torch.full((2, 1, 28, 28), -1.0), "pixel values span -1..-1"),
])
def test_values_outside_both_ranges_are_errors(values: torch.Tensor, expected: str) -> None:
    from zoo.finetuning import adapt_images

    with pytest.raises(DataError, match=expected):
        adapt_images(values, (1, 28, 28))
