"""Hugging Face Hub I/O, local first.

A Hub repo (or a subfolder of one, as a pipeline repo's ``vae/``) holds the one folder layout
(config.json, model.safetensors, README.md), or diffusers' (config.json with ``_class_name``,
``diffusion_pytorch_model[.fp16].safetensors``; :mod:`zoo.diffusers_layout`). Resolution
looks in the Hugging Face cache **without any network call** (``try_to_load_from_cache`` on the
requested revision) and downloads only when nothing says offline (``HF_HUB_OFFLINE=1`` or
``local_files_only=True``). Everything goes through the unmodified ``huggingface_hub`` client, so
``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE`` and tokens work as users know them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError
from zoo.folder import CARD_NAME, CONFIG_NAME, FOLDER_FILES, WEIGHTS_NAME

HUB_PREFIX = "hf-hub:"
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)


class HubUnavailableError(CheckpointError):
    """A Hub model that is neither cached nor downloadable right now; the message lists the way out."""


@dataclass
class HubResolution:
    """Where a Hub model was found, and everything tried on the way."""

    folder: Path | None = None
    commit: str | None = None
    looked: list[str] = field(default_factory=list)


def parse_hub_name(name: str) -> tuple[str, str | None, str | None]:
    """``hf-hub:ORG/NAME[/SUBFOLDER][@REV]`` (prefix optional) -> (repo_id, revision or None, subfolder or None).

    A subfolder is a folder of the repo holding one model, as a pipeline repo's ``vae/``:
    ``hf-hub:stabilityai/stable-diffusion-xl-base-1.0/vae``."""
    body = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    path, _, revision = body.partition("@")
    parts = path.split("/")
    if len(parts) < 2 or not all(parts):
        raise CheckpointError(f"{name!r} is not a Hub model id: write '{HUB_PREFIX}ORG/NAME', "
                              f"'{HUB_PREFIX}ORG/NAME@REV' or '{HUB_PREFIX}ORG/NAME/SUBFOLDER'")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:]) or None
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as err:  # HFValidationError: the Hub's own naming rules
        raise CheckpointError(f"{repo_id!r} is not a valid Hub repo id: {err} Write '{HUB_PREFIX}ORG/NAME' with "
                              f"letters, digits, '-', '_' and '.'.") from None
    if subfolder is not None and any(part in (".", "..") for part in parts[2:]):
        raise CheckpointError(f"{name!r}: a subfolder is a plain folder of the repo (e.g. 'vae'), not {subfolder!r}")
    return repo_id, revision or None, subfolder


def is_offline(local_files_only: bool | None = None) -> bool:
    if local_files_only:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _in(subfolder: str | None, name: str) -> str:
    return f"{subfolder}/{name}" if subfolder else name


def weight_candidates(weights_variant: str | None) -> tuple[str, ...]:
    """Weight files whose presence in the cache lets a load skip the Hub: the asked variant's, else the zoo's
    model.safetensors or diffusers' plain file. A cached fp16 or bf16 file alone does not count when no variant
    was asked for: it is there because an earlier load asked for it, and the repo may hold plain weights."""
    from zoo.diffusers_layout import weights_file_name

    if weights_variant is not None:
        return (weights_file_name(weights_variant),)
    return (WEIGHTS_NAME, weights_file_name(None))


def cached_folder(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None, *,
                  subfolder: str | None = None, weights_variant: str | None = None) -> Path | None:
    """The cached snapshot folder holding config.json and a weights file (the zoo's or diffusers'), or None.
    No network."""
    config = _cached_file(repo_id, revision, cache_dir, _in(subfolder, CONFIG_NAME))
    if config is None:
        return None
    weights = [name for name in weight_candidates(weights_variant)
               if _cached_file(repo_id, revision, cache_dir, _in(subfolder, name)) is not None]
    return Path(config).parent if weights else None


def _cached_file(repo_id: str, revision: str | None, cache_dir: str | Path | None, name: str) -> str | None:
    """The cached path of one file of the repo, or None. No network."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision)
    return path if isinstance(path, str) else None


def resolve(repo_id: str, revision: str | None = None, *, local_files_only: bool | None = None,
            cache_dir: str | Path | None = None, resolution: HubResolution | None = None,
            subfolder: str | None = None, weights_variant: str | None = None) -> HubResolution:
    """Find ``repo_id@revision`` (its ``subfolder``) in the cache, else download it (unless offline).

    Raises :class:`HubUnavailableError` with every place looked when neither works.
    """
    res = resolution or HubResolution()
    shown = f"{repo_id}{'/' + subfolder if subfolder else ''}@{revision or 'main'}"
    folder = cached_folder(repo_id, revision, cache_dir, subfolder=subfolder, weights_variant=weights_variant)
    res.looked.append(f"Hugging Face cache ({_cache_root(cache_dir)}) for {shown}: "
                      f"{'found' if folder else 'not cached'}")
    if folder is not None:
        res.folder, res.commit = folder, commit_of(folder, subfolder)
        return res
    if is_offline(local_files_only):
        if weights_variant is None:
            from zoo.diffusers_layout import weights_file_name

            held = [v for v in ("fp16", "bf16")
                    if _cached_file(repo_id, revision, cache_dir, _in(subfolder, weights_file_name(v)))]
            if held:
                res.looked.append(f"the cache holds only the {' and '.join(held)} weights of {shown}: pass "
                                  f"weights_variant={held[0]!r} to load them")
        res.looked.append(f"download of {shown}: skipped (offline: HF_HUB_OFFLINE=1 or local_files_only=True)")
        raise unavailable(res, online_hint=True)
    folder = download(repo_id, revision, cache_dir=cache_dir, res=res, subfolder=subfolder,
                      weights_variant=weights_variant)
    res.folder, res.commit = folder, commit_of(folder, subfolder)
    return res


def commit_of(folder: Path, subfolder: str | None) -> str:
    """The snapshot's commit sha: the name of the snapshot folder above the model's (sub)folder."""
    return (folder.parents[len(Path(subfolder).parts) - 1] if subfolder else folder).name


def download(repo_id: str, revision: str | None, *, cache_dir: str | Path | None, res: HubResolution,
             force: bool = False, subfolder: str | None = None, weights_variant: str | None = None) -> Path:
    """Download a model folder (config.json, its one weights file, README.md) with the client's errors turned
    into one clear error. The repo's file list picks the weights: the zoo's model.safetensors, else diffusers'
    by :func:`zoo.diffusers_layout.choose_weights` (pickled weights are refused, never downloaded)."""
    from huggingface_hub import HfApi, snapshot_download

    from zoo.diffusers_layout import choose_weights
    from zoo.folder import zoo_version

    shown = f"{repo_id}{'/' + subfolder if subfolder else ''}@{revision or 'main'}"
    endpoint = _endpoint()
    with _client_errors(shown, endpoint, revision, res):  # model_info: one request, no retries when unreachable
        info = HfApi(library_name="ae-zoo", library_version=zoo_version()).model_info(
            repo_id, revision=revision or "main")
    files = [sibling.rfilename for sibling in info.siblings or []]
    prefix = f"{subfolder}/" if subfolder else ""
    here = {f[len(prefix):] for f in files if f.startswith(prefix) and "/" not in f[len(prefix):]}
    if CONFIG_NAME not in here:
        res.looked.append(f"download of {shown}: the repo has no {_in(subfolder, CONFIG_NAME)}"
                          + ("" if subfolder else " (a pipeline repo? name its model's folder: ORG/NAME/vae)"))
        raise unavailable(res)
    try:
        weights = WEIGHTS_NAME if WEIGHTS_NAME in here and weights_variant is None else choose_weights(
            here, weights_variant, "the repo" + (f"'s folder {subfolder}" if subfolder else ""))
    except CheckpointError as err:
        res.looked.append(f"download of {shown}: {err}")
        raise unavailable(res) from err
    wanted = [_in(subfolder, name) for name in (CONFIG_NAME, weights, CARD_NAME) if name in here]
    with _client_errors(shown, endpoint, revision, res):
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=wanted,
                                      library_name="ae-zoo", library_version=zoo_version(), force_download=force))
    res.looked.append(f"download of {shown} from {endpoint}: ok")
    return path / subfolder if subfolder else path


@contextmanager
def _client_errors(shown: str, endpoint: str, revision: str | None, res: HubResolution) -> Iterator[None]:
    """The huggingface_hub client's errors as one :class:`HubUnavailableError` listing every place looked."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except LocalEntryNotFoundError as err:  # subclass of EntryNotFoundError: catch it first
        res.looked.append(f"download of {shown} from {endpoint}: the Hub could not be reached ({_first_line(err)})")
        raise unavailable(res) from err
    except RevisionNotFoundError as err:
        res.looked.append(f"download of {shown} from {endpoint}: revision {revision!r} not found")
        raise unavailable(res) from err
    except RepositoryNotFoundError as err:
        res.looked.append(f"download of {shown} from {endpoint}: repository, file or revision not found "
                          f"(or private: log in with `hf auth login`)")
        raise unavailable(res) from err
    except EntryNotFoundError as err:
        res.looked.append(f"download of {shown} from {endpoint}: file not found ({_first_line(err)})")
        raise unavailable(res) from err
    except OSError as err:
        res.looked.append(f"download of {shown} from {endpoint}: {type(err).__name__}: {_first_line(err)}")
        raise unavailable(res) from err
    except Exception as err:  # httpx connection errors are not OSErrors
        if "connect" not in type(err).__name__.lower() and "timeout" not in type(err).__name__.lower():
            raise
        res.looked.append(f"download of {shown} from {endpoint}: the Hub could not be reached "
                          f"({type(err).__name__}: {_first_line(err)})")
        raise unavailable(res) from err


def unavailable(res: HubResolution, online_hint: bool = False) -> HubUnavailableError:
    lines = ["no usable copy of the model was found. Looked in:"]
    lines += [f"  - {place}" for place in res.looked]
    lines.append("Ways out:")
    if online_hint:
        lines.append("  - connect and unset HF_HUB_OFFLINE to download it, or run `zoo fetch NAME` on a "
                     "connected machine and copy its Hugging Face cache (HF_HOME) here")
    else:
        lines.append("  - check the name and revision, or run `zoo fetch NAME` once the Hub is reachable")
    lines.append("  - load a folder you have: zoo.load('local-dir:PATH')")
    lines.append("  - build the architecture with random weights: zoo.load(NAME, pretrained=False) "
                 "or zoo.create(VARIANT)")
    return HubUnavailableError("\n".join(lines))


def push_folder(folder: str | Path, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                commit_message: str | None = None, endpoint: str | None = None, token: str | None = None) -> Any:
    """Create ``repo_id`` if needed and upload the three files of ``folder`` as one commit."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} is not a model folder: missing {', '.join(missing)}")
    api = HfApi(endpoint=endpoint, token=token, library_name="ae-zoo")
    target = endpoint or _endpoint()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 allow_patterns=list(FOLDER_FILES),
                                 commit_message=commit_message or f"Upload {folder.name} with ae-zoo")
    except Exception as err:
        if not (isinstance(err, OSError) or "connect" in type(err).__name__.lower()
                or "timeout" in type(err).__name__.lower()):
            raise
        raise CheckpointError(f"pushing {folder} to {repo_id} at {target} failed: {type(err).__name__}: "
                              f"{_first_line(err)}. Check the endpoint, your token (`hf auth login`) and "
                              f"that the branch {revision or 'main'!r} exists.") from err


def push_model(model: Any, repo_id: str, **kwargs: Any) -> Any:
    """``save_pretrained`` into a temporary folder, then :func:`push_folder`."""
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        model.save_pretrained(tmp)
        return push_folder(tmp, repo_id, **kwargs)


def _cache_root(cache_dir: str | Path | None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
