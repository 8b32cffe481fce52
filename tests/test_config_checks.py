"""Config values are checked against their dataclass annotations and their meaning: a wrong type or an
impossible value is a ConfigError naming the key, the value, what is accepted and an example, never a
torch traceback from inside a layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from zoo_plugins.vae import VAEConfig
from zoo_plugins.vae_gan import VAEGANConfig

import zoo
from zoo.config import config_from_dict, parse_override, replace_config
from zoo.errors import ConfigError
from zoo.training import TrainConfig


@pytest.mark.parametrize(("value", "expected"), [
    ("abc", "latent_dim must be an integer (e.g. latent_dim=16), got 'abc' (text)"),
    ("sixteen", "latent_dim must be an integer (e.g. latent_dim=16), got 'sixteen' (text)"),
    (2.5, "latent_dim must be an integer (e.g. latent_dim=16), got 2.5"),
    (True, "latent_dim must be an integer (e.g. latent_dim=16), got True"),
    (None, "latent_dim must be an integer (e.g. latent_dim=16), got None"),
])
def test_a_value_of_the_wrong_type_names_key_value_type_and_example(value, expected) -> None:
    with pytest.raises(ConfigError) as info:
        zoo.create("vae", latent_dim=value)
    assert expected in str(info.value)


def test_json_numbers_are_coerced_where_meaningful() -> None:
    config = config_from_dict(VAEConfig, {"latent_dim": 8.0, "decoder_std": 1, "hidden_dims": [4]})
    assert config.latent_dim == 8 and type(config.latent_dim) is int
    assert config.decoder_std == 1.0 and type(config.decoder_std) is float
    assert config.hidden_dims == (4,)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("latent_dim", 0, "latent_dim must be at least 1, got 0"),
    ("latent_dim", -4, "latent_dim must be at least 1, got -4"),
    ("input_shape", [1, 28], "input_shape must be a list of 3 integers (e.g. input_shape=[1, 28, 28]), got [1, 28]"),
    ("input_shape", [1, 0, 28], "input_shape[1] must be at least 1, got 0"),
    ("hidden_dims", [512, -1], "hidden_dims[1] must be at least 1, got -1"),
    ("hidden_dims", "512", "hidden_dims must be a list of integers (e.g. hidden_dims=[512, 256]), got '512' (text)"),
    ("decoder_std", float("nan"), "decoder_std must be a finite number"),
    ("likelihood", 3, "likelihood must be text (e.g. likelihood='bernoulli'), got 3"),
])
def test_impossible_values_are_config_errors(key: str, value, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        zoo.create("vae", **{key: value})
    assert expected in str(info.value)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="latent_dim must be at least 1, got 0"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ConfigError, match=r"discriminator_dims\[0\] must be at least 1"):
        VAEGANConfig(discriminator_dims=(0,))
    assert VAEConfig(input_shape=[1, 8, 8]).input_shape == (1, 8, 8)  # a list becomes the declared tuple


@pytest.mark.parametrize("name", ["ae", "overcomplete-ae", "dae", "sae", "cae", "vae", "beta-vae", "cvae", "vae-gan"])
def test_every_builtin_config_checks_its_sizes(name: str) -> None:
    variant = zoo.get_variant(name)
    for key, value in (("latent_dim", 0), ("input_shape", [1, 8]), ("hidden_dims", [0])):
        with pytest.raises(ConfigError, match=key):
            replace_config(variant.tiny_config(), {key: value})


@pytest.mark.parametrize(("text", "expected"), [
    ("hidden_dims=256,128", ("hidden_dims", [256, 128])),
    ("hidden_dims=[256,128]", ("hidden_dims", [256, 128])),
    ("hidden_dims=64", ("hidden_dims", [64])),
    ("input_shape=1,8,8", ("input_shape", [1, 8, 8])),
    ("activation=relu", ("activation", "relu")),
    ("architecture=timm:resnet18", ("architecture", "timm:resnet18")),
    ("likelihood=123", ("likelihood", "123")),  # a text field takes the text as written
    ("latent_dim=8", ("latent_dim", 8)),
    ("latent_dim=abc", ("latent_dim", "abc")),  # left to the type check, which names the key
])
def test_set_values_are_read_by_the_field_type(text: str, expected: tuple) -> None:
    assert parse_override(text, VAEConfig) == expected


def test_a_comma_list_for_a_tuple_field_trains_from_the_cli(tmp_path: Path) -> None:
    from zoo.cli import main

    out = tmp_path / "m"
    assert main(["train", "vae", "--data", "digits", "--max-steps", "2", "--no-progress", "--out", str(out),
                 "--set", "input_shape=1,8,8", "--set", "hidden_dims=16,8", "--set", "latent_dim=2"]) == 0
    assert json.loads((out / "config.json").read_text())["hidden_dims"] == [16, 8]


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("epochs", 0, "epochs must be at least 1, got 0"),
    ("epochs", -1, "epochs must be at least 1, got -1"),
    ("batch_size", 0, "batch_size must be at least 1, got 0"),
    ("batch_size", -5, "batch_size must be at least 1, got -5"),
    ("max_steps", -3, "max_steps must be at least 0, got -3"),  # 0: no step (fine-tuning's untrained baseline)
    ("lr", -1.0, "lr must be at least 0, got -1.0"),  # 0 is allowed: gradients without updates
    ("lr", float("nan"), "lr must be a finite number"),
    ("weight_decay", -0.1, "weight_decay must be at least 0, got -0.1"),
    ("log_every", 0, "log_every must be at least 1, got 0"),
    ("checkpoint_every", -2, "checkpoint_every must be at least 0, got -2"),
    ("seed", -1, "seed must be at least 0, got -1"),
    ("patience", 0, "patience must be at least 1, got 0"),
])
def test_train_settings_are_checked(key: str, value, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        replace_config(TrainConfig(), {key: value})
    assert expected in str(info.value)


def test_a_path_is_accepted_where_text_is_expected(tmp_path: Path) -> None:
    assert replace_config(TrainConfig(), {"checkpoint_dir": tmp_path}).checkpoint_dir == str(tmp_path)


def test_a_word_for_a_number_in_config_json_names_the_file_and_key(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    zoo.create("vae", zoo.get_variant("vae").tiny_config()).save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    data["latent_dim"] = "sixteen"
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        zoo.load(f"local-dir:{folder}")
    assert str(info.value) == (f"{folder / 'config.json'}: latent_dim must be an integer (e.g. latent_dim=16), "
                               f"got 'sixteen' (text)")


def test_integers_beyond_64_bits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"latent_dim must be an integer that fits in 64 bits .*got 2361183241434"):
        zoo.create("vae", latent_dim=2**71)
    with pytest.raises(ConfigError, match="seed must be an integer that fits in 64 bits"):
        replace_config(TrainConfig(), {"seed": 2**70})


@pytest.mark.parametrize("name", ["vae", "beta-vae"])
def test_an_unconditional_vae_refuses_classes(name: str) -> None:
    """num_classes > 0 would make the network conditional while the variant trains and samples without labels."""
    with pytest.raises(ConfigError, match=f"{name} is unconditional: num_classes must be 0, got 3; train the 'cvae'"):
        zoo.create(name, num_classes=3)
