"""Hugging Face Hub I/O, local first.

A Hub repo holds the one folder layout (config.json, model.safetensors, README.md). Resolution
looks in the Hugging Face cache **without any network call** (``try_to_load_from_cache`` on the
requested revision) and downloads only when nothing says offline (``HF_HUB_OFFLINE=1`` or
``local_files_only=True``). Everything goes through the unmodified ``huggingface_hub`` client, so
``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE`` and tokens work as users know them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError
from zoo.folder import CONFIG_NAME, FOLDER_FILES, WEIGHTS_NAME

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


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:org/name[@rev]`` (prefix optional) -> (repo_id, revision or None)."""
    body = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise CheckpointError(f"{name!r} is not a Hub model id: write '{HUB_PREFIX}ORG/NAME' "
                              f"or '{HUB_PREFIX}ORG/NAME@REV'")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as err:  # HFValidationError: the Hub's own naming rules
        raise CheckpointError(f"{repo_id!r} is not a valid Hub repo id: {err} Write '{HUB_PREFIX}ORG/NAME' with "
                              f"letters, digits, '-', '_' and '.'.") from None
    return repo_id, revision or None


def is_offline(local_files_only: bool | None = None) -> bool:
    if local_files_only:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cached_folder(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path | None:
    """The cached snapshot folder holding config.json and model.safetensors, or None. No network."""
    from huggingface_hub import try_to_load_from_cache

    paths = [try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision) for name in REQUIRED_FILES]
    if not all(isinstance(p, str) for p in paths):
        return None
    folders = {Path(p).parent for p in paths}
    return folders.pop() if len(folders) == 1 else None


def resolve(repo_id: str, revision: str | None = None, *, local_files_only: bool | None = None,
            cache_dir: str | Path | None = None, resolution: HubResolution | None = None) -> HubResolution:
    """Find ``repo_id@revision`` in the cache, else download it (unless offline).

    Raises :class:`HubUnavailableError` with every place looked when neither works.
    """
    res = resolution or HubResolution()
    shown = f"{repo_id}@{revision or 'main'}"
    folder = cached_folder(repo_id, revision, cache_dir)
    res.looked.append(f"Hugging Face cache ({_cache_root(cache_dir)}) for {shown}: "
                      f"{'found' if folder else 'not cached'}")
    if folder is not None:
        res.folder, res.commit = folder, folder.name
        return res
    if is_offline(local_files_only):
        res.looked.append(f"download of {shown}: skipped (offline: HF_HUB_OFFLINE=1 or local_files_only=True)")
        raise unavailable(res, online_hint=True)
    folder = download(repo_id, revision, cache_dir=cache_dir, res=res)
    res.folder, res.commit = folder, folder.name
    return res


def download(repo_id: str, revision: str | None, *, cache_dir: str | Path | None, res: HubResolution,
             force: bool = False) -> Path:
    """snapshot_download of the three files, with the client's errors turned into one clear error."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from zoo.folder import zoo_version

    shown = f"{repo_id}@{revision or 'main'}"
    endpoint = _endpoint()
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=list(FOLDER_FILES), library_name="ae-zoo",
                                      library_version=zoo_version(), force_download=force))
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
        res.looked.append(f"download of {shown} from {endpoint}: cannot connect ({type(err).__name__})")
        raise unavailable(res) from err
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        res.looked.append(f"download of {shown}: the repo has no {', '.join(missing)}")
        raise unavailable(res)
    res.looked.append(f"download of {shown} from {endpoint}: ok")
    return path


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
