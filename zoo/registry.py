"""Public lookups over what plugins registered: variants, checkpoints, model creation and loading."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.checkpoints import CheckpointRef
from zoo.errors import UnknownNameError
from zoo.plugins import get_registry
from zoo.variant import Variant

LOCAL_PREFIX = "local-dir:"


def list_variants(pattern: str | None = None) -> list[str]:
    """Sorted names of the installed variants, optionally filtered by a wildcard (``"*vae*"``)."""
    names = list(get_registry().variants)
    return fnmatch.filter(names, pattern) if pattern else names


def get_variant(name: str) -> Variant:
    """The registered ``Variant`` object called ``name``."""
    variants = get_registry().variants
    try:
        return variants[name]
    except KeyError:
        raise UnknownNameError("variant", name, variants,
                               "Run `zoo list` to see them, or install the plugin that provides it.") from None


def create(variant: str, config: Any = None, **overrides: Any) -> nn.Module:
    """A randomly initialised model of ``variant``; ``overrides`` set config fields.

    >>> model = zoo.create("vae", latent_dim=8)
    """
    v = get_variant(variant)
    model = v.build(v.make_config(config, **overrides))
    model.variant_name = v.name
    return model


def list_checkpoints(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered pretrained checkpoints, optionally filtered by a wildcard."""
    names = list(get_registry().checkpoints)
    return fnmatch.filter(names, pattern) if pattern else names


def get_checkpoint(name: str) -> CheckpointRef:
    checkpoints = get_registry().checkpoints
    try:
        return checkpoints[name]
    except KeyError:
        raise UnknownNameError("checkpoint", name, checkpoints,
                               f"Run `zoo list`; load a saved folder with '{LOCAL_PREFIX}PATH'.") from None


def load(name: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a model in eval mode: a registered checkpoint name or ``local-dir:PATH``.

    Loading is strict: config.json must name an installed variant, and every weight must match.
    """
    from zoo.folder import load_folder

    if name.startswith(LOCAL_PREFIX):
        return load_folder(Path(name[len(LOCAL_PREFIX):]).expanduser(), device=device, dtype=dtype)
    if "/" in name or "\\" in name or name.startswith("."):
        raise UnknownNameError(
            "checkpoint", name, get_registry().checkpoints,
            f"{name!r} looks like a path: to load a saved folder write zoo.load('{LOCAL_PREFIX}{name}').")
    ref = get_checkpoint(name)
    if ref.folder is None:
        raise UnknownNameError("checkpoint", name, [], f"checkpoint {name!r} has no bundled folder")
    return load_folder(ref.folder, device=device, dtype=dtype, expected_variant=ref.variant,
                       info={"name": name, "source": "bundled"})
