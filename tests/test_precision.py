"""Mixed precision: bf16 autocast on the CPU for real, fp16 with the CPU gradient scaler (one scaler for
VAE-GAN's three optimisers), exact resume, and the errors that say what to do instead."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from safetensors import safe_open
from torch import nn

import zoo
from zoo.checkpointing import STATE_NAME
from zoo.data import TensorData, load_dataset
from zoo.errors import ConfigError
from zoo.precision import PRECISIONS, autocast_factory
from zoo.stepping import StepContext, step_context

SETTINGS = dict(batch_size=64, lr=1e-3, seed=3, progress=False, device="cpu")


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return load_dataset("digits", "train")


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return zoo.create(name, zoo.get_variant(name).tiny_config())


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def recording(name: str) -> tuple[zoo.Variant, list[dict[str, torch.Tensor]]]:
    """The registered variant, subclassed to keep every term dict its train_step returns."""
    seen: list[dict[str, torch.Tensor]] = []

    class Recording(type(zoo.get_variant(name))):
        def train_step(self, model, batch, optimizers, *, step):
            terms = super().train_step(model, batch, optimizers, step=step)
            seen.append(terms)
            return terms

    return Recording(), seen


@pytest.mark.parametrize("name", ["vae", "vae-gan"])
def test_bf16_autocasts_the_layers_and_keeps_terms_and_weights_fp32(digits: TensorData, name: str) -> None:
    model = tiny(name)
    before = weights(model)
    layer_outputs: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            module.register_forward_hook(lambda m, i, out: layer_outputs.add(out.dtype))
    variant, seen = recording(name)
    result = zoo.Trainer(model, variant=variant, precision="bf16", max_steps=6, **SETTINGS).fit(digits)

    assert result.steps == 6 and len(seen) == 6
    assert layer_outputs == {torch.bfloat16}  # the matmuls and convolutions ran in bf16 ...
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # ... autocast, not model.half()
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}
    assert all(t.dtype == torch.float32 for terms in seen for t in terms.values())  # KL, likelihoods, GAN terms
    assert all(math.isfinite(v) for v in result.history[-1].values())
    changed = [k for k, v in weights(model).items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)

    torch.manual_seed(0)  # the same run in fp32 lands close by
    fp32 = zoo.Trainer(tiny(name), max_steps=6, **SETTINGS).fit(digits)
    assert result.history[-1]["loss"] == pytest.approx(fp32.history[-1]["loss"], rel=2e-2)


def test_fp16_scales_every_loss_steps_three_optimisers_and_updates_once_per_step(digits: TensorData) -> None:
    model = tiny("vae-gan")
    before = {name: weights(net) for name, net in zoo.get_variant("vae-gan").networks(model).items()}
    trainer = zoo.Trainer(model, precision="fp16", max_steps=5, **SETTINGS)
    assert trainer.context.scaler is not None
    trainer.context.scaler = torch.amp.GradScaler("cpu", init_scale=16.0)  # small enough never to overflow
    trainer.fit(digits)
    state = trainer.context.scaler.state_dict()
    assert state["scale"] == 16.0 and state["_growth_tracker"] == 5  # one update() per step, not per optimiser
    for name, net in zoo.get_variant("vae-gan").networks(model).items():
        assert any(not torch.equal(v, before[name][k]) for k, v in weights(net).items()), f"{name} never stepped"


def test_an_overflowing_step_is_skipped_and_the_scale_backs_off() -> None:
    layer = nn.Linear(4, 4)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    ctx = StepContext(precision="fp16", autocast=autocast_factory("fp16", torch.device("cpu")),
                      scaler=torch.amp.GradScaler("cpu", init_scale=2.0**20))
    before = weights(layer)
    with ctx.active({"model": optimizer}, "test"):
        assert step_context() is ctx
        with ctx.autocast():
            loss = layer(torch.full((2, 4), 100.0)).float().sum()
        ctx.backward(loss)  # 2^20 times the gradient overflows fp16
        ctx.step(optimizer)
        ctx.end_step()
    assert_same(before, weights(layer))
    assert ctx.scaler.get_scale() == 2.0**19
    assert step_context() is not ctx  # outside the Trainer: the plain fp32 context


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_resume_in_reduced_precision_matches_an_uninterrupted_run(digits: TensorData, tmp_path, precision: str) -> None:
    settings = dict(SETTINGS, precision=precision, epochs=2, max_shift=1)

    def trainer(model: nn.Module, **more) -> zoo.Trainer:
        made = zoo.Trainer(model, **settings, **more)
        if made.context.scaler is not None:  # a scale that doubles every 4 steps: its state changes all run long
            made.context.scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=4)
        return made

    straight_model = tiny("vae")
    straight = trainer(straight_model)
    full = straight.fit(digits)

    trainer(tiny("vae"), max_steps=30, checkpoint_dir=str(tmp_path), checkpoint_every=10).fit(digits)
    with safe_open(str(tmp_path / STATE_NAME), framework="pt") as f:
        saved_scaler = json.loads(f.metadata()["json"])["scaler"]
    resumed_model = tiny("vae")
    resumed_trainer = trainer(resumed_model, checkpoint_dir=str(tmp_path))
    resumed = resumed_trainer.fit(digits, resume=True)

    assert resumed.steps == full.steps == 46
    assert_same(weights(straight_model), weights(resumed_model))
    assert resumed.history == full.history
    if precision == "fp16":  # the scaler's state is saved and restored, not started afresh
        assert saved_scaler["scale"] == 2.0 ** (30 // 4)
        assert resumed_trainer.context.scaler.state_dict() == straight.context.scaler.state_dict()
    else:
        assert saved_scaler is None


def test_an_unknown_precision_names_the_options(digits: TensorData) -> None:
    with pytest.raises(ConfigError, match=r"precision must be one of 'fp32', 'bf16', 'fp16', not 'fp8'"):
        zoo.train(tiny("vae"), digits, precision="fp8", **SETTINGS)


def test_cli_refuses_an_unknown_precision(tmp_path, capsys) -> None:
    from zoo.cli import main

    code = main(["train", "vae", "--data", "digits", "--out", str(tmp_path), "--precision", "half", "--no-progress"])
    assert code == 2
    assert "precision must be one of 'fp32', 'bf16', 'fp16', not 'half'" in capsys.readouterr().err


def test_a_dtype_the_device_cannot_autocast_to_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRECISIONS, "fp64", torch.float64)  # CPU autocast refuses float64, as old torch refused fp16
    with pytest.raises(ConfigError, match=r"cannot autocast to fp64 on cpu: use --precision bf16 on the CPU"):
        autocast_factory("fp64", torch.device("cpu"))


class SteppingItself(type(zoo.get_variant("vae"))):
    """A third-party train_step from before precision contexts: plain backward() and step()."""

    def train_step(self, model, batch, optimizers, *, step):
        (optimizer,) = optimizers.values()
        out = self.loss(model, batch, step=step)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        return out.detached()


def test_a_train_step_that_bypasses_the_scaler_fails_before_changing_a_weight(digits: TensorData) -> None:
    model = tiny("vae")
    before = weights(model)
    with pytest.raises(ConfigError, match=r"stepped its optimiser 'model' itself, but fp16 needs its gradients "
                                          r"unscaled.*ctx\.step\(optimizer\)"):
        zoo.Trainer(model, variant=SteppingItself(), precision="fp16", max_steps=2, **SETTINGS).fit(digits)
    assert_same(before, weights(model))


def test_a_train_step_without_autocast_trains_in_fp32_with_a_warning(digits: TensorData, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="zoo.stepping"):
        result = zoo.Trainer(tiny("vae"), variant=SteppingItself(), precision="bf16", max_steps=3,
                             **SETTINGS).fit(digits)
    assert result.steps == 3
    assert "outside step_context().autocast(), so precision='bf16' has no effect" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ["vae", "vae-gan"])
def test_reduced_precision_on_cuda(digits: TensorData, name: str, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = tiny(name)
    variant, seen = recording(name)
    result = zoo.Trainer(model, variant=variant, precision=precision, max_steps=8,
                         **dict(SETTINGS, device="cuda")).fit(digits)
    assert result.steps == 8
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cuda", torch.float32)}
    assert all(t.dtype == torch.float32 for terms in seen for t in terms.values())
    assert all(math.isfinite(v) for v in result.history[-1].values())


def test_steps_the_fp16_scaler_skips_are_reported(digits: TensorData, tmp_path, caplog, monkeypatch) -> None:
    """A scale so large that every step overflows: no weight changes, and the result, the logs, the progress
    bar's terms and a warning all say that every step was skipped (issue 14, item 12)."""
    # No TensorBoard writer: each one takes a process-wide number for its file name, and test_logs reads its
    # event files in name order, which breaks once that number reaches two digits.
    monkeypatch.setattr("zoo.logs._tensorboard", lambda folder, purge_step: None)
    model = tiny("vae")
    before = weights(model)
    trainer = zoo.Trainer(model, precision="fp16", max_steps=8, log_dir=str(tmp_path), log_every=4, **SETTINGS)
    trainer.context.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        result = trainer.fit(digits)
    assert result.steps == 8 and result.skipped_steps == 8
    assert_same(before, weights(model))
    assert result.history[-1]["fp16_skipped"] == 1.0  # the share of skipped steps, shown with the other terms
    rows = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [(r["step"], r["fp16_skipped"]) for r in rows] == [(4, 1.0), (8, 1.0)]
    assert "fp16: 8 of 8 steps were skipped" in caplog.text


def test_no_skipped_steps_no_warning(digits: TensorData, caplog) -> None:
    trainer = zoo.Trainer(tiny("vae"), precision="fp16", max_steps=4, **SETTINGS)
    trainer.context.scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        result = trainer.fit(digits)
    assert result.skipped_steps == 0 and result.history[-1]["fp16_skipped"] == 0.0
    assert "skipped" not in caplog.text
    assert zoo.train(tiny("vae"), digits, max_steps=2, **SETTINGS).skipped_steps == 0  # fp32: none, no term
