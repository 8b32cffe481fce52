"""``ZooModel``: the shared model API every built-in variant's network follows.

``encode(x, y=None)``, ``decode(z, y=None)``, ``forward(x, y=None)`` and, for generative variants,
``sample(n, y=None, generator=None)``; ``config`` is the variant's config dataclass. A model made by
:func:`zoo.create` or :func:`zoo.load` also knows its ``variant_name`` and ``pretrained_info``
(provenance: name, source, revision), as timm models carry ``pretrained_cfg``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ZooModel(nn.Module):
    """Base class of zoo networks: holds the config, saves itself in the one folder layout."""

    variant_name: str = ""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.pretrained_info: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor, y: Tensor | None = None) -> Any:
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(
            f"{self.variant_name or type(self).__name__} is not a generative model: it has no prior to "
            f"sample from. Use a VAE-family variant (vae, beta-vae, cvae, vae-gan) for sampling."
        )

    def save_pretrained(self, save_directory: str | Path, *, card: str | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` (atomically) to a folder."""
        from zoo.folder import save_folder

        return save_folder(self, save_directory, card=card)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Publish the three files to the Hugging Face Hub as one commit (``revision``, ``private``,
        ``commit_message``, ``endpoint``, ``token`` as in :func:`zoo.hub.push_folder`)."""
        from zoo.hub import push_model

        return push_model(self, repo_id, **kwargs)


def condition_vector(y: Tensor | int | None, num_classes: int, n: int, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> Tensor | None:
    """Labels (int, (n,) ints, or (n, num_classes) one-hot/soft) -> (n, num_classes) float, or None."""
    if num_classes == 0:
        return None
    if y is None:
        raise ValueError(f"this model is conditional on {num_classes} classes: pass y (labels 0..{num_classes - 1})")
    if isinstance(y, int):
        y = torch.full((n,), y, dtype=torch.long, device=device)
    y = y.to(device)
    if y.dim() == 2:
        return y.to(dtype)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    return F.one_hot(y.long(), num_classes).to(dtype)
