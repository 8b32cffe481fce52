"""The one folder layout: ``config.json`` + ``model.safetensors`` + ``README.md``.

The same three files are a bundled model card, a Hub repo, a cache snapshot and the output of
``save_pretrained``; this module writes and reads them all. Weights are safetensors only (nothing is
ever unpickled) and every file is written atomically (temporary file, then rename). The folder as a
whole is consistent too: config.json records the content hash of the weights saved with it
(:mod:`zoo.weights`), and a reader reads both again until they agree, so it gets one complete save or,
for files from two saves, a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.config import CONFIG_VERSION, RESERVED_KEY
from zoo.devices import resolve_device, resolve_dtype
from zoo.errors import CheckpointError, ConfigError
from zoo.losses import REDUCTION
from zoo.samplers import attach_samplers, describe, sampler_records
from zoo.weights import HASH_KEY, read_weights, verify_weights, weights_digest

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FOLDER_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: Files refused by name where a model folder is expected: pickles, which ae-zoo never loads.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


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


def config_json(model: nn.Module, weights_hash: str | None = None) -> dict[str, Any]:
    """The config.json content: the variant config plus the reserved ``_zoo`` block, which records the
    content hash of the weights saved with it (so a reader can tell a pair of files from one save)."""
    from zoo.registry import get_variant

    name = getattr(model, "variant_name", "")
    if not name:
        raise CheckpointError("this model has no variant_name: create it with zoo.create() or zoo.load()")
    variant = get_variant(name)
    meta = {"variant": name, "config_version": CONFIG_VERSION, "zoo_version": zoo_version(),
            "loss_reduction": REDUCTION}
    if weights_hash is not None:
        meta[HASH_KEY] = weights_hash
    samplers = sampler_records(model)
    if samplers:
        meta["samplers"] = samplers
    return {RESERVED_KEY: meta, **variant.config_to_json(model.config)}


def save_folder(model: nn.Module, directory: str | Path, *, card: str | None = None) -> Path:
    """Write the three files; an existing README.md is kept unless ``card`` is given.

    The weights go first and config.json, which records their content hash, last: each file is
    replaced atomically, and a reader that finds a config.json whose hash is not that of the weights
    beside it (a save in progress) reads again (:func:`load_folder`), so it gets one complete save.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    digest = weights_digest(model.state_dict())
    config = config_json(model, digest)
    metadata = {"format": "pt", "variant": model.variant_name, HASH_KEY: digest}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_model(model, str(p), metadata=metadata))
    atomic_write(directory / CONFIG_NAME,
                 lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n"))
    if card is not None or not (directory / CARD_NAME).exists():
        text = card if card is not None else default_card(model)
        atomic_write(directory / CARD_NAME, lambda p: p.write_text(text))
    return directory


def export_folder(model: nn.Module, directory: str | Path, format: str, *, card: str | None = None) -> Path:
    """Write ``model`` in another library's layout (``model.export(format, ...)``) into ``directory``, with a
    README.md card (``card``, else the folder's existing one, else a minimal one). The files are written
    into a fresh folder beside ``directory`` and moved in one by one, weights first and config.json last."""
    formats = getattr(model, "export_formats", ())
    if format not in formats:
        raise ConfigError(f"a {getattr(model, 'variant_name', '') or type(model).__name__!r} model saves as 'zoo'"
                          + "".join(f" or {f!r}" for f in formats) + f", not {format!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        model.export(format, staging)
        if card is not None or not (directory / CARD_NAME).exists():
            (staging / CARD_NAME).write_text(card if card is not None else default_card(model))
        for path in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_NAME):
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def default_card(model: nn.Module) -> str:
    """A minimal model card with Hub front matter, for folders saved without one."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="ae-zoo", tags=["autoencoder", model.variant_name, "pytorch"])
    return (f"---\n{data.to_yaml()}\n---\n\n# {model.variant_name}\n\n"
            f"A `{model.variant_name}` model saved by ae-zoo {zoo_version()}. Load it with\n\n"
            f"```python\nimport zoo\nmodel = zoo.load(\"local-dir:PATH\")\n```\n{samplers_section(model)}")


def samplers_section(model: nn.Module) -> str:
    """A card's list of the model's fitted ex-post samplers and how each was fitted ("" when it has none)."""
    records = sampler_records(model)
    if not records:
        return ""
    lines = "\n".join(f"- {describe(record)}" for record in records.values())
    first = "gmm" if "gmm" in records else next(iter(records))
    return (f"\n## Ex-post samplers\n\nFitted after training to this model's codes (zoo.samplers); "
            f"`model.sample(n, sampler={first!r})` decodes their draws.\n\n{lines}\n")


def read_config(directory: Path) -> tuple[str, dict[str, Any]]:
    """Return (variant name, variant config dict) from a folder's config.json."""
    variant, config, _ = read_config_block(directory)
    return variant, config


def read_config_block(directory: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Return (variant name, variant config dict, the reserved ``_zoo`` block) from a folder's config.json."""
    path = directory / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    meta = data.pop(RESERVED_KEY, None) if isinstance(data, dict) else None
    if not isinstance(meta, dict) or "variant" not in meta:
        raise CheckpointError(f"{path} has no '{RESERVED_KEY}.variant' entry: it was not written by ae-zoo "
                              f"(save models with model.save_pretrained(DIR) or `zoo train --out DIR`)")
    if not isinstance(meta["variant"], str) or not meta["variant"]:
        raise CheckpointError(f"{path}: {RESERVED_KEY}.variant must be the name of a variant (e.g. \"vae\"), got "
                              f"{json.dumps(meta['variant'])}; `zoo list` shows the installed variants")
    version = meta.get("config_version", CONFIG_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: {RESERVED_KEY}.config_version must be an integer, got {json.dumps(version)}")
    if version > CONFIG_VERSION:
        raise CheckpointError(f"{path} has config_version {version}, newer than this ae-zoo "
                              f"understands ({CONFIG_VERSION}): upgrade ae-zoo")
    return meta["variant"], data, meta


def load_folder(directory: str | Path, *, device: str | torch.device | None = None,
                dtype: str | torch.dtype | None = None, expected_variant: str | None = None,
                info: dict[str, Any] | None = None, expected_class: type[nn.Module] | None = None,
                weights_variant: str | None = None) -> nn.Module:
    """Build the model that ``config.json`` describes and load its weights strictly, in eval mode.

    The weights must be those config.json was saved with (their content hashes agree; a save in
    progress is waited out by reading again), saved from the variant config.json names, and intact
    (their content hash, or for weights without one, finite values). ``expected_class``
    (``SomeModel.from_pretrained``) refuses a folder whose variant builds another class. A folder in
    diffusers' layout (config.json with ``_class_name``) is read by :mod:`zoo.diffusers_layout`
    (``weights_variant``: ``"fp16"`` for ``diffusion_pytorch_model.fp16.safetensors``).
    """
    from zoo.diffusers_layout import diffusers_config, load_diffusers_folder

    directory = Path(directory)
    resolved_device = resolve_device(device) if device is not None else torch.device("cpu")
    foreign = None if directory.is_file() else diffusers_config(directory)
    if foreign is not None:
        model = load_diffusers_folder(directory, foreign, device=resolved_device, weights_variant=weights_variant,
                                      expected_class=expected_class, expected_variant=expected_variant)
    else:
        model = _load_zoo_folder(directory, resolved_device, expected_variant, expected_class)
    dtype = resolve_dtype(dtype)
    if dtype is not None:
        model.to(dtype=dtype)
    model.pretrained_info = {"source": "local-dir", "path": str(directory), **(info or {})}
    return model.eval()


def _load_zoo_folder(directory: Path, device: torch.device, expected_variant: str | None,
                     expected_class: type[nn.Module] | None) -> nn.Module:
    """The model of a folder in the zoo's own layout, its weights checked and loaded."""
    from zoo.registry import build, get_variant

    check_folder(directory)
    variant_name, config_dict, meta, tensors, metadata, torn = _read_one_save(directory)
    if expected_variant and variant_name != expected_variant:
        raise ConfigError(f"{directory / CONFIG_NAME} says variant {variant_name!r}, expected {expected_variant!r}")
    variant = get_variant(variant_name)
    saved_from = metadata.get("variant")
    if saved_from is not None and saved_from != variant_name:
        raise CheckpointError(f"{directory / CONFIG_NAME} names variant {variant_name!r} but "
                              f"{directory / WEIGHTS_NAME} was saved from a {saved_from!r} model: config and "
                              f"weights disagree. Set "
                              f"{RESERVED_KEY}.variant back to {saved_from!r}, or save the model again.")
    config = variant.config_from_json(config_dict, source=str(directory / CONFIG_NAME))
    with device:
        model = build(variant, config)
    model.variant_name = variant_name
    check_model_class(model, expected_class, directory)
    with device:
        attach_samplers(model, meta.get("samplers"), str(directory / CONFIG_NAME))
    check_state(model, tensors, directory / WEIGHTS_NAME)
    if torn:
        raise CheckpointError(f"{directory}: config.json and model.safetensors come from different saves (the "
                              f"content hash config.json records is not that of the weights): a save into this "
                              f"folder did not finish, or the files were copied from two saves. Save the model "
                              f"again, or copy both files from one save.")
    verify_weights(directory / WEIGHTS_NAME, tensors, metadata)
    model.load_state_dict(tensors, strict=True)
    return model


def check_model_class(model: nn.Module, expected_class: type[nn.Module] | None, directory: Path) -> None:
    """Refuse a model of another class than ``expected_class`` (None: any), naming both and the way out."""
    if expected_class is None or isinstance(model, expected_class):
        return
    variant = getattr(model, "variant_name", "") or "?"
    raise ConfigError(f"{directory} holds a model of class {type(model).__name__} (variant {variant!r}), not of "
                      f"class {expected_class.__name__}: load it with zoo.load(...) or {type(model).__name__}"
                      f".from_pretrained(...), or pick a folder of a variant that builds {expected_class.__name__}")


def check_folder(directory: Path) -> None:
    """A CheckpointError unless ``directory`` is a folder with a regular config.json and model.safetensors
    (links to regular files, as in the Hugging Face cache, are fine)."""
    if directory.is_file():
        raise CheckpointError(_file_not_folder(directory))
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        path = directory / name
        if path.exists() and not path.is_file():
            raise CheckpointError(f"{path} is not a regular file (it resolves to {path.resolve()}): a model folder "
                                  f"holds {', '.join(FOLDER_FILES)} as files")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / name).is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise CheckpointError(f"{directory} is not a model folder: missing {', '.join(missing)} "
                              f"(found: {', '.join(present) or 'nothing'}). A model folder holds "
                              f"{', '.join(FOLDER_FILES)}.")


def _file_not_folder(path: Path) -> str:
    """The message for ``local-dir:FILE``: pickles refused with the conversion, a weights file sent to its folder."""
    if path.suffix in PICKLE_SUFFIXES:
        return (f"{path} is a file, and a {path.suffix} file is a pickle: ae-zoo never unpickles (loading one can "
                f"run any code). Convert it once where you trust it: read its state dict with `torch.load` and "
                f"weights_only=True, load that into model = zoo.create(VARIANT, ...) with model.load_state_dict, "
                f"save it with model.save_pretrained('FOLDER'), then zoo.load('local-dir:FOLDER')")
    if path.name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME) or path.suffix == ".safetensors":
        return f"{path} is a file; local-dir: takes the folder that holds it: local-dir:{path.parent}"
    return f"{path} is a file, not a model folder ({', '.join(FOLDER_FILES)}): local-dir: takes a folder"


#: Delays between the reads of a folder whose config.json and weights are from two saves (a save in progress).
RETRY_DELAYS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def _read_one_save(directory: Path) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Tensor], dict[str, str],
                                             bool]:
    """(variant, config dict, the ``_zoo`` block, tensors, weights metadata, torn) of one save: read config.json
    and the weights again while config.json records another content hash than the weights carry (a writer
    replaces the weights first and config.json last). ``torn`` is True when they still disagree after every retry."""
    for delay in RETRY_DELAYS:
        read = _read_pair(directory)
        if not read[-1]:
            return read
        time.sleep(delay)
    return _read_pair(directory)


def _read_pair(directory: Path) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Tensor], dict[str, str],
                                         bool]:
    variant, config, meta = read_config_block(directory)
    tensors, metadata = read_weights(directory / WEIGHTS_NAME)
    recorded, carried = meta.get(HASH_KEY), metadata.get(HASH_KEY)
    return (variant, config, meta, tensors, metadata,
            recorded is not None and carried is not None and recorded != carried)


def check_state(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """A CheckpointError naming keys and shapes unless ``state`` fits ``model`` exactly."""
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
