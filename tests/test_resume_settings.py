"""Settings given to a resumed run: each is applied, kept from the checkpoint or refused, never silently
ignored, and the card and the checkpoint's train_config say what the run really used."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from safetensors import safe_open
from test_cli import TINY, run
from test_cli_errors import one_line_error

import zoo
from zoo.checkpointing import STATE_NAME
from zoo.errors import ConfigError

FIRST = ["train", "vae", "--data", "digits", "--no-progress", *TINY, "--epochs", "2", "--batch-size", "64",
         "--lr", "0.002", "--max-steps", "10", "--checkpoint-every", "5"]
RESUME = ["train", "vae", "--data", "digits", "--no-progress", *TINY, "--resume"]


def checkpoint_meta(out: Path) -> dict:
    with safe_open(str(out / "checkpoints" / STATE_NAME), framework="pt") as f:
        return json.loads(f.metadata()["json"])


def card_training(out: Path) -> str:
    return (out / "README.md").read_text()


@pytest.fixture
def interrupted(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    code, _, stderr = run([*FIRST, "--out", str(out)])
    assert code == 0, stderr
    assert checkpoint_meta(out)["state"]["step"] == 10
    return out


def test_a_new_lr_applies_from_the_resume_step_and_the_card_says_so(interrupted: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        code, _, stderr = run([*RESUME, "--out", str(interrupted), "--lr", "0.5"])
    assert code == 0, stderr
    meta = checkpoint_meta(interrupted)
    assert meta["state"]["step"] == 46  # both epochs: 23 steps each
    assert meta["train_config"]["lr"] == 0.5
    assert {g["lr"] for opt in meta["optimizers"].values() for g in opt["param_groups"]} == {0.5}
    assert "lr changed on resume at step 10: 0.002 -> 0.5" in caplog.text
    card = card_training(interrupted)
    assert "`lr`: 0.5" in card and "resumed at step 10 (lr 0.002 -> 0.5)" in card


def test_settings_left_out_on_resume_are_the_checkpoints(interrupted: Path) -> None:
    code, _, stderr = run([*RESUME, "--out", str(interrupted)])
    assert code == 0, stderr
    meta = checkpoint_meta(interrupted)
    assert meta["train_config"]["lr"] == 0.002 and meta["train_config"]["batch_size"] == 64
    assert meta["train_config"]["epochs"] == 2 and meta["state"]["step"] == 46
    assert {g["lr"] for opt in meta["optimizers"].values() for g in opt["param_groups"]} == {0.002}
    card = card_training(interrupted)
    assert "`lr`: 0.002" in card and "`batch_size`: 64" in card and "`epochs`: 2" in card
    assert "resumed at step 10" in card


@pytest.mark.parametrize(("option", "value", "saved"), [("--batch-size", "32", "64"), ("--seed", "7", "0")])
def test_settings_that_fix_the_data_order_must_match(interrupted: Path, option: str, value: str, saved: str) -> None:
    before = (interrupted / "checkpoints" / STATE_NAME).read_bytes()
    message = one_line_error(*run([*RESUME, "--out", str(interrupted), option, value]))
    key = option[2:].replace("-", "_")
    assert f"{key}={value} differs from the checkpoint's {key}={saved}" in message
    assert "resume with the same value (or leave it out), or start a new run in another folder" in message
    assert (interrupted / "checkpoints" / STATE_NAME).read_bytes() == before


def test_the_python_api_applies_and_refuses_the_same_way(tmp_path: Path, caplog) -> None:
    settings = dict(batch_size=64, seed=3, progress=False, device="cpu", checkpoint_dir=str(tmp_path))
    model = zoo.create("vae", zoo.get_variant("vae").tiny_config())
    zoo.train(model, "digits", epochs=2, lr=1e-3, max_steps=10, checkpoint_every=5, **settings)
    with pytest.raises(ConfigError, match="batch_size=32 differs from the checkpoint's batch_size=64"):
        zoo.Trainer(model, **{**settings, "batch_size": 32}).fit("digits", resume=True)
    trainer = zoo.Trainer(model, epochs=2, lr=0.01, weight_decay=0.1, **settings)
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        result = trainer.fit("digits", resume=True)
    assert result.resumed_from == 10
    assert result.resume_changes == {"lr": (0.001, 0.01), "weight_decay": (0.0, 0.1)}
    (optimizer,) = trainer.optimizers.values()
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["weight_decay"] == 0.1
    assert "weight_decay changed on resume at step 10: 0.0 -> 0.1" in caplog.text
