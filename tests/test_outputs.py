"""Output folders: one run at a time (a lock that names its holder, released on any exit), stale
temporaries cleaned, writability and room checked before the first step, and a finished run never lost
at its final write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_cli import TINY, run
from test_cli_errors import one_line_error

import zoo
from zoo.checkpointing import STATE_NAME
from zoo.errors import FolderLockedError
from zoo.outputs import LOCK_NAME, FolderLock

TRAIN = ["train", "vae", "--data", "digits", "--no-progress", *TINY]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training step fails the test: the checks under test must come before the first step."""
    def trained(*args, **kwargs):
        raise AssertionError("a training step ran before the output folder was checked")

    monkeypatch.setattr(zoo.Trainer, "_run_epoch", trained)


def written_by(checkpoint: Path) -> dict:
    """The training settings of the run that wrote ``checkpoint``."""
    with safe_open(str(checkpoint), framework="pt") as f:
        return json.loads(f.metadata()["json"])["train_config"]


# -- item 3: one run per output folder ---------------------------------------------------------------

HOLDER = """
import sys, time
from zoo.cli import main
sys.exit(main(["train", "vae", "--data", "digits", "--no-progress", "--epochs", "500", "--out", sys.argv[1],
               "--checkpoint-every", "50", "--set", "input_shape=[1,8,8]", "--set", "hidden_dims=[16]",
               "--set", "latent_dim=2"]))
"""


def test_a_second_run_on_the_same_folder_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / STATE_NAME).exists() and time.time() < deadline and holder.poll() is None:
            time.sleep(0.05)
        assert holder.poll() is None, holder.stderr.read()
        started = time.time()
        message = one_line_error(*run([*TRAIN, "--out", str(out), "--max-steps", "2"]))
        assert time.time() - started < 10
        assert f"{out} is in use by another zoo run (pid {holder.pid} on " in message
        assert "choose another output folder" in message
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid} "):
            zoo.train(zoo.create("vae", zoo.get_variant("vae").tiny_config()), "digits", max_steps=2, progress=False,
                      checkpoint_dir=str(out / "checkpoints"), checkpoint_every=1)
        # the holder goes on writing its own checkpoints (every 50 steps); the rival's (every step) never came
        assert written_by(out / "checkpoints" / STATE_NAME)["checkpoint_every"] == 50
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # SIGKILL leaves the file; the kernel released the lock itself
    code, _, stderr = run([*TRAIN, "--out", str(out), "--max-steps", "2"])  # the stale lock is taken over
    assert code == 0, stderr
    assert not (out / LOCK_NAME).exists()
    zoo.load(f"local-dir:{out}")


def test_the_lock_is_released_on_an_error_and_an_empty_new_folder_removed(tmp_path: Path) -> None:
    out = tmp_path / "new"
    message = one_line_error(*run([*TRAIN, "--out", str(out), "--data", "no-such-data"]))
    assert "'no-such-data' is neither a dataset name" in message
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(*run([*TRAIN, "--out", str(out), "--data", "no-such-data"]))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # an existing folder is left as it was


def test_a_run_may_nest_a_lock_on_a_folder_it_holds(tmp_path: Path) -> None:
    with FolderLock(tmp_path), FolderLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


# -- item 4: temporaries of interrupted writes --------------------------------------------------------------

def test_stale_temporaries_of_interrupted_writes_are_removed_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    old = time.time() - 3600
    stale = [out / ".model.safetensors.k2x9_a0q.tmp", out / "checkpoints" / ".trainer-state.safetensors.abcd1234.tmp",
             out / "checkpoints" / ".tmpsYAXHn"]  # atomic_write's, and safetensors' own inside it (12.9 MB in #14)
    stale[0].write_bytes(b"\0" * 2**20)
    stale[1].write_bytes(b"")
    stale[2].write_bytes(b"\0" * 2**20)
    mine = [out / "notes.tmp", out / ".hidden.tmp", out / "checkpoints" / "run.log", out / ".tmpnotes.txt"]
    for path in [*stale, *mine]:
        path.touch() if path.exists() else path.write_text("user data")
        os.utime(path, (old, old))
    code, _, stderr = run([*TRAIN, "--out", str(out), "--max-steps", "2", "--checkpoint-every", "1"])
    assert code == 0, stderr
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in mine)


# -- item 1: checked before the first step, never lost at the end ---------------------------------------------

@pytest.mark.parametrize("checkpoints", [[], ["--checkpoint-every", "5"]])
def test_an_output_folder_under_proc_is_refused_before_training(no_training, checkpoints: list[str]) -> None:
    message = one_line_error(*run([*TRAIN, "--out", "/proc/zoo-out", *checkpoints]))
    assert "cannot create the output folder /proc/zoo-out" in message
    assert "writable disk" in message


@pytest.mark.parametrize("checkpoints", [[], ["--checkpoint-every", "5"]])
def test_an_output_folder_that_is_a_file_is_refused_before_training(no_training, tmp_path: Path,
                                                                     checkpoints: list[str]) -> None:
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        message = one_line_error(*run([*TRAIN, "--out", str(out), *checkpoints]))
        assert f"cannot use {out} as an output folder: {tmp_path / 'file'} is a file" in message


def test_a_full_disk_is_reported_before_training(no_training, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2 * 2**20))  # a 2 MB tmpfs
    message = one_line_error(*run([*TRAIN, "--out", str(tmp_path / "out")]))
    assert f"only 2 MiB free under {tmp_path / 'out'}; the model folder needs about" in message


def test_a_failing_final_write_keeps_the_trained_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    out, rescue_root = tmp_path / "out", tmp_path / "tmp"
    rescue_root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(rescue_root))
    save_model = safetensors.torch.save_model

    def disk_full_under_out(model, filename, metadata=None):
        if Path(filename).parent == out:
            raise OSError(28, "No space left on device")
        return save_model(model, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_model", disk_full_under_out)
    message = one_line_error(*run([*TRAIN, "--out", str(out), "--max-steps", "3"]))
    assert f"could not write {out}: No space left on device. The trained weights were saved to " in message
    (rescue,) = rescue_root.iterdir()
    assert rescue.name.startswith("zoo-rescued-vae-") and str(rescue) in message
    trained = zoo.load(f"local-dir:{rescue}")
    torch.manual_seed(0)
    fresh = zoo.create("vae", input_shape=(1, 8, 8), hidden_dims=(16,), latent_dim=2)
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in trained.state_dict().items())
    assert "trained on digits" in (rescue / "README.md").read_text()
    assert load_file(str(rescue / "model.safetensors")).keys() == fresh.state_dict().keys()
    assert json.loads((rescue / "config.json").read_text())["latent_dim"] == 2
