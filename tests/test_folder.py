"""The one folder layout: config.json + model.safetensors + README.md, strict loading, atomic writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import zoo
from zoo.config import CONFIG_VERSION, RESERVED_KEY, config_to_dict
from zoo.errors import CheckpointError, ConfigError, UnknownNameError, ZooError
from zoo.folder import CARD_NAME, CONFIG_NAME, FOLDER_FILES, WEIGHTS_NAME, atomic_write, zoo_version
from zoo.losses import REDUCTION
from zoo.weights import HASH_KEY, weights_digest

REPO = Path(__file__).resolve().parents[1]


def tiny_vae() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create("vae", input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,))


def images(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = tiny_vae()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    return model, folder


def edit_config(folder: Path, change) -> None:
    path = folder / CONFIG_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# -- what save_pretrained writes ----------------------------------------------------------------

def test_save_writes_exactly_the_three_files(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == sorted(FOLDER_FILES)
    assert sorted(FOLDER_FILES) == ["README.md", "config.json", "model.safetensors"]


def test_config_json_has_reserved_block_and_variant_config(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    data = json.loads((folder / CONFIG_NAME).read_text())
    meta = data.pop(RESERVED_KEY)
    assert meta == {"variant": "vae", "config_version": CONFIG_VERSION, "zoo_version": zoo_version(),
                    "loss_reduction": REDUCTION, HASH_KEY: weights_digest(model.state_dict())}
    assert meta["zoo_version"] == zoo.__version__
    assert meta["loss_reduction"] == "sum-per-example/mean-batch"
    assert data == config_to_dict(model.config)
    assert data["input_shape"] == [1, 8, 8] and data["latent_dim"] == 2 and data["hidden_dims"] == [16]


def test_readme_has_hub_front_matter(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    text = (folder / CARD_NAME).read_text()
    assert text.startswith("---\n")
    front, sep, body = text[4:].partition("\n---\n")
    assert sep, "front matter is not closed by a '---' line"
    assert "library_name: ae-zoo" in front.splitlines()
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "ae-zoo"
    assert "vae" in meta["tags"]
    assert 'zoo.load("local-dir:PATH")' in body


def test_no_temporary_files_left_after_repeated_saves(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    model.save_pretrained(folder)
    model.save_pretrained(folder, card="# card\n")
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(FOLDER_FILES)
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


# -- round trip ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["vae", "beta-vae", "ae", "dae", "cvae"])
def test_round_trip_is_bit_for_bit_after_training(tmp_path: Path, variant: str) -> None:
    torch.manual_seed(0)
    v = zoo.get_variant(variant)
    model = zoo.create(variant, v.tiny_config())
    x = images(48)
    data = (x, torch.arange(48) % model.config.num_classes) if v.conditional else x
    result = zoo.train(model, data, epochs=1, batch_size=16, lr=1e-2, progress=False, device="cpu")
    assert result.steps == 3
    model.save_pretrained(tmp_path / variant)

    loaded = zoo.load(f"local-dir:{tmp_path / variant}")
    assert type(loaded) is type(model)
    assert loaded.variant_name == variant
    assert loaded.config == model.config
    assert loaded.training is False
    assert loaded.pretrained_info == {"source": "local-dir", "path": str(tmp_path / variant)}
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(original)
    for key, value in original.items():
        assert restored[key].dtype == value.dtype, key
        assert torch.equal(restored[key], value), f"{key} changed in the round trip"
    model.eval()
    y = torch.arange(4) % model.config.num_classes if v.conditional else None
    with torch.no_grad():
        assert torch.equal(loaded(x[:4], y), model(x[:4], y))


def test_trained_weights_differ_from_a_fresh_model(tmp_path: Path) -> None:
    # guards the round-trip test against comparing two untouched initialisations
    model = tiny_vae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zoo.train(model, images(32), epochs=1, batch_size=16, lr=1e-2, progress=False, device="cpu")
    model.save_pretrained(tmp_path / "m")
    loaded = zoo.load(f"local-dir:{tmp_path / 'm'}")
    assert not all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())


# -- safetensors only ---------------------------------------------------------------------------

def test_weights_file_is_real_safetensors(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        assert set(f.keys()) == set(model.state_dict())
        assert f.metadata() == {"format": "pt", "variant": "vae", HASH_KEY: weights_digest(model.state_dict())}
        for key, value in model.state_dict().items():
            assert torch.equal(f.get_tensor(key), value)


def test_no_pickle_anywhere_in_the_package() -> None:
    patterns = [re.compile(r"\btorch\.load\s*\("),
                re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|cloudpickle|joblib)\b", re.M),
                re.compile(r"\bpickle\.(load|loads|Unpickler)\b"),
                re.compile(r"\bweights_only\s*=\s*False\b")]
    files = sorted((REPO / "zoo").rglob("*.py")) + sorted((REPO / "plugins").rglob("*.py"))
    assert len(files) >= 10, files
    offenders = [f"{path.relative_to(REPO)}: {pattern.pattern}"
                 for path in files for pattern in patterns if pattern.search(path.read_text())]
    assert offenders == []


# -- loading errors -----------------------------------------------------------------------------

def test_missing_weights_lists_missing_and_found(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    message = str(info.value)
    assert str(folder) in message
    assert "missing model.safetensors" in message
    assert "found: README.md, config.json" in message


def test_missing_config_and_missing_folder(tmp_path: Path, saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    (folder / CONFIG_NAME).unlink()
    found = r"missing config\.json \(found: README\.md, model\.safetensors\)"
    with pytest.raises(CheckpointError, match=found):
        zoo.load(f"local-dir:{folder}")
    with pytest.raises(CheckpointError, match=r"missing config\.json, model\.safetensors \(found: nothing\)"):
        zoo.load(f"local-dir:{tmp_path / 'does-not-exist'}")


def test_truncated_weights_name_the_file(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    weights = folder / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert str(weights) in str(info.value)
    assert "corrupt or truncated" in str(info.value)


@pytest.mark.parametrize("content", [b"this is not a safetensors file\n" * 40, b"", b"\x00" * 7])
def test_garbage_weights_name_the_file(saved: tuple[torch.nn.Module, Path], content: bytes) -> None:
    _, folder = saved
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert str(weights) in str(info.value)
    assert "corrupt or truncated" in str(info.value)
    assert isinstance(info.value, OSError) and isinstance(info.value, ZooError)


def test_unknown_config_key_names_key_and_file(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    edit_config(folder, lambda d: d.update(latnet_dim=3))
    with pytest.raises(ConfigError) as info:
        zoo.load(f"local-dir:{folder}")
    message = str(info.value)
    assert str(folder / CONFIG_NAME) in message
    assert "'latnet_dim'" in message
    assert "did you mean 'latent_dim'" in message


def test_unknown_variant_suggests_close_names(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    edit_config(folder, lambda d: d[RESERVED_KEY].update(variant="vea"))
    with pytest.raises(LookupError) as info:
        zoo.load(f"local-dir:{folder}")
    assert isinstance(info.value, UnknownNameError)
    assert "vae" in info.value.close_matches
    assert "unknown variant 'vea'" in str(info.value)
    assert "Did you mean: vae" in str(info.value)


def test_config_that_is_not_json(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    (folder / CONFIG_NAME).write_text('{"_zoo": {"variant": "vae"},')
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert str(folder / CONFIG_NAME) in str(info.value)
    assert "not valid JSON" in str(info.value)


@pytest.mark.parametrize("drop", ["block", "variant", "list"])
def test_config_without_zoo_block_was_not_written_by_ae_zoo(saved: tuple[torch.nn.Module, Path],
                                                           drop: str) -> None:
    _, folder = saved
    path = folder / CONFIG_NAME
    data = json.loads(path.read_text())
    if drop == "block":
        del data[RESERVED_KEY]
    elif drop == "variant":
        del data[RESERVED_KEY]["variant"]
    else:
        data = [data]
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert str(path) in str(info.value)
    assert "not written by ae-zoo" in str(info.value)


def test_newer_config_version_says_upgrade(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    edit_config(folder, lambda d: d[RESERVED_KEY].update(config_version=CONFIG_VERSION + 1))
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert f"config_version {CONFIG_VERSION + 1}" in str(info.value)
    assert "upgrade ae-zoo" in str(info.value)


def _rewrite_weights(folder: Path, change) -> Path:
    path = folder / WEIGHTS_NAME
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def test_weights_with_a_missing_key(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    path = _rewrite_weights(folder, lambda s: s.pop("decoder.net.2.bias"))
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert str(path) in str(info.value)
    assert "missing keys: decoder.net.2.bias" in str(info.value)
    assert "unexpected" not in str(info.value)


def test_weights_with_an_unexpected_key(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    _rewrite_weights(folder, lambda s: s.update({"encoder.extra.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.extra\.weight") as info:
        zoo.load(f"local-dir:{folder}")
    assert "missing keys" not in str(info.value)


def test_weights_with_a_wrong_shape_name_both_shapes(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    key = "encoder.head.weight"
    expected = tuple(model.state_dict()[key].shape)
    assert expected == (4, 16)
    _rewrite_weights(folder, lambda s: s.update({key: torch.zeros(6, 16)}))
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert f"{key}: checkpoint shape (6, 16) != model shape (4, 16)" in str(info.value)


def test_weights_of_another_config_fail_strictly(tmp_path: Path, saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    other = zoo.create("vae", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,))
    other.save_pretrained(tmp_path / "other")
    (folder / WEIGHTS_NAME).write_bytes((tmp_path / "other" / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    message = str(info.value)
    assert "encoder.head.weight: checkpoint shape (6, 16) != model shape (4, 16)" in message
    assert "decoder.net.0.weight: checkpoint shape (16, 3) != model shape (16, 2)" in message


def test_path_without_prefix_points_to_local_dir(saved: tuple[torch.nn.Module, Path]) -> None:
    _, folder = saved
    with pytest.raises(UnknownNameError) as info:
        zoo.load(str(folder))
    assert f"zoo.load('local-dir:{folder}')" in str(info.value)


# -- atomic writes ------------------------------------------------------------------------------

def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old content")
    seen: list[Path] = []

    def broken(tmp: Path) -> None:
        seen.append(tmp)
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
            f.flush()
        raise RuntimeError("disk full halfway")

    with pytest.raises(RuntimeError, match="disk full halfway"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old content"
    assert seen and seen[0] != target and seen[0].parent == target.parent
    assert not seen[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_atomic_write_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    atomic_write(target, lambda p: p.write_text("one"))
    atomic_write(target, lambda p: p.write_text("two"))
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_failed_weight_save_leaves_previous_folder_loadable(saved: tuple[torch.nn.Module, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    model, folder = saved
    old_weights = (folder / WEIGHTS_NAME).read_bytes()
    import safetensors.torch

    def crash(module: torch.nn.Module, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", crash)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="no space left"):
        model.save_pretrained(folder)
    assert (folder / WEIGHTS_NAME).read_bytes() == old_weights
    assert sorted(p.name for p in folder.iterdir()) == sorted(FOLDER_FILES)
    monkeypatch.undo()
    loaded = zoo.load(f"local-dir:{folder}")
    assert torch.equal(loaded.state_dict()["encoder.head.bias"], tiny_vae().state_dict()["encoder.head.bias"])


# -- the model card -----------------------------------------------------------------------------

def test_existing_readme_is_kept_unless_card_given(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    (folder / CARD_NAME).write_text("# my own card\n")
    model.save_pretrained(folder)
    assert (folder / CARD_NAME).read_text() == "# my own card\n"
    model.save_pretrained(folder, card="---\nlibrary_name: ae-zoo\n---\n# new card\n")
    assert (folder / CARD_NAME).read_text() == "---\nlibrary_name: ae-zoo\n---\n# new card\n"


# -- dtype and device ---------------------------------------------------------------------------

def test_bfloat16_load(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    loaded = zoo.load(f"local-dir:{folder}", dtype=torch.bfloat16)
    dtypes = {p.dtype for p in loaded.parameters()}
    assert dtypes == {torch.bfloat16}
    assert loaded.training is False
    x = images(16, seed=1)
    with torch.no_grad():
        reference = model.eval()(x)
        low = loaded(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, atol=3e-2, rtol=3e-2)
    assert not torch.equal(low.float(), reference)  # it really ran in bf16


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_explicit_cpu_device(saved: tuple[torch.nn.Module, Path], device: str | torch.device) -> None:
    model, folder = saved
    loaded = zoo.load(f"local-dir:{folder}", device=device)
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_load(saved: tuple[torch.nn.Module, Path]) -> None:
    model, folder = saved
    loaded = zoo.load(f"local-dir:{folder}", device="cuda")
    assert {p.device.type for p in loaded.parameters()} == {"cuda"}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key].cpu(), value)
