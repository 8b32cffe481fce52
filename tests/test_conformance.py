"""Every installed variant passes the conformance kit, and the kit catches broken variants."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from zoo_plugins.autoencoders import Autoencoder, AutoencoderConfig, AutoencoderVariant
from zoo_plugins.cvae import CVAEVariant
from zoo_plugins.vae import VAEModel, VAEVariant
from zoo_plugins.vqvae import VQVAEModel, VQVAEVariant

import zoo
from zoo.distributions import DiagonalGaussian, QuantizedCode
from zoo.stepping import step_context
from zoo.testing import VariantConformance, is_registered
from zoo.variant import Batch, LossOutput, Variant, make_adam, split_batch

VARIANTS = zoo.list_variants()


class TestInstalledVariants(VariantConformance):
    """The built-in variants (and any installed plugin's) run every check of the kit."""

    @pytest.fixture(params=VARIANTS, ids=VARIANTS)
    def variant(self, request: pytest.FixtureRequest) -> Variant:
        return zoo.get_variant(request.param)


def test_builtin_variants_are_installed() -> None:
    assert {"ae", "overcomplete-ae", "dae", "sae", "cae", "vae", "beta-vae", "cvae"} <= set(VARIANTS)


# -- registering a variant in-process, as a third-party plugin's tests would ----------------------
class _Plugin:
    """A plugin object registering the given variants (what a plugin module does with @hookimpl)."""

    def __init__(self, *variants: Variant) -> None:
        self.variants = variants

    @zoo.hookimpl
    def zoo_register_variants(self, register: Any) -> None:
        for variant in self.variants:
            register(variant)


@contextlib.contextmanager
def registered(*variants: Variant) -> Iterator[None]:
    name = "conformance-test-" + "-".join(v.name for v in variants)
    zoo.register_plugin(_Plugin(*variants), name=name)
    try:
        yield
    finally:
        zoo.unregister_plugin(name)


# -- a well-behaved third-party variant: the documented usage --------------------------------------
@dataclasses.dataclass
class ThirdPartyConfig(AutoencoderConfig):
    likelihood: str = "mse"


class ThirdPartyAutoencoder(Autoencoder):
    """A plain autoencoder defined outside the zoo (stands in for a third-party plugin)."""


class ThirdPartyVariant(AutoencoderVariant):
    name = "third-party-ae"
    config_class = ThirdPartyConfig
    description = "test-only third-party autoencoder"

    def build(self, config: ThirdPartyConfig) -> ThirdPartyAutoencoder:
        return ThirdPartyAutoencoder(config)


@pytest.fixture(scope="class")
def third_party_plugin() -> Iterator[None]:
    with registered(ThirdPartyVariant()):
        yield


@pytest.mark.usefixtures("third_party_plugin")
class TestThirdPartyVariant(VariantConformance):
    """The usage the kit documents, with the plugin registered for the duration of the class."""

    @pytest.fixture
    def variant(self) -> Variant:
        return ThirdPartyVariant()


def test_unregistered_variant_runs_checks_but_skips_save_load(tmp_path: Path) -> None:
    variant = ThirdPartyVariant()
    assert not is_registered(variant)
    kit = VariantConformance()
    kit.test_forward_shapes(variant)
    kit.test_loss_decreases(variant)
    with pytest.raises(pytest.skip.Exception, match="not registered"):
        kit.test_save_load_round_trip(variant, tmp_path)


def test_skip_names_the_class_that_holds_the_name(tmp_path: Path) -> None:
    class Impostor(VAEVariant):
        pass  # same name 'vae', another class: zoo.load would build the registered class, not this one

    with pytest.raises(pytest.skip.Exception) as skipped:
        VariantConformance().test_save_load_round_trip(Impostor(), tmp_path)
    message = str(skipped.value)
    assert "not registered" not in message
    assert "'vae' is registered to another class, zoo_plugins.vae.VAEVariant (plugin 'vae')" in message


# -- broken variants: each check must fail on the defect it is about ------------------------------
kit = VariantConformance()


class NaNLossVariant(AutoencoderVariant):
    name = "broken-nan-loss"

    def loss(self, model: Autoencoder, batch: Batch, *, step: int = 0) -> LossOutput:
        out = super().loss(model, batch, step=step)
        return LossOutput(out.total * float("nan"), out.terms)


class UnusedParameterModel(Autoencoder):
    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        self.unused = nn.Parameter(torch.zeros(3))


class UnusedParameterVariant(AutoencoderVariant):
    name = "broken-unused-param"

    def build(self, config: AutoencoderConfig) -> UnusedParameterModel:
        return UnusedParameterModel(config)


class NoLearningVariant(AutoencoderVariant):
    name = "broken-no-learning"

    def train_step(self, model: nn.Module, batch: Batch, optimizers: dict, *, step: int) -> dict[str, Tensor]:
        return self.loss(model, batch, step=step).detached()  # forgets to step the optimiser


class OrphanOptimizerVariant(AutoencoderVariant):
    name = "broken-orphan-optimizer"

    def configure_optimizers(self, model: nn.Module, train_config: Any) -> dict[str, torch.optim.Optimizer]:
        return {"model": make_adam(model.encoder.parameters(), train_config)}  # forgets the decoder


class IdleOptimizerVariant(AutoencoderVariant):
    """Two optimisers, as an adversarial variant has; train_step forgets to step the decoder's."""

    name = "broken-idle-optimizer"

    def configure_optimizers(self, model: nn.Module, train_config: Any) -> dict[str, torch.optim.Optimizer]:
        return {"encoder": make_adam(model.encoder.parameters(), train_config),
                "decoder": make_adam(model.decoder.parameters(), train_config)}

    def train_step(self, model: nn.Module, batch: Batch, optimizers: dict, *, step: int) -> dict[str, Tensor]:
        out = self.loss(model, batch, step=step)
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        out.total.backward()
        optimizers["encoder"].step()
        return out.detached()


class FlatDecodeModel(Autoencoder):
    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return super().decode(z).flatten(1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return super().decode(self.code(x))


class FlatDecodeVariant(AutoencoderVariant):
    name = "broken-flat-decode"

    def build(self, config: AutoencoderConfig) -> FlatDecodeModel:
        return FlatDecodeModel(config)


class NoisyEvalModel(Autoencoder):
    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return super().forward(x + 0.01 * torch.randn_like(x))  # noise even in eval mode


class NoisyEvalVariant(AutoencoderVariant):
    name = "broken-noisy-eval"

    def build(self, config: AutoencoderConfig) -> NoisyEvalModel:
        return NoisyEvalModel(config)


class ForgetfulModel(Autoencoder):
    """Part of its state is a non-persistent buffer, re-drawn at random on every build."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        self.register_buffer("input_scale", 1 + torch.rand(config.input_shape), persistent=False)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return super().forward(x * self.input_scale)


class ForgetfulVariant(AutoencoderVariant):
    name = "broken-forgetful"

    def build(self, config: AutoencoderConfig) -> ForgetfulModel:
        return ForgetfulModel(config)


class GlobalRNGSampleModel(VAEModel):
    def sample(self, n: int, y: Any = None, generator: torch.Generator | None = None) -> Tensor:
        return super().sample(n, y)  # ignores the generator


class GlobalRNGSampleVariant(VAEVariant):
    name = "broken-global-rng-sample"

    def build(self, config: Any) -> GlobalRNGSampleModel:
        return GlobalRNGSampleModel(config)


class SamplingAutoencoder(Autoencoder):
    def sample(self, n: int, y: Any = None, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(torch.randn(n, self.config.latent_dim, generator=generator))


class UndeclaredGenerativeVariant(AutoencoderVariant):
    name = "broken-undeclared-generative"  # samples, but does not say generative = True

    def build(self, config: AutoencoderConfig) -> SamplingAutoencoder:
        return SamplingAutoencoder(config)


class LabelBlindModel(VAEModel):
    def decode(self, z: Tensor, y: Any = None) -> Tensor:
        return super().decode(z, torch.zeros(len(z), dtype=torch.long))  # always class 0


class LabelBlindVariant(CVAEVariant):
    name = "broken-label-blind"

    def build(self, config: Any) -> LabelBlindModel:
        return LabelBlindModel(config)


class SilentLabelsVariant(CVAEVariant):
    """Loss quietly trains unconditionally when labels are missing."""

    name = "broken-silent-labels"

    def loss(self, model: VAEModel, batch: Batch, *, step: int = 0) -> LossOutput:
        x, y = split_batch(batch)
        y = torch.zeros(len(x), dtype=torch.long) if y is None else y
        return VAEVariant.loss(self, model, (x, y))


class WrongTinyConfigVariant(AutoencoderVariant):
    name = "broken-tiny-config"

    def tiny_config(self) -> Any:
        return dataclasses.asdict(super().tiny_config())  # a dict, not the config dataclass


class LossyConfigVariant(AutoencoderVariant):
    name = "broken-lossy-config"

    def config_to_json(self, config: AutoencoderConfig) -> dict[str, Any]:
        data = super().config_to_json(config)
        data.pop("latent_dim")
        return data


class LenientConfigVariant(AutoencoderVariant):
    name = "broken-lenient-config"

    def config_from_json(self, data: dict[str, Any], source: str) -> AutoencoderConfig:
        known = {f.name for f in dataclasses.fields(self.config_class)}
        return super().config_from_json({k: v for k, v in data.items() if k in known}, source)


class DirectStepVariant(AutoencoderVariant):
    """Steps its optimiser itself: under fp16 it would train on scaled gradients, under torchrun unsynced."""

    name = "broken-direct-step"

    def train_step(self, model: nn.Module, batch: Batch, optimizers: dict, *, step: int) -> dict[str, Tensor]:
        ctx = step_context()
        (optimizer,) = optimizers.values()
        with ctx.autocast():
            out = self.loss(model, batch, step=step)
        optimizer.zero_grad()
        ctx.backward(out.total)
        optimizer.step()
        return out.detached()


class NoAutocastVariant(AutoencoderVariant):
    """Computes its loss outside ctx.autocast(): --precision bf16 would silently train in float32."""

    name = "broken-no-autocast"

    def train_step(self, model: nn.Module, batch: Batch, optimizers: dict, *, step: int) -> dict[str, Tensor]:
        ctx = step_context()
        (optimizer,) = optimizers.values()
        out = self.loss(model, batch, step=step)
        optimizer.zero_grad()
        ctx.backward(out.total)
        ctx.step(optimizer)
        return out.detached()


class UndeclaredLikelihoodVariant(AutoencoderVariant):
    name = "broken-undeclared-likelihood"  # implements reconstruction_nll (inherited) without saying so
    has_likelihood = False


class SummedKLPosterior(DiagonalGaussian):
    def kl(self) -> Tensor:
        return super().kl().sum(-1)  # per example instead of per latent element


class SummedKLModel(VAEModel):
    def encode(self, x: Tensor, y: Any = None) -> DiagonalGaussian:
        posterior = super().encode(x, y)
        return SummedKLPosterior(posterior.mean, posterior.logvar)


class SummedKLVariant(VAEVariant):
    name = "broken-summed-kl"

    def build(self, config: Any) -> SummedKLModel:
        return SummedKLModel(config)

    def terms(self, model: VAEModel, x: Tensor, y: Tensor | None) -> Any:
        posterior = model.encode(x, y)
        return posterior, model.reconstruction_nll(x, posterior.sample(), y), posterior.kl()


class MisdeclaredLatentModel(Autoencoder):
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim + 1,)  # says one more latent than its code has


class MisdeclaredLatentVariant(AutoencoderVariant):
    name = "broken-latent-shape"

    def build(self, config: AutoencoderConfig) -> MisdeclaredLatentModel:
        return MisdeclaredLatentModel(config)


class UndescribedMetricVariant(AutoencoderVariant):
    name = "broken-undescribed-metric"

    def metrics(self, model: nn.Module, data: Any, *, seed: int = 0) -> dict[str, float]:
        return {"code_norm": float(model.code(data.x).norm(dim=1).mean())}


class UnseededMetricVariant(AutoencoderVariant):
    name = "broken-unseeded-metric"
    metric_names = {"noisy_error": "reconstruction error of noisy inputs"}

    def metrics(self, model: nn.Module, data: Any, *, seed: int = 0) -> dict[str, float]:
        noisy = data.x + 0.1 * torch.randn_like(data.x)  # the global RNG, not one seeded with `seed`
        return {"noisy_error": float((model(noisy) - data.x).pow(2).mean())}


class Float32CodeModel(Autoencoder):
    def code(self, x: Tensor) -> Tensor:
        return super().code(x).float()  # pins float32 whatever the model's dtype


class Float32CodeVariant(AutoencoderVariant):
    name = "broken-float32-code"

    def build(self, config: AutoencoderConfig) -> Float32CodeModel:
        return Float32CodeModel(config)


class ShiftedIndicesModel(VQVAEModel):
    def encode(self, x: Tensor, y: Any = None) -> QuantizedCode:
        code = super().encode(x)
        return QuantizedCode(code.quantized, (code.indices + 1) % len(code.codebook), code.codebook, code.encoded)


class ShiftedIndicesVariant(VQVAEVariant):
    name = "broken-shifted-indices"

    def build(self, config: Any) -> ShiftedIndicesModel:
        return ShiftedIndicesModel(config)


BROKEN = [
    (WrongTinyConfigVariant, "test_variant_metadata", "expected AutoencoderConfig"),
    (NaNLossVariant, "test_loss_finite_and_backward", "not finite"),
    (UnusedParameterVariant, "test_loss_finite_and_backward", "no gradient to unused"),
    (UnusedParameterVariant, "test_train_step_updates_parameters", "left unused unchanged"),
    (OrphanOptimizerVariant, "test_train_step_updates_parameters", "leaves out decoder"),
    (IdleOptimizerVariant, "test_train_step_updates_parameters", "unchanged"),
    (NoLearningVariant, "test_loss_decreases", "did not decrease"),
    (FlatDecodeVariant, "test_forward_shapes", "decode gave shape"),
    (NoisyEvalVariant, "test_eval_deterministic", "eval mode"),
    (ForgetfulVariant, "test_save_load_round_trip", "eval output differs"),
    (GlobalRNGSampleVariant, "test_sampling", "same seeded generator"),
    (UndeclaredGenerativeVariant, "test_sampling", "NotImplementedError"),
    (LabelBlindVariant, "test_conditioning", "ignores the labels"),
    (SilentLabelsVariant, "test_conditioning", r"loss\(model, x\) without labels did not raise"),
    (LossyConfigVariant, "test_config_json_round_trip", "round trip changed"),
    (LenientConfigVariant, "test_config_json_round_trip", "accepted the unknown key"),
    (DirectStepVariant, "test_train_step_uses_step_context", "stepped an optimiser directly"),
    (IdleOptimizerVariant, "test_train_step_uses_step_context", "stepped an optimiser directly"),
    (NoAutocastVariant, "test_train_step_uses_step_context", "never entered"),
    (NoLearningVariant, "test_train_step_uses_step_context", "never entered"),
    (UndeclaredLikelihoodVariant, "test_capabilities", "does not declare has_likelihood"),
    (SummedKLVariant, "test_capabilities", "per latent element"),
    (MisdeclaredLatentVariant, "test_forward_shapes", r"mode\(\) gave shape"),
    (UndescribedMetricVariant, "test_variant_metrics", "without a description"),
    (UnseededMetricVariant, "test_variant_metrics", "differ between two calls"),
    (Float32CodeVariant, "test_save_load_round_trip", "dtype=torch.float64 the model fails"),
    (ShiftedIndicesVariant, "test_forward_shapes", "quantized must be the codebook's rows at indices"),
]


@pytest.mark.parametrize(("variant_class", "check", "message"), BROKEN, ids=[b[0].name for b in BROKEN])
def test_kit_catches_broken_variant(variant_class: type[Variant], check: str, message: str,
                                    tmp_path: Path) -> None:
    variant = variant_class()
    method = getattr(kit, check)
    args = (variant, tmp_path) if check == "test_save_load_round_trip" else (variant,)
    with registered(variant), pytest.raises(AssertionError, match=message):
        method(*args)


def test_broken_variants_pass_the_other_checks() -> None:
    """The defects above are specific: a broken variant still passes an unrelated check."""
    kit.test_forward_shapes(NaNLossVariant())
    kit.test_loss_finite_and_backward(NoisyEvalVariant())
    kit.test_loss_finite_and_backward(IdleOptimizerVariant())
    kit.test_loss_decreases(IdleOptimizerVariant())
    kit.test_sampling(LabelBlindVariant())
    with registered(ForgetfulVariant()):
        kit.test_loss_decreases(ForgetfulVariant())
    kit.test_train_step_uses_step_context(AutoencoderVariant())
    kit.test_capabilities(DirectStepVariant())
    kit.test_loss_decreases(DirectStepVariant())
    kit.test_forward_shapes(SummedKLVariant())
    kit.test_loss_decreases(UnseededMetricVariant())
    kit.test_forward_shapes(Float32CodeVariant())
    kit.test_loss_decreases(ShiftedIndicesVariant())


def test_every_check_of_the_kit_is_documented_and_every_documented_check_exists() -> None:
    """CONTRIBUTING.md's table of checks and the kit's test methods are the same list; so are the settings."""
    guide = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text()
    section = guide.split("### 6. Test with the conformance kit", 1)[1].split("### 7.", 1)[0]
    documented = set(re.findall(r"^\| `(test_\w+)` \|", section, flags=re.M))
    checks = {name for name in dir(VariantConformance) if name.startswith("test_")}
    assert documented == checks, (f"undocumented: {sorted(checks - documented)}; "
                                  f"documented but missing: {sorted(documented - checks)}")
    for setting in ("batch_size", "train_steps", "learning_rate", "window", "seed"):
        assert f"`{setting} = {getattr(VariantConformance, setting)}`" in section, setting
    kit_doc = zoo.testing.__doc__
    assert all(f"``{name}``" in kit_doc for name in checks)
