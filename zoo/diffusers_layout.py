"""Folders in diffusers' layout, read as zoo models: what ``diffusers``' ``save_pretrained`` writes and what
the Hub's VAE repos (``stabilityai/sd-vae-ft-mse``, the ``vae/`` folder of a pipeline repo) hold.

- ``config.json`` with ``_class_name`` (and ``_diffusers_version``) and the class's arguments;
- weights in ``diffusion_pytorch_model.safetensors``, or a variant file
  ``diffusion_pytorch_model.<variant>.safetensors`` (``fp16``, ``bf16``): the plain file unless a
  ``weights_variant`` is asked for, or the one variant file when it is all there is;
- pickled weights (``diffusion_pytorch_model.bin``) are refused, never opened.

The variant that reads a class is the one whose ``diffusers_class_name`` names it (the built-in plugin
``zoo_plugins.diffusers_vae`` registers ``AutoencoderKL``, ``AutoencoderTiny`` and ``VQModel``). Loading is
strict, as for the zoo's own folders: every weight must match the model built from config.json, and
weights without the zoo's content hash are checked to be finite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.config import RESERVED_KEY
from zoo.errors import CheckpointError, ConfigError, UnknownNameError
from zoo.folder import CONFIG_NAME, PICKLE_SUFFIXES, check_model_class, check_state
from zoo.variant import Variant

STEM = "diffusion_pytorch_model"
PLAIN_WEIGHTS = f"{STEM}.safetensors"


def diffusers_config(directory: Path) -> dict[str, Any] | None:
    """The config.json of ``directory`` when it is in diffusers' layout (``_class_name``, no ``_zoo``), else None."""
    path = directory / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "_class_name" in data and RESERVED_KEY not in data else None


def weights_file_name(variant: str | None) -> str:
    """``diffusion_pytorch_model.safetensors`` or ``diffusion_pytorch_model.<variant>.safetensors``."""
    return PLAIN_WEIGHTS if variant is None else f"{STEM}.{variant}.safetensors"


def choose_weights(names: Iterable[str], weights_variant: str | None, where: str) -> str:
    """The weights file to read among ``names`` (file names of one folder), by the rules of the module docstring;
    a CheckpointError that says what is there and what to do otherwise."""
    names = set(names)
    safetensors = sorted(n for n in names if n.startswith(STEM) and n.endswith(".safetensors"))
    if weights_variant is not None:
        wanted = weights_file_name(weights_variant)
        if wanted in names:
            return wanted
        raise CheckpointError(f"{where} has no {wanted} (weights_variant={weights_variant!r}); it has "
                              f"{', '.join(safetensors) or 'no safetensors weights'}")
    if PLAIN_WEIGHTS in names:
        return PLAIN_WEIGHTS
    if len(safetensors) == 1:
        return safetensors[0]
    if safetensors:
        variants = [n[len(STEM) + 1:-len(".safetensors")] for n in safetensors]
        raise CheckpointError(f"{where} holds several weight variants ({', '.join(safetensors)}): pass "
                              f"weights_variant= one of {', '.join(map(repr, variants))}")
    pickles = sorted(n for n in names if n.startswith(STEM) and n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(f"{where} holds only pickled weights ({', '.join(pickles)}): ae-zoo never unpickles "
                              f"(loading a pickle can run any code). Convert them once where you trust the file, "
                              f"with the folder's class: diffusers.AutoencoderKL.from_pretrained(PATH, "
                              f"use_safetensors=False).save_pretrained(OUT), then load OUT")
    raise CheckpointError(f"{where} has no model.safetensors (the zoo's layout) and no {PLAIN_WEIGHTS} "
                          f"(diffusers')")


def variant_for(class_name: str, source: str) -> Variant:
    """The registered variant that reads diffusers' ``class_name``."""
    from zoo.registry import get_registry

    readers = {v.diffusers_class_name: v for v in get_registry().variants.values() if v.diffusers_class_name}
    if class_name not in readers:
        raise UnknownNameError("diffusers class", class_name, readers,
                               f"{source} is a diffusers folder of a class no installed variant wraps.",
                               plural="diffusers classes ae-zoo reads")
    return readers[class_name]


def load_diffusers_folder(directory: Path, data: dict[str, Any], *, device: torch.device,
                          weights_variant: str | None = None, expected_class: type[nn.Module] | None = None,
                          expected_variant: str | None = None) -> nn.Module:
    """Build the zoo model for a diffusers folder (config ``data``) and load its weights strictly."""
    from zoo.registry import build
    from zoo.weights import read_weights, verify_weights

    source = str(directory / CONFIG_NAME)
    variant = variant_for(str(data["_class_name"]), source)
    if expected_variant and variant.name != expected_variant:
        raise ConfigError(f"{source} is a diffusers {data['_class_name']}, read by variant {variant.name!r}, "
                          f"expected {expected_variant!r}")
    config = variant.config_from_diffusers(data, source=source)
    with device:
        model = build(variant, config)
    model.variant_name = variant.name
    check_model_class(model, expected_class, directory)
    weights = directory / choose_weights((p.name for p in directory.iterdir()), weights_variant, str(directory))
    tensors, metadata = read_weights(weights)
    check_state(model, tensors, weights)
    verify_weights(weights, tensors, metadata)
    model.load_state_dict(tensors, strict=True)  # copies into the model's dtype (fp16 variant files too)
    return model
