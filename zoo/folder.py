"""The one folder layout: ``config.json`` + ``model.safetensors`` + ``README.md``.

The same three files are a bundled model card, a Hub repo, a cache snapshot and the output of
``save_pretrained``; this module writes and reads them all. Weights are safetensors only (nothing is
ever unpickled) and every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.config import CONFIG_VERSION, RESERVED_KEY
from zoo.devices import resolve_device, resolve_dtype
from zoo.errors import CheckpointError, ConfigError
from zoo.losses import REDUCTION

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FOLDER_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; saved models are shareable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def zoo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ae-zoo")
    except PackageNotFoundError:
        return "unknown"


def config_json(model: nn.Module) -> dict[str, Any]:
    """The config.json content: the variant config plus the reserved ``_zoo`` block."""
    from zoo.registry import get_variant

    name = getattr(model, "variant_name", "")
    if not name:
        raise CheckpointError("this model has no variant_name: create it with zoo.create() or zoo.load()")
    variant = get_variant(name)
    meta = {"variant": name, "config_version": CONFIG_VERSION, "zoo_version": zoo_version(),
            "loss_reduction": REDUCTION}
    return {RESERVED_KEY: meta, **variant.config_to_json(model.config)}


def save_folder(model: nn.Module, directory: str | Path, *, card: str | None = None) -> Path:
    """Write the three files; an existing README.md is kept unless ``card`` is given."""
    from safetensors.torch import save_model

    directory = Path(directory)
    config = config_json(model)
    atomic_write(directory / CONFIG_NAME,
                 lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n"))
    atomic_write(directory / WEIGHTS_NAME,
                 lambda p: save_model(model, str(p), metadata={"format": "pt", "variant": model.variant_name}))
    if card is not None or not (directory / CARD_NAME).exists():
        text = card if card is not None else default_card(model)
        atomic_write(directory / CARD_NAME, lambda p: p.write_text(text))
    return directory


def default_card(model: nn.Module) -> str:
    """A minimal model card with Hub front matter, for folders saved without one."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="ae-zoo", tags=["autoencoder", model.variant_name, "pytorch"])
    return (f"---\n{data.to_yaml()}\n---\n\n# {model.variant_name}\n\n"
            f"A `{model.variant_name}` model saved by ae-zoo {zoo_version()}. Load it with\n\n"
            f"```python\nimport zoo\nmodel = zoo.load(\"local-dir:PATH\")\n```\n")


def read_config(directory: Path) -> tuple[str, dict[str, Any]]:
    """Return (variant name, variant config dict) from a folder's config.json."""
    path = directory / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    meta = data.pop(RESERVED_KEY, None) if isinstance(data, dict) else None
    if not isinstance(meta, dict) or "variant" not in meta:
        raise CheckpointError(f"{path} has no '{RESERVED_KEY}.variant' entry: it was not written by ae-zoo "
                              f"(save models with model.save_pretrained(DIR) or `zoo train --out DIR`)")
    if meta.get("config_version", CONFIG_VERSION) > CONFIG_VERSION:
        raise CheckpointError(f"{path} has config_version {meta['config_version']}, newer than this ae-zoo "
                              f"understands ({CONFIG_VERSION}): upgrade ae-zoo")
    return meta["variant"], data


def load_folder(directory: str | Path, *, device: str | torch.device | None = None,
                dtype: torch.dtype | None = None, expected_variant: str | None = None,
                info: dict[str, Any] | None = None) -> nn.Module:
    """Build the model that ``config.json`` describes and load its weights strictly, in eval mode."""
    from zoo.registry import build, get_variant

    directory = Path(directory)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / name).is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise CheckpointError(f"{directory} is not a model folder: missing {', '.join(missing)} "
                              f"(found: {', '.join(present) or 'nothing'}). A model folder holds "
                              f"{', '.join(FOLDER_FILES)}.")
    variant_name, config_dict = read_config(directory)
    if expected_variant and variant_name != expected_variant:
        raise ConfigError(f"{directory / CONFIG_NAME} says variant {variant_name!r}, expected {expected_variant!r}")
    variant = get_variant(variant_name)
    config = variant.config_from_json(config_dict, source=str(directory / CONFIG_NAME))
    device = resolve_device(device) if device is not None else torch.device("cpu")
    dtype = resolve_dtype(dtype)
    with device:
        model = build(variant, config)
    load_weights(model, directory / WEIGHTS_NAME, device)
    if dtype is not None:
        model.to(dtype=dtype)
    model.variant_name = variant_name
    model.pretrained_info = {"source": "local-dir", "path": str(directory), **(info or {})}
    return model.eval()


def load_weights(model: nn.Module, path: Path, device: torch.device) -> None:
    """Load a safetensors file into ``model`` strictly, with errors that name keys and shapes."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device=str(device))
    except Exception as err:  # safetensors raises its own error types for corrupt headers and data
        raise CheckpointError(f"cannot read weights from {path}: {err}. The file is corrupt or truncated; "
                              f"save it again, or for a Hub download run `zoo fetch hf-hub:ORG/NAME --force` "
                              f"(deleting the cache link alone keeps the corrupt blob).") from err
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    for key in sorted(set(expected) & set(state)):
        if expected[key].shape != state[key].shape:
            problems.append(f"{key}: checkpoint shape {tuple(state[key].shape)} != model shape "
                            f"{tuple(expected[key].shape)}")
    if problems:
        raise CheckpointError(f"weights in {path} do not match the model built from config.json: "
                              + "; ".join(problems))
    model.load_state_dict(state, strict=True)
