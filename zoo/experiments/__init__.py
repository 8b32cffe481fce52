"""The lecture's claims about autoencoders, as experiments anyone can rerun.

    zoo experiment list
    zoo experiment latent-holes --out docs/experiments
    zoo experiment all --out docs/experiments       # every one, and an index README.md

Each experiment measures one claim and writes ``OUT/NAME/`` with ``README.md`` (the claim, the
numbers, the pictures and a verdict that says plainly whether our measurement supports the claim),
``results.json`` and its PNGs. ``quick=True`` runs a short version (what the tests run to check the
direction of each effect); the committed reports in ``docs/experiments/`` are full runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from zoo.cards import table_cell
from zoo.errors import UnknownNameError
from zoo.experiments.report import STATUS, ExperimentResult

#: Experiment name -> module in this package (each module has ``CLAIM`` and ``run(out, quick)``).
EXPERIMENTS = {
    "latent-holes": "holes",
    "loss-terms": "loss_terms",
    "beta-disentanglement": "beta_sweep",
    "beta-protocols": "beta_protocols",
    "posterior-collapse": "collapse",
    "importance-sampling": "importance_sampling",
    "vae-vs-vae-gan": "vae_gan_sharpness",
    "cvae-classes": "cvae_classes",
}


def claim(name: str) -> str:
    return _module(name).CLAIM


def _module(name: str):  # noqa: ANN202  (a module object)
    if name not in EXPERIMENTS:
        raise UnknownNameError("experiment", name, list(EXPERIMENTS))
    return importlib.import_module(f"zoo.experiments.{EXPERIMENTS[name]}")


def run_experiment(name: str, out: str | Path = "experiments", *, quick: bool = False) -> ExperimentResult:
    """Run experiment ``name``, write ``out/name/`` (README.md, results.json, pictures), return the result."""
    module = _module(name)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    result = module.run(folder, quick=quick)
    result.write(folder)
    return result


def write_index(out: str | Path) -> Path:
    """``out/README.md``: one row per experiment found in ``out`` (its claim and verdict), linking its report."""
    import json

    from zoo.folder import atomic_write

    rows = []
    for name in EXPERIMENTS:
        results = Path(out) / name / "results.json"
        if results.is_file():
            data = json.loads(results.read_text())
            verdict = STATUS[data["holds"]] + (" (quick run)" if data["quick"] else "")
            rows.append(f"| [{name}]({name}/README.md) | {table_cell(data['claim'])} | {verdict} |")
    text = ("# Experiments\n\nThe lecture's claims, measured. Rerun one with `zoo experiment NAME`, all with "
            "`zoo experiment all --out docs/experiments`.\n\n| experiment | claim | verdict |\n| --- | --- | --- |\n"
            + "\n".join(rows) + "\n")
    path = Path(out) / "README.md"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path
