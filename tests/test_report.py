"""`zoo eval --report`: the Markdown report, its per-latent table and the pictures that apply."""

from __future__ import annotations

import re

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.data import load_dataset
from zoo.metrics import reconstruction_gain
from zoo.report import exact_unit_cost, write_report


def test_cli_report_for_a_2d_vae_has_manifold_bars_and_the_flagged_latents(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", "vae-mnist-2d", "--nll-samples", "5", "--report", str(out)]) == 0
    assert f"wrote {out / 'report.md'}" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "reconstructions.png", "samples.png", "interpolation-linear.png", "interpolation-slerp.png",
            "traversals.png", "manifold.png", "latent-scatter.png", "latent-bars.png"} <= files
    text = (out / "report.md").read_text()
    for file in files - {"report.md"}:
        assert f"]({file})" in text, file
    assert "not the Inception FID" in text
    rows = re.findall(r"^\| (\d+) \| ([-\d.]+) \| ([-\d.]+) \| (yes)? \|", text, flags=re.M)
    assert [int(r[0]) for r in rows] == [0, 1]
    gain = reconstruction_gain(zoo.load("vae-mnist-2d"), load_dataset("mnist", "test"))
    assert [i for i, r in enumerate(rows) if r[3] == "yes"] == gain["below_kl"]
    for (_, kl, g, _), kl_ref, g_ref in zip(rows, gain["kl_per_latent"], gain["gain"], strict=True):
        assert abs(float(kl) - kl_ref) < 1e-3 and abs(float(g) - g_ref) < 1e-3
    exact = exact_unit_cost(zoo.load("vae-mnist-2d"), load_dataset("mnist", "test"))
    assert exact["examples"] == 500 and "exact gain (2 draws, 500 examples)" in text
    exact_rows = re.findall(r"^\| \d+ \| [-\d.]+ \| [-\d.]+ \| (?:yes)? \| ([-\d.]+) \| (yes)? \|", text, flags=re.M)
    assert [float(e) for e, _ in exact_rows] == pytest.approx(exact["gain"], abs=1e-3)
    assert [i for i, (_, flag) in enumerate(exact_rows) if flag] == exact["costs_more"]


def test_report_for_a_deterministic_autoencoder_skips_what_does_not_apply(tmp_path):
    test = load_dataset("mnist", "test")
    path = write_report(zoo.load("ae-mnist"), test, tmp_path, title="ae-mnist", metrics={"recon_mse": 1.0})
    files = {p.name for p in tmp_path.iterdir()}
    assert "samples.png" not in files and "manifold.png" not in files and "latent-bars.png" not in files
    assert {"reconstructions.png", "traversals.png", "latent-scatter.png"} <= files
    text = path.read_text()
    assert "its mean over the data" in text and "KL" not in text.split("## Per latent")[1].split("## Pictures")[0]
    assert len(re.findall(r"^\| \d+ \| [-\d.]+ \|$", text, flags=re.M)) == 32


def test_report_for_a_mixture_prior_reads_units_by_their_data_mean(tmp_path):
    """A VampPrior has no per-unit KL: the report's gain replaces a unit by its data mean and draws no KL bars."""
    from zoo.data import TensorData

    model = zoo.create("vamp-vae", input_shape=(1, 8, 8), latent_dim=3, hidden_dims=(16,), num_pseudo_inputs=5)
    data = TensorData((torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float())
    path = write_report(model.eval(), data, tmp_path, title="vamp", metrics={"nll": 1.0})
    text = path.read_text()
    assert "replaced by its mean over the data" in text and not (tmp_path / "latent-bars.png").exists()
    assert "largest code variance first" in text
