"""The output folder of a run: one run at a time, checked before the first step, never lost at the end.

- :class:`FolderLock`: an exclusive ``flock`` on ``FOLDER/.zoo.lock`` for the life of a run. A second
  run on the same folder fails at once, naming the folder and the holder's pid. The kernel releases the
  lock when its process ends, however it ends (SIGKILL included), so a lock file left by a dead process
  is simply taken over. On release the lock file is removed, and the folder too if the run created it
  and left it empty. Taking the lock also removes the temporaries of interrupted atomic writes
  (:data:`TEMPORARY`: ``.NAME.XXXXXXXX.tmp``, and safetensors' ``.tmpXXXXXX``) older than the run.
- :func:`check_writable`: the folder can be created and written, and has room, before any training.
- :func:`save_final`: ``save_pretrained`` into the folder; if that still fails, the trained weights go
  to a rescue folder, and the error says where.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from torch import nn

from zoo.errors import CheckpointError, FolderLockedError

logger = logging.getLogger(__name__)

LOCK_NAME = ".zoo.lock"
#: Temporaries of our interrupted writes: :func:`zoo.folder.atomic_write`'s (``.NAME.`` + mkstemp's 8
#: random characters + ``.tmp``) and those safetensors makes inside it to write a file atomically itself
#: (``.tmp`` + 6 random letters and digits, the whole file's size: the 12.9 MB ones of an interrupted checkpoint).
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^\.tmp[A-Za-z0-9]{6}$")
#: Folders searched for stale temporaries: the folder and two levels below (checkpoints/, logs/, last/...).
TEMPORARY_DEPTH = 2

_held: dict[Path, int] = {}  # locks this process holds, by folder: a nested run on the same folder is no rival


class FolderLock:
    """``with FolderLock(folder):`` holds an exclusive lock on ``folder`` (created if needed)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None
        self._created = False
        self._key: Path | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`FolderLockedError` at once; then remove stale temporaries."""
        self._created = make_folder(self.folder)
        self._key = self.folder.resolve()
        if self._key in _held:
            _held[self._key] += 1
            return
        import fcntl

        started = time.time()
        path = self.folder / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd) or "its pid not yet written"
                os.close(fd)
                raise FolderLockedError(
                    f"{self.folder} is in use by another zoo run ({holder}): two runs writing one folder would "
                    f"overwrite each other's checkpoints and weights. Wait for it to finish, stop it, or choose "
                    f"another output folder.") from None
            if _same_file(fd, path):  # not a lock file that its holder removed while we opened it
                break
            os.close(fd)
        previous = _holder(fd)
        if previous is not None:
            logger.info("took over %s, left by a zoo run that has ended (%s)", path, previous)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started,
                                 "command": " ".join(sys.argv)[:500]}).encode())
        self._fd = fd
        _held[self._key] = 1
        remove_stale_temporaries(self.folder, before=started)

    def release(self) -> None:
        """Give the lock up (removing the lock file, and the folder if this run created it and left it empty)."""
        if self._key is None:
            return
        _held[self._key] -= 1
        if _held[self._key] == 0:
            del _held[self._key]
            if self._fd is not None:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)  # while still holding it
                os.close(self._fd)
                self._fd = None
        self._forget_folder()
        self._key = None

    def _forget_folder(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):  # only if empty: a run that failed early leaves nothing behind
                self.folder.rmdir()
            self._created = False


def make_folder(folder: Path) -> bool:
    """Create ``folder`` (and its parents) if needed; whether it was created. A CheckpointError when it is a
    file or cannot be created (a read-only or virtual file system such as /proc, no permission)."""
    if folder.is_dir():
        return False
    if folder.exists() or any(p.is_file() for p in folder.parents):
        blocker = folder if folder.exists() else next(p for p in folder.parents if p.is_file())
        raise CheckpointError(f"cannot use {folder} as an output folder: {blocker} is a file. Choose another "
                              f"output folder.")
    try:
        folder.mkdir(parents=True)
    except OSError as err:
        raise CheckpointError(f"cannot create the output folder {folder}: {err.strerror or err}. Choose an output "
                              f"folder on a writable disk (not under /proc, /sys or a read-only mount).") from None
    return True


def check_writable(folder: Path, model: nn.Module, *, copies: int = 2, slack_mib: int = 16,
                   what: str = "the model folder") -> None:
    """Fail before training when ``folder`` cannot be created or written, or lacks room for ``copies``
    times the weights plus ``slack_mib`` MiB."""
    make_folder(folder)
    probe = folder / f".zoo-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"cannot write to {folder}: {err.strerror or err}. Choose another output "
                              f"folder.") from None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    needed = copies * weights + slack_mib * 2**20
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CheckpointError(f"only {free / 2**20:.0f} MiB free under {folder}; {what} needs about "
                              f"{needed / 2**20:.0f} MiB. Free some space or choose another output folder.")


def remove_stale_temporaries(folder: Path, *, before: float) -> list[Path]:
    """Remove the temporaries of interrupted atomic writes (``.NAME.XXXXXXXX.tmp``) last modified before
    ``before`` in ``folder`` and the folders below it (two levels); return what was removed."""
    removed = []
    levels = [folder]
    for _ in range(TEMPORARY_DEPTH + 1):
        below = []
        for directory in levels:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    below.append(Path(entry.path))
                elif TEMPORARY.match(entry.name) and entry.is_file(follow_symlinks=False):
                    try:
                        if entry.stat(follow_symlinks=False).st_mtime < before:
                            os.unlink(entry.path)
                            removed.append(Path(entry.path))
                    except OSError:
                        continue
        levels = below
    if removed:
        logger.info("removed %d temporary file(s) of interrupted writes under %s: %s", len(removed), folder,
                    ", ".join(str(p.relative_to(folder)) for p in removed))
    return removed


def save_final(model: nn.Module, folder: Path, *, card: str | None = None, hint: str = "") -> Path:
    """``model.save_pretrained(folder, card=card)``; when that fails (a full disk, a folder gone or made
    read-only during training), save to a rescue folder instead and raise a CheckpointError that says
    where the weights are. ``hint`` adds what else survives (e.g. the last training checkpoint)."""
    from safetensors import SafetensorError

    try:
        return model.save_pretrained(folder, card=card)
    except (OSError, SafetensorError) as err:
        failure = f"could not write {folder}: {getattr(err, 'strerror', None) or err}"
        tried = []
        for base in (Path(tempfile.gettempdir()), Path.cwd(), Path.home()):
            try:
                rescue = Path(tempfile.mkdtemp(prefix=f"zoo-rescued-{model.variant_name}-", dir=base))
                model.save_pretrained(rescue, card=card)
            except (OSError, SafetensorError) as rescue_err:
                tried.append(f"{base} ({getattr(rescue_err, 'strerror', None) or rescue_err})")
                continue
            raise CheckpointError(f"{failure}. The trained weights were saved to {rescue} instead: "
                                  f"zoo.load('local-dir:{rescue}') loads them; move that folder where you want "
                                  f"it.") from err
        raise CheckpointError(f"{failure}, nor to a rescue folder in {', '.join(tried)}. {hint}".strip()) from err


def _holder(fd: int) -> str | None:
    """Who holds (or held) the lock, from the lock file's content; None when it names nobody."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "pid" not in data:
        return None
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.get("since", 0)))
    return f"pid {data['pid']} on {data.get('host', '?')}, since {since}: {data.get('command', '')}".rstrip(": ")


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
