"""Public lookups over what plugins registered: variants, checkpoints, model creation and loading."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.checkpoints import CheckpointRef
from zoo.errors import CheckpointError, ConfigError, UnknownNameError, ZooError
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
    model = build(v, v.make_config(config, **overrides))
    model.variant_name = v.name
    return model


def build(variant: Variant, config: Any) -> nn.Module:
    """``variant.build(config)``; a build that fails on a config its checks let through (a third-party
    plugin without value checks) is a ConfigError naming the variant and the config, not a layer's error."""
    try:
        return variant.build(config)
    except ZooError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, ZeroDivisionError) as err:
        reason = (str(err).strip().splitlines() or [""])[0]  # torch appends C++ stack frames
        raise ConfigError(f"variant {variant.name!r} cannot build a model from {config}: "
                          f"{type(err).__name__}: {reason}") from err


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


def load(name: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         revision: str | None = None, local_files_only: bool | None = None, pretrained: bool = True,
         cache_dir: str | Path | None = None, expected_class: type[nn.Module] | None = None,
         subfolder: str | None = None, weights_variant: str | None = None) -> nn.Module:
    """Load a model in eval mode, local first.

    ``name`` is a registered checkpoint name (``"cvae-mnist"``), ``hf-hub:ORG/NAME[/SUBFOLDER][@REV]`` or
    ``local-dir:PATH``; the folder is in the zoo's layout or in diffusers' (:mod:`zoo.diffusers_layout`).
    A checkpoint resolves to its bundled folder, then the Hugging Face cache (no network call), then a
    download pinned to its revision unless offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``).
    ``subfolder`` names the model's folder in a Hub repo (``"vae"`` of a pipeline repo; also spelt
    ``hf-hub:ORG/NAME/vae``) and ``weights_variant`` a diffusers weights variant (``"fp16"``). Loading is
    strict: config.json must name an installed variant (or a diffusers class one wraps) and every weight must
    match. ``pretrained=False`` builds the same architecture with random weights. ``expected_class`` (what
    ``SomeModel.from_pretrained`` passes) refuses a folder whose variant builds another class.
    """
    from zoo import hub
    from zoo.folder import load_folder

    kwargs: dict[str, Any] = {"device": device, "dtype": dtype, "expected_class": expected_class}
    if name.startswith(LOCAL_PREFIX):
        folder = Path(name[len(LOCAL_PREFIX):]).expanduser()
        return load_folder(folder / subfolder if subfolder else folder, weights_variant=weights_variant, **kwargs)
    if name.startswith(hub.HUB_PREFIX):
        repo_id, rev, sub = hub.parse_hub_name(name)
        if subfolder and sub and subfolder != sub:
            raise ConfigError(f"{name!r} names subfolder {sub!r} and subfolder={subfolder!r} another: give one")
        sub = subfolder or sub
        res = hub.resolve(repo_id, revision or rev, local_files_only=local_files_only, cache_dir=cache_dir,
                          subfolder=sub, weights_variant=weights_variant)
        if not pretrained:
            return _random_init(res.folder, None, **kwargs)
        return load_folder(res.folder, **kwargs, weights_variant=weights_variant,
                           info={"name": name, "source": "hf-hub", "repo_id": repo_id, "revision": res.commit,
                                 **({"subfolder": sub} if sub else {})})
    if "/" in name or "\\" in name or name.startswith("."):
        raise UnknownNameError(
            "checkpoint", name, get_registry().checkpoints,
            f"{name!r} looks like a path: to load a saved folder write zoo.load('{LOCAL_PREFIX}{name}'); "
            f"for a Hub repo write zoo.load('{hub.HUB_PREFIX}ORG/NAME').")
    ref = get_checkpoint(name)
    res = hub.HubResolution()
    bundled = ref.folder if ref.folder is not None and revision in (None, ref.revision) else None
    if bundled is not None and all((Path(bundled) / f).is_file() for f in hub.REQUIRED_FILES):
        res.folder = Path(bundled)
        info = {"name": name, "source": "bundled", "revision": ref.revision}
    else:
        if ref.folder is not None:
            state = ("not used for revision " + repr(revision) if bundled is None
                     else "incomplete" if Path(bundled).is_dir() else "missing")
            res.looked.append(f"bundled folder {ref.folder}: {state}")
        if ref.hub_repo is None:
            plugin = get_registry().checkpoint_plugin.get(name, "?")
            raise CheckpointError(f"checkpoint {name!r} (plugin {plugin!r}) has no complete bundled folder "
                                  f"({'; '.join(res.looked)}) and names no Hub repo to download it from: reinstall "
                                  f"the plugin that provides it, or load a copy you have with "
                                  f"zoo.load('{LOCAL_PREFIX}PATH')")
        hub.resolve(ref.hub_repo, revision or ref.revision, local_files_only=local_files_only,
                    cache_dir=cache_dir, resolution=res)
        info = {"name": name, "source": "hf-hub", "repo_id": ref.hub_repo, "revision": res.commit}
    if not pretrained:
        return _random_init(res.folder, ref.variant, **kwargs)
    return load_folder(res.folder, expected_variant=ref.variant, info=info, **kwargs)


def from_pretrained(name: str | Path, *, revision: str | None = None, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, local_files_only: bool | None = None,
                    cache_dir: str | Path | None = None, expected_class: type[nn.Module] | None = None,
                    subfolder: str | None = None, weights_variant: str | None = None) -> nn.Module:
    """:func:`load` with the names Hugging Face users type: a model folder, a registered checkpoint name,
    or a Hub repo id ``ORG/NAME[@REV]`` without the ``hf-hub:`` prefix (prefixed names work too).

    >>> model = zoo.from_pretrained("cvae-mnist")
    >>> model = VAEModel.from_pretrained("runs/my-vae", device="cuda")   # refuses a folder of another class
    """
    from zoo import hub

    text = str(name)
    kwargs: dict[str, Any] = {"revision": revision, "device": device, "dtype": dtype,
                              "local_files_only": local_files_only, "cache_dir": cache_dir,
                              "expected_class": expected_class, "subfolder": subfolder,
                              "weights_variant": weights_variant}
    if text.startswith((LOCAL_PREFIX, hub.HUB_PREFIX)) or text in get_registry().checkpoints:
        return load(text, **kwargs)
    if Path(text).expanduser().is_dir():
        return load(LOCAL_PREFIX + text, **kwargs)
    if HUB_ID.fullmatch(text):
        try:
            return load(hub.HUB_PREFIX + text, **kwargs)
        except hub.HubUnavailableError as err:
            raise hub.HubUnavailableError(f"{err}\n  (there is no local folder {text!r} either)") from err
    return load(text, **kwargs)  # an unknown checkpoint name: the error lists close matches


#: A Hub repo id as users type it: ORG/NAME, optionally /SUBFOLDER and @REVISION.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)*(@[^\s]+)?")


def _random_init(folder: Path | None, variant: str | None, *, device: Any, dtype: Any,
                 expected_class: type[nn.Module] | None) -> nn.Module:
    """The architecture that ``folder/config.json`` describes, with fresh random weights."""
    from zoo.devices import resolve_device, resolve_dtype
    from zoo.diffusers_layout import diffusers_config, variant_for
    from zoo.folder import check_model_class, read_config

    source = str(Path(folder) / "config.json")
    foreign = diffusers_config(Path(folder))
    if foreign is not None:
        reader = variant_for(str(foreign["_class_name"]), source)
        name, config = reader.name, reader.config_from_diffusers(foreign, source=source)
    else:
        name, data = read_config(Path(folder))
        config = get_variant(name).config_from_json(data, source=source)
    if variant is not None and name != variant:
        raise ConfigError(f"{source} says variant {name!r}, expected {variant!r}")
    with resolve_device(device or "cpu"):
        model = create(name, config)
    check_model_class(model, expected_class, Path(folder))
    dtype = resolve_dtype(dtype)
    return model.to(dtype=dtype) if dtype is not None else model
