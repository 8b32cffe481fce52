"""Registers the bundled pretrained checkpoints: every folder of ``zoo_model_cards`` with a config.json."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import zoo
from zoo.cards import front_matter
from zoo.checkpoints import CheckpointRef
from zoo.folder import CARD_NAME, CONFIG_NAME, read_config

HEADLINE = ("nll", "neg_elbo", "recon_bce", "recon_mse")


def bundled_folders() -> list[Path]:
    root = Path(str(files("zoo_model_cards")))
    return sorted(p for p in root.iterdir() if (p / CONFIG_NAME).is_file())


def describe(folder: Path) -> tuple[str, str]:
    """(dataset, headline metric) from the card's YAML front matter."""
    meta = front_matter(folder / CARD_NAME)
    dataset = (meta.get("datasets") or [""])[0]
    results = {m["type"]: m["value"] for entry in meta.get("model-index", [])
               for result in entry.get("results", []) for m in result.get("metrics", [])}
    key = next((k for k in HEADLINE if k in results), None)
    return dataset, f"test {key}={results[key]:.2f}" if key else ""


@zoo.hookimpl
def zoo_register_checkpoints(register: Any) -> None:
    for folder in bundled_folders():
        variant, _ = read_config(folder)
        dataset, headline = describe(folder)
        register(CheckpointRef(name=folder.name, variant=variant, folder=folder, dataset=dataset,
                               headline_metric=headline))
