"""The built-in VQ-VAE: quantisation, the three loss terms, the straight-through gradient, EMA codebook
updates (one process and two under torchrun), dead-code restarts, its metrics, and what it refuses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torchrun_zoo import torchrun
from zoo_plugins.vqvae import EMA_EPSILON, Codebook, VQVAEModel, VQVAEVariant

import zoo
from zoo.config import replace_config
from zoo.data import TensorData
from zoo.distributions import QuantizedCode
from zoo.testing import VariantConformance
from zoo.training import TrainConfig

VARIANT = zoo.get_variant("vq-vae")


def tiny(**overrides: Any) -> VQVAEModel:
    torch.manual_seed(0)
    return zoo.create("vq-vae", VARIANT.tiny_config(), **overrides)


def batch(n: int = 6, seed: int = 1) -> Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def brute_force_nearest(z_e: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest code vector at every position, from float64 distances one position at a time."""
    b, d, h, w = z_e.shape
    out = torch.empty(b, h, w, dtype=torch.long)
    for i in range(b):
        for r in range(h):
            for c in range(w):
                out[i, r, c] = ((codebook.double() - z_e[i, :, r, c].double()) ** 2).sum(1).argmin()
    return out


def test_quantisation_picks_the_nearest_code_vector_and_eval_returns_it_exactly() -> None:
    model = tiny().eval()
    with torch.no_grad():
        z_e = model.encoder(batch())
        code = model.encode(batch())
    assert isinstance(code, QuantizedCode)
    assert torch.equal(code.indices, brute_force_nearest(z_e, model.codebook.weight))
    expected = model.codebook.weight[code.indices].permute(0, 3, 1, 2)
    assert torch.equal(code.quantized, expected) and torch.equal(code.mode(), expected)
    assert code.latent_shape == model.latent_shape == (4, 2, 2)


def test_distances_are_float32_under_bf16_autocast() -> None:
    codebook = Codebook(16, 8, ema=False, decay=0.99, dead_code_threshold=0.0)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        codebook.weight.copy_(torch.randn(16, 8, generator=generator))
        # codes 1e-3 apart: bf16 (8 bits of mantissa) cannot tell them apart, float32 can
        codebook.weight[1] = codebook.weight[0] + 1e-3
    z_e = codebook.weight[1].reshape(1, 8, 1, 1).clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices = codebook.nearest(z_e)
    assert int(indices) == 1
    assert int(brute_force_nearest(z_e, codebook.weight)) == 1


def test_loss_terms_match_an_independent_computation() -> None:
    model = tiny(commitment_cost=0.4).train()
    x = batch()
    out = VARIANT.loss(model, x)
    with torch.no_grad():
        z_e = model.encoder(x)
        nearest = brute_force_nearest(z_e, model.codebook.weight)
        z_q = model.codebook.weight[nearest].permute(0, 3, 1, 2)
        logits = model.decoder(z_q)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3)).mean()
        squared = ((z_e - z_q) ** 2).sum((1, 2, 3)).mean()
    torch.testing.assert_close(out.terms["reconstruction"], recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["codebook"], squared, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.terms["commitment"], squared, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.total, recon + squared + 0.4 * squared, rtol=1e-5, atol=1e-5)
    counts = torch.bincount(nearest.reshape(-1), minlength=8).double()
    p = counts[counts > 0] / counts.sum()
    assert float(out.terms["perplexity"]) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-5)


def test_codebook_and_commitment_terms_send_gradients_where_the_paper_says() -> None:
    """||sg[z_e] - e||^2 moves only the codebook; beta ||z_e - sg[e]||^2 only the encoder."""
    model = tiny().train()
    out = VARIANT.loss(model, batch())
    encoder = list(model.encoder.parameters())
    (codebook_to_encoder,) = torch.autograd.grad(out.terms["codebook"], [encoder[0]], retain_graph=True,
                                                 allow_unused=True)
    (codebook_to_codes,) = torch.autograd.grad(out.terms["codebook"], [model.codebook.weight], retain_graph=True)
    (commit_to_codes,) = torch.autograd.grad(out.terms["commitment"], [model.codebook.weight], retain_graph=True,
                                             allow_unused=True)
    (commit_to_encoder,) = torch.autograd.grad(out.terms["commitment"], [encoder[0]], retain_graph=True)
    assert codebook_to_encoder is None and commit_to_codes is None
    assert codebook_to_codes.abs().sum() > 0 and commit_to_encoder.abs().sum() > 0


def straight_through_holds(model: VQVAEModel, x: Tensor) -> None:
    """The reconstruction's gradient reaches the encoder's output unchanged (what the straight-through
    estimator is): d recon / d z_e == d recon / d z_q."""
    model.train()
    code = model.encode(x)
    recon = model.reconstruction_nll(x, code.quantized).sum()
    (to_code,) = torch.autograd.grad(recon, [code.quantized], retain_graph=True)
    (to_encoder,) = torch.autograd.grad(recon, [code.encoded], allow_unused=True)
    assert to_encoder is not None, "no gradient of the reconstruction reaches the encoder's output z_e"
    torch.testing.assert_close(to_encoder, to_code)


class NoStraightThroughCodebook(Codebook):
    """The defect: the decoder reads the code vectors themselves, cut off from the encoder."""

    def forward(self, z_e: Tensor) -> QuantizedCode:
        indices = self.nearest(z_e)
        return QuantizedCode(self.embed(indices), indices, self.weight, z_e)


class NoStraightThroughVariant(VQVAEVariant):
    name = "broken-vq-no-straight-through"

    def build(self, config: Any) -> VQVAEModel:
        model = VQVAEModel(config)
        model.codebook = NoStraightThroughCodebook(config.num_embeddings, config.embedding_dim, ema=False,
                                                   decay=config.ema_decay, dead_code_threshold=0.0)
        return model


class NoStraightThroughNoCommitmentVariant(NoStraightThroughVariant):
    name = "broken-vq-no-straight-through-no-commitment"

    def tiny_config(self) -> Any:
        return replace_config(super().tiny_config(), {"commitment_cost": 0.0})


def test_straight_through_gradient_and_its_removal_is_caught() -> None:
    straight_through_holds(tiny(), batch())
    broken = NoStraightThroughVariant()
    model = broken.build(broken.make_config(broken.tiny_config()))
    with pytest.raises(AssertionError, match="no gradient of the reconstruction reaches the encoder"):
        straight_through_holds(model, batch())
    # Without a commitment term the encoder then learns nothing at all, which the conformance kit catches.
    with pytest.raises(AssertionError, match="the loss gives no gradient to encoder"):
        VariantConformance().test_loss_finite_and_backward(NoStraightThroughNoCommitmentVariant())


def test_an_unused_ema_code_keeps_its_vector() -> None:
    model = tiny(codebook_update="ema").train()
    with torch.no_grad():
        model.codebook.weight[7] = 1e3
        model.codebook.ema_sum[7] = 1e3
        for _ in range(50):
            model.encode(batch(8))
    torch.testing.assert_close(model.codebook.weight[7], torch.full((4,), 1e3), rtol=1e-4, atol=0)  # smoothing


def test_ema_update_follows_the_moving_average_formulas() -> None:
    model = tiny(codebook_update="ema", ema_decay=0.9)
    codebook = model.codebook
    assert not codebook.weight.requires_grad
    usage, ema_sum = codebook.usage.clone(), codebook.ema_sum.clone()
    assert torch.equal(ema_sum, codebook.weight) and not usage.any()
    x = batch(8)
    with torch.no_grad():
        z_e = model.encoder(x)
        nearest = brute_force_nearest(z_e, codebook.weight)
    model.train()
    with torch.no_grad():
        model.encode(x)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4).double()
    one_hot = F.one_hot(nearest.reshape(-1), 8).double()
    expected_usage = 0.9 * usage.double() + 0.1 * one_hot.sum(0)
    expected_sum = 0.9 * ema_sum.double() + 0.1 * one_hot.T @ flat
    counts = 0.9 * torch.ones(8, dtype=torch.float64) + 0.1 * one_hot.sum(0)  # N starts at 1 per code
    n = counts.sum()
    smoothed = (counts + EMA_EPSILON) / (n + 8 * EMA_EPSILON) * n
    torch.testing.assert_close(codebook.usage.double(), expected_usage, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(codebook.ema_sum.double(), expected_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(codebook.weight.double(), expected_sum / smoothed[:, None], rtol=1e-4, atol=1e-5)
    assert "codebook" not in VARIANT.loss(model, x).terms  # no codebook loss term with EMA updates


def test_dead_codes_restart_at_encoder_outputs_of_the_batch() -> None:
    model = tiny(dead_code_threshold=0.5).train()
    with torch.no_grad():
        model.codebook.weight[4:] = 1e3  # far from every encoder output: never chosen
        model.codebook.usage[:4] = 10.0  # the four near codes count as live
        x = batch(8)
        z_e = model.encoder(x)
        model.encode(x)
    outputs = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    for k in range(4, 8):
        distance = (outputs - model.codebook.weight[k].detach()).abs().sum(1).min()
        assert float(distance) < 1e-6, f"code {k} was not moved to an encoder output"
    # the restarted codes' mean assignments per step restart at the threshold: usage / (1 - 0.99^1) = 0.5
    torch.testing.assert_close(model.codebook.usage[4:] / (1 - 0.99), torch.full((4,), 0.5))
    unchanged = tiny(dead_code_threshold=0.0).train()
    with torch.no_grad():
        unchanged.codebook.weight[4:] = 1e3
        unchanged.encode(batch(8))
    assert torch.all(unchanged.codebook.weight[4:] == 1e3)


def test_metrics_count_codes_over_the_data() -> None:
    model = tiny().eval()
    data = TensorData(batch(10, seed=4))
    with torch.no_grad():
        indices = model.encode(data.x).indices.reshape(-1)
    counts = torch.bincount(indices, minlength=8).double()
    p = counts[counts > 0] / counts.sum()
    metrics = VARIANT.metrics(model, data)
    assert metrics["codebook_usage"] == pytest.approx(float((counts > 0).double().mean()))
    assert metrics["codebook_perplexity"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-6)
    from zoo.evaluation import evaluate

    assert {"codebook_usage", "codebook_perplexity", "recon_bce"} <= set(evaluate(model, data, nll_samples=0))


def test_codebook_has_its_own_learning_rate_group() -> None:
    model = tiny(codebook_lr_scale=0.1)
    (optimizer,) = VARIANT.configure_optimizers(model, TrainConfig(lr=2e-3)).values()
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [2e-3, pytest.approx(2e-4)]
    assert groups[1]["params"] == [model.codebook.weight]
    ema = tiny(codebook_update="ema")
    (optimizer,) = VARIANT.configure_optimizers(ema, TrainConfig()).values()
    assert len(optimizer.param_groups) == 1  # the EMA codebook has no gradient: its group is dropped


def test_sampling_is_refused_with_the_way_forward() -> None:
    model = tiny()
    assert not VARIANT.generative and not VARIANT.variational and VARIANT.has_likelihood
    with pytest.raises(NotImplementedError, match="no learned prior.*decode_indices"):
        model.sample(4)
    indices = torch.zeros(2, 2, 2, dtype=torch.long)
    assert model.decode_indices(indices).shape == (2, 1, 8, 8)


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(zoo.errors.ConfigError, match="codebook_update must be 'loss' or 'ema'"):
        zoo.create("vq-vae", codebook_update="kmeans")
    with pytest.raises(zoo.errors.ConfigError, match="ema_decay must lie in"):
        zoo.create("vq-vae", ema_decay=1.0)


TINY_VQ = ["vq-vae", "--data", "digits", "--set", "input_shape=[1,8,8]", "--set", "hidden_dims=[8,16]",
           "--set", "embedding_dim=4", "--set", "num_embeddings=16", "--set", "codebook_update=\"ema\"",
           "--batch-size", "64", "--no-progress", "--max-steps", "6"]


def test_ema_codebook_is_averaged_across_two_processes(tmp_path: Path) -> None:
    """Under torchrun each process sees half of every batch; the EMA counts and sums are summed across them,
    so both hold the codebook one process computes from the whole batch. With dead-code restarts, process 0
    chooses the new vectors and both processes take them."""
    from safetensors.torch import load_file

    from zoo.cli import main

    rank0, rank1, _ = torchrun(tmp_path / "ddp", ["train", *TINY_VQ, "--out", "out"])
    assert main(["train", *TINY_VQ, "--out", str(tmp_path / "one")]) == 0
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    for key in ("codebook.weight", "codebook.usage", "codebook.ema_sum"):
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    restarted0, restarted1, _ = torchrun(tmp_path / "restarts", ["train", *TINY_VQ, "--out", "out", "--set",
                                                                  "dead_code_threshold=20"])
    assert not torch.equal(restarted0["codebook.weight"], rank0["codebook.weight"])  # restarts happened
    for key in restarted0:
        assert torch.equal(restarted0[key], restarted1[key]), key


def test_bundled_vq_vae_reports_what_applies_and_says_what_does_not(tmp_path: Path) -> None:
    from zoo.cli import main

    out = tmp_path / "report"
    assert main(["eval", "vq-vae-mnist", "--report", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "reconstructions.png", "interpolation-linear.png", "interpolation-slerp.png",
            "traversals.png", "latent-scatter.png"} <= files
    assert not {"samples.png", "manifold.png", "latent-bars.png"} & files
    text = (out / "report.md").read_text()
    assert "Variant `vq-vae`, latent shape (16, 7, 7)" in text
    assert "prior samples and sample quality: skipped, variant `vq-vae` does not declare `generative`" in text
    assert "| `codebook_usage` | fraction of the codebook's vectors used at least once on the data | 1.0000 |" in text
    assert "The latent is discrete (a quantised code)" in text
    assert "traversals of one channel per row at grid position (3, 3)" in text
    assert len(re.findall(r"^\| \d+ \| [-\d.]+ \|$", text, flags=re.M)) == 16  # the gain of each channel
    with pytest.raises(NotImplementedError, match="no learned prior"):
        zoo.load("vq-vae-mnist").sample(1)
