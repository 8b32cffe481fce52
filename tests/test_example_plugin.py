"""End to end: the example plugin package installs, registers, trains, saves, loads and uninstalls.

It is installed with ``pip install --target`` into a throw-away folder put on PYTHONPATH, so the test
environment itself is never modified (a killed test cannot leave a plugin behind); deleting the
folder uninstalls it. Entry points are discovered from the installed ``.dist-info`` exactly as for a
normal install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "zoo-wae"


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def installed_example(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(src)], dict(os.environ), tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site), "ZOO_STRICT_PLUGINS": "1"}
    yield src, env
    shutil.rmtree(site)  # the uninstall


def test_example_plugin_end_to_end(installed_example, tmp_path):
    src, env = installed_example
    zoo_cli = [sys.executable, "-m", "zoo"]

    listing = run([*zoo_cli, "list"], env, tmp_path)
    assert "wae " in listing and "wae-digits" in listing

    plugins = json.loads(run([*zoo_cli, "plugins", "--json"], env, tmp_path))
    wae = [p for p in plugins["plugins"] if p["name"] == "wae"]
    assert wae and wae[0]["distribution"] == "zoo-wae" and wae[0]["variants"] == ["wae"]
    assert wae[0]["checkpoints"] == ["wae-digits"] and plugins["failures"] == []

    out = tmp_path / "trained"
    run([*zoo_cli, "train", "wae", "--data", "digits", "--epochs", "1", "--no-progress", "--out", str(out),
         "--set", "input_shape=[1,8,8]", "--set", "hidden_dims=[16]", "--set", "latent_dim=2"], env, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    check = f"""
import torch, zoo
trained = zoo.load("local-dir:{out}")
bundled = zoo.load("wae-digits")
assert type(trained).__name__ == "WAEModel" and trained.config.latent_dim == 2
assert bundled.pretrained_info["name"] == "wae-digits"
x = torch.rand(3, 1, 8, 8)
assert bundled(x).shape == (3, 1, 8, 8)
print("ok", sum(p.numel() for p in bundled.parameters()))
"""
    assert run([sys.executable, "-c", check], env, tmp_path).startswith("ok")

    # The plugin's own tests: the zoo's conformance kit applied to the third-party variant.
    report = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")], env, src)
    assert " passed" in report and "failed" not in report


def test_example_plugin_is_not_installed_in_the_test_environment():
    import zoo

    assert "wae" not in zoo.list_variants()
