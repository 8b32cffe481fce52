"""TrainConfig.compile: the loss through torch.compile trains like the eager loss; bad modes and opting out."""

from __future__ import annotations

import logging

import pytest
import torch

import zoo
from zoo.data import load_dataset
from zoo.errors import ConfigError
from zoo.training import TrainConfig


def tiny_vae() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create("vae", input_shape=(1, 8, 8), hidden_dims=(16,), latent_dim=2)


def trained(compile_mode: str | None) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    data = load_dataset("digits", "train")
    model = tiny_vae()
    result = zoo.train(model, data.x[:330], epochs=2, batch_size=32, progress=False, device="cpu",
                       compile=compile_mode)  # a last batch of 10: recompiled with a dynamic batch size
    return model.state_dict(), result.history


def test_a_compiled_loss_trains_like_the_eager_one() -> None:
    """22 steps of a VAE with the loss compiled by inductor (each epoch's last batch smaller: a dynamic batch
    size): the same weights and epoch means as eager, up to float reordering (inductor's fused kernels sum
    in another order). Inductor draws the reparameterisation
    noise with torch's own generator here (``fallback_random``, set through the config's own ``patch``: a
    monkeypatched config attribute is deleted on undo, and the next compile in the session fails), so both runs
    see the same noise."""
    import torch._inductor.config as inductor
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    eager, eager_history = trained(None)
    assert not counters["stats"]["unique_graphs"]
    with inductor.patch(fallback_random=True):
        compiled, compiled_history = trained("default")
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the loss
    assert eager.keys() == compiled.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    for ours, theirs in zip(compiled_history, eager_history, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-4)
    assert any(not torch.equal(compiled[k], tiny_vae().state_dict()[k]) for k in compiled)  # it did train


def test_an_unknown_compile_mode_names_the_modes() -> None:
    with pytest.raises(ConfigError, match=r"compile must be one of 'default', 'reduce-overhead'.* not 'fast'"):
        TrainConfig(compile="fast")


def test_a_variant_can_opt_out(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    variant = zoo.get_variant("vae")
    monkeypatch.setattr(type(variant), "compilable", False)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled a variant that opted out"))
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        zoo.train(tiny_vae(), load_dataset("digits", "train").x[:64], epochs=1, batch_size=32, progress=False,
                  device="cpu", compile="default")
    assert "opts out of torch.compile" in caplog.text


SCHEDULED = {
    "ladder-vae, no warm-up": ("ladder-vae", {}),
    "ladder-vae, warm-up": ("ladder-vae", {"warmup_steps": 15}),
    "beta-vae, warm-up and capacity": ("beta-vae", {"hidden_dims": (16,), "latent_dim": 2, "beta": 4.0,
                                                    "warmup_steps": 15, "capacity_max": 5.0, "capacity_steps": 30}),
}


@pytest.mark.parametrize("name", list(SCHEDULED))
def test_a_compiled_schedule_compiles_once_per_batch_shape_and_trains_like_eager(name: str) -> None:
    """A loss whose KL weight or capacity follows the step: the compiled loss gets the step as a tensor, so
    the schedule is part of one graph (two graphs: the full batches and the smaller last one) instead of a
    recompilation at every step; the run matches the eager one (22 steps, through the warm-up's end)."""
    import torch._inductor.config as inductor
    from torch._dynamo.utils import counters

    variant, settings = SCHEDULED[name]
    config = {**vars(zoo.get_variant(variant).tiny_config()), **settings}
    runs = {}
    for mode in (None, "default"):
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        model = zoo.create(variant, **config)
        with inductor.patch(fallback_random=True):
            result = zoo.train(model, load_dataset("digits", "train").x[:330], epochs=2, batch_size=32,
                               progress=False, device="cpu", compile=mode)
        runs[mode] = model.state_dict(), result.history, counters["stats"]["unique_graphs"]
    (eager, eager_history, _), (compiled, compiled_history, graphs) = runs[None], runs["default"]
    assert graphs == 2
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    for ours, theirs in zip(compiled_history, eager_history, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-4)


def test_the_compiled_step_is_made_on_the_batch_device() -> None:
    """The step tensor of a compiled loss goes where the batch is (a CPU step would keep "reduce-overhead" from
    capturing a CUDA graph); without a tensor batch, where the model's parameters are."""
    from zoo.compiling import step_device

    model = tiny_vae().to("meta")
    assert step_device((model, (torch.zeros(2, 1, 8, 8, device="meta"),))) == torch.device("meta")
    assert step_device((model, torch.zeros(2, device="meta"))) == torch.device("meta")
    assert step_device((model, "not a tensor")) == torch.device("meta")  # the parameters'
    assert step_device((tiny_vae(), (torch.zeros(2, 1, 8, 8),))) == torch.device("cpu")
    assert step_device(()) == torch.device("cpu")
