"""Checkpoints and resume: nothing is lost when a run is killed, and the resumed run ends where an
uninterrupted one does, bit for bit (same machine, same software, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import zoo
from zoo.checkpointing import STATE_NAME
from zoo.data import load_dataset
from zoo.errors import CheckpointError
from zoo.outputs import LOCK_NAME, TEMPORARY

SETTINGS = dict(batch_size=64, lr=1e-3, seed=3, progress=False, device="cpu", max_shift=1)


def tiny_vae() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create("vae", input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    digits, val = load_dataset("digits", "train"), load_dataset("digits", "test")
    straight = tiny_vae()
    full = zoo.train(straight, digits, val_data=val, epochs=3, **SETTINGS)

    first = tiny_vae()
    cut = zoo.train(first, digits, val_data=val, epochs=3, max_steps=30, checkpoint_dir=str(tmp_path),
                    checkpoint_every=10, **SETTINGS)
    assert cut.steps == 30 < full.steps  # 23 steps per epoch: stopped inside the second epoch
    resumed_model = tiny_vae()  # a fresh process would start from scratch weights too
    resumed = zoo.Trainer(resumed_model, epochs=3, checkpoint_dir=str(tmp_path), checkpoint_every=10,
                          **SETTINGS).fit(digits, val, resume=True)
    assert resumed.steps == full.steps
    assert_same(weights(straight), weights(resumed_model))
    assert resumed.history == full.history and resumed.val_history == full.val_history
    assert resumed.best_epoch == full.best_epoch


def test_checkpoint_holds_optimiser_state_and_rng_as_safetensors(tmp_path):
    model = tiny_vae()
    zoo.train(model, load_dataset("digits", "train"), epochs=1, checkpoint_dir=str(tmp_path), **SETTINGS)
    path = tmp_path / STATE_NAME
    with safe_open(str(path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert meta["format"] == "zoo-trainer-state/1"
    assert {"rng.torch", "rng.order"} <= keys
    assert any(k.startswith("optim.model.") and k.endswith(".exp_avg") for k in keys)
    assert any(k.startswith("model.encoder.") for k in keys)
    assert [p.name for p in tmp_path.iterdir()] == [STATE_NAME]  # no temporary files left


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        zoo.Trainer(tiny_vae(), epochs=1, checkpoint_dir=str(tmp_path), **SETTINGS).fit("digits", resume=True)


def test_unwritable_output_is_reported_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = tiny_vae()
    before = weights(model)
    with pytest.raises((CheckpointError, OSError)):
        zoo.train(model, "digits", epochs=1, checkpoint_dir=str(blocker / "sub"), **SETTINGS)
    assert_same(before, weights(model))  # not one step was taken


SCRIPT = """
import sys, torch, zoo
torch.set_num_threads(1)
out, resume = sys.argv[1], sys.argv[2] == "resume"
torch.manual_seed(0)
model = zoo.create("vae", input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,))
zoo.Trainer(model, epochs=40, batch_size=64, lr=1e-3, seed=3, progress=False, device="cpu", max_shift=1,
            checkpoint_dir=out + "/ckpt", checkpoint_every=5).fit("digits", resume=resume)
model.save_pretrained(out + "/final")
print("done", flush=True)
"""


def run_script(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300)


def test_sigkill_mid_epoch_then_resume_reaches_the_same_weights(tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(killed), "fresh"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state = killed / "ckpt" / STATE_NAME
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let it run on past the first checkpoint, then kill it without warning
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "final").exists()
    with safe_open(str(state), framework="pt") as f:  # the file on disk is complete and readable
        step = json.loads(f.metadata()["json"])["state"]["step"]
    assert 0 < step < 40 * 23
    leftovers = [p.name for p in state.parent.iterdir() if p.name not in (STATE_NAME, LOCK_NAME)]

    resumed = run_script([str(killed), "resume"])
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = run_script([str(straight), "fresh"])
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    a = load_file(str(killed / "final" / "model.safetensors"))
    b = load_file(str(straight / "final" / "model.safetensors"))
    assert_same(a, b)
    # A kill can land during a checkpoint write: only a temporary file may remain, never a torn checkpoint;
    # the resumed run removed it, and its lock file (the killed run's stays behind; the kernel freed the lock).
    # (ours, .NAME.XXXXXXXX.tmp, or the one safetensors writes inside it, .tmpXXXXXX: zoo.outputs.TEMPORARY)
    assert all(TEMPORARY.match(name) for name in leftovers), leftovers
    assert sorted(p.name for p in state.parent.iterdir()) == [STATE_NAME]


def test_cli_resume(tmp_path):
    from zoo.cli import main

    args = ["train", "vae", "--data", "digits", "--out", str(tmp_path), "--no-progress", "--set",
            "input_shape=[1,8,8]", "--set", "hidden_dims=[16]", "--set", "latent_dim=2", "--epochs", "2",
            "--batch-size", "64"]
    assert main([*args, "--max-steps", "30", "--checkpoint-every", "10"]) == 0
    assert (tmp_path / "checkpoints" / STATE_NAME).is_file()
    assert main([*args, "--resume"]) == 0
    with safe_open(str(tmp_path / "checkpoints" / STATE_NAME), framework="pt") as f:
        assert json.loads(f.metadata()["json"])["state"]["step"] == 46
