"""References to pretrained checkpoints, as plugins register them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CheckpointRef:
    """Where a named pretrained checkpoint lives.

    ``name`` equals its Hub repo name. ``folder`` is a local (bundled) copy in the one folder
    layout; ``hub_repo`` and ``revision`` say where it is published (the revision is pinned, so a
    cached copy can be found with no network call).
    """

    name: str
    variant: str
    folder: Path | None = None
    hub_repo: str | None = None
    revision: str | None = None
    dataset: str = ""
    headline_metric: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.folder is None and self.hub_repo is None:
            raise ValueError(f"checkpoint {self.name!r} needs a bundled folder or a hub_repo")
