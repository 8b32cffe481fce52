"""A model folder loads as one complete save or not at all: the weights carry a content hash checked on
load, config.json records the hash of the weights it was saved with, the variant in config.json must be
the one the weights were saved from, and readers racing a writer never pair two saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_cli import run

import zoo
from zoo.config import RESERVED_KEY
from zoo.errors import CheckpointError, ConfigError
from zoo.folder import CONFIG_NAME, WEIGHTS_NAME
from zoo.hub import HubUnavailableError
from zoo.weights import HASH_KEY, weights_digest

REPO = Path(__file__).resolve().parents[1]


def tiny_vae(seed: int = 0, **config) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.create("vae", **{"input_shape": (1, 8, 8), "latent_dim": 2, "hidden_dims": (16,), **config})


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model, folder = tiny_vae(), tmp_path / "model"
    model.save_pretrained(folder)
    return model, folder


def edit_config(folder: Path, change) -> None:
    data = json.loads((folder / CONFIG_NAME).read_text())
    change(data)
    (folder / CONFIG_NAME).write_text(json.dumps(data))


# -- the content hash (item 5) ---------------------------------------------------------------------

def test_the_hash_is_recorded_in_the_weights_and_in_config_json(saved) -> None:
    model, folder = saved
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        recorded = f.metadata()[HASH_KEY]
    assert recorded == weights_digest(model.state_dict()) == weights_digest(load_file(str(folder / WEIGHTS_NAME)))
    assert json.loads((folder / CONFIG_NAME).read_text())[RESERVED_KEY][HASH_KEY] == recorded
    assert len(recorded) == 64 and int(recorded, 16) >= 0  # sha256, hex


def test_the_hash_sees_every_value_name_and_shape() -> None:
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    base = weights_digest(state)
    assert weights_digest({"b": state["b"], "a": state["a"]}) == base  # key order does not matter
    assert weights_digest({**state, "a": state["a"].reshape(3, 2)}) != base
    assert weights_digest({"A": state["a"], "b": state["b"]}) != base
    assert weights_digest({**state, "a": state["a"].double()}) != base
    flipped = state["a"].clone()
    flipped.view(torch.int32)[1, 1] ^= 1  # one bit of one value
    assert weights_digest({**state, "a": flipped}) != base


def test_random_bytes_over_the_middle_of_the_weights_are_refused(saved) -> None:
    _, folder = saved
    path = folder / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    middle = header + (len(data) - header) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])  # size and header intact
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    message = str(info.value)
    assert f"{path} is corrupt: its content hash" in message and "does not match the one recorded" in message


def test_foreign_weights_without_a_hash_get_a_finiteness_check(saved) -> None:
    model, folder = saved
    path = folder / WEIGHTS_NAME
    state = load_file(str(path))
    save_file(state, str(path), metadata={"format": "pt"})  # written by another tool: no hash
    edit_config(folder, lambda d: d[RESERVED_KEY].pop(HASH_KEY))
    loaded = zoo.load(f"local-dir:{folder}")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    state["decoder.net.0.weight"][0, 0] = float("nan")
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"non-finite values \(NaN or inf\) in decoder\.net\.0\.weight"):
        zoo.load(f"local-dir:{folder}")


def test_eval_refuses_to_print_nan_metrics(tmp_path: Path) -> None:
    model = tiny_vae()
    with torch.no_grad():
        model.decoder.net[0].weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan")  # a diverged model, saved as it is: its hash is valid
    code, stdout, stderr = run(["eval", str(tmp_path / "nan"), "--data", "digits", "--nll-samples", "0"])
    assert code == 2 and "nan" not in stdout.lower(), stdout
    assert stderr.startswith("zoo: error: the evaluation of ") and "gave non-finite metrics" in stderr
    assert len(stderr.strip().splitlines()) == 1


# -- config and weights agree (items 2 and 6) --------------------------------------------------------

@pytest.mark.parametrize("claimed", ["beta-vae", "cvae"])
def test_a_config_naming_another_variant_than_the_weights_is_refused(saved, claimed: str) -> None:
    _, folder = saved
    edit_config(folder, lambda d: d[RESERVED_KEY].update(variant=claimed))
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert (f"{folder / CONFIG_NAME} names variant {claimed!r} but {folder / WEIGHTS_NAME} was saved from a 'vae' "
            f"model: config and weights disagree") in str(info.value)


def test_weights_of_another_save_with_the_same_shapes_are_refused(tmp_path: Path, saved) -> None:
    _, folder = saved
    tiny_vae(seed=1).save_pretrained(tmp_path / "other")
    (folder / WEIGHTS_NAME).write_bytes((tmp_path / "other" / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError, match="config.json and model.safetensors come from different saves"):
        zoo.load(f"local-dir:{folder}")


RACE = """
import sys, time, torch, zoo
from zoo.errors import CheckpointError

folder, role, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)

def model(seed, std):
    torch.manual_seed(seed)
    return zoo.create("vae", input_shape=(1, 28, 28), latent_dim=4, hidden_dims=(256,), decoder_std=std)

saves = {0.1: model(0, 0.1), 0.2: model(1, 0.2)}
if role == "writer":
    for i in range(count):
        saves[(0.1, 0.2)[i % 2]].save_pretrained(folder)
    print("saved", count)
else:
    expected = {std: m.state_dict() for std, m in saves.items()}
    ok = torn = refused = 0
    for _ in range(count):
        try:
            loaded = zoo.load("local-dir:" + folder)
        except CheckpointError as err:
            refused += 1
            continue
        state = expected[loaded.config.decoder_std]
        if all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items()):
            ok += 1
        else:
            torn += 1
    print("ok", ok, "torn", torn, "refused", refused)
"""


def test_readers_racing_a_writer_never_pair_two_saves(tmp_path: Path) -> None:
    folder = tmp_path / "race"
    script = tmp_path / "race.py"
    script.write_text(RACE)
    torch.manual_seed(0)  # the writer's first save, so that the readers find a folder from the start
    first = zoo.create("vae", input_shape=(1, 28, 28), latent_dim=4, hidden_dims=(256,), decoder_std=0.1)
    first.save_pretrained(folder)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(folder), role, count], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for role, count in (("writer", "250"), ("reader", "80"), ("reader", "80"))]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    counts = [dict(zip(out.split()[::2], map(int, out.split()[1::2]), strict=True)) for out, _ in outputs[1:]]
    assert sum(c["torn"] for c in counts) == 0, counts
    assert sum(c["ok"] for c in counts) > 0, counts


# -- what a folder can be instead (traceback items) ------------------------------------------------------

def test_weights_that_are_a_link_to_a_device_are_named_as_such(saved) -> None:
    _, folder = saved
    (folder / WEIGHTS_NAME).unlink()
    (folder / WEIGHTS_NAME).symlink_to("/dev/zero")
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    message = str(info.value)
    assert f"{folder / WEIGHTS_NAME} is not a regular file (it resolves to /dev/zero)" in message
    assert "missing" not in message


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "pytorch_model.bin", "model.ckpt"])
def test_a_pickle_file_given_as_a_folder_is_refused_with_the_conversion(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{path}")
    message = str(info.value)
    assert f"{path} is a file, and a {path.suffix} file is a pickle: ae-zoo never unpickles" in message
    assert "`torch.load` and weights_only=True" in message and "model.save_pretrained('FOLDER')" in message


def test_a_weights_file_given_as_a_folder_names_its_folder(saved) -> None:
    _, folder = saved
    with pytest.raises(CheckpointError, match=rf"local-dir: takes the folder that holds it: local-dir:{folder}"):
        zoo.load(f"local-dir:{folder / WEIGHTS_NAME}")


@pytest.mark.parametrize("variant", [None, "", 3, ["vae"]])
def test_a_variant_entry_that_is_not_a_name(saved, variant) -> None:
    _, folder = saved
    edit_config(folder, lambda d: d[RESERVED_KEY].update(variant=variant))
    with pytest.raises(CheckpointError, match=r"_zoo\.variant must be the name of a variant \(e\.g\. \"vae\"\), got"):
        zoo.load(f"local-dir:{folder}")


@pytest.mark.parametrize("name", ["hf-hub:../etc", "hf-hub:org/na--me", "hf-hub:org/.hidden", "hf-hub:a b/c"])
def test_a_hub_id_the_hub_refuses_is_a_checkpoint_error(name: str) -> None:
    with pytest.raises(CheckpointError) as info:
        zoo.load(name)
    assert not isinstance(info.value, HubUnavailableError)
    assert f"{name[7:]!r} is not a valid Hub repo id" in str(info.value)


def test_bundled_checkpoints_record_their_hash() -> None:
    for name in zoo.list_checkpoints():
        folder = zoo.get_checkpoint(name).folder
        with safe_open(str(Path(folder) / WEIGHTS_NAME), framework="pt") as f:
            recorded = f.metadata().get(HASH_KEY)
        assert recorded and json.loads((Path(folder) / CONFIG_NAME).read_text())[RESERVED_KEY][HASH_KEY] == recorded
        assert recorded == weights_digest(load_file(str(Path(folder) / WEIGHTS_NAME))), name


def test_the_example_plugin_card_records_its_hash() -> None:
    folder = REPO / "examples" / "zoo-wae" / "zoo_wae" / "cards" / "wae-digits"
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        recorded = f.metadata().get(HASH_KEY)
    assert recorded == weights_digest(load_file(str(folder / WEIGHTS_NAME)))
    assert json.loads((folder / CONFIG_NAME).read_text())[RESERVED_KEY][HASH_KEY] == recorded


def test_a_renamed_config_error_is_not_a_config_error_about_keys(saved) -> None:
    """A folder whose config names another variant fails on the disagreement, before the other variant's
    config checks run (a cvae config built from vae settings would complain about num_classes)."""
    _, folder = saved
    edit_config(folder, lambda d: d[RESERVED_KEY].update(variant="cvae"))
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"local-dir:{folder}")
    assert not isinstance(info.value, ConfigError)
    assert "num_classes" not in str(info.value)

