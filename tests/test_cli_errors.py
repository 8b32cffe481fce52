"""User errors on the command line: exit code 2 and one line ``zoo: error: ...`` naming the input, what is
accepted and the way out; never a traceback, never an untrained model written as if trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli import TINY, run

import zoo
from zoo.errors import ConfigError

TRAIN = ["train", "vae", "--data", "digits", "--no-progress", *TINY]


def one_line_error(code: int, stdout: str, stderr: str) -> str:
    """The message of a one-line CLI error, after checking the exit code and that nothing else was printed."""
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--epochs", "-1", "epochs must be at least 1, got -1"),
    ("--epochs", "0", "epochs must be at least 1, got 0"),
    ("--batch-size", "-5", "batch_size must be at least 1, got -5"),
    ("--batch-size", "0", "batch_size must be at least 1, got 0"),
    ("--max-steps", "-3", "max_steps must be at least 0, got -3"),
    ("--lr", "-1", "lr must be at least 0, got -1.0"),
    ("--log-every", "0", "log_every must be at least 1, got 0"),
])
def test_impossible_train_settings_write_nothing(tmp_path: Path, option: str, value: str, expected: str) -> None:
    out = tmp_path / "m"
    message = one_line_error(*run([*TRAIN, "--out", str(out), option, value]))
    assert expected in message
    assert not out.exists()


def test_a_value_argparse_cannot_read_is_one_line(tmp_path: Path) -> None:
    message = one_line_error(*run([*TRAIN, "--out", str(tmp_path / "m"), "--epochs", "abc"]))
    assert "argument --epochs: invalid int value: 'abc'" in message
    assert "zoo train --help" in message


def test_set_with_a_word_for_a_number_is_one_line(tmp_path: Path) -> None:
    message = one_line_error(*run([*TRAIN, "--out", str(tmp_path / "m"), "--set", "latent_dim=abc"]))
    assert "latent_dim must be an integer (e.g. latent_dim=16), got 'abc' (text)" in message


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample") / "vae"
    zoo.create("vae", zoo.get_variant("vae").tiny_config()).save_pretrained(folder)
    return folder


def test_sample_n_must_be_positive(vae_folder: Path, tmp_path: Path) -> None:
    for n in ("0", "-2"):
        message = one_line_error(*run(["sample", str(vae_folder), "--n", n, "--out", str(tmp_path / "x.png")]))
        assert f"--n must be at least 1, got {n}" in message
    assert not (tmp_path / "x.png").exists()


def test_a_seed_torch_cannot_take_is_refused(vae_folder: Path, tmp_path: Path) -> None:
    for seed in ("-1", str(2**64)):
        message = one_line_error(*run(["sample", str(vae_folder), f"--seed={seed}", "--out", str(tmp_path / "x.png")]))
        assert f"--seed must be an integer from 0 to 2**63 - 1, got {seed}" in message


def test_a_label_for_an_unconditional_model_is_refused(vae_folder: Path, tmp_path: Path) -> None:
    message = one_line_error(*run(["sample", str(vae_folder), "--label", "3", "--out", str(tmp_path / "x.png")]))
    assert "is an unconditional 'vae' model: --label applies to conditional variants (cvae)" in message
    assert "drop --label" in message
    assert not (tmp_path / "x.png").exists()


def test_info_of_a_misspelled_checkpoint_suggests_the_checkpoint() -> None:
    message = one_line_error(*run(["info", "cvae-mnst"]))
    suggestions = message.split("Did you mean:")[1].split("?")[0]
    assert "cvae-mnist" in [s.strip() for s in suggestions.split(",")]


def test_python_m_zoo_cli_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", "list", "vae"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Variants:\n  vae ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_devices_there(vae_folder: Path, tmp_path: Path) -> None:
    message = one_line_error(*run([*TRAIN, "--out", str(tmp_path / "m"), "--device", "cuda"]))
    assert "device 'cuda' is not available on this machine" in message
    assert "available: cpu" in message and "'auto'" in message
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=rf"device '{device}' is not available .*available: cpu.*'auto'"):
            zoo.load(f"local-dir:{vae_folder}", device=device)


def test_an_unknown_device_name_is_a_config_error(vae_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"device 'gpu' is not a device name.*'cpu', 'cuda', 'cuda:1'.*'auto'"):
        zoo.load(f"local-dir:{vae_folder}", device="gpu")


@pytest.mark.parametrize(("name", "dtype"), [("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16),
                                             ("float16", torch.float16), ("float32", torch.float32)])
def test_dtype_as_a_string(vae_folder: Path, name: str, dtype: torch.dtype) -> None:
    model = zoo.load(f"local-dir:{vae_folder}", dtype=name)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_an_unknown_dtype_names_the_accepted_ones(vae_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"dtype 'int8' is not a floating-point dtype.*'bfloat16'"):
        zoo.load(f"local-dir:{vae_folder}", dtype="int8")
    with pytest.raises(ConfigError, match=r"dtype torch.int64 is not a floating-point dtype"):
        zoo.load(f"local-dir:{vae_folder}", dtype=torch.int64)


def test_negative_importance_samples_are_refused_before_any_work(vae_folder: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    message = one_line_error(*run(["eval", str(vae_folder), "--data", "digits", "--nll-samples=-5"]))
    assert "--nll-samples must be at least 0 (0 skips the NLL), got -5" in message

    def trained(*args, **kwargs):
        raise AssertionError("fine-tuning trained before checking nll_samples")

    monkeypatch.setattr(zoo.Trainer, "fit", trained)
    message = one_line_error(*run(["finetune", str(vae_folder), "--data", "digits", "--out", str(tmp_path / "ft"),
                                   "--nll-samples=-3"]))
    assert "nll_samples must be an integer of at least 0 (0: no NLL), got -3" in message
    assert not (tmp_path / "ft").exists()
