"""Training: loss goes down, step counts, seeding, validation, non-finite losses, data checks, devices."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from zoo_plugins.vae import VAEVariant

import zoo
from zoo.data import TensorData, load_dataset
from zoo.errors import ConfigError, DataError, NonFiniteLossError
from zoo.training import Trainer, evaluate_loss, resolve_device


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def digits_test() -> TensorData:
    return load_dataset("digits", "test")


def tiny_vae(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    settings = {"input_shape": (1, 8, 8), "latent_dim": 2, "hidden_dims": (32,)} | overrides
    return zoo.create("vae", **settings)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- the loss goes down, step counts --------------------------------------------------------------

def test_train_reduces_loss_on_digits(digits: TensorData) -> None:
    assert len(digits) == 1438 and digits.input_shape == (1, 8, 8)
    model = tiny_vae()
    result = zoo.train(model, digits, epochs=4, batch_size=64, lr=3e-3, progress=False, device="cpu")
    assert len(result.history) == 4
    assert result.steps == 4 * math.ceil(1438 / 64) == 92
    first, last = result.history[0], result.history[-1]
    assert set(first) == {"loss", "reconstruction", "kl", "neg_elbo"}
    assert last["loss"] < first["loss"] - 1.0, result.history
    assert last["reconstruction"] < first["reconstruction"]
    assert all(math.isfinite(v) for epoch in result.history for v in epoch.values())
    # for the plain VAE the minimised loss is the negative ELBO = reconstruction + KL
    assert last["loss"] == pytest.approx(last["reconstruction"] + last["kl"], rel=1e-5)
    assert last["neg_elbo"] == pytest.approx(last["loss"], rel=1e-6)
    assert model.training is False
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.parametrize(("max_steps", "epochs_run"), [(5, 1), (30, 2), (23, 1), (1000, 3)])
def test_max_steps_stops_at_exactly_that_step(digits: TensorData, max_steps: int, epochs_run: int) -> None:
    data = TensorData(digits.x[:368])  # 23 batches of 16
    model = tiny_vae()
    calls = []

    class Counting(VAEVariant):
        def train_step(self, model, batch, optimizers, *, step):
            calls.append(step)
            return super().train_step(model, batch, optimizers, step=step)

    result = Trainer(model, variant=Counting(), epochs=3, batch_size=16, max_steps=max_steps,
                     progress=False, device="cpu").fit(data)
    expected = min(max_steps, 3 * 23)
    assert result.steps == expected
    assert calls == list(range(expected))
    assert len(result.history) == epochs_run


def test_steps_with_and_without_drop_last() -> None:
    data = images(50)
    result = zoo.train(tiny_vae(), data, epochs=2, batch_size=16, progress=False, device="cpu")
    assert result.steps == 2 * 4
    result = zoo.train(tiny_vae(), data, epochs=2, batch_size=16, drop_last=True, progress=False,
                       device="cpu")
    assert result.steps == 2 * 3


def test_unknown_train_setting_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        zoo.train(tiny_vae(), images(8), epoch=1, progress=False)


def test_data_of_the_wrong_shape_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"examples of shape \(1, 9, 9\) but the model expects \(1, 8, 8\)"):
        zoo.train(tiny_vae(), torch.rand(8, 1, 9, 9), epochs=1, progress=False)


# -- seeding ------------------------------------------------------------------------------------

def test_same_seed_same_weights_different_seed_different_weights(digits: TensorData) -> None:
    data = TensorData(digits.x[:256])
    start = tiny_vae()
    runs = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        model = copy.deepcopy(start)
        zoo.train(model, data, epochs=2, batch_size=32, seed=seed, progress=False, device="cpu")
        runs[name] = weights(model)
    assert runs["a"].keys() == runs["b"].keys() == runs["c"].keys()
    for key in runs["a"]:
        assert torch.equal(runs["a"][key], runs["b"][key]), f"{key} differs between two runs with seed 7"
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
    assert any(not torch.equal(runs["a"][k], start.state_dict()[k]) for k in runs["a"])


# -- validation ---------------------------------------------------------------------------------

def test_validation_history_matches_history(digits: TensorData, digits_test: TensorData) -> None:
    model = tiny_vae()
    train, val = TensorData(digits.x[:256]), TensorData(digits_test.x[:100])
    torch.manual_seed(123)
    result = zoo.train(model, train, val_data=val, epochs=3, batch_size=64, progress=False, device="cpu")
    assert len(result.val_history) == len(result.history) == 3
    assert all(set(v) == set(h) for v, h in zip(result.val_history, result.history, strict=True))
    assert all(math.isfinite(x) for epoch in result.val_history for x in epoch.values())
    # the last validation entry is the trained model's loss on val: KL is deterministic given x
    again = evaluate_loss(zoo.get_variant("vae"), model, val)
    assert again["kl"] == pytest.approx(result.val_history[-1]["kl"], rel=1e-5)
    assert zoo.train(tiny_vae(), train, epochs=2, progress=False, device="cpu").val_history == []


# -- non-finite losses --------------------------------------------------------------------------

class NaNInputAt(VAEVariant):
    """The VAE, but the batch of step ``bad_step`` contains a NaN pixel (as corrupt data would)."""

    def __init__(self, bad_step: int) -> None:
        self.bad_step = bad_step
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}
        self.model: torch.nn.Module | None = None

    def loss(self, model, batch, *, step=0):
        if step == self.bad_step:
            x = batch[0].clone()
            x[0, 0, 0, 0] = float("nan")
            batch = (x, *batch[1:])
        return super().loss(model, batch, step=step)

    def train_step(self, model, batch, optimizers, *, step):
        terms = super().train_step(model, batch, optimizers, step=step)
        self.after_step[step] = weights(model)
        return terms


def test_non_finite_loss_stops_with_last_good_weights() -> None:
    model = tiny_vae()
    variant = NaNInputAt(bad_step=3)
    trainer = Trainer(model, variant=variant, epochs=2, batch_size=16, lr=1e-2, progress=False, device="cpu")
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(images(128))
    message = str(info.value)
    assert isinstance(info.value, FloatingPointError)
    assert "non-finite loss at step 3 " in message
    for term in ("loss=nan", "reconstruction=nan", "kl=nan", "neg_elbo=nan"):
        assert term in message, message
    assert "last good" in message
    assert sorted(variant.after_step) == [0, 1, 2]
    assert trainer.step == 3
    now = weights(model)
    for key, value in variant.after_step[2].items():
        assert torch.equal(now[key], value), f"the failed step changed {key}"
    assert all(torch.isfinite(v).all() for v in now.values())
    assert any(not torch.equal(variant.after_step[1][k], variant.after_step[2][k]) for k in now)


def test_non_finite_loss_at_first_step_leaves_initial_weights() -> None:
    model = tiny_vae()
    initial = weights(model)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 0 \(loss=nan"):
        Trainer(model, variant=NaNInputAt(bad_step=0), epochs=1, batch_size=16, progress=False,
                device="cpu").fit(images(32))
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())


def test_deferred_check_skips_the_bad_step_on_the_device_and_stops_at_the_next_read(
        capsys: pytest.CaptureFixture[str]) -> None:
    """finite_check="deferred" (the GPU default): with the terms read every step, the run stops after step 3
    with the weights of step 2, as the per-step check does, though the loss was never read on the host."""
    model = tiny_vae()
    variant = NaNInputAt(bad_step=3)
    trainer = Trainer(model, variant=variant, epochs=2, batch_size=16, lr=1e-2, device="cpu",
                      finite_check="deferred", refresh_every=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3 \(found on the device"):
        trainer.fit(images(128))
    assert sorted(variant.after_step) == [0, 1, 2, 3] and trainer.step == 4
    assert all(torch.equal(variant.after_step[3][k], variant.after_step[2][k]) for k in variant.after_step[2])
    assert all(torch.equal(weights(model)[k], v) for k, v in variant.after_step[2].items())


def test_deferred_check_read_at_the_epoch_end_keeps_every_good_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read only at the epoch end, the run trains on past the bad step: that step changed no weight and no
    optimiser state (Adam counts 7 steps of 8), every weight is finite, and the loss was never read per step."""
    def no_host_read(*args, **kwargs):
        raise AssertionError("the per-step host read ran in deferred mode")

    monkeypatch.setattr("zoo.variant.ensure_finite", no_host_read)
    model = tiny_vae()
    variant = NaNInputAt(bad_step=3)
    trainer = Trainer(model, variant=variant, epochs=1, batch_size=16, lr=1e-2, progress=False, device="cpu",
                      finite_check="deferred")
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3 "):
        trainer.fit(images(128))
    assert trainer.step == 8
    assert all(torch.equal(variant.after_step[3][k], variant.after_step[2][k]) for k in variant.after_step[2])
    now = weights(model)
    assert all(torch.isfinite(v).all() for v in now.values())
    assert any(not torch.equal(now[k], variant.after_step[2][k]) for k in now)  # steps 4 to 7 trained
    (optimizer,) = trainer.optimizers.values()
    assert {int(state["step"]) for state in optimizer.state.values()} == {7}


def test_a_deferred_check_needs_fused_optimisers(monkeypatch: pytest.MonkeyPatch) -> None:
    variant = zoo.get_variant("vae")
    monkeypatch.setattr(type(variant), "configure_optimizers",
                        lambda self, model, cfg: {"sgd": torch.optim.SGD(model.parameters(), lr=0.1)})
    with pytest.raises(ConfigError, match="optimiser 'sgd' is not a fused one"):
        Trainer(tiny_vae(), epochs=1, batch_size=16, progress=False, device="cpu",
                finite_check="deferred").fit(images(32))
    with pytest.raises(ConfigError, match="finite_check must be one of 'auto', 'step', 'deferred'"):
        Trainer(tiny_vae(), finite_check="later")


# -- data checks --------------------------------------------------------------------------------

def pixels_0_255(n: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=generator).float()


def test_bernoulli_on_0_255_data_fails_at_first_step() -> None:
    model = tiny_vae()
    initial = weights(model)
    trainer = Trainer(model, epochs=1, batch_size=16, progress=False, device="cpu")
    with pytest.raises(DataError) as info:
        trainer.fit(pixels_0_255())
    message = str(info.value)
    assert "[0, 1]" in message
    assert "divide 0-255 pixels by 255" in message
    assert "likelihood='gaussian'" in message
    assert trainer.step == 0
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())


def test_gaussian_likelihood_trains_on_0_255_data() -> None:
    model = tiny_vae(likelihood="gaussian", decoder_std=32.0)
    result = zoo.train(model, pixels_0_255(), epochs=3, batch_size=16, lr=1e-2, progress=False, device="cpu")
    assert result.steps == 12
    assert all(math.isfinite(v) for epoch in result.history for v in epoch.values())
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_uint8_images_are_scaled_for_bernoulli() -> None:
    data = pixels_0_255().to(torch.uint8)
    result = zoo.train(tiny_vae(), data, epochs=1, batch_size=16, progress=False, device="cpu")
    assert result.steps == 4
    # BCE of 64 pixels in [0, 1] with near-0.5 predictions is about 64 * log 2, not thousands
    assert 20 < result.history[0]["reconstruction"] < 60


def test_conditional_variant_needs_labels() -> None:
    v = zoo.get_variant("cvae")
    model = zoo.create("cvae", v.tiny_config())
    with pytest.raises(DataError) as info:
        zoo.train(model, images(32), epochs=1, progress=False, device="cpu")
    assert "'cvae'" in str(info.value) and "labels" in str(info.value)
    # with labels the same data trains
    labels = torch.arange(32) % model.config.num_classes
    assert zoo.train(model, (images(32), labels), epochs=1, batch_size=16, progress=False,
                     device="cpu").steps == 2


# -- devices ------------------------------------------------------------------------------------

def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: 'auto' picks it")
def test_auto_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    model = tiny_vae()
    trainer = Trainer(model, epochs=1, progress=False)
    assert trainer.device == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda() -> None:
    model = tiny_vae()
    result = zoo.train(model, images(64), epochs=2, batch_size=16, device="cuda", progress=False)
    assert result.steps == 8
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert all(math.isfinite(v) for epoch in result.history for v in epoch.values())
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_validation_data_outside_unit_range_is_still_caught() -> None:
    """The Trainer checks the data's [0, 1] range once instead of every step: all of it, validation too."""
    train = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        zoo.train(tiny_vae(), train, val_data=pixels_0_255(16), epochs=1, batch_size=16, progress=False,
                  device="cpu")


def test_validation_data_outside_unit_range_is_named_before_the_first_step() -> None:
    model = tiny_vae()
    initial = weights(model)
    train = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, epochs=1, batch_size=16, progress=False, device="cpu")
    with pytest.raises(DataError) as info:
        trainer.fit(train, pixels_0_255(16))
    assert str(info.value).startswith("the validation data: the Bernoulli likelihood (BCE) needs targets in [0, 1]")
    assert trainer.step == 0 and all(torch.equal(initial[k], v) for k, v in model.state_dict().items())
    with pytest.raises(DataError, match=r"^the training data: the Bernoulli likelihood"):
        Trainer(model, epochs=1, batch_size=16, progress=False, device="cpu").fit(pixels_0_255(32), train)


def test_labels_beyond_num_classes_are_a_data_error_naming_the_setting() -> None:
    model = zoo.create("cvae", zoo.get_variant("cvae").tiny_config())  # 3 classes
    labels = torch.arange(32) % 10
    trainer = Trainer(model, epochs=1, batch_size=16, progress=False, device="cpu")
    with pytest.raises(DataError) as info:
        trainer.fit((images(32), labels))
    message = str(info.value)
    assert "the training data has labels 0..9 but the model has num_classes=3" in message
    assert "--set num_classes=10" in message
    assert trainer.step == 0
    with pytest.raises(DataError, match="the validation data has labels -1..2"):
        trainer.fit((images(32), labels % 3), (images(4), torch.tensor([0, 1, 2, -1])))


def test_cli_cvae_with_fewer_classes_than_the_data(tmp_path) -> None:
    from test_cli import TINY, run

    code, _, stderr = run(["train", "cvae", "--data", "digits", "--no-progress", *TINY, "--out", str(tmp_path / "m"),
                           "--set", "num_classes=5"])
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "labels 0..9 but the model has num_classes=5" in stderr and "--set num_classes=10" in stderr
    assert not (tmp_path / "m").exists()


def test_running_out_of_memory_is_an_error_naming_what_to_reduce(monkeypatch) -> None:
    from zoo.errors import OutOfMemoryError

    variant = zoo.get_variant("vae")

    def allocate_too_much(*args, **kwargs):  # what the CPU allocator raises for mc_samples=2**31
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 824633720832 bytes. Error code 12\nframe #0: ...")

    monkeypatch.setattr(type(variant), "train_step", allocate_too_much)
    with pytest.raises(OutOfMemoryError) as info:
        zoo.train(tiny_vae(), images(32), epochs=1, batch_size=16, progress=False, device="cpu")
    message = str(info.value)
    assert message.startswith("out of memory at step 0 on cpu ([enforce fail") and "frame #0" not in message
    assert "reduce batch_size or the model's sizes" in message
    monkeypatch.setattr(type(variant), "train_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="^other$"):  # other errors are not disguised
        zoo.train(tiny_vae(), images(32), epochs=1, batch_size=16, progress=False, device="cpu")
