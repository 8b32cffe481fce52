"""A conformance kit for variant authors: one pytest base class that checks the model contract.

Subclass :class:`VariantConformance` in your plugin's test suite and provide a ``variant`` fixture;
pytest then runs every check below against your variant::

    import pytest
    from zoo.testing import VariantConformance

    from my_plugin import MyVariant


    class TestMyVariant(VariantConformance):
        @pytest.fixture
        def variant(self):
            return MyVariant()

Every check builds its model from ``variant.tiny_config()`` and feeds it a small, seeded batch
(``batch_size`` inputs in [0, 1] from ``torch.rand``, shaped like ``config.input_shape``; labels in
``range(num_classes)`` for conditional variants), so the whole kit runs in a few seconds on a CPU.
The checks (CONTRIBUTING.md, "The conformance kit", says the same):

- ``test_variant_metadata``: the name, config class and ``tiny_config`` are usable; the config has
  ``input_shape`` (C, H, W); the model declares ``latent_shape`` (positive ints) and ``num_classes``
  (>= 1 exactly for conditional variants); ``metric_names`` maps names to descriptions.
- ``test_config_json_round_trip``: ``config_to_json`` -> JSON -> ``config_from_json`` gives the same
  config, and an unknown key raises :class:`zoo.errors.ConfigError` naming the key.
- ``test_forward_shapes``: ``model(x)`` has the input's shape in train and eval mode; ``encode`` gives a
  posterior (:class:`zoo.distributions.Posterior`, or a tensor read as a point mass) whose ``mode()``
  and seeded ``sample()`` are (B, *latent_shape) (a quantised code's ``indices`` and ``codebook`` agree
  with its ``quantized`` vectors); ``decode`` of such codes gives (B, *input_shape).
- ``test_capabilities``: what the variant declares holds, and what it implements is declared:
  ``variational`` -> the model's ``latent_kl(posterior)`` is per element and >= 0 where it has a closed
  form, ``posterior.sample_and_log_prob()`` and ``model.prior_log_prob(z)`` work, with and without leading
  sample dims, and the latent groups (``latent_groups``, where declared) cover the units and have a finite KL per
  example (``zoo.contract.group_kl``); ``has_likelihood`` ->
  ``model.reconstruction_nll(x, z, y)`` gives (B,) and (K, B) for K samples, and without the flag it
  raises ``NotImplementedError``.
- ``test_loss_finite_and_backward``: the loss is a finite scalar with finite terms; its gradients are
  finite and not all zero; with the default ``train_step`` it reaches every trainable parameter with a
  gradient that is not zero everywhere (a variant with its own ``train_step``, e.g. a GAN, may return an
  evaluation objective from ``loss``).
- ``test_train_step_updates_parameters``: ``configure_optimizers`` covers every trainable parameter
  and three ``train_step`` calls change every one of them.
- ``test_train_step_uses_step_context``: ``train_step`` computes its loss inside
  ``step_context().autocast()`` and steps every optimiser through ``ctx.step`` (the context is guarded
  as under fp16 or torchrun, where a direct ``optimizer.step()`` would be wrong).
- ``test_loss_decreases``: ``configure_optimizers`` + ``train_step`` on one fixed batch lower the
  monitored term (``variant.monitored_term``, default ``"loss"``) over ``train_steps`` steps at
  ``learning_rate``: the mean of the last ``window`` values is below the mean of the first ``window``.
- ``test_eval_deterministic``: in eval mode ``model(x)`` is bit-for-bit repeatable.
- ``test_save_load_round_trip``: ``save_pretrained`` then ``zoo.load("local-dir:...")`` restores
  every tensor, the config and the eval output exactly, and loaded with ``dtype=torch.float64`` the
  model runs in float64 with the same output (skipped when the variant is not registered in this
  process, since loading looks the variant up by name).
- ``test_sampling``: generative variants sample (n, *input_shape) deterministically under a seeded
  generator; other variants raise ``NotImplementedError`` from ``sample``.
- ``test_conditioning``: conditional variants decode the same code differently for different
  labels, and refuse to run without labels with an error that mentions them.
- ``test_variant_metrics``: ``variant.metrics(model, data, seed=...)`` returns finite floats, each
  described in ``metric_names``, the same for the same seed.

Variant attributes the kit reads (all optional):

``monitored_term``
    Key of the dict returned by ``train_step`` that must decrease (default ``"loss"``). Adversarial
    variants, whose total loss need not fall, name a term such as ``"discriminator"``.
``conformance_frozen_params``
    Names (``fnmatch`` patterns, e.g. ``"backbone.*"``) of trainable parameters that training
    legitimately leaves unchanged. Default: none.

Settings of the kit itself (``batch_size`` 16, ``train_steps`` 25, ``learning_rate`` 1e-2, ``window``
5, ``seed`` 0) are class attributes of :class:`VariantConformance`; override them in the subclass if
needed. A check can also be called directly, ``VariantConformance().test_forward_shapes(variant)``;
a failed check raises ``AssertionError``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from zoo.contract import group_kl, latent_groups, latent_kl
from zoo.data import TensorData
from zoo.distributions import Posterior, QuantizedCode, as_posterior
from zoo.errors import ConfigError
from zoo.stepping import StepContext
from zoo.training import TrainConfig
from zoo.variant import Batch, Variant

__all__ = ["VariantConformance", "as_batch", "is_registered", "make_batch", "make_labels", "make_model",
           "num_classes_of", "seeded", "trainable_parameters", "unknown_config_key"]

#: The key the config round-trip check adds to provoke an unknown-key error.
unknown_config_key = "no_such_setting_for_conformance"

_LABEL_WORDS = re.compile(r"\blabels?\b|\by\b|\bclass(es)?\b|\bcondition", re.IGNORECASE)


# -- helpers (public: handy in a plugin's own tests) -----------------------------------------------
@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block and restore the previous state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def is_registered(variant: Variant) -> bool:
    """True when the plugin registry holds a variant of this exact type under ``variant.name``."""
    from zoo.registry import get_registry

    registered = get_registry().variants.get(variant.name)
    return registered is not None and type(registered) is type(variant)


def _not_registered_reason(variant: Variant) -> str:
    """Why :func:`is_registered` is False: the name is free, or another class holds it."""
    from zoo.registry import get_registry

    registry = get_registry()
    other = registry.variants.get(variant.name)
    if other is None:
        return f"variant {variant.name!r} is not registered in this process"
    return (f"the name {variant.name!r} is registered to another class, {type(other).__module__}."
            f"{type(other).__qualname__} (plugin {registry.variant_plugin[variant.name]!r}), not to "
            f"{type(variant).__module__}.{type(variant).__qualname__}")


def make_model(variant: Variant, config: Any = None, *, seed: int = 0) -> nn.Module:
    """A freshly initialised model of ``variant`` (from ``tiny_config()`` unless ``config`` is given).

    Goes through :func:`zoo.create` when the variant is registered, else builds it directly and sets
    ``model.variant_name``. The initialisation is seeded, so the same call gives the same weights.
    """
    import zoo

    config = variant.tiny_config() if config is None else config
    with seeded(seed):
        if is_registered(variant):
            model = zoo.create(variant.name, config)
        else:
            model = variant.build(variant.make_config(config))
            model.variant_name = variant.name
    return model


def num_classes_of(variant: Variant, config: Any) -> int:
    """Number of labels a conditional variant expects (``config.num_classes``), 0 otherwise."""
    if not variant.conditional:
        return 0
    n = getattr(config, "num_classes", 0)
    assert isinstance(n, int) and n >= 1, (
        f"{variant.name}: a conditional variant's config must have num_classes >= 1, got {n!r}")
    return n


def make_labels(n: int, num_classes: int, *, seed: int = 0) -> Tensor:
    """``n`` int64 labels in ``range(num_classes)`` covering every class when ``n >= num_classes``."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def make_batch(variant: Variant, config: Any, batch_size: int = 16, *,
               seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """``(x, y)``: ``x`` uniform in [0, 1] of shape (B, *input_shape); ``y`` labels or None."""
    input_shape = tuple(config.input_shape)
    x = torch.rand((batch_size, *input_shape), generator=torch.Generator().manual_seed(seed))
    n_classes = num_classes_of(variant, config)
    y = make_labels(batch_size, n_classes, seed=seed + 1) if n_classes else None
    return x, y


def as_batch(x: Tensor, y: Tensor | None) -> Batch:
    """The batch a variant's ``loss``/``train_step`` receive: ``x`` or ``(x, y)``."""
    return x if y is None else (x, y)


def _call(fn: Any, first: Any, y: Tensor | None) -> Any:
    return fn(first) if y is None else fn(first, y)


def _posterior(encoded: Any, variant: Variant) -> Posterior:
    """``encode``'s result as a posterior (a tensor is a point mass); anything else fails the check."""
    assert isinstance(encoded, Posterior | Tensor), (
        f"{variant.name}: encode() must return a zoo.distributions.Posterior (DiagonalGaussian, PointMass, "
        f"QuantizedCode) or a tensor, got {type(encoded).__name__}")
    return as_posterior(encoded)


def _check_quantized_code(code: QuantizedCode, expected: tuple[int, ...], variant: Variant) -> None:
    """An eval-mode quantised code is consistent: int64 ``indices`` (B, h, w) into a (K, D) ``codebook`` whose
    rows at those indices are ``quantized`` (B, D, h, w)."""
    batch, channels, *grid = expected
    indices, codebook = code.indices, code.codebook
    assert indices.dtype == torch.int64 and tuple(indices.shape) == (batch, *grid), (
        f"{variant.name}: QuantizedCode.indices must be int64 of shape {(batch, *grid)}, got {indices.dtype} "
        f"{tuple(indices.shape)}")
    assert codebook.dim() == 2 and codebook.shape[1] == channels, (
        f"{variant.name}: QuantizedCode.codebook must be (K, {channels}), got {tuple(codebook.shape)}")
    assert int(indices.min()) >= 0 and int(indices.max()) < len(codebook), (
        f"{variant.name}: QuantizedCode.indices must lie in 0..{len(codebook) - 1}")
    chosen = codebook[indices].movedim(-1, 1).to(code.quantized.dtype)
    assert torch.equal(chosen, code.quantized), (
        f"{variant.name}: in eval mode QuantizedCode.quantized must be the codebook's rows at indices "
        f"(codebook[indices] with the code dim moved to dim 1)")


def _latent_shape(model: nn.Module, variant: Variant) -> tuple[int, ...]:
    shape = getattr(model, "latent_shape", None)
    assert isinstance(shape, tuple) and shape and all(isinstance(d, int) and d > 0 for d in shape), (
        f"{variant.name}: model.latent_shape must be a tuple of positive ints, (D,) or (C, h, w), got {shape!r}")
    return shape


def trainable_parameters(model: nn.Module, variant: Variant) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs that should train: ``requires_grad`` and not matched by the
    variant's ``conformance_frozen_params`` patterns."""
    frozen = tuple(getattr(variant, "conformance_frozen_params", ()))
    return [(name, p) for name, p in model.named_parameters()
            if p.requires_grad and not any(fnmatch.fnmatchcase(name, pattern) for pattern in frozen)]


def _finite_scalar(value: Any, what: str) -> None:
    assert isinstance(value, Tensor), f"{what} must be a tensor, got {type(value).__name__}"
    assert value.dim() == 0, f"{what} must be a scalar (0-dim tensor), got shape {tuple(value.shape)}"
    assert torch.isfinite(value).item(), f"{what} is not finite: {value.item()}"


# -- the kit ---------------------------------------------------------------------------------------
class VariantConformance:
    """Base class of conformance tests: subclass it and define a ``variant`` fixture.

    The class name does not start with ``Test``, so pytest collects only your subclass.
    """

    #: Examples per batch.
    batch_size: int = 16
    #: Optimisation steps of :meth:`test_loss_decreases` on one fixed batch.
    train_steps: int = 25
    #: Learning rate passed to ``variant.configure_optimizers`` in :meth:`test_loss_decreases`.
    learning_rate: float = 1e-2
    #: How many first and last monitored values :meth:`test_loss_decreases` averages.
    window: int = 5
    #: Seed of the model initialisation, the data and the training steps.
    seed: int = 0

    @pytest.fixture
    def variant(self) -> Variant:
        """Override in the subclass: return the variant under test."""
        raise NotImplementedError("define a `variant` fixture in your VariantConformance subclass")

    # -- shared setup ----------------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        """The ``TrainConfig`` handed to ``variant.configure_optimizers``."""
        return TrainConfig(lr=self.learning_rate, seed=self.seed)

    def setup_model(self, variant: Variant) -> tuple[nn.Module, Tensor, Tensor | None]:
        """(model from ``tiny_config()``, inputs, labels or None), all seeded."""
        config = variant.tiny_config()
        model = make_model(variant, config, seed=self.seed)
        x, y = make_batch(variant, model.config, self.batch_size, seed=self.seed)
        return model, x, y

    # -- checks ----------------------------------------------------------------------------------
    def test_variant_metadata(self, variant: Variant) -> None:
        """Name, config class and tiny config are usable; ``build`` returns an ``nn.Module``."""
        variant.validate()
        config = variant.tiny_config()
        assert isinstance(config, variant.config_class), (
            f"{variant.name}: tiny_config() returned {type(config).__name__}, "
            f"expected {variant.config_class.__name__}")
        shape = getattr(config, "input_shape", None)
        assert shape is not None and len(shape) == 3 and all(int(d) > 0 for d in shape), (
            f"{variant.name}: the config needs an input_shape field (C, H, W) of positive ints, got {shape!r}")
        model = make_model(variant, config)
        assert isinstance(model, nn.Module), f"{variant.name}: build() returned {type(model).__name__}"
        assert model.variant_name == variant.name
        assert model.config == config, f"{variant.name}: model.config is not the config it was built with"
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert n_params > 0, f"{variant.name}: the model has no trainable parameters"
        _latent_shape(model, variant)
        classes = getattr(model, "num_classes", None)
        assert isinstance(classes, int) and (classes >= 1 if variant.conditional else classes == 0), (
            f"{variant.name}: model.num_classes must be >= 1 for a conditional variant and 0 otherwise "
            f"(conditional={variant.conditional}), got {classes!r}")
        assert isinstance(variant.metric_names, dict) and all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in variant.metric_names.items()), (
            f"{variant.name}: metric_names must map each metric's key to a non-empty description")

    def test_config_json_round_trip(self, variant: Variant) -> None:
        """``config_to_json`` survives JSON and ``config_from_json`` gives it back; unknown keys raise."""
        for config in (variant.default_config(), variant.tiny_config()):
            data = variant.config_to_json(config)
            assert isinstance(data, dict), f"{variant.name}: config_to_json returned {type(data).__name__}"
            try:
                text = json.dumps(data)
            except (TypeError, ValueError) as err:
                raise AssertionError(f"{variant.name}: config_to_json output is not JSON: {err}") from err
            back = variant.config_from_json(json.loads(text), "conformance round trip")
            assert type(back) is type(config), f"{variant.name}: round trip changed the config type"
            assert back == config, f"{variant.name}: config JSON round trip changed it:\n{config}\n->\n{back}"
        bad = {**variant.config_to_json(variant.tiny_config()), unknown_config_key: 1}
        try:
            variant.config_from_json(bad, "conformance round trip")
        except ConfigError as err:
            assert unknown_config_key in str(err), (
                f"{variant.name}: the unknown-key ConfigError does not name the key: {err}")
        else:
            raise AssertionError(f"{variant.name}: config_from_json accepted the unknown key "
                                 f"{unknown_config_key!r}; it must raise zoo.errors.ConfigError")

    def test_forward_shapes(self, variant: Variant) -> None:
        """``model(x)`` has x's shape; ``encode`` gives a posterior over (B, *latent_shape); ``decode``
        gives (B, *input_shape)."""
        model, x, y = self.setup_model(variant)
        batch_size, input_shape = len(x), tuple(model.config.input_shape)
        latent = _latent_shape(model, variant)
        with seeded(self.seed), torch.no_grad():
            for training in (True, False):
                model.train(training)
                out = _call(model, x, y)
                assert isinstance(out, Tensor), f"{variant.name}: forward returned {type(out).__name__}"
                mode = "train" if training else "eval"
                assert out.shape == x.shape, (f"{variant.name}: forward ({mode} mode) gave shape "
                                              f"{tuple(out.shape)}, input is {tuple(x.shape)}")
            posterior = _posterior(_call(model.encode, x, y), variant)
            expected_code = (batch_size, *latent)
            code = posterior.mode()
            assert tuple(code.shape) == expected_code, (
                f"{variant.name}: encode(x).mode() gave shape {tuple(code.shape)}, expected (B, *latent_shape) = "
                f"{expected_code}")
            draw = posterior.sample(generator=torch.Generator().manual_seed(0))
            again = posterior.sample(generator=torch.Generator().manual_seed(0))
            assert tuple(draw.shape) == expected_code and torch.equal(draw, again), (
                f"{variant.name}: encode(x).sample(generator=...) must give {expected_code} and repeat under the "
                f"same seed, got {tuple(draw.shape)}")
            if isinstance(posterior, QuantizedCode):
                _check_quantized_code(posterior, expected_code, variant)
            several = posterior.sample(3, generator=torch.Generator().manual_seed(0))
            assert tuple(several.shape) == (3, *expected_code), (
                f"{variant.name}: encode(x).sample(3) gave shape {tuple(several.shape)}, "
                f"expected {(3, *expected_code)}")
            z = torch.randn(expected_code, generator=torch.Generator().manual_seed(self.seed))
            decoded = _call(model.decode, z, y)
            assert isinstance(decoded, Tensor), f"{variant.name}: decode returned {type(decoded).__name__}"
            expected = (batch_size, *input_shape)
            assert decoded.shape == expected, (
                f"{variant.name}: decode gave shape {tuple(decoded.shape)}, expected {expected}")
            assert torch.isfinite(out).all() and torch.isfinite(decoded).all(), (
                f"{variant.name}: forward/decode produced non-finite values")

    def test_capabilities(self, variant: Variant) -> None:
        """``variational``: latent_kl(posterior) (where it has a closed form), sample_and_log_prob() and
        prior_log_prob(z) with the right shapes; ``has_likelihood``:
        reconstruction_nll(x, z, y) per example, and NotImplementedError when the flag is not declared."""
        model, x, y = self.setup_model(variant)
        model.eval()
        latent = _latent_shape(model, variant)
        batch_size, k = len(x), 3
        with torch.no_grad():
            posterior = _posterior(_call(model.encode, x, y), variant)
            z = posterior.sample(generator=torch.Generator().manual_seed(0))
            zk = posterior.sample(k, generator=torch.Generator().manual_seed(1))
            if variant.variational:
                assert posterior.has_density, (f"{variant.name} declares variational, but its posterior "
                                               f"{type(posterior).__name__} has no density (kl, log_prob)")
                kl = latent_kl(model, posterior)
                if kl is not None:  # None: no closed form (mixture prior, flow posterior), estimated by Monte Carlo
                    assert tuple(kl.shape) == (batch_size, *latent) and torch.isfinite(kl).all(), (
                        f"{variant.name}: latent_kl(posterior) must be finite, per latent element "
                        f"{(batch_size, *latent)}, got {tuple(kl.shape)}")
                    assert (kl > -1e-5).all(), f"{variant.name}: latent_kl(posterior) has negative entries: {kl.min()}"
                gen = torch.Generator().manual_seed(2)
                drawn = [posterior.sample_and_log_prob(num, generator=gen) for num in (None, k)]
                names = [g.name for g in latent_groups(model)]  # checks the declaration: a cover of the units
                for sample, log_q in drawn:
                    per_group = group_kl(model, posterior, sample, log_q)
                    assert list(per_group) == names and all(
                        tuple(v.shape) == (batch_size,) and torch.isfinite(v).all() for v in per_group.values()), (
                        f"{variant.name}: zoo.contract.group_kl must give a finite KL per example ({batch_size},) for "
                        f"each latent group {names}, got {({n: tuple(v.shape) for n, v in per_group.items()})}")
                for (sample, log_q), lead in zip(drawn, ((batch_size,), (k, batch_size)), strict=True):
                    assert tuple(sample.shape) == (*lead, *latent), (
                        f"{variant.name}: sample_and_log_prob() drew z of shape {tuple(sample.shape)}, expected "
                        f"{(*lead, *latent)}")
                    for what, value in (("log q(z|x) from posterior.sample_and_log_prob()", log_q),
                                        ("model.prior_log_prob(z)", model.prior_log_prob(sample))):
                        assert tuple(value.shape) == lead and torch.isfinite(value).all(), (
                            f"{variant.name}: {what} for z of shape {tuple(sample.shape)} must be finite with "
                            f"shape {lead}, got {tuple(value.shape)}")
            if variant.has_likelihood:
                for sample, lead in ((z, (batch_size,)), (zk, (k, batch_size))):
                    nll = model.reconstruction_nll(x, sample, y)
                    assert tuple(nll.shape) == lead and torch.isfinite(nll).all(), (
                        f"{variant.name}: reconstruction_nll(x, z, y) for z of shape {tuple(sample.shape)} must "
                        f"be finite with shape {lead}, got {tuple(nll.shape)}")
            else:
                try:
                    model.reconstruction_nll(x, z, y)
                except NotImplementedError:
                    pass
                else:
                    raise AssertionError(f"{variant.name} implements reconstruction_nll but does not declare "
                                         f"has_likelihood = True: set it so the zoo's tools use it")

    def test_loss_finite_and_backward(self, variant: Variant) -> None:
        """The loss is a finite scalar with finite terms; its gradients are finite and not all zero, and
        reach every trainable parameter when the variant trains with the default ``train_step``."""
        model, x, y = self.setup_model(variant)
        model.train()
        with seeded(self.seed):
            out = variant.loss(model, as_batch(x, y), step=0)
        _finite_scalar(out.total, f"{variant.name}: loss(...).total")
        assert isinstance(out.terms, dict), f"{variant.name}: loss(...).terms must be a dict"
        for key, value in out.terms.items():
            assert isinstance(value, Tensor) and value.numel() == 1, (
                f"{variant.name}: loss term {key!r} must be a one-element tensor")
            assert torch.isfinite(value).all(), f"{variant.name}: loss term {key!r} is not finite: {value}"
        out.total.backward()
        # With the default train_step, loss().total is the training objective: it must reach every
        # parameter. A variant with its own train_step (e.g. several optimisers) may return an
        # evaluation objective here; test_train_step_updates_parameters covers its parameters.
        must_reach = type(variant).train_step is Variant.train_step
        missing, non_finite, nonzero = [], [], 0
        for name, param in trainable_parameters(model, variant):
            if param.grad is not None and not torch.isfinite(param.grad).all():
                non_finite.append(name)
            elif param.grad is not None and param.grad.abs().sum() > 0:
                nonzero += 1
            elif must_reach:  # no gradient, or exactly zero everywhere (a term multiplied by 0, a detach)
                missing.append(name)
        assert not non_finite, f"{variant.name}: non-finite gradients for {', '.join(non_finite)}"
        assert not missing, (f"{variant.name}: the loss gives no gradient to {', '.join(missing)} (if that "
                             f"is intended, list them in the variant's conformance_frozen_params)")
        assert nonzero > 0, f"{variant.name}: every gradient of the loss is zero"

    def test_train_step_updates_parameters(self, variant: Variant) -> None:
        """``configure_optimizers`` covers every trainable parameter and ``train_step`` changes each one."""
        model, x, y = self.setup_model(variant)
        model.train()
        with seeded(self.seed):
            optimizers = variant.configure_optimizers(model, self.train_config())
        assert isinstance(optimizers, dict) and optimizers, (
            f"{variant.name}: configure_optimizers must return a non-empty dict of optimisers")
        optimised = {id(p) for opt in optimizers.values()
                     for group in opt.param_groups for p in group["params"]}
        params = trainable_parameters(model, variant)
        orphans = [name for name, p in params if id(p) not in optimised]
        assert not orphans, (f"{variant.name}: configure_optimizers leaves out {', '.join(orphans)}, so they "
                             f"never train (list intentionally frozen ones in conformance_frozen_params)")
        before = {name: p.detach().clone() for name, p in params}
        with seeded(self.seed):
            for step in range(3):
                variant.train_step(model, as_batch(x, y), optimizers, step=step)
        non_finite = [name for name, p in params if not torch.isfinite(p).all()]
        assert not non_finite, f"{variant.name}: train_step made {', '.join(non_finite)} non-finite"
        unchanged = [name for name, p in params if torch.equal(p.detach(), before[name])]
        assert not unchanged, (f"{variant.name}: three train_step calls left {', '.join(unchanged)} "
                               f"unchanged (no gradient reaches them, or their optimiser never steps)")

    def test_train_step_uses_step_context(self, variant: Variant) -> None:
        """``train_step`` computes its loss under ``step_context().autocast()`` and steps every optimiser
        through ``ctx.step`` (what makes it work under fp16 and torchrun)."""
        model, x, y = self.setup_model(variant)
        model.train()
        with seeded(self.seed):
            optimizers = variant.configure_optimizers(model, self.train_config())
            context = StepContext()
            try:
                with context.active(optimizers, variant.name, guard=True):
                    variant.train_step(model, as_batch(x, y), optimizers, step=0)
            except ConfigError as err:
                raise AssertionError(f"{variant.name}: train_step stepped an optimiser directly instead of through "
                                     f"zoo.stepping.step_context().step(optimizer): {err}") from err
        assert context.autocast_used, (
            f"{variant.name}: train_step never entered zoo.stepping.step_context().autocast(), so --precision "
            f"bf16/fp16 would silently train in float32: compute the loss inside `with ctx.autocast():`")

    def test_loss_decreases(self, variant: Variant) -> None:
        """``train_step`` on one fixed batch lowers the monitored term (first vs last few steps)."""
        term = getattr(variant, "monitored_term", "loss")
        model, x, y = self.setup_model(variant)
        model.train()
        batch = as_batch(x, y)
        values: list[float] = []
        with seeded(self.seed):
            optimizers = variant.configure_optimizers(model, self.train_config())
            assert isinstance(optimizers, dict) and optimizers, (
                f"{variant.name}: configure_optimizers must return a non-empty dict of optimisers")
            for step in range(self.train_steps):
                terms = variant.train_step(model, batch, optimizers, step=step)
                assert isinstance(terms, dict), f"{variant.name}: train_step must return a dict of terms"
                assert term in terms, (f"{variant.name}: train_step returned no {term!r} term (it returned "
                                       f"{', '.join(terms) or 'nothing'}); set the variant's monitored_term")
                values.append(float(terms[term]))
        assert all(math.isfinite(v) for v in values), f"{variant.name}: {term} became non-finite: {values}"
        k = min(self.window, len(values) // 2)
        first, last = sum(values[:k]) / k, sum(values[-k:]) / k
        assert last < first, (f"{variant.name}: {term} did not decrease over {self.train_steps} steps on a "
                              f"fixed batch (mean of first {k}: {first:.6g}, of last {k}: {last:.6g}; "
                              f"values: {[round(v, 4) for v in values]})")

    def test_eval_deterministic(self, variant: Variant) -> None:
        """In eval mode ``model(x)`` is repeatable bit for bit, whatever the global RNG state."""
        model, x, y = self.setup_model(variant)
        model.eval()
        with torch.no_grad():
            with seeded(1):
                first = _call(model, x, y)
            with seeded(2):
                second = _call(model, x, y)
        assert torch.equal(first, second), (
            f"{variant.name}: model(x) in eval mode differs between two calls (max difference "
            f"{(first - second).abs().max().item():.3g}); eval mode must not sample")

    def test_save_load_round_trip(self, variant: Variant, tmp_path: Path) -> None:
        """``save_pretrained`` + ``zoo.load("local-dir:...")`` restore weights, config and outputs exactly."""
        import zoo
        from zoo.folder import FOLDER_FILES

        if not is_registered(variant):
            pytest.skip(f"{_not_registered_reason(variant)}, and zoo.load finds variants by name: register "
                        f"its plugin (entry point or zoo.register_plugin) to run the save/load check")
        model, x, y = self.setup_model(variant)
        # Move every floating tensor away from its initial value, so a loader that re-initialises
        # (even with the same seed) instead of reading the file cannot pass.
        with seeded(self.seed + 1), torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(0.01 * torch.randn_like(tensor))
        folder = tmp_path / "saved"
        model.save_pretrained(folder)
        for name in FOLDER_FILES:
            assert (folder / name).is_file(), f"{variant.name}: save_pretrained wrote no {name}"
        loaded = zoo.load(f"local-dir:{folder}")
        assert type(loaded) is type(model), f"{variant.name}: loaded a {type(loaded).__name__}"
        assert not loaded.training, f"{variant.name}: zoo.load must return the model in eval mode"
        assert loaded.variant_name == variant.name
        assert loaded.config == model.config, (
            f"{variant.name}: the loaded config differs:\n{model.config}\n->\n{loaded.config}")
        saved_state, loaded_state = model.state_dict(), loaded.state_dict()
        assert saved_state.keys() == loaded_state.keys(), (
            f"{variant.name}: state_dict keys differ after loading: "
            f"{sorted(set(saved_state) ^ set(loaded_state))}")
        changed = [key for key, value in saved_state.items()
                   if value.dtype != loaded_state[key].dtype or not torch.equal(value, loaded_state[key])]
        assert not changed, f"{variant.name}: tensors changed by save/load: {', '.join(changed)}"
        model.eval()
        with torch.no_grad():
            with seeded(1):
                expected = _call(model, x, y)
            with seeded(1):
                got = _call(loaded, x, y)
        assert torch.equal(expected, got), (
            f"{variant.name}: the loaded model's eval output differs from the saved model's (max difference "
            f"{(expected - got).abs().max().item():.3g})")
        wide = zoo.load(f"local-dir:{folder}", dtype=torch.float64)
        try:
            with torch.no_grad():
                out = _call(wide, x.double(), y)
        except RuntimeError as err:
            raise AssertionError(f"{variant.name}: loaded with dtype=torch.float64 the model fails ({err}): keep "
                                 f"every tensor you create in the input's dtype") from err
        assert out.dtype == torch.float64, (f"{variant.name}: loaded with dtype=torch.float64, the model's output "
                                            f"is {out.dtype}: keep every tensor you create in the input's dtype")
        torch.testing.assert_close(out.float(), expected, rtol=1e-3, atol=1e-4,
                                   msg=lambda m: f"{variant.name}: loaded with dtype=torch.float64: {m}")

    def test_sampling(self, variant: Variant) -> None:
        """Generative: seeded ``sample`` is repeatable, (n, *input_shape), seed-dependent. Else: raises."""
        model, _, _ = self.setup_model(variant)
        model.eval()
        n = 6
        n_classes = num_classes_of(variant, model.config)
        y = make_labels(n, n_classes) if n_classes else None
        if not variant.generative:
            try:
                model.sample(n, y=y, generator=torch.Generator().manual_seed(0))
            except NotImplementedError:
                return
            raise AssertionError(f"{variant.name} is not generative, so model.sample() must raise "
                                 f"NotImplementedError (set `generative = True` if it can sample)")

        def draw(seed: int, global_seed: int) -> Tensor:
            with seeded(global_seed), torch.no_grad():
                return model.sample(n, y=y, generator=torch.Generator().manual_seed(seed))

        first, again, other = draw(0, 1), draw(0, 2), draw(1, 1)
        input_shape = tuple(model.config.input_shape)
        assert isinstance(first, Tensor) and first.shape == (n, *input_shape), (
            f"{variant.name}: sample({n}) gave shape {tuple(getattr(first, 'shape', ()))}, "
            f"expected {(n, *input_shape)}")
        assert torch.isfinite(first).all(), f"{variant.name}: samples are not finite"
        assert torch.equal(first, again), (f"{variant.name}: sample() with the same seeded generator gave "
                                           f"different samples (does it draw from the global RNG?)")
        assert not torch.equal(first, other), (
            f"{variant.name}: sample() gave the same samples for two different generator seeds")

    def test_conditioning(self, variant: Variant) -> None:
        """Conditional: labels change the decoding; encode/decode/loss without labels raise naming them."""
        if not variant.conditional:
            pytest.skip(f"variant {variant.name!r} is not conditional")
        model, x, y = self.setup_model(variant)
        model.eval()
        n_classes = num_classes_of(variant, model.config)
        batch_size = len(x)
        with torch.no_grad():
            z = torch.randn((batch_size, *_latent_shape(model, variant)), generator=torch.Generator().manual_seed(0))
            if n_classes >= 2:
                a = model.decode(z, torch.zeros(batch_size, dtype=torch.long))
                b = model.decode(z, torch.ones(batch_size, dtype=torch.long))
                assert not torch.allclose(a, b, rtol=0, atol=1e-6), (
                    f"{variant.name}: decode(z, y) gives the same output for labels 0 and 1: "
                    f"the decoder ignores the labels")
        calls = {
            "encode(x)": lambda: model.encode(x),
            "decode(z)": lambda: model.decode(z),
            "loss(model, x)": lambda: variant.loss(model, x),
        }
        if variant.generative:
            calls["sample(n)"] = lambda: model.sample(batch_size)
        for what, call in calls.items():
            try:
                with torch.no_grad():
                    call()
            except ValueError as err:  # zoo.errors.DataError and ConfigError are ValueErrors too
                assert _LABEL_WORDS.search(str(err)), (
                    f"{variant.name}: {what} without labels raised an error that does not mention the "
                    f"labels (y): {err}")
            else:
                raise AssertionError(f"{variant.name} is conditional, but {what} without labels did not "
                                     f"raise a ValueError (or zoo.errors.DataError) asking for labels y")

    def test_variant_metrics(self, variant: Variant) -> None:
        """``variant.metrics(model, data, seed=...)``: finite floats, each described in ``metric_names``,
        repeatable under the same seed."""
        model, x, y = self.setup_model(variant)
        model.eval()
        data = TensorData(x, y)
        with torch.no_grad():
            first = variant.metrics(model, data, seed=self.seed)
            again = variant.metrics(model, data, seed=self.seed)
        assert isinstance(first, dict), f"{variant.name}: metrics() must return a dict, got {type(first).__name__}"
        undescribed = sorted(set(first) - set(variant.metric_names))
        assert not undescribed, (f"{variant.name}: metrics() returns {', '.join(undescribed)} without a description "
                                 f"in metric_names")
        for key, value in first.items():
            assert isinstance(value, float | int) and math.isfinite(value), (
                f"{variant.name}: metric {key!r} must be a finite number, got {value!r}")
        assert first == again, f"{variant.name}: metrics() differ between two calls with seed {self.seed}"
