"""Fine-tuning: continue training a pretrained zoo model on the user's data, and say what changed.

:func:`finetune` loads the parent, adapts the data to the parent's input where that is meaningful
(resize to its H x W, grey <-> RGB, 0-255 -> [0, 1]) and refuses where it is not (a different number
of classes, any config change that alters weight shapes): ``reset_head=True`` then rebuilds the
model, loads every weight whose shape still fits and re-initialises only the rest. It trains with a
lower learning rate on all but a seeded validation part, stops early when the validation loss stops
improving, and writes the best and the last weights as model folders whose card names the parent
(``base_model``), the data, every adaptation, the exact call and the metrics on the validation part.

The module is called ``finetuning`` (as ``training`` provides ``train``) so that importing it never
shadows the function ``zoo.finetune``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.config import replace_config
from zoo.contract import has
from zoo.crops import ImageCrops, read_images
from zoo.data import (
    DATASETS,
    TENSOR_FILES,
    TensorData,
    as_data,
    image_files,
    image_folder,
    load_dataset,
    read_tensor_file,
    to_tensor,
)
from zoo.errors import ConfigError, DataError, UnknownNameError
from zoo.evaluation import evaluate
from zoo.outputs import FolderLock, check_writable, save_final
from zoo.registry import create, get_variant, load
from zoo.training import TrainConfig, Trainer, TrainResult, seed_everything
from zoo.variant import Variant

#: Default learning rate: a tenth of training's (TrainConfig.lr = 1e-3), so that the first steps on
#: new data refine what the parent learnt instead of washing it out.
DEFAULT_LR = 1e-4
#: Default early stopping: stop after this many epochs without a better validation loss.
DEFAULT_PATIENCE = 3
#: Sub-folder of ``out`` that receives the last epoch's weights (``out`` itself holds the best).
LAST_DIR = "last"
#: PIL image modes that hold one (grey) channel.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


@dataclass
class FinetuneResult:
    """What :func:`finetune` made, and everything its model card states."""

    #: The fine-tuned model with the weights of the best validation epoch, in eval mode.
    model: nn.Module
    #: The parent: its checkpoint name, Hub repo id or folder path; None for an in-memory model.
    base_model: str | None
    #: What the data was (source, size, shape, classes), before adaptation.
    data: str
    #: Every change made to the data to fit the model's input; empty when it already fitted.
    adaptations: list[str]
    #: Parameters re-initialised by ``reset_head`` (all others were loaded from the parent).
    reset_parameters: list[str]
    #: Parameters the parent does not have (a config change added them), initialised fresh.
    added_parameters: list[str]
    #: Parameters held fixed by ``freeze``.
    frozen_parameters: list[str]
    #: Metrics of ``model`` on the held-out validation part (:func:`zoo.evaluation.evaluate`).
    metrics: dict[str, Any]
    #: The same metrics for the last epoch's weights (equal to ``metrics`` when best is last).
    last_metrics: dict[str, Any]
    #: Loss history of the run.
    train: TrainResult
    #: The model card written to ``out`` (README.md).
    card: str
    #: Where the best weights were written (the last ones are in ``out / "last"``); None: not saved.
    out: Path | None = None
    #: Number of examples trained on and held out for validation.
    sizes: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        """A few lines for a terminal: what was adapted and re-initialised, where it went, the metrics."""
        lines = [f"fine-tuned {self.base_model or 'an in-memory model'} on {self.data}: {self.train.steps} steps"
                 + (f", best epoch {self.train.best_epoch}" if self.train.best_epoch else "")]
        lines.append("adapted: " + ("; ".join(self.adaptations) or "nothing (the data fitted as it was)"))
        if self.reset_parameters:
            lines.append("re-initialised: " + ", ".join(self.reset_parameters))
        if self.out is not None:
            lines.append(f"wrote {self.out}/ (best weights) and {self.out / LAST_DIR}/ (last epoch), "
                         f"each with config.json, model.safetensors, README.md")
        lines.append(f"validation ({self.sizes.get('val', 0)} examples): "
                     + ", ".join(f"{k}={v:.4f}" for k, v in self.metrics.items()))
        return "\n".join(lines)


def finetune(model_or_name: str | nn.Module, data: Any, *, out: str | Path | None = None,
             freeze: str | Sequence[str] | None = None, reset_head: bool = False,
             config_overrides: dict[str, Any] | None = None,
             val_fraction: float = 0.1, nll_samples: int = 100, resume: bool = False, command: str | None = None,
             crop_size: int | None = None, **overrides: Any) -> FinetuneResult:
    """Fine-tune a pretrained model on ``data``; the parent is left untouched.

    >>> result = zoo.finetune("vae-mnist", "my_digits/", out="runs/ft", epochs=5, freeze="encoder")

    ``model_or_name`` is anything :func:`zoo.load` takes (``"vae-mnist"``, ``"hf-hub:ORG/NAME"``,
    ``"local-dir:PATH"``) or a model. ``data`` is a dataset name (``mnist``: its train split), an image
    folder (flat, or one sub-folder per class), a ``.npz``/``.safetensors`` tensor file, tensors, arrays or an
    ``(x, y)`` pair. ``overrides`` are :class:`~zoo.training.TrainConfig` fields (defaults here:
    ``lr=1e-4``, ``patience=3``) or keys of the model's config (``beta=2.0``, ``warmup_steps=500``);
    ``config_overrides`` gives the latter as a dict. A config change that alters weight shapes (for
    ``cvae``, data with another number of classes sets ``num_classes``) needs ``reset_head=True``.
    ``freeze`` keeps those parts' weights fixed and out of the optimiser: it names any top-level module of the
    model (``"encoder"``, ``"decoder"``, a list such as ``["encoder", "codebook"]``, or ``"encoder,codebook"``).
    ``crop_size`` trains a fully convolutional model (the latent-diffusion autoencoders) on random
    ``crop_size`` x ``crop_size`` crops of images of any size (an image folder or an (N, C, H, W) tensor; a
    new crop of every image each epoch; centred crops for validation) instead of resizing every image to the
    model's input size. ``val_fraction`` of the data (seeded by ``seed``) is held out for early stopping and
    for the card's metrics (``nll_samples`` importance samples for the NLL). With ``out``, the best
    weights go to ``out`` and the last epoch's to ``out/last``; ``resume=True`` (or
    ``checkpoint_every``) uses ``out/checkpoints`` as ``zoo train`` does. ``command`` is what the card
    records as the way to reproduce the run (default: this call).
    """
    if isinstance(nll_samples, bool) or not isinstance(nll_samples, int) or nll_samples < 0:
        raise ConfigError(f"nll_samples must be an integer of at least 0 (0: no NLL), got {nll_samples!r}")
    parent = load(model_or_name) if isinstance(model_or_name, str) else copy.deepcopy(model_or_name)
    variant = get_variant(parent.variant_name)
    train_settings, model_settings = _split_overrides(overrides, variant)
    model_settings = {**(config_overrides or {}), **model_settings}
    if "keep_best" in train_settings:
        raise ConfigError("finetune keeps both: the best weights (returned, and in OUT) and the last ones "
                          f"(OUT/{LAST_DIR}); drop keep_best")
    settings = {"lr": DEFAULT_LR, "patience": DEFAULT_PATIENCE, **train_settings, "keep_best": False}
    if out is not None and (resume or "checkpoint_every" in settings):  # as `zoo train`: OUT/checkpoints
        settings.setdefault("checkpoint_dir", str(Path(out) / "checkpoints"))
    train_config = replace_config(TrainConfig(), settings, source="finetune settings")
    config = variant.make_config(parent.config, **model_settings)

    if crop_size is None:
        description, tensors, adaptations = read_data(data, config.input_shape)
        config, from_data = _fit_num_classes(variant, config, tensors.y, "num_classes" in model_settings)
    else:
        description, images, adaptations = _read_crops(data, variant, config, crop_size)
        from_data = set()
    seed_everything(train_config.seed)  # the re-initialised weights, if any, are seeded too
    base = base_model_name(parent)
    model, reset, added = rebuild(parent, variant, config, reset_head=reset_head, from_data=from_data,
                                  parent_name=base or "the parent")
    frozen = _freeze(model, freeze, keep_trainable=set(reset) | set(added))
    if crop_size is None:
        fit_data, val = split_validation(tensors, val_fraction, train_config.seed)
    else:
        fit_data, val = split_crops(images, crop_size, val_fraction, train_config.seed)

    trainer = Trainer(model, train_config, variant=variant)
    if frozen:
        trainer.optimizers = _optimizers(variant, model, train_config, freeze)
    with _output_folder(out, model):
        result = trainer.fit(fit_data, val, resume=resume)
        best = trainer.best_weights  # None if no epoch completed
        for p in model.parameters():  # frozen only while fine-tuning: the returned model trains as usual
            p.requires_grad_(True)
        model.pretrained_info = {"source": "finetune", "base_model": base, **({"path": str(out)} if out else {})}

        call = command or _call(model_or_name, data, {"out": out, "freeze": freeze, "reset_head": reset_head,
                                                      "config_overrides": config_overrides,
                                                      "val_fraction": val_fraction, "nll_samples": nll_samples,
                                                      "resume": resume, **overrides})
        card_args = {"base": base, "data": data, "description": description, "adaptations": adaptations,
                     "reset": reset, "added": added, "freeze": freeze, "frozen": frozen, "config": train_config,
                     "call": call,
                     "result": result, "sizes": (len(fit_data), len(val)), "nll_samples": nll_samples,
                     "overrides": model_settings}
        which = "These are the weights at the end of the run."
        last_metrics = evaluate(model, val, nll_samples=nll_samples)
        if out is not None:
            save_final(model, Path(out) / LAST_DIR,
                       card=finetune_card(model, metrics=last_metrics, which=which, **card_args))
        metrics = last_metrics
        if best is not None and any(not torch.equal(best[k], v) for k, v in model.state_dict().items()):
            model.load_state_dict(best)
            metrics = evaluate(model, val, nll_samples=nll_samples)
            which = (f"These are the weights of epoch {result.best_epoch}, which had the best validation loss; the "
                     f"weights at the end of the run are in `{LAST_DIR}/`.")
        card = finetune_card(model, metrics=metrics, which=which, **card_args)
        if out is not None:
            save_final(model, Path(out), card=card)
        return FinetuneResult(model=model.eval(), base_model=base, data=description, adaptations=adaptations,
                              reset_parameters=reset, added_parameters=added, frozen_parameters=frozen,
                              metrics=metrics,
                              last_metrics=last_metrics, train=result, card=card,
                              out=None if out is None else Path(out), sizes={"fit": len(fit_data), "val": len(val)})


@contextlib.contextmanager
def _output_folder(out: str | Path | None, model: nn.Module) -> Iterator[None]:
    """With ``out``: hold its lock for the run and check it can take both model folders before training."""
    if out is None:
        yield
        return
    with FolderLock(out):
        check_writable(Path(out), model, copies=4, what="the best and the last model folders")
        yield


def _split_overrides(overrides: dict[str, Any], variant: Variant) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig settings, model config settings); a key that is neither is an error with close matches."""
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    model_keys = {f.name for f in dataclasses.fields(variant.config_class)}
    for key in overrides:
        if key not in train_keys | model_keys:
            raise UnknownNameError("setting", key, train_keys | model_keys,
                                   f"finetune takes TrainConfig fields and {variant.name!r} config keys.")
    return ({k: v for k, v in overrides.items() if k in train_keys},
            {k: v for k, v in overrides.items() if k not in train_keys})


def base_model_name(model: nn.Module) -> str | None:
    """How a card names the parent (``base_model``): the checkpoint name, the Hub repo id, or the
    folder it was loaded from; None for a model that was never saved."""
    info = getattr(model, "pretrained_info", {}) or {}
    name = info.get("name")
    if name and str(name).startswith("hf-hub:"):
        return info.get("repo_id")
    return name or info.get("path")


# -- data -------------------------------------------------------------------------------------------

def read_data(data: Any, input_shape: tuple[int, int, int]) -> tuple[str, TensorData, list[str]]:
    """(description of the data as given, the data adapted to ``input_shape``, what was adapted)."""
    if isinstance(data, str) and data in DATASETS:
        loaded = load_dataset(data, "train")
        if not isinstance(loaded, TensorData):
            raise DataError(f"{data} is streamed, not held in memory; fine-tune on an in-memory subset instead")
        what, x, y = f"{data} (train split)", loaded.x, loaded.y
    elif isinstance(data, str | Path) and Path(data).is_dir():
        return _read_folder(Path(data), input_shape)
    elif isinstance(data, str | Path) and Path(data).suffix in TENSOR_FILES and Path(data).is_file():
        (x, y), what = read_tensor_file(Path(data)), str(data)
    elif isinstance(data, TensorData):
        what, x, y = "in-memory TensorData", data.x, data.y
    elif isinstance(data, tuple | list) and len(data) == 2:
        what, x, y = "in-memory (images, labels)", to_tensor(data[0]), to_tensor(data[1])
    elif isinstance(data, Tensor | np.ndarray):
        what, x, y = f"in-memory {type(data).__name__}", to_tensor(data), None
    else:  # a torch Dataset, or something as_data refuses with the list of what it accepts
        loaded = as_data(data)
        what, x, y = f"in-memory {type(data).__name__}", loaded.x, loaded.y
    if len(x) == 0:
        raise DataError(f"{what} holds no examples")
    if y is not None and len(y) != len(x):
        raise DataError(f"{what}: {len(x)} images but {len(y)} labels")
    dtype = str(x.dtype).removeprefix("torch.")
    description = f"{what}: {len(x)} examples of shape {tuple(x.shape[1:])}, {dtype}{_classes(y)}"
    x, notes = adapt_images(x, input_shape)
    return description, TensorData(x, None if y is None else y.long()), notes


def _classes(y: Tensor | None) -> str:
    return "" if y is None else f", {int(y.max()) + 1} classes"


def _read_folder(path: Path, input_shape: tuple[int, int, int]) -> tuple[str, TensorData, list[str]]:
    """An image folder at the model's H x W in its own channels, with the notes that say what changed.

    PIL resizes each image (images may differ in size); channels and range are left to
    :func:`adapt_images`, so that grey <-> RGB is converted the same way for every kind of data.
    """
    from PIL import Image

    files, _ = image_files(path)
    sizes, modes = set(), set()
    for file in files:
        with Image.open(file) as im:  # reads the header only
            sizes.add((im.height, im.width))
            modes.add(im.mode)
    _, h, w = input_shape
    channels = 1 if modes <= GREY_MODES else 3
    loaded = image_folder(path, (channels, h, w), require_classes=False)
    notes = ["8-bit pixels 0-255 scaled to [0, 1] (divided by 255)"]
    others = sorted(s for s in sizes if s != (h, w))
    if others:
        notes.append(f"resized {', '.join(f'{a}x{b}' for a, b in others)} -> {h}x{w} (H x W; bilinear, antialiased)")
    x, more = adapt_images(loaded.x, input_shape)
    shapes = ", ".join(f"{a}x{b}" for a, b in sorted(sizes))
    what = (f"image folder {path}: {len(files)} {'/'.join(sorted(modes))} images of {shapes} pixels"
            f"{_classes(loaded.y)}")
    return what, TensorData(x, loaded.y), notes + more


def adapt_images(x: Tensor, input_shape: tuple[int, int, int]) -> tuple[Tensor, list[str]]:
    """``x`` as (N, C, H, W) float images in [0, 1] shaped like ``input_shape``, and what was changed.

    Meaningful changes only: 8-bit images are divided by 255 (:func:`unit_range`); flat rows are
    reshaped; channels-last arrays are transposed; RGB becomes grey by the mean of its channels and grey
    becomes RGB by repetition; images are resized bilinearly (antialiased). Anything else (values
    outside both [0, 1] and 8-bit images, 4 channels) is a :class:`DataError`.
    """
    c, h, w = input_shape
    x, notes = unit_range(x)
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        shape = (c, h, w) if x.shape[1] == c * h * w else (1, side, side) if side * side == x.shape[1] else None
        if shape is None:
            raise DataError(f"flat rows of {x.shape[1]} values are neither {c}x{h}x{w} nor square grey images")
        x = x.reshape(-1, *shape)
        notes.append(f"flat rows of {x[0].numel()} values read as {'x'.join(map(str, shape))} images")
    elif x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2)
        notes.append("channels-last (N, H, W, C) images transposed to (N, C, H, W)")
    elif x.dim() != 4:
        raise DataError(f"expected images of shape (N, C, H, W), (N, H, W) or (N, D), got {tuple(x.shape)}")
    if x.shape[1] != c:
        if (x.shape[1], c) == (3, 1):
            x = x.mean(1, keepdim=True)
            notes.append("RGB -> grey (mean of the 3 channels)")
        elif (x.shape[1], c) == (1, 3):
            x = x.repeat(1, 3, 1, 1)
            notes.append("grey -> RGB (the channel repeated 3 times)")
        else:
            raise DataError(f"the data has {x.shape[1]} channels and the model {c}; only grey <-> RGB is converted")
    if tuple(x.shape[2:]) != (h, w):
        notes.append(f"resized {x.shape[2]}x{x.shape[3]} -> {h}x{w} (H x W; bilinear, antialiased)")
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x.contiguous(), notes


def unit_range(x: Tensor) -> tuple[Tensor, list[str]]:
    """``x`` as float32 in [0, 1], and a note when it was scaled.

    Only data that looks like 8-bit images is divided by 255: integers 0-255 (an integer dtype, or
    whole-number floats) with a maximum above 1. Data already in [0, 1] (binary 0/1 integers included)
    is kept. Anything else, e.g. floats in 0..2, is a :class:`DataError` naming the range: dividing it by
    255 would train on near-black images.
    """
    name = str(x.dtype).removeprefix("torch.")
    values = x.detach().reshape(-1).to(torch.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.numel() else (0.0, 0.0)
    integral = not x.is_floating_point() or bool(torch.equal(x, x.round()))
    if lo >= 0 and hi <= 1:
        return x.float(), []
    if lo >= 0 and hi <= 255 and integral:
        return x.float() / 255.0, [f"{name} pixels 0-255 scaled to [0, 1] (divided by 255)"]
    kind = "whole numbers" if integral else "not whole numbers"
    raise DataError(f"pixel values span {lo:.4g}..{hi:.4g} ({name}, {kind}): not 8-bit images (integers 0-255), "
                    f"which would be divided by 255, and not in [0, 1] like the parent's training data. Scale "
                    f"them to [0, 1] first (e.g. x / x.max() for intensities, (x - x.min()) / (x.max() - x.min())).")


def _read_crops(data: Any, variant: Variant, config: Any, size: int) -> tuple[str, list[Tensor], list[str]]:
    """The images crops are cut from (:func:`zoo.crops.read_images`), for an unconditional model."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"crop_size must be a positive number of pixels, got {size!r}")
    if variant.conditional:
        raise ConfigError(f"crops are unlabelled, and {variant.name!r} is conditional: fine-tune it without "
                          f"crop_size on labelled data")
    return read_images(data, config.input_shape[0], size)


def split_crops(images: list[Tensor], size: int, fraction: float, seed: int) -> tuple[ImageCrops, ImageCrops]:
    """(random crops of the fit part, centred crops of the validation part), the parts drawn as
    :func:`split_validation` draws them."""
    fit, val = validation_split(len(images), fraction, seed)
    return (ImageCrops([images[i] for i in fit], size, random=True),
            ImageCrops([images[i] for i in val], size, random=False))


def split_validation(data: TensorData, fraction: float, seed: int) -> tuple[TensorData, TensorData]:
    """(fit part, validation part): ``fraction`` of the examples (at least one) drawn with ``seed``."""
    fit, val = validation_split(len(data), fraction, seed)

    def part(idx: Tensor) -> TensorData:
        return TensorData(data.x[idx], None if data.y is None else data.y[idx])

    return part(fit), part(val)


def validation_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(indices to train on, indices held out): ``fraction`` of ``n`` examples (at least one), drawn with ``seed``."""
    if not 0 < fraction < 1:
        raise ConfigError(f"val_fraction must lie strictly between 0 and 1, got {fraction}")
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(f"{n} examples are too few to hold out {fraction:.0%} for validation and train on the rest")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


# -- the model ----------------------------------------------------------------------------------------

def _fit_num_classes(variant: Variant, config: Any, y: Tensor | None, explicit: bool) -> tuple[Any, set[str]]:
    """For a conditional model, the config with ``num_classes`` set to the data's (max label + 1),
    and {"num_classes"} when that changed it. An explicit ``num_classes`` is kept, and must cover the
    labels."""
    if not variant.conditional or y is None or not hasattr(config, "num_classes"):
        return config, set()
    found = int(y.max()) + 1
    if explicit:
        if found > config.num_classes:
            raise DataError(f"the data has labels up to {found - 1} but num_classes={config.num_classes}")
        return config, set()
    if found == config.num_classes:
        return config, set()
    return replace_config(config, {"num_classes": found}), {"num_classes"}


def rebuild(parent: nn.Module, variant: Variant, config: Any, *, reset_head: bool, from_data: set[str],
            parent_name: str) -> tuple[nn.Module, list[str], list[str]]:
    """The parent itself when ``config`` is its own; otherwise a model built from ``config`` with every
    parent weight whose name and shape still fit loaded; and the names of the weights whose shape changed
    (re-initialised) and of those the parent does not have (new, e.g. a discriminator switched on).

    A shape change without ``reset_head`` is a :class:`ConfigError` naming the config keys that
    differ, both values, the parameters concerned and the options; new weights need no permission, since
    nothing of the parent's is discarded for them.
    """
    if config == parent.config:
        return parent, [], []
    model = create(variant.name, config)
    source, target = parent.state_dict(), model.state_dict()
    added = sorted(k for k in target if k not in source)
    reset = sorted(k for k, v in target.items() if k in source and source[k].shape != v.shape)
    if reset and not reset_head:
        changes = "; ".join(
            f"{f.name}: {getattr(parent.config, f.name)!r} in {parent_name}, {getattr(config, f.name)!r} "
            f"{'in the data' if f.name in from_data else 'requested'}"
            for f in dataclasses.fields(config) if getattr(parent.config, f.name) != getattr(config, f.name))
        hint = "".join(f" Or, if the data's labels are {parent_name}'s own classes, pass {key}="
                       f"{getattr(parent.config, key)!r} (--set {key}={getattr(parent.config, key)}) to keep them."
                       for key in from_data if getattr(config, key) < getattr(parent.config, key))
        raise ConfigError(f"config key(s) differ from the parent's ({changes}), which changes the shape of "
                          f"{', '.join(reset)}. Pass reset_head=True (CLI: --reset-head) to rebuild the model "
                          f"with the new config: every weight whose shape still fits is loaded from {parent_name} "
                          f"and only those listed are re-initialised.{hint}")
    model.load_state_dict({k: v for k, v in source.items() if k in target and k not in reset}, strict=False)
    return model, reset, added


def freeze_parts(freeze: str | Sequence[str] | None) -> list[str]:
    """``freeze`` as a list of module names: None, ``"encoder"``, ``"encoder,codebook"`` or a list of those."""
    if freeze is None:
        return []
    items = [freeze] if isinstance(freeze, str) else list(freeze)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _freeze(model: nn.Module, freeze: str | Sequence[str] | None, keep_trainable: set[str]) -> list[str]:
    """Hold the named top-level modules' parameters fixed (requires_grad False), except re-initialised ones,
    which must learn; return the names of those frozen. An unknown name lists the model's modules."""
    modules = {name: module for name, module in model.named_children() if any(True for _ in module.parameters())}
    frozen = []
    for part in freeze_parts(freeze):
        if part not in modules:
            raise UnknownNameError("module", part, modules,
                                   f"freeze takes the top-level modules of a {type(model).__name__} that have "
                                   f"weights (model.named_children()).")
        for name, p in modules[part].named_parameters(prefix=part):
            if name not in keep_trainable:
                p.requires_grad_(False)
                frozen.append(name)
    return frozen


def _optimizers(variant: Variant, model: nn.Module, config: TrainConfig, freeze: str | Sequence[str] | None) -> Any:
    """The variant's optimisers over the trainable parameters (frozen ones are left out by
    :func:`zoo.variant.make_adam`); a variant that gives a frozen part its own optimiser cannot train."""
    parts = ", ".join(freeze_parts(freeze))
    try:
        return variant.configure_optimizers(model, config)
    except ValueError as err:  # torch: "optimizer got an empty parameter list"
        raise ConfigError(f"cannot freeze {parts} of a {variant.name!r} model: its variant trains it with an "
                          f"optimiser of its own, which would have nothing to update ({err})") from err


# -- the card -----------------------------------------------------------------------------------------

def _call(model_or_name: Any, data: Any, options: dict[str, Any]) -> str:
    """The Python call that reproduces the run; in-memory arguments are described by type and shape."""
    def show(value: Any) -> str:
        if isinstance(value, Tensor | np.ndarray):
            return f"<{type(value).__name__} {tuple(value.shape)} {value.dtype}>"
        if isinstance(value, tuple | list):
            return "(" + ", ".join(show(v) for v in value) + ")"
        if isinstance(value, nn.Module):
            return f"<{getattr(value, 'variant_name', '') or type(value).__name__} model>"
        return repr(str(value)) if isinstance(value, Path) else repr(value)

    defaults = {k: p.default for k, p in inspect.signature(finetune).parameters.items()}
    args = [show(model_or_name), show(data)]
    args += [f"{k}={show(v)}" for k, v in options.items() if k not in defaults or v != defaults[k]]
    return f"zoo.finetune({', '.join(args)})"


def finetune_card(model: nn.Module, *, base: str | None, data: Any, description: str, adaptations: list[str],
                  reset: list[str], added: list[str], freeze: str | Sequence[str] | None, frozen: list[str],
                  config: TrainConfig,
                  call: str,
                  result: TrainResult, sizes: tuple[int, int], nll_samples: int, overrides: dict[str, Any],
                  metrics: dict[str, Any], which: str) -> str:
    """The model card of a fine-tuned model (:func:`zoo.cards.render_card` with ``base_model``)."""
    from zoo.cards import render_card

    parent = f"`{base}`" if base else "an in-memory model"
    lines = [f"Fine-tuned from {parent} with ae-zoo's `finetune` ({result.steps} steps). {which}", "",
             f"- Data: {description}; {sizes[1]} examples (a seeded {sizes[1] / sum(sizes):.0%}) held out for "
             f"validation, {sizes[0]} trained on.",
             "- Input adaptation: " + ("; ".join(adaptations) or "none (the data fitted the model as it was)") + ".",
             "- Re-initialised (reset_head): " + (", ".join(f"`{n}`" for n in reset) + "; every other weight was "
                                                  "loaded from the parent." if reset else "nothing."),
             "- New (not in the parent, initialised fresh): " + (f"{len(added)} tensors ({_modules_of(added)})"
                                                                 if added else "nothing."),
             f"- Frozen: {', '.join(freeze_parts(freeze))} ({len(frozen)} tensors held fixed)." if frozen
             else "- Frozen: nothing.",
             "- Metrics below: validation part" + (f", NLL with {nll_samples} importance samples."
                                                   if has(model, "variational") and nll_samples else ".")]
    dataset = data if isinstance(data, str) else str(data) if isinstance(data, Path) else "in-memory data"
    return render_card(
        model, title=f"{model.variant_name} fine-tuned from {base or 'an in-memory model'}",
        summary="\n".join(lines), dataset=dataset, command=call, metrics=metrics, split="validation",
        training={"base_model": base or "none", "epochs": config.epochs, "steps": result.steps,
                  "best_epoch": result.best_epoch, "batch_size": config.batch_size, "lr": config.lr,
                  "patience": config.patience, "seed": config.seed, "freeze": ", ".join(freeze_parts(freeze)) or "none",
                  "reset_head": bool(reset), "config overrides": overrides or "none"},
        base_model=base)


def _modules_of(names: list[str]) -> str:
    """The top-level modules a list of parameter names belongs to, e.g. ``discriminator``."""
    return ", ".join(f"`{m}`" for m in sorted({name.split(".")[0] for name in names}))
