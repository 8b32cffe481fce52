"""The ``zoo`` command, run in-process through ``zoo.cli.main`` (and once as a real console script)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import zoo
from zoo.cli import main
from zoo.config import config_to_dict
from zoo.data import load_dataset
from zoo.plugins import get_registry
from zoo.training import evaluate_loss

TINY = ["--set", "input_shape=[1,8,8]", "--set", "hidden_dims=[16]", "--set", "latent_dim=2"]
BUILTIN_PLUGINS = {
    "autoencoders": {"ae", "overcomplete-ae", "dae", "sae", "cae"},
    "vae": {"vae", "beta-vae"},
    "cvae": {"cvae"},
    "vae_gan": {"vae-gan"},
}


def run(argv: list[str]) -> tuple[int, str, str]:
    """``zoo ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def grid_size(n: int, side: int = 8, nrow: int = 8, padding: int = 2) -> tuple[int, int]:
    """(width, height) of torchvision's make_grid for n images of side x side."""
    cols, rows = min(n, nrow), -(-n // nrow)
    return cols * (side + padding) + padding, rows * (side + padding) + padding


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    out = tmp_path_factory.mktemp("cli") / "vae-digits"
    argv = ["train", "vae", "--data", "digits", "--epochs", "1", "--out", str(out), *TINY, "--no-progress"]
    code, stdout, stderr = run(argv)
    assert code == 0, stderr
    return out, argv, stdout


@pytest.fixture(scope="module")
def trained_cvae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cvae-digits"
    code, _, stderr = run(["train", "cvae", "--data", "digits", "--epochs", "1", "--out", str(out), *TINY,
                           "--no-progress"])
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def saved_ae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ae"
    zoo.create("ae", zoo.get_variant("ae").tiny_config()).save_pretrained(out)
    return out


# -- list / info / plugins ----------------------------------------------------------------------

def variant_lines(stdout: str) -> dict[str, str]:
    """name -> rest of the line, for the lines of the 'Variants:' section of `zoo list`."""
    section = stdout.split("Variants:\n", 1)[1].split("Checkpoints:", 1)[0]
    rows = {}
    for line in section.splitlines():
        assert line.startswith("  "), line
        name, rest = line.strip().split(None, 1)
        rows[name] = rest
    return rows


def test_list_prints_every_variant_with_its_description() -> None:
    code, stdout, stderr = run(["list"])
    assert code == 0 and stderr == ""
    rows = variant_lines(stdout)
    names = zoo.list_variants()
    assert list(rows) == names
    assert set(names) >= set().union(*BUILTIN_PLUGINS.values())
    registry = get_registry()
    for name in set().union(*BUILTIN_PLUGINS.values()):
        description = zoo.get_variant(name).description
        assert description
        assert rows[name] == f"{description}  [{registry.variant_plugin[name]}]"
    assert "Checkpoints:" in stdout


def test_list_with_a_pattern_filters() -> None:
    code, stdout, _ = run(["list", "*vae*"])
    assert code == 0
    rows = variant_lines(stdout)
    assert list(rows) == zoo.list_variants("*vae*")
    assert {"vae", "beta-vae", "cvae", "vae-gan"} <= set(rows)
    assert not {"ae", "dae", "sae", "cae"} & set(rows)
    code, stdout, _ = run(["list", "no-such-*"])
    assert code == 0 and variant_lines(stdout) == {}


def test_info_prints_the_default_config_json() -> None:
    code, stdout, stderr = run(["info", "vae"])
    assert code == 0 and stderr == ""
    variant = zoo.get_variant("vae")
    assert stdout.startswith(f"vae: {variant.description}\n")
    assert "conditional: False; generative: True; variational: True; has_likelihood: True" in stdout
    start = stdout.index("{")
    end = stdout.index("\n}", start) + 2
    printed = json.loads(stdout[start:end])
    assert printed == config_to_dict(variant.default_config())
    assert "latent_dim" in printed and printed["latent_dim"] == variant.default_config().latent_dim


def test_info_of_a_misspelled_variant_suggests_the_name() -> None:
    code, stdout, stderr = run(["info", "vea"])
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("zoo: error: unknown variant, checkpoint or sampler name 'vea'.")
    match = re.search(r"did you mean: ([^?]*)\?", stderr, re.I)
    assert match and "vae" in [s.strip() for s in match.group(1).split(",")]


def test_plugins_json_lists_builtin_plugins() -> None:
    code, stdout, _ = run(["plugins", "--json"])
    assert code == 0
    data = json.loads(stdout)
    assert set(data) == {"plugins", "failures"}
    assert data["failures"] == []
    by_name = {p["name"]: p for p in data["plugins"]}
    for name, variants in BUILTIN_PLUGINS.items():
        plugin = by_name[name]
        assert plugin["distribution"] == "ae-zoo"
        assert plugin["version"] == zoo.__version__
        assert plugin["module"] == f"zoo_plugins.{name}"
        assert set(plugin["variants"]) == variants


def test_plugins_text_output() -> None:
    code, stdout, _ = run(["plugins"])
    assert code == 0
    assert f"vae  (ae-zoo {zoo.__version__}, zoo_plugins.vae)" in stdout
    assert "variants: vae, beta-vae;" in stdout


# -- train --------------------------------------------------------------------------------------

def test_train_writes_folder_metrics_and_card(trained_vae: tuple[Path, list[str], str]) -> None:
    out, argv, stdout = trained_vae
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert f"wrote {out}/ (config.json, model.safetensors, README.md)" in stdout
    match = re.search(r"^test: (.*)$", stdout, re.M)
    assert match, stdout
    metrics = {k: float(v) for k, v in (item.split("=") for item in match.group(1).split(", "))}
    assert set(metrics) == {"loss", "reconstruction", "kl", "neg_elbo"}
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: ae-zoo" in card
    for name, value in metrics.items():
        assert f"| {name} | {value:.4f} |" in card, name
    # the exact command, quoted for a shell, so the card says how to reproduce the model
    assert f"zoo train vae --data digits --epochs 1 --out {out} --set 'input_shape=[1,8,8]'" in card
    assert "--set 'hidden_dims=[16]' --set latent_dim=2 --no-progress" in card
    assert "Data: `digits`" in card and "`steps`: 12" in card  # ceil(1438 / 128) steps in one epoch

    model = zoo.load(f"local-dir:{out}")
    assert model.variant_name == "vae" and model.training is False
    config = model.config
    assert (config.input_shape, config.hidden_dims, config.latent_dim) == ((1, 8, 8), (16,), 2)
    # the printed numbers were measured on the saved weights: the KL term is deterministic given x
    test = load_dataset("digits", "test")
    again = evaluate_loss(zoo.get_variant("vae"), model, test)
    assert again["kl"] == pytest.approx(metrics["kl"], abs=1e-4)


def test_sample_writes_a_png(trained_vae: tuple[Path, list[str], str], tmp_path: Path) -> None:
    out, _, _ = trained_vae
    png = tmp_path / "grid" / "x.png"
    code, stdout, stderr = run(["sample", str(out), "--n", "16", "--out", str(png)])
    assert code == 0, stderr
    assert stdout.strip() == f"wrote {png} (16 samples)"
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == grid_size(16) == (82, 22)
        pixels = image.convert("L")
        assert pixels.getextrema()[0] < pixels.getextrema()[1]  # not a blank picture
    png2 = tmp_path / "again.png"
    assert run(["sample", str(out), "--n", "16", "--out", str(png2)])[0] == 0
    assert png2.read_bytes() == png.read_bytes()  # --seed 0 by default: reproducible


def test_conditional_train_and_sample_a_label(trained_cvae: Path, tmp_path: Path) -> None:
    model = zoo.load(f"local-dir:{trained_cvae}")
    assert model.variant_name == "cvae" and model.config.num_classes == 10
    pictures = {}
    for label in (3, 5):
        png = tmp_path / f"class{label}.png"
        code, stdout, stderr = run(["sample", str(trained_cvae), "--label", str(label), "--n", "8",
                                    "--out", str(png)])
        assert code == 0, stderr
        assert stdout.strip() == f"wrote {png} (8 samples of class {label})"
        with Image.open(png) as image:
            assert image.size == grid_size(8)
            pictures[label] = image.tobytes()
    assert pictures[3] != pictures[5]


def test_conditional_sample_needs_a_label(trained_cvae: Path, tmp_path: Path) -> None:
    code, _, stderr = run(["sample", str(trained_cvae), "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert "conditional 'cvae' model: pass --label K (0..9)" in stderr
    code, _, stderr = run(["sample", str(trained_cvae), "--label", "12", "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert "labels must lie in 0..9, got 12..12" in stderr
    assert not (tmp_path / "x.png").exists()


def test_misspelled_override_suggests_the_key(tmp_path: Path) -> None:
    code, stdout, stderr = run(["train", "vae", "--data", "digits", "--epochs", "1",
                                "--out", str(tmp_path / "m"), "--set", "latnet_dim=2", "--no-progress"])
    assert code == 2
    assert stderr.startswith("zoo: error: vae config: unknown key(s) 'latnet_dim'")
    assert "did you mean 'latent_dim'?" in stderr
    assert not (tmp_path / "m").exists()


def test_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    code, _, stderr = run(["train", "vae", "--data", "digts", "--epochs", "1", "--out", str(tmp_path / "m"),
                           *TINY, "--no-progress"])
    assert code == 2
    assert ("'digts' is neither a dataset name (mnist, mnist-full, digits, dsprites), an image folder nor an existing "
            ".npz/.safetensors tensor file. Did you mean 'digits'?") in stderr


def test_sample_of_a_non_generative_model(saved_ae: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run(["sample", str(saved_ae), "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("zoo: error: ae is not a generative model")
    assert "Use a variant that declares generative = True" in stderr
    assert not (tmp_path / "x.png").exists()


def test_sample_of_an_unknown_model(tmp_path: Path) -> None:
    code, _, stderr = run(["sample", "no-such-checkpoint", "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert "unknown checkpoint 'no-such-checkpoint'" in stderr


# -- the installed console script ---------------------------------------------------------------

def test_console_script_runs(trained_vae: tuple[Path, list[str], str], tmp_path: Path) -> None:
    out, _, _ = trained_vae
    script = Path(sys.executable).parent / "zoo"
    if not script.exists():
        script = Path(shutil.which("zoo") or "")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "zoo"]
    png = tmp_path / "cli.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*command, "sample", str(out), "--n", "4", "--out", str(png)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {png} (4 samples)"
    assert "Traceback" not in proc.stderr
    with Image.open(png) as image:
        assert image.size == grid_size(4)
